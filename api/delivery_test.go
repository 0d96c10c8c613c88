package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/projector"
)

// receiver is a real webhook endpoint on 127.0.0.1: /ok answers 200, /flaky
// answers flakyStatus (500 until the test changes it). It records the
// webhook-id of every delivery per path.
type receiver struct {
	srv         *httptest.Server
	flakyStatus atomic.Int32

	mu  sync.Mutex
	got map[string][]string // path -> webhook-ids, in arrival order
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{got: map[string][]string{}}
	rc.flakyStatus.Store(http.StatusInternalServerError)
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		status := http.StatusOK
		if r.URL.Path == "/flaky" {
			status = int(rc.flakyStatus.Load())
		}
		rc.mu.Lock()
		rc.got[r.URL.Path] = append(rc.got[r.URL.Path], r.Header.Get("webhook-id"))
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) ids(path string) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got[path])
}

// eventually polls cond every 20ms for up to 15s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statusWire mirrors API.md's status document; pointers tell null apart.
type statusWire struct {
	State         *string `json:"state"`
	Cursor        *string `json:"cursor"`
	Lag           *int    `json:"lag"`
	InFlight      *int    `json:"in_flight"`
	Circuit       *string `json:"circuit"`
	LastSuccessAt *string `json:"last_success_at"`
	FailingSince  *string `json:"failing_since"`
	DeadLetters   *int    `json:"dead_letters"`
}

func (e *env) status(key, id string) (statusWire, map[string]json.RawMessage) {
	e.t.Helper()
	r := e.do("GET", "/v1/subscriptions/"+id+"/status", key, nil).want(e.t, http.StatusOK)
	var st statusWire
	var raw map[string]json.RawMessage
	r.decode(e.t, &st)
	r.decode(e.t, &raw)
	return st, raw
}

type attemptWire struct {
	ID         string  `json:"id"`
	EventID    string  `json:"event_id"`
	Attempt    int     `json:"attempt"`
	Status     string  `json:"status"`
	StatusCode *int    `json:"status_code"`
	Error      *string `json:"error"`
	DurationMS float64 `json:"duration_ms"`
	At         string  `json:"at"`
	ReplayID   *string `json:"replay_id"`
}

func (e *env) deliveries(key, id, query string) []attemptWire {
	e.t.Helper()
	r := e.do("GET", "/v1/subscriptions/"+id+"/deliveries"+query, key, nil).want(e.t, http.StatusOK)
	var out struct {
		Attempts []attemptWire `json:"attempts"`
	}
	r.decode(e.t, &out)
	if out.Attempts == nil {
		e.t.Fatalf("deliveries%s: no attempts array: %s", query, r.body)
	}
	return out.Attempts
}

func (e *env) appendTo(stream string, events string) []string {
	e.t.Helper()
	var out appendedOut
	e.do("POST", "/v1/streams/"+stream+"/events", e.producer, `{"events":`+events+`}`).want(e.t, http.StatusCreated).decode(e.t, &out)
	ids := make([]string, len(out.Events))
	for i, ev := range out.Events {
		ids[i] = ev.ID
	}
	return ids
}

// The status, deliveries and redrive routes over a running projector that
// delivers to a real receiver: fields and formats as API.md has them, the
// query filters, dead letters and their redrive, and tenant scoping.
func TestDeliveryRoutes(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name+"/routes", func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t)
			e := newEnvOptions(t, b.open(t), Config{}, depsOptions{deliver: true,
				projector: projector.Config{OutcomeFlush: 2 * time.Millisecond, Jitter: projector.NoJitter}})
			testDeliveryRoutes(t, e, rc)
		})
	}
}

