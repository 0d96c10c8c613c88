package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hooklog/hooklog/apikeys"
	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

type appendedOut struct {
	Events []appendedJSON `json:"events"`
}

type pullOut struct {
	Events []eventJSON `json:"events"`
	Next   string      `json:"next"`
}

type streamOut struct {
	Events          []eventJSON `json:"events"`
	NextFromVersion int64       `json:"next_from_version"`
}

// appendOK appends one request's events over HTTP and checks 201.
func (e *env) appendOK(stream string, body string) appendedOut {
	e.t.Helper()
	var out appendedOut
	e.do("POST", "/v1/streams/"+stream+"/events", e.producer, body).want(e.t, http.StatusCreated).decode(e.t, &out)
	e.settle(out.Events[len(out.Events)-1].Position)
	return out
}

// settle waits until the store's settled head has reached pos. On PostgreSQL
// an event becomes readable by ReadAll only once every older transaction in
// the cluster has ended, which other tests running at the same time delay.
func (e *env) settle(pos string) {
	e.t.Helper()
	p, err := eventstore.ParsePosition(pos)
	if err != nil {
		e.t.Fatalf("position %q: %v", pos, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		h, err := e.store.Head(ctx)
		if err != nil {
			e.t.Fatalf("head: %v", err)
		}
		if !h.Less(p) {
			return
		}
		if err := e.store.Wait(ctx, h); err != nil {
			e.t.Fatalf("waiting for %s to settle (head %s): %v", pos, h, err)
		}
	}
}

// appendStore appends straight to the store (for internal streams and setup).
func (e *env) appendStore(stream, typ, tenant string) eventstore.AppendedEvent {
	e.t.Helper()
	res, err := e.store.Append(context.Background(), eventstore.AppendParams{Stream: stream,
		Events: []eventstore.ProposedEvent{{Type: typ, Tenant: tenant, Data: json.RawMessage(`{"n":1}`)}}})
	if err != nil {
		e.t.Fatalf("store append: %v", err)
	}
	e.settle(res.Events[0].Position.String())
	return res.Events[0]
}

func (e *env) pull(key, query string) pullOut {
	e.t.Helper()
	var out pullOut
	e.do("GET", "/v1/events?"+query, key, nil).want(e.t, http.StatusOK).decode(e.t, &out)
	return out
}

var recordedAtRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

func TestAppendAndRead(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		id := uuid.New()
		body := fmt.Sprintf(`{"expected_version":"no_stream","events":[
			{"id":%q,"type":"order.created","tenant":"acme","data":{"total":10},"metadata":{"trace":"t1"}},
			{"type":"order.paid","data":{}}]}`, id)
		out := e.appendOK("order-1", body)
		if len(out.Events) != 2 || out.Events[0].ID != id.String() || out.Events[0].Version != 0 || out.Events[1].Version != 1 {
			t.Fatalf("append response %+v", out)
		}
		if len(out.Events[0].Position) != 32 || !(out.Events[0].Position < out.Events[1].Position) {
			t.Fatalf("positions %q, %q do not sort in log order", out.Events[0].Position, out.Events[1].Position)
		}
		if _, err := uuid.Parse(out.Events[1].ID); err != nil {
			t.Fatalf("generated id %q: %v", out.Events[1].ID, err)
		}

		// The exact wire shape of an event.
		r := e.do("GET", "/v1/events/"+id.String(), e.producer, nil).want(t, http.StatusOK)
		var raw map[string]json.RawMessage
		r.decode(t, &raw)
		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if want := []string{"data", "id", "metadata", "position", "recorded_at", "stream", "tenant", "type", "version"}; !slices.Equal(keys, want) {
			t.Fatalf("event keys %v, want %v", keys, want)
		}
		var ev eventJSON
		r.decode(t, &ev)
		if ev.Stream != "order-1" || ev.Type != "order.created" || ev.Tenant == nil || *ev.Tenant != "acme" ||
			string(ev.Data) != `{"total":10}` || string(ev.Metadata) != `{"trace":"t1"}` || ev.Position != out.Events[0].Position || ev.Version != 0 {
			t.Fatalf("event %+v", ev)
		}
		if !recordedAtRE.MatchString(ev.RecordedAt) {
			t.Fatalf("recorded_at %q is not RFC 3339 with microseconds in UTC", ev.RecordedAt)
		}

		// No tenant is JSON null; no metadata is {}.
		r = e.do("GET", "/v1/events/"+out.Events[1].ID, e.admin, nil).want(t, http.StatusOK)
		r.decode(t, &raw)
		if string(raw["tenant"]) != "null" || string(raw["metadata"]) != "{}" {
			t.Fatalf("tenant %s metadata %s, want null and {}", raw["tenant"], raw["metadata"])
		}

		// Pull and stream reads return both, in order.
		p := e.pull(e.producer, "")
		if len(p.Events) != 2 || p.Events[0].ID != id.String() || p.Next != out.Events[1].Position {
			t.Fatalf("pull %+v", p)
		}
		var so streamOut
		e.do("GET", "/v1/streams/order-1/events?from_version=1", e.producer, nil).want(t, http.StatusOK).decode(t, &so)
		if len(so.Events) != 1 || so.Events[0].Version != 1 || so.NextFromVersion != 2 {
			t.Fatalf("stream read %+v", so)
		}
		e.do("GET", "/v1/streams/nothing-here/events", e.producer, nil).want(t, http.StatusOK).decode(t, &so)
		if len(so.Events) != 0 || so.NextFromVersion != 0 {
			t.Fatalf("empty stream read %+v", so)
		}

		// Expected version as a number continues the stream.
		out = e.appendOK("order-1", `{"expected_version":1,"events":[{"type":"order.shipped","data":{}}]}`)
		if out.Events[0].Version != 2 {
			t.Fatalf("version %d, want 2", out.Events[0].Version)
		}
		e.appendOK("order-1", `{"expected_version":"exists","events":[{"type":"order.closed","data":{}}]}`)
		e.appendOK("order-2", `{"expected_version":"any","events":[{"type":"order.created","data":{}}]}`)
	})
}

