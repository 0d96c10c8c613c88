package projector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/esdb"
	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

// opener makes a fresh store and its state store for one test.
type opener func(t testing.TB) (eventstore.Store, eventstore.StateStore)

// stateOf returns the store's own StateStore: both built-in backends keep
// the projector's state beside the log.
func stateOf(t testing.TB, s eventstore.Store) eventstore.StateStore {
	t.Helper()
	ss, ok := s.(eventstore.StateStore)
	if !ok {
		t.Fatalf("%T does not implement eventstore.StateStore", s)
	}
	return ss
}

func openEmbedded(t testing.TB) (eventstore.Store, eventstore.StateStore) {
	t.Helper()
	s, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatalf("embedded.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, stateOf(t, s)
}

func openPostgres(t testing.TB) (eventstore.Store, eventstore.StateStore) {
	t.Helper()
	s := pgtest.NewStore(t)
	return s, stateOf(t, s)
}

// openESDB opens the esdb backend on an in-process KurrentDB test server (a
// real gRPC server on 127.0.0.1), with its side state in a fresh PostgreSQL
// schema.
func openESDB(t testing.TB) (eventstore.Store, eventstore.StateStore) {
	t.Helper()
	pgtest.URL(t)
	srv := esdbtest.Start(t)
	schema := pgtest.Schema(t)
	pg := pgtest.Open(t, schema)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := esdb.Open(ctx, esdb.Config{URL: srv.URL(), Postgres: pg, Schema: schema, TimeIndexInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("esdb.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, stateOf(t, s)
}

// onStandIn reports whether t runs on the esdb backend's in-process test
// server. Its behaviour is the real server's, its speed is not: latency
// bounds are logged there rather than enforced.
func onStandIn(t testing.TB) bool { return strings.HasSuffix(t.Name(), "/esdb") }

// forStores runs fn on the embedded store, PostgreSQL and esdb (on the
// in-process test server), in parallel.
func forStores(t *testing.T, fn func(t *testing.T, open opener)) {
	t.Helper()
	t.Parallel()
	for _, c := range []struct {
		name string
		open opener
	}{{"embedded", openEmbedded}, {"postgres", openPostgres}, {"esdb", openESDB}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			fn(t, c.open)
		})
	}
}

// env is one store, a started subscription service and a projector.
type env struct {
	t     testing.TB
	store eventstore.Store
	state eventstore.StateStore
	subs  *subscriptions.Service
	cfg   projector.Config
	p     *projector.Projector
}

// fastConfig is a projector configuration with short timers for tests.
func fastConfig() projector.Config {
	return projector.Config{
		Delivery:        projector.DelivererConfig{Timeout: 2 * time.Second, AllowPrivateNetworks: true},
		CircuitCooldown: 200 * time.Millisecond,
		Jitter:          projector.NoJitter,
	}
}

func newEnv(t testing.TB, open opener, mod func(*projector.Config)) *env {
	t.Helper()
	store, state := open(t)
	subs, err := subscriptions.New(store, subscriptions.Config{AllowPrivateNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := subs.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(subs.Stop)
	cfg := fastConfig()
	if mod != nil {
		mod(&cfg)
	}
	e := &env{t: t, store: store, state: state, subs: subs, cfg: cfg}
	e.start()
	return e
}

// start runs a new projector on the env's store.
func (e *env) start() {
	e.t.Helper()
	p, err := projector.New(e.cfg, projector.Deps{Store: e.store, State: e.state, Subs: e.subs})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.p = p
	e.t.Cleanup(func() { e.stop(5 * time.Second) })
}

func (e *env) stop(wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.p.Stop(ctx); err != nil {
		e.t.Errorf("Stop: %v", err)
	}
}

func (e *env) create(p subscriptions.CreateParams) subscriptions.Subscription {
	e.t.Helper()
	s, err := e.subs.Create(context.Background(), p)
	if err != nil {
		e.t.Fatalf("create subscription: %v", err)
	}
	return s
}

// appendN appends n events of typ to stream (tenant may be ""), one append
// each, and returns them with their positions.
func (e *env) appendN(stream, typ, tenant string, n int) []eventstore.AppendedEvent {
	e.t.Helper()
	var out []eventstore.AppendedEvent
	for i := range n {
		res, err := e.store.Append(context.Background(), eventstore.AppendParams{
			Stream: stream, Events: []eventstore.ProposedEvent{{Type: typ, Tenant: tenant, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}},
		})
		if err != nil {
			e.t.Fatalf("append: %v", err)
		}
		out = append(out, res.Events...)
	}
	return out
}

// appendBatch appends n events in one append.
func (e *env) appendBatch(stream, typ string, n int) []eventstore.AppendedEvent {
	e.t.Helper()
	var out []eventstore.AppendedEvent
	for n > 0 {
		k := min(n, eventstore.MaxEventsPerAppend)
		evs := make([]eventstore.ProposedEvent, k)
		for i := range evs {
			evs[i] = eventstore.ProposedEvent{Type: typ, Data: json.RawMessage(`{"x":1}`)}
		}
		res, err := e.store.Append(context.Background(), eventstore.AppendParams{Stream: stream, Events: evs})
		if err != nil {
			e.t.Fatalf("append: %v", err)
		}
		out = append(out, res.Events...)
		n -= k
	}
	return out
}

func ids(evs []eventstore.AppendedEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID.String()
	}
	return out
}

// hit is one request a receiver got.
type hit struct {
	ID     string // webhook-id
	BodyID string // "id" of the body
	At     time.Time
	Status int // what the receiver answered
	N      int // 1-based count of requests with this id so far
}

// receiver is a webhook endpoint on 127.0.0.1 that records every request and
// answers what answer says (200 by default).
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	hits   []hit
	perID  map[string]int
	answer atomic.Pointer[func(w http.ResponseWriter, r *http.Request, n int) int]
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{perID: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var b struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(body, &b)
		id := r.Header.Get("webhook-id")
		rc.mu.Lock()
		rc.perID[id]++
		n := rc.perID[id]
		rc.mu.Unlock()
		status := http.StatusOK
		if f := rc.answer.Load(); f != nil {
			status = (*f)(w, r, n)
		}
		rc.mu.Lock()
		rc.hits = append(rc.hits, hit{ID: id, BodyID: b.ID, At: time.Now(), Status: status, N: n})
		rc.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
		}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) setAnswer(f func(w http.ResponseWriter, r *http.Request, n int) int) {
	rc.answer.Store(&f)
}

func (rc *receiver) URL() string { return rc.srv.URL + "/hook" }

func (rc *receiver) all() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hit(nil), rc.hits...)
}

