package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hooklog/hooklog/apikeys"
	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/esdb"
	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

// backend opens a fresh store owned by t.
type backend struct {
	name string
	open func(t testing.TB) eventstore.Store
}

func backends() []backend {
	return []backend{
		{"embedded", func(t testing.TB) eventstore.Store {
			s, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true})
			if err != nil {
				t.Fatalf("open embedded: %v", err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"postgres", func(t testing.TB) eventstore.Store { return pgtest.NewStore(t) }},
		{"esdb", openESDB},
	}
}

// openESDB opens the esdb backend on an in-process KurrentDB test server
// (a real gRPC server on 127.0.0.1), with side state in a fresh schema.
func openESDB(t testing.TB) eventstore.Store {
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
	return s
}

// forEachBackend runs fn as a parallel subtest per backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, newEnv(t, b.open(t)))
		})
	}
}

// env is a running API over a real store, with one key per role.
type env struct {
	t        *testing.T
	store    eventstore.Store
	api      *Server
	srv      *httptest.Server
	client   *http.Client
	admin    string
	producer string
	tenantA  string // tenant "acme"
	tenantB  string // tenant "globex"
}

// testKeys are the plaintexts of one key per role.
type testKeys struct {
	admin, producer, tenantA, tenantB string
}

// testDeps builds the real services over store, started, with one real API
// key per role. Its projector is not started (the tests' subscriptions point
// at public addresses that must not be called); the status, deliveries and
// redrive routes work on it all the same.
func testDeps(t testing.TB, store eventstore.Store) (Deps, testKeys) {
	t.Helper()
	return newDeps(t, store, depsOptions{})
}

// depsOptions vary newDeps for the tests that deliver.
type depsOptions struct {
	// deliver allows subscriptions on 127.0.0.1 and starts the projector.
	deliver bool
	// projector configures it (Logger and Delivery.AllowPrivateNetworks are set).
	projector projector.Config
}

func newDeps(t testing.TB, store eventstore.Store, o depsOptions) (Deps, testKeys) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subs, err := subscriptions.New(store, subscriptions.Config{Logger: quietLogger(), Resolver: noDNS, AllowPrivateNetworks: o.deliver})
	if err != nil {
		t.Fatalf("subscriptions.New: %v", err)
	}
	if err := subs.Start(ctx); err != nil {
		t.Fatalf("subscriptions.Start: %v", err)
	}
	t.Cleanup(subs.Stop)
	keys, err := apikeys.New(store, apikeys.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("apikeys.New: %v", err)
	}
	if err := keys.Start(ctx); err != nil {
		t.Fatalf("apikeys.Start: %v", err)
	}
	t.Cleanup(keys.Stop)
	mk := func(name string, role apikeys.Role, tenant string) string {
		_, plaintext, err := keys.Create(ctx, name, role, tenant)
		if err != nil {
			t.Fatalf("create %s key: %v", role, err)
		}
		return plaintext
	}
	tk := testKeys{
		admin:    mk("test admin", apikeys.RoleAdmin, ""),
		producer: mk("test producer", apikeys.RoleProducer, ""),
		tenantA:  mk("acme", apikeys.RoleTenant, "acme"),
		tenantB:  mk("globex", apikeys.RoleTenant, "globex"),
	}
	state, ok := store.(eventstore.StateStore)
	if !ok {
		t.Fatalf("%T does not implement eventstore.StateStore", store)
	}
	pcfg := o.projector
	pcfg.Logger = quietLogger()
	pcfg.Delivery.AllowPrivateNetworks = o.deliver
	p, err := projector.New(pcfg, projector.Deps{Store: store, State: state, Subs: subs})
	if err != nil {
		t.Fatalf("projector.New: %v", err)
	}
	if o.deliver {
		if err := p.Start(ctx); err != nil {
			t.Fatalf("projector.Start: %v", err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("projector.Stop: %v", err)
		}
	})
	return Deps{Store: store, Subscriptions: subs, Keys: keys, Projector: p}, tk
}

// noDNS resolves from /etc/hosts only: tests never leave 127.0.0.1, and a
// name that does not resolve is accepted at creation (API.md).
var noDNS = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("tests do not use DNS")
}}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T, store eventstore.Store) *env {
	t.Helper()
	return newEnvConfig(t, store, Config{})
}

func newEnvConfig(t *testing.T, store eventstore.Store, cfg Config) *env {
	t.Helper()
	return newEnvOptions(t, store, cfg, depsOptions{})
}

func newEnvOptions(t *testing.T, store eventstore.Store, cfg Config, o depsOptions) *env {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	deps, keys := newDeps(t, store, o)
	e := &env{t: t, store: store, admin: keys.admin, producer: keys.producer, tenantA: keys.tenantA, tenantB: keys.tenantB}
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	e.api = s
	e.srv = httptest.NewServer(s)
	t.Cleanup(e.srv.Close)
	e.client = e.srv.Client()
	return e
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// problem decodes a problem document and checks its content type.
func (r *response) problem(t *testing.T) problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content-type %q, want application/problem+json (status %d, body %s)", ct, r.status, r.body)
	}
	var p problem
	r.decode(t, &p)
	if p.Status != r.status || p.Type == "" || p.Title == "" {
		t.Fatalf("problem %+v does not match status %d", p, r.status)
	}
	return p
}

// do sends a request. body may be nil, a string/[]byte (sent raw) or a value
// (sent as JSON).
func (e *env) do(method, path, key string, body any) *response {
	e.t.Helper()
	return e.doCtx(context.Background(), method, path, key, body)
}

func (e *env) doCtx(ctx context.Context, method, path, key string, body any) *response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: raw}
}

// want fails unless r has status.
func (r *response) want(t *testing.T, status int) *response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

func (e *env) head() eventstore.Position {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := e.store.Head(ctx)
	if err != nil {
		e.t.Fatalf("head: %v", err)
	}
	return h
}

// unchanged fails if the log's head moved since before.
func (e *env) unchanged(before eventstore.Position) {
	e.t.Helper()
	if after := e.head(); after != before {
		e.t.Fatalf("log head moved from %s to %s after a rejected request", before, after)
	}
}