func TestAppendIdempotentOverHTTP(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		a, b := uuid.New(), uuid.New()
		body := fmt.Sprintf(`{"events":[{"id":%q,"type":"payment.succeeded","data":{}},{"id":%q,"type":"payment.succeeded","data":{}}]}`, a, b)
		first := e.appendOK("pay-1", body)
		head := e.head()

		var again appendedOut
		// A retry is 200 with the original positions, even with a stale expected_version.
		retry := strings.Replace(body, `{"events"`, `{"expected_version":"no_stream","events"`, 1)
		e.do("POST", "/v1/streams/pay-1/events", e.producer, retry).want(t, http.StatusOK).decode(t, &again)
		if !slices.Equal(first.Events, again.Events) {
			t.Fatalf("retry returned %+v, want %+v", again.Events, first.Events)
		}
		e.unchanged(head)

		// Mixing a known id with a new one is 409 and writes nothing.
		mixed := fmt.Sprintf(`{"events":[{"id":%q,"type":"payment.succeeded","data":{}},{"id":%q,"type":"payment.succeeded","data":{}}]}`, a, uuid.New())
		p := e.do("POST", "/v1/streams/pay-1/events", e.producer, mixed).want(t, http.StatusConflict).problem(t)
		if !strings.Contains(p.Type, "id-conflict") {
			t.Fatalf("problem %+v", p)
		}
		e.unchanged(head)

		// The same id in another stream is a conflict too.
		e.do("POST", "/v1/streams/pay-2/events", e.producer, fmt.Sprintf(`{"events":[{"id":%q,"type":"payment.succeeded","data":{}}]}`, a)).
			want(t, http.StatusConflict)
		e.unchanged(head)
	})
}