// succeeded returns the ids answered 2xx, in arrival order.
func (rc *receiver) succeeded() []string {
	var out []string
	for _, h := range rc.all() {
		if h.Status >= 200 && h.Status < 300 {
			out = append(out, h.ID)
		}
	}
	return out
}

// distinctOK counts distinct ids answered 2xx.
func (rc *receiver) distinctOK() int {
	seen := map[string]bool{}
	for _, id := range rc.succeeded() {
		seen[id] = true
	}
	return len(seen)
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// matching returns the events of stream, in log order.
func (e *env) matching(stream string) []eventstore.Event {
	e.t.Helper()
	evs, err := e.store.ReadStream(context.Background(), eventstore.ReadStreamParams{Stream: stream, Limit: eventstore.MaxReadLimit})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// stateKeys counts the projector's state entries of one subscription.
func (e *env) stateKeys(subID string) int {
	e.t.Helper()
	n := 0
	for _, b := range projector.StateBuckets() {
		err := e.state.ScanState(context.Background(), eventstore.ScanParams{Bucket: b, Prefix: uuidBytes(e.t, subID)}, func(_, _ []byte) error {
			n++
			return nil
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return n
}

func uuidBytes(t testing.TB, id string) []byte {
	u, err := uuid.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	return u[:]
}
