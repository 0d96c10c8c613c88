package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestOperationalRoutes(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		r := e.do("GET", "/healthz", "", nil).want(t, http.StatusOK)
		if string(r.body) != "{\"status\":\"ok\"}\n" {
			t.Fatalf("healthz %s", r.body)
		}
		e.do("GET", "/readyz", "", nil).want(t, http.StatusOK)

		r = e.do("GET", "/v1/openapi.json", "", nil).want(t, http.StatusOK)
		var doc map[string]any
		if err := json.Unmarshal(r.body, &doc); err != nil || doc["openapi"] != "3.1.0" {
			t.Fatalf("openapi.json: %v %v", err, doc["openapi"])
		}

		// Unknown routes and methods are problem documents too.
		e.do("GET", "/v2/nothing", "", nil).want(t, http.StatusNotFound).problem(t)
		e.do("GET", "/v1/events/", e.admin, nil).want(t, http.StatusNotFound).problem(t)
		r = e.do("PUT", "/v1/subscriptions", e.admin, `{}`).want(t, http.StatusMethodNotAllowed)
		r.problem(t)
		if allow := r.header.Get("Allow"); allow != "GET, POST" {
			t.Fatalf("Allow %q", allow)
		}

		// Metrics: requests by route template and status, and append counters.
		e.appendOK("m-1", `{"events":[{"type":"a.b","data":{}},{"type":"a.b","data":{}}]}`)
		e.do("POST", "/v1/streams/m-1/events", e.producer, `{"events":[]}`).want(t, http.StatusBadRequest)
		r = e.do("GET", "/metrics", "", nil).want(t, http.StatusOK)
		text := string(r.body)
		for _, want := range []string{
			`hooklog_http_requests_total{code="201",method="POST",route="/v1/streams/{stream}/events"} 1`,
			`hooklog_http_requests_total{code="400",method="POST",route="/v1/streams/{stream}/events"} 1`,
			`hooklog_http_requests_total{code="404",method="GET",route="unmatched"} 2`,
			`hooklog_http_requests_total{code="405",method="PUT",route="unmatched"} 1`,
			`hooklog_http_request_duration_seconds_count{code="200",method="GET",route="/healthz"} 1`,
			`hooklog_api_append_requests_total{result="created"} 1`,
			`hooklog_api_append_requests_total{result="rejected"} 1`,
			`hooklog_api_appended_events_total 2`,
			`hooklog_api_pull_waiting_requests 0`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if t.Failed() {
			t.Logf("/metrics:\n%s", text)
		}
	})
}

func TestReadyzWhenStoreClosed(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		if err := e.store.Close(); err != nil {
			t.Fatal(err)
		}
		e.do("GET", "/readyz", "", nil).want(t, http.StatusServiceUnavailable).problem(t)
		e.do("GET", "/healthz", "", nil).want(t, http.StatusOK)
		// A closed store is 503, never a 500 or a panic.
		e.do("POST", "/v1/streams/s/events", e.producer, `{"events":[{"type":"a.b","data":{}}]}`).want(t, http.StatusServiceUnavailable).problem(t)
		e.do("GET", "/v1/events?wait=1s", e.producer, nil).want(t, http.StatusServiceUnavailable)
	})
}

func TestConfig(t *testing.T) {
	t.Parallel()
	store := backends()[0].open(t)
	deps, _ := testDeps(t, store)
	for _, c := range []struct {
		cfg  Config
		deps Deps
		want string
	}{
		{Config{MaxBody: -1}, deps, "MaxBody"},
		{Config{MaxWait: -time.Second}, deps, "MaxWait"},
		{Config{}, Deps{Subscriptions: deps.Subscriptions, Keys: deps.Keys, Projector: deps.Projector}, "Store"},
		{Config{}, Deps{Store: store, Keys: deps.Keys, Projector: deps.Projector}, "Subscriptions"},
		{Config{}, Deps{Store: store, Subscriptions: deps.Subscriptions, Projector: deps.Projector}, "Keys"},
		{Config{}, Deps{Store: store, Subscriptions: deps.Subscriptions, Keys: deps.Keys}, "Projector"},
	} {
		if _, err := New(c.cfg, c.deps); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
	// The same registry twice is refused, not a panic.
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Registry: reg, Logger: quietLogger()}, deps); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Registry: reg, Logger: quietLogger()}, deps); err == nil {
		t.Fatal("a second server on the same registry was accepted")
	}
	// Defaults.
	s, err := New(Config{Logger: quietLogger()}, deps)
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.MaxBody != DefaultMaxBody || s.cfg.MaxWait != DefaultMaxWait || s.cfg.Registry == nil {
		t.Fatalf("defaults %+v", s.cfg)
	}
}

func TestMaxBodyConfig(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnvConfig(t, b.open(t), Config{MaxBody: 200})
			head := e.head()
			e.do("POST", "/v1/streams/s/events", e.producer, `{"events":[{"type":"a.b","data":{"x":"`+strings.Repeat("x", 200)+`"}}]}`).
				want(t, http.StatusRequestEntityTooLarge).problem(t)
			e.unchanged(head)
			e.do("POST", "/v1/streams/s/events", e.producer, `{"events":[{"type":"a.b","data":{}}]}`).want(t, http.StatusCreated)
		})
	}
}