func TestAppendRejections(t *testing.T) {
	t.Parallel()
	ev := func(fields string) string { return `{"events":[{` + fields + `}]}` }
	dup := uuid.New()
	many := `{"events":[` + strings.Repeat(`{"type":"a.b","data":{}},`, eventstore.MaxEventsPerAppend) + `{"type":"a.b","data":{}}]}`
	cases := []struct {
		name   string
		stream string
		key    string // "" = producer; "-" = none
		body   string
		status int
		field  string // expected key of errors, if any
	}{
		{"bad stream name", "-order", "", ev(`"type":"a.b","data":{}`), 400, "stream"},
		{"internal stream", "hooklog-keys", "", ev(`"type":"a.b","data":{}`), 400, "stream"},
		{"internal stream by admin", "hooklog-subscriptions", "admin", ev(`"type":"a.b","data":{}`), 400, "stream"},
		{"missing type", "s", "", ev(`"data":{}`), 400, "events[0].type"},
		{"bad type", "s", "", ev(`"type":"Order Created","data":{}`), 400, "events[0].type"},
		{"undotted type", "s", "", ev(`"type":"order","data":{}`), 400, "events[0].type"},
		{"type not a string", "s", "", ev(`"type":5,"data":{}`), 400, "events.type"},
		{"data array", "s", "", ev(`"type":"a.b","data":[1]`), 400, "events[0].data"},
		{"data string", "s", "", ev(`"type":"a.b","data":"x"`), 400, "events[0].data"},
		{"data null", "s", "", ev(`"type":"a.b","data":null`), 400, "events[0].data"},
		{"data missing", "s", "", ev(`"type":"a.b"`), 400, "events[0].data"},
		// Bytes the request's JSON decoder passes through but jsonb (and so
		// every backend) refuses.
		{"data invalid utf-8", "s", "", ev("\"type\":\"a.b\",\"data\":{\"a\":\"\xff\"}"), 400, "events[0].data"},
		{"data lone surrogate", "s", "", ev(`"type":"a.b","data":{"a":"\ud800"}`), 400, "events[0].data"},
		{"data NUL escape", "s", "", ev(`"type":"a.b","data":{"a":"\u0000"}`), 400, "events[0].data"},
		{"metadata array", "s", "", ev(`"type":"a.b","data":{},"metadata":[]`), 400, "events[0].metadata"},
		{"id not uuid", "s", "", ev(`"id":"order-1","type":"a.b","data":{}`), 400, "events[0].id"},
		{"id nil uuid", "s", "", ev(`"id":"00000000-0000-0000-0000-000000000000","type":"a.b","data":{}`), 400, "events[0].id"},
		{"bad tenant", "s", "", ev(`"type":"a.b","tenant":"no spaces","data":{}`), 400, "events[0].tenant"},
		{"empty tenant", "s", "", ev(`"type":"a.b","tenant":"","data":{}`), 400, "events[0].tenant"},
		{"duplicate ids", "s", "", fmt.Sprintf(`{"events":[{"id":%q,"type":"a.b","data":{}},{"id":%q,"type":"a.b","data":{}}]}`, dup, dup), 400, "events[1].id"},
		{"no events", "s", "", `{"events":[]}`, 400, "events"},
		{"events missing", "s", "", `{}`, 400, "events"},
		{"too many events", "s", "", many, 400, "events"},
		{"bad expected_version", "s", "", `{"expected_version":"maybe","events":[{"type":"a.b","data":{}}]}`, 400, "expected_version"},
		{"negative expected_version", "s", "", `{"expected_version":-1,"events":[{"type":"a.b","data":{}}]}`, 400, "expected_version"},
		{"unknown field", "s", "", `{"events":[{"type":"a.b","data":{}}],"expected":"any"}`, 400, "expected"},
		{"unknown event field", "s", "", ev(`"type":"a.b","data":{},"payload":{}`), 400, "payload"},
		{"malformed json", "s", "", `{"events":[{"type":"a.b",`, 400, ""},
		{"syntax error", "s", "", `{"events":[{"type":"a.b" "data":{}}]}`, 400, ""},
		{"empty body", "s", "", ``, 400, ""},
		{"not an object", "s", "", `[1,2]`, 400, ""},
		{"trailing data", "s", "", `{"events":[{"type":"a.b","data":{}}]} {}`, 400, ""},
		{"wrong version", "existing", "", `{"expected_version":"no_stream","events":[{"type":"a.b","data":{}}]}`, 409, ""},
		{"wrong exact version", "existing", "", `{"expected_version":7,"events":[{"type":"a.b","data":{}}]}`, 409, ""},
		{"no stream for exists", "fresh", "", `{"expected_version":"exists","events":[{"type":"a.b","data":{}}]}`, 409, ""},
		{"oversized body", "s", "", `{"events":[{"type":"a.b","data":{"x":"` + strings.Repeat("x", 1<<20) + `"}}]}`, 413, ""},
		{"no key", "s", "-", ev(`"type":"a.b","data":{}`), 401, ""},
		{"unknown key", "s", "bogus", ev(`"type":"a.b","data":{}`), 401, ""},
		{"tenant key", "s", "tenant", ev(`"type":"a.b","data":{}`), 403, ""},
	}
	forEachBackend(t, func(t *testing.T, e *env) {
		e.appendOK("existing", `{"events":[{"type":"a.b","data":{}}]}`)
		head := e.head()
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				key := map[string]string{"": e.producer, "-": "", "admin": e.admin, "bogus": "not-a-key", "tenant": e.tenantA}[c.key]
				r := e.do("POST", "/v1/streams/"+c.stream+"/events", key, c.body)
				if r.status != c.status {
					t.Fatalf("status %d, want %d; body %s", r.status, c.status, r.body)
				}
				p := r.problem(t)
				if c.field != "" {
					if _, ok := p.Errors[c.field]; !ok {
						t.Fatalf("errors %v lack field %q", p.Errors, c.field)
					}
				}
				if c.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("401 without WWW-Authenticate: %v", r.header)
				}
				e.unchanged(head)
			})
		}
	})
}