func testDeliveryRoutes(t *testing.T, e *env, rc *receiver) {
	// A: acme's, everything of acme's, to /ok. B: the admin's, stream
	// fail-*, to /flaky, two quick retries before the dead letter.
	a := e.createSub(e.tenantA, fmt.Sprintf(`{"url":%q}`, rc.srv.URL+"/ok"))
	b := e.createSub(e.admin, fmt.Sprintf(`{"url":%q,"streams":["fail-*"],"retry":{"schedule":["10ms","10ms"],"max_age":"1h"}}`, rc.srv.URL+"/flaky"))

	// A fresh route: nothing yet.
	st, raw := e.status(e.tenantA, a.ID)
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := []string{"circuit", "cursor", "dead_letters", "failing_since", "in_flight", "lag", "last_success_at", "state"}; !slices.Equal(keys, want) {
		t.Fatalf("status fields %v, want %v", keys, want)
	}
	if *st.State != "active" || *st.Circuit != "closed" || *st.Lag != 0 || *st.InFlight != 0 || *st.DeadLetters != 0 ||
		st.LastSuccessAt != nil || st.FailingSince != nil || len(*st.Cursor) != 32 || *st.Cursor < a.StartPosition {
		t.Fatalf("fresh status %s", mustJSON(t, st))
	}
	if got := e.deliveries(e.tenantA, a.ID, ""); len(got) != 0 {
		t.Fatalf("fresh deliveries %+v", got)
	}

	// Three acme events reach A once each.
	ids := e.appendTo("order-1", `[{"type":"order.created","tenant":"acme","data":{"n":1}},
		{"type":"order.paid","tenant":"acme","data":{"n":2}},{"type":"order.shipped","tenant":"acme","data":{"n":3}}]`)
	eventually(t, "A's three deliveries", func() bool { return len(rc.ids("/ok")) == 3 })
	if got := rc.ids("/ok"); !slices.Equal(sorted(got), sorted(ids)) { // concurrent: any order
		t.Fatalf("A received %v, want %v", got, ids)
	}
	eventually(t, "A's status to settle", func() bool {
		st, _ = e.status(e.tenantA, a.ID)
		return *st.Lag == 0 && *st.InFlight == 0 && st.LastSuccessAt != nil && len(e.deliveries(e.tenantA, a.ID, "")) == 3
	})
	if *st.Circuit != "closed" || *st.DeadLetters != 0 || st.FailingSince != nil || len(*st.Cursor) != 32 {
		t.Fatalf("A status %s", mustJSON(t, st))
	}
	if _, err := time.Parse(time.RFC3339Nano, *st.LastSuccessAt); err != nil {
		t.Fatalf("last_success_at %q: %v", *st.LastSuccessAt, err)
	}

	// Deliveries: newest first, exactly API.md's fields (plus status).
	r := e.do("GET", "/v1/subscriptions/"+a.ID+"/deliveries", e.tenantA, nil).want(t, http.StatusOK)
	var rawList struct {
		Attempts []map[string]json.RawMessage `json:"attempts"`
	}
	r.decode(t, &rawList)
	for _, m := range rawList.Attempts {
		var fields []string
		for k := range m {
			fields = append(fields, k)
		}
		sort.Strings(fields)
		if want := []string{"at", "attempt", "duration_ms", "error", "event_id", "id", "replay_id", "status", "status_code"}; !slices.Equal(fields, want) {
			t.Fatalf("attempt fields %v, want %v", fields, want)
		}
	}
	// Newest first by the time of the attempt (concurrent deliveries end in
	// any order).
	got := e.deliveries(e.tenantA, a.ID, "")
	var gotEvents []string
	for i, at := range got {
		gotEvents = append(gotEvents, at.EventID)
		if at.Attempt != 1 || at.Status != "succeeded" || at.StatusCode == nil || *at.StatusCode != 200 ||
			at.Error != nil || at.ReplayID != nil || at.DurationMS <= 0 || at.DurationMS > 15000 {
			t.Fatalf("attempt %d: %+v", i, at)
		}
		if _, err := uuid.Parse(at.ID); err != nil {
			t.Fatalf("attempt id %q", at.ID)
		}
		ts, err := time.Parse(time.RFC3339Nano, at.At)
		if err != nil || time.Since(ts) > time.Minute {
			t.Fatalf("at %q: %v", at.At, err)
		}
		if i > 0 && at.At > got[i-1].At {
			t.Fatalf("attempts not newest first: %+v", got)
		}
	}
	if !slices.Equal(sorted(gotEvents), sorted(ids)) {
		t.Fatalf("attempts of events %v, want %v", gotEvents, ids)
	}
	if l := e.deliveries(e.tenantA, a.ID, "?limit=2"); len(l) != 2 || l[0].ID != got[0].ID || l[1].ID != got[1].ID {
		t.Fatalf("limit=2: %+v", l)
	}
	if got := e.deliveries(e.tenantA, a.ID, "?event_id="+ids[1]); len(got) != 1 || got[0].EventID != ids[1] {
		t.Fatalf("event_id: %+v", got)
	}
	if got := e.deliveries(e.tenantA, a.ID, "?event_id="+uuid.NewString()); len(got) != 0 {
		t.Fatalf("unknown event_id: %+v", got)
	}
	if l := e.deliveries(e.tenantA, a.ID, "?status=succeeded&limit=1"); len(l) != 1 || l[0].ID != got[0].ID {
		t.Fatalf("status=succeeded: %+v", l)
	}
	for _, q := range []string{"?status=failed", "?status=dead"} {
		if got := e.deliveries(e.tenantA, a.ID, q); len(got) != 0 {
			t.Fatalf("%s: %+v", q, got)
		}
	}

	// B: one event, three failed attempts, then a dead letter.
	failID := e.appendTo("fail-1", `[{"type":"order.created","data":{}}]`)[0]
	eventually(t, "B's dead letter", func() bool {
		st, _ = e.status(e.admin, b.ID)
		return *st.DeadLetters == 1
	})
	if st.FailingSince == nil || *st.Lag != 0 || *st.State != "active" {
		t.Fatalf("B status after the dead letter %s", mustJSON(t, st))
	}
	if got := rc.ids("/flaky"); !slices.Equal(got, []string{failID, failID, failID}) {
		t.Fatalf("/flaky received %v, want the event three times", got)
	}
	dead := e.deliveries(e.admin, b.ID, "?status=dead")
	if len(dead) != 1 || dead[0].Attempt != 3 || dead[0].EventID != failID || *dead[0].StatusCode != 500 || dead[0].Error == nil {
		t.Fatalf("status=dead: %+v", dead)
	}
	failed := e.deliveries(e.admin, b.ID, "?status=failed")
	if len(failed) != 2 || failed[0].Attempt != 2 || failed[1].Attempt != 1 {
		t.Fatalf("status=failed: %+v", failed)
	}
	if all := e.deliveries(e.admin, b.ID, ""); len(all) != 3 || all[0].Attempt != 3 || all[2].Attempt != 1 {
		t.Fatalf("B deliveries: %+v", all)
	}

	// The endpoint recovers; redrive re-queues the dead letter, which is
	// delivered (attempt 4) with the same webhook-id.
	rc.flakyStatus.Store(http.StatusOK)
	var rd struct {
		Requeued *int `json:"requeued"`
	}
	e.do("POST", "/v1/subscriptions/"+b.ID+"/redrive", e.admin, nil).want(t, http.StatusOK).decode(t, &rd)
	if rd.Requeued == nil || *rd.Requeued != 1 {
		t.Fatalf("redrive answered %+v", rd)
	}
	eventually(t, "the redriven delivery", func() bool {
		ok := e.deliveries(e.admin, b.ID, "?status=succeeded")
		return len(ok) == 1 && ok[0].Attempt == 4 && ok[0].EventID == failID
	})
	if got := rc.ids("/flaky"); len(got) != 4 || got[3] != failID {
		t.Fatalf("/flaky received %v after the redrive", got)
	}
	eventually(t, "B's status to recover", func() bool {
		st, _ = e.status(e.admin, b.ID)
		return *st.DeadLetters == 0 && st.FailingSince == nil && st.LastSuccessAt != nil
	})
	e.do("POST", "/v1/subscriptions/"+b.ID+"/redrive", e.admin, `{}`).want(t, http.StatusOK).decode(t, &rd)
	if *rd.Requeued != 0 {
		t.Fatalf("second redrive moved %d", *rd.Requeued)
	}

	// A paused route says so.
	e.do("POST", "/v1/subscriptions/"+a.ID+"/pause", e.tenantA, nil).want(t, http.StatusOK)
	if st, _ = e.status(e.tenantA, a.ID); *st.State != "paused" {
		t.Fatalf("paused status %s", mustJSON(t, st))
	}

	// Scoping and validation.
	for _, rt := range []struct{ method, path string }{{"GET", "/status"}, {"GET", "/deliveries"}, {"POST", "/redrive"}} {
		e.do(rt.method, "/v1/subscriptions/"+a.ID+rt.path, e.tenantB, nil).want(t, http.StatusNotFound).problem(t)
		e.do(rt.method, "/v1/subscriptions/"+b.ID+rt.path, e.tenantA, nil).want(t, http.StatusNotFound).problem(t)
		e.do(rt.method, "/v1/subscriptions/"+uuid.NewString()+rt.path, e.admin, nil).want(t, http.StatusNotFound).problem(t)
		e.do(rt.method, "/v1/subscriptions/nope"+rt.path, e.admin, nil).want(t, http.StatusNotFound).problem(t)
		e.do(rt.method, "/v1/subscriptions/"+a.ID+rt.path, e.producer, nil).want(t, http.StatusForbidden).problem(t)
		e.do(rt.method, "/v1/subscriptions/"+a.ID+rt.path, "", nil).want(t, http.StatusUnauthorized).problem(t)
		e.do(rt.method, "/v1/subscriptions/"+a.ID+rt.path, e.admin, nil).want(t, http.StatusOK)
	}
	for q, field := range map[string]string{"?status=ok": "status", "?limit=0": "limit", "?limit=1001": "limit", "?limit=x": "limit", "?event_id=nope": "event_id"} {
		p := e.do("GET", "/v1/subscriptions/"+a.ID+"/deliveries"+q, e.tenantA, nil).want(t, http.StatusBadRequest).problem(t)
		if p.Errors[field] == "" {
			t.Errorf("%s: errors %v lack %s", q, p.Errors, field)
		}
	}
	p := e.do("POST", "/v1/subscriptions/"+b.ID+"/redrive", e.admin, `{"all":true}`).want(t, http.StatusBadRequest).problem(t)
	if p.Errors["all"] == "" {
		t.Errorf("redrive with a body: %+v", p)
	}
	if got := strings.Count(strings.Join(rc.ids("/ok"), ","), ids[0]); got != 1 {
		t.Fatalf("A received event %s %d times", ids[0], got)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