func TestPullAPI(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		// Only internal events (the test keys) so far: hidden, but next moves past them.
		p := e.pull(e.producer, "")
		if len(p.Events) != 0 || len(p.Next) != 32 || p.Next != e.head().String() {
			t.Fatalf("log of internal events only: %+v, head %s", p, e.head())
		}

		for i := range 5 {
			e.appendOK(fmt.Sprintf("order-%d", i), `{"events":[{"type":"order.created","data":{}},{"type":"payment.succeeded","data":{}}]}`)
		}
		e.appendOK("invoice-1", `{"events":[{"type":"invoice.sent","data":{}}]}`)

		// Paging with limit visits every event once, in order.
		var all []eventJSON
		after := ""
		for range 20 {
			p := e.pull(e.producer, "limit=3&after="+after)
			all = append(all, p.Events...)
			if p.Next == after {
				break
			}
			after = p.Next
		}
		if len(all) != 11 {
			t.Fatalf("paged %d events, want 11", len(all))
		}
		for i := 1; i < len(all); i++ {
			if !(all[i-1].Position < all[i].Position) {
				t.Fatalf("out of order at %d", i)
			}
		}

		// Filters: exact and trailing wildcard, comma-separated.
		p = e.pull(e.producer, "types=payment.*")
		if len(p.Events) != 5 {
			t.Fatalf("types=payment.*: %d events", len(p.Events))
		}
		p = e.pull(e.producer, "types="+url.QueryEscape("order.created,invoice.sent"))
		if len(p.Events) != 6 {
			t.Fatalf("two types: %d events", len(p.Events))
		}
		p = e.pull(e.producer, "streams=order-1,invoice-*")
		if len(p.Events) != 3 {
			t.Fatalf("streams: %d events", len(p.Events))
		}
		// next moves past scanned, non-matching events.
		p = e.pull(e.producer, "types=nothing.matches")
		if len(p.Events) != 0 || p.Next != all[10].Position {
			t.Fatalf("no match: %+v, want next %s", p, all[10].Position)
		}
		// after=now starts at the head.
		p = e.pull(e.producer, "after=now")
		if len(p.Events) != 0 || p.Next != all[10].Position {
			t.Fatalf("after=now: %+v", p)
		}
		p = e.pull(e.producer, "after="+all[9].Position)
		if len(p.Events) != 1 || p.Events[0].ID != all[10].ID {
			t.Fatalf("after cursor: %+v", p)
		}

		head := e.head()
		for _, q := range []struct{ query, field string }{
			{"after=xyz", "after"},
			{"after=0000000000000000000000000000000A", "after"},
			{"after=00000000000000000000000000000000a", "after"},
			{"limit=0", "limit"},
			{"limit=1001", "limit"},
			{"limit=ten", "limit"},
			{"wait=5", "wait"},
			{"wait=-1s", "wait"},
			{"types=a*b", "types"},
			{"streams=*x", "streams"},
		} {
			r := e.do("GET", "/v1/events?"+q.query, e.producer, nil).want(t, http.StatusBadRequest)
			if pr := r.problem(t); pr.Errors[q.field] == "" {
				t.Fatalf("%s: errors %v lack %q", q.query, pr.Errors, q.field)
			}
		}
		e.do("GET", "/v1/events", "", nil).want(t, http.StatusUnauthorized)
		e.do("GET", "/v1/events", "nope", nil).want(t, http.StatusUnauthorized)
		e.unchanged(head)
	})
}

func TestTenantIsolationEvents(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		acme := e.appendOK("order-1", `{"events":[{"type":"order.created","tenant":"acme","data":{}}]}`)
		globex := e.appendOK("order-1", `{"events":[{"type":"order.created","tenant":"globex","data":{}}]}`)
		e.appendOK("order-1", `{"events":[{"type":"order.created","data":{}}]}`)
		e.appendOK("order-2", `{"events":[{"type":"order.created","tenant":"acme","data":{}}]}`)

		for _, c := range []struct {
			key  string
			want int
		}{{e.tenantA, 2}, {e.tenantB, 1}, {e.producer, 4}, {e.admin, 4}} {
			p := e.pull(c.key, "")
			if len(p.Events) != c.want {
				t.Fatalf("key %s sees %d events, want %d", c.key, len(p.Events), c.want)
			}
			for _, ev := range p.Events {
				if c.key == e.tenantA && (ev.Tenant == nil || *ev.Tenant != "acme") {
					t.Fatalf("acme saw %+v", ev)
				}
			}
		}
		// A tenant cannot widen its view with filters.
		if p := e.pull(e.tenantB, "streams=order-*&types=order.*"); len(p.Events) != 1 {
			t.Fatalf("globex with filters sees %d events", len(p.Events))
		}

		e.do("GET", "/v1/events/"+acme.Events[0].ID, e.tenantA, nil).want(t, http.StatusOK)
		e.do("GET", "/v1/events/"+globex.Events[0].ID, e.tenantA, nil).want(t, http.StatusNotFound).problem(t)
		e.do("GET", "/v1/events/"+globex.Events[0].ID, e.tenantB, nil).want(t, http.StatusOK)
		e.do("GET", "/v1/events/"+uuid.NewString(), e.admin, nil).want(t, http.StatusNotFound).problem(t)
		e.do("GET", "/v1/events/not-a-uuid", e.admin, nil).want(t, http.StatusNotFound).problem(t)

		// Stream reads are filtered for tenants; next_from_version still pages on.
		var so streamOut
		e.do("GET", "/v1/streams/order-1/events", e.tenantA, nil).want(t, http.StatusOK).decode(t, &so)
		if len(so.Events) != 1 || *so.Events[0].Tenant != "acme" || so.NextFromVersion != 3 {
			t.Fatalf("acme stream read %+v", so)
		}
		e.do("GET", "/v1/streams/order-1/events?limit=1&from_version=1", e.tenantA, nil).want(t, http.StatusOK).decode(t, &so)
		if len(so.Events) != 0 || so.NextFromVersion != 2 {
			t.Fatalf("acme filtered page %+v", so)
		}
		e.do("GET", "/v1/streams/order-1/events", e.producer, nil).want(t, http.StatusOK).decode(t, &so)
		if len(so.Events) != 3 {
			t.Fatalf("producer stream read %d events", len(so.Events))
		}
	})
}

func TestInternalStreamsHidden(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		e.appendOK("order-1", `{"events":[{"type":"order.created","tenant":"acme","data":{}}]}`)
		internal := e.appendStore("hooklog-subscriptions", "subscription.created", "acme")
		e.appendOK("order-2", `{"events":[{"type":"order.created","tenant":"acme","data":{}}]}`)

		for _, key := range []string{e.producer, e.tenantA, e.admin} {
			p := e.pull(key, "")
			if len(p.Events) != 2 {
				t.Fatalf("key %s sees %d events, want the 2 public ones", key, len(p.Events))
			}
			for _, ev := range p.Events {
				if eventstore.IsInternalStream(ev.Stream) {
					t.Fatalf("key %s saw internal event %+v", key, ev)
				}
			}
		}
		// Admins see them by asking explicitly.
		p := e.pull(e.admin, "streams=hooklog-subscriptions")
		if len(p.Events) != 1 || p.Events[0].ID != internal.ID.String() {
			t.Fatalf("admin streams=hooklog-subscriptions: %+v", p)
		}
		p = e.pull(e.admin, "streams=hooklog-*")
		if len(p.Events) != 5 { // the four test keys and the subscription
			t.Fatalf("admin streams=hooklog-*: %d events", len(p.Events))
		}
		p = e.pull(e.admin, "streams=hooklog-subscriptions,order-*")
		if len(p.Events) != 3 {
			t.Fatalf("admin streams=hooklog-subscriptions,order-*: %d events", len(p.Events))
		}
		e.do("GET", "/v1/events?streams=hooklog-*", e.producer, nil).want(t, http.StatusForbidden).problem(t)
		e.do("GET", "/v1/events?streams=hooklog-keys", e.tenantA, nil).want(t, http.StatusForbidden)

		e.do("GET", "/v1/events/"+internal.ID.String(), e.producer, nil).want(t, http.StatusNotFound)
		e.do("GET", "/v1/events/"+internal.ID.String(), e.tenantA, nil).want(t, http.StatusNotFound)
		e.do("GET", "/v1/events/"+internal.ID.String(), e.admin, nil).want(t, http.StatusOK)
		e.do("GET", "/v1/streams/hooklog-subscriptions/events", e.producer, nil).want(t, http.StatusForbidden)
		e.do("GET", "/v1/streams/hooklog-subscriptions/events", e.admin, nil).want(t, http.StatusOK)
	})
}

// pollResult is a long-poll's outcome, with when it arrived.
type pollResult struct {
	out pullOut
	r   *response
	at  time.Time
}

// startPoll sends GET /v1/events in the background and waits until the
// server is holding it, or until it has answered (a short wait can end
// between two looks on a loaded machine; the caller judges the answer).
func (e *env) startPoll(key, query string) <-chan pollResult {
	e.t.Helper()
	before := gaugeValue(e.api.m.inflightPolls)
	ch := make(chan pollResult, 1)
	go func() {
		r := e.doAsync("GET", "/v1/events?"+query, key)
		res := pollResult{r: r, at: time.Now()}
		if r.status == http.StatusOK {
			_ = json.Unmarshal(r.body, &res.out)
		}
		ch <- res
	}()
	deadline := time.Now().Add(5 * time.Second)
	for gaugeValue(e.api.m.inflightPolls) <= before {
		select {
		case res := <-ch:
			ch <- res
			return ch
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the poll %q never started waiting", query)
		}
		time.Sleep(time.Millisecond)
	}
	return ch
}

// doAsync is do without t.Fatal (safe off the test goroutine).
func (e *env) doAsync(method, path, key string) *response {
	req, _ := http.NewRequest(method, e.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := e.client.Do(req)
	if err != nil {
		return &response{status: -1, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return &response{status: resp.StatusCode, header: resp.Header, body: raw}
}

func TestLongPollWakesOnAppend(t *testing.T) {
	t.Parallel()
	// PostgreSQL's watcher also re-reads the head every PollInterval (100ms
	// by default), which alone would answer in 50ms on average: here it
	// polls every second, so a median under 200ms takes the append's
	// wake-up. (Not less often: the poll also bounds how long the watcher
	// backs off while another session's transaction holds rows back, which
	// CI's parallel packages do.)
	stores := backends()
	for i, b := range stores {
		if b.name == "postgres" {
			stores[i].open = func(t testing.TB) eventstore.Store {
				cfg := pgtest.Config(t, pgtest.Schema(t))
				cfg.PollInterval = time.Second
				return pgtest.OpenConfig(t, cfg)
			}
		}
	}
	for _, b := range stores {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testLongPollWakesOnAppend(t, newEnv(t, b.open(t)))
		})
	}
}

func testLongPollWakesOnAppend(t *testing.T, e *env) {
	e.appendOK("noise", `{"events":[{"type":"noise.made","data":{}}]}`)
	var latencies []time.Duration
	for round := range 5 {
		ch := e.startPoll(e.tenantA, "after=now&types=order.*&wait=10s")
		// A non-matching event and another tenant's event do not end the wait.
		e.appendOK("noise", `{"events":[{"type":"noise.made","tenant":"acme","data":{}}]}`)
		e.appendOK("order-x", `{"events":[{"type":"order.created","tenant":"globex","data":{}}]}`)
		select {
		case r := <-ch:
			t.Fatalf("round %d: returned early: %d %s", round, r.r.status, r.r.body)
		case <-time.After(30 * time.Millisecond):
		}
		start := time.Now()
		out := e.appendOK(fmt.Sprintf("order-%d", round), `{"events":[{"type":"order.created","tenant":"acme","data":{}}]}`)
		r := <-ch
		if r.r.status != http.StatusOK || len(r.out.Events) != 1 || r.out.Events[0].ID != out.Events[0].ID {
			t.Fatalf("round %d: %d %s", round, r.r.status, r.r.body)
		}
		if r.out.Next != out.Events[0].Position {
			t.Fatalf("next %s, want %s", r.out.Next, out.Events[0].Position)
		}
		latencies = append(latencies, r.at.Sub(start))
	}
	slices.Sort(latencies)
	t.Logf("append → long-poll response: %v", latencies)
	// The bound on the median tells a wake-up from the 1s poll and leaves
	// room for a loaded CI machine under -race (53ms seen there, 2-10ms on
	// a quiet one).
	if med := latencies[len(latencies)/2]; med > 200*time.Millisecond {
		t.Fatalf("median append → response %v, want ≤ 200ms (all: %v)", med, latencies)
	}
}

func TestLongPollTimesOut(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		first := e.appendOK("noise", `{"events":[{"type":"noise.made","data":{}}]}`)
		const wait = 300 * time.Millisecond
		start := time.Now()
		ch := e.startPoll(e.producer, "types=order.created&wait=300ms")
		r := <-ch
		took := r.at.Sub(start)
		if r.r.status != http.StatusOK || len(r.out.Events) != 0 {
			t.Fatalf("%d %s", r.r.status, r.r.body)
		}
		// next moved past the scanned, non-matching event.
		if r.out.Next != first.Events[0].Position {
			t.Fatalf("next %s, want %s", r.out.Next, first.Events[0].Position)
		}
		// Not much after: a loaded CI machine under -race adds tens of ms.
		if took < wait || took > wait+500*time.Millisecond {
			t.Fatalf("returned after %v, want %v (not before, not much after)", took, wait)
		}

		// Events appended during the wait that do not match still move next.
		// The wait leaves room for PostgreSQL's commit order: another test
		// binary's transaction (a migration, under -race) can hold the new
		// row back for a few hundred ms (seen in CI at 200ms).
		ch = e.startPoll(e.producer, "after=now&types=order.created&wait=1s")
		second := e.appendOK("noise", `{"events":[{"type":"noise.made","data":{}}]}`)
		r = <-ch
		if len(r.out.Events) != 0 || r.out.Next != second.Events[0].Position {
			t.Fatalf("next %s, want %s (%s)", r.out.Next, second.Events[0].Position, r.r.body)
		}
	})
}

func TestLongPollCappedAtMaxWait(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnvConfig(t, b.open(t), Config{MaxWait: 150 * time.Millisecond})
			start := time.Now()
			r := <-e.startPoll(e.producer, "wait=1h")
			took := r.at.Sub(start)
			// About 150ms, and far from the hour asked for (a loaded CI
			// machine under -race adds tens of ms).
			if r.r.status != http.StatusOK || took < 150*time.Millisecond || took > time.Second {
				t.Fatalf("status %d after %v, want 200 after ~150ms", r.r.status, took)
			}
		})
	}
}

func TestLongPollClientGone(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/events?wait=30s", nil)
			req.Header.Set("Authorization", "Bearer "+e.producer)
			if resp, err := e.client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		deadline := time.Now().Add(5 * time.Second)
		for gaugeValue(e.api.m.inflightPolls) < 1 {
			if time.Now().After(deadline) {
				t.Fatal("poll never started")
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
		// The server stops waiting promptly once the client is gone.
		for gaugeValue(e.api.m.inflightPolls) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the server kept waiting after the client left")
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// gaugeValue reads a gauge's current value.
func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

// TestPullEmptyLog: next is never empty, even on an empty log (here the only
// key is auth.admin_key, which is never written to the log).
func TestPullEmptyLog(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store := b.open(t)
			ctx := context.Background()
			subs, err := subscriptions.New(store, subscriptions.Config{Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			keys, err := apikeys.New(store, apikeys.Config{AdminKey: "configured-admin-key", Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if err := subs.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(subs.Stop)
			if err := keys.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(keys.Stop)
			p, err := projector.New(projector.Config{Logger: quietLogger()}, projector.Deps{Store: store, State: store.(eventstore.StateStore), Subs: subs})
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(Config{Logger: quietLogger(), Registry: prometheus.NewRegistry()}, Deps{Store: store, Subscriptions: subs, Keys: keys, Projector: p})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(s)
			t.Cleanup(srv.Close)
			e := &env{t: t, store: store, api: s, srv: srv, client: srv.Client(), admin: "configured-admin-key"}
			for _, q := range []string{"", "after=now", "after=now&wait=10ms", "types=a.b&wait=10ms"} {
				p := e.pull(e.admin, q)
				if len(p.Events) != 0 || p.Next != eventstore.Start.String() || len(p.Next) != 32 {
					t.Fatalf("%q on an empty log: %+v", q, p)
				}
			}
		})
	}
}
