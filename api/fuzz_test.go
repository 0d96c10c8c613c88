package api

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// newFuzzServer is a Server over a fresh embedded store, driven in-process
// through its http.Handler: fuzzing sends thousands of requests.
func newFuzzServer(f *testing.F) (*Server, testKeys) {
	f.Helper()
	deps, keys := testDeps(f, backends()[0].open(f))
	s, err := New(Config{Logger: quietLogger(), Registry: prometheus.NewRegistry()}, deps)
	if err != nil {
		f.Fatal(err)
	}
	return s, keys
}

// serveFuzz runs one request through the handler and checks what every
// request must keep: no panic (the fuzzer reports it), a 2xx or 4xx status, a
// problem document on 4xx, and nothing written on 4xx.
func serveFuzz(t *testing.T, s *Server, method, target, key string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	before, err := s.store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		t.Skip("not a valid request target")
	}
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	code := rec.Code
	if code >= 500 || code < 200 || (code >= 300 && code < 400) {
		t.Fatalf("%s %s %q: status %d, want 2xx or 4xx; body %s", method, target, body, code, rec.Body.Bytes())
	}
	if code >= 400 {
		if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("status %d with content-type %q", code, ct)
		}
		after, err := s.store.Head(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Fatalf("status %d but the log head moved from %s to %s", code, before, after)
		}
	}
	return rec
}

func FuzzAppendRequest(f *testing.F) {
	bodies := []string{
		`{"events":[{"type":"order.created","data":{}}]}`,
		`{"expected_version":"no_stream","events":[{"id":"0190a3a4-7d2c-7b8e-9a63-5c1f1d2e3f40","type":"order.created","tenant":"acme","data":{"a":[1,2,{"b":null}]},"metadata":{"m":"x"}}]}`,
		`{"expected_version":3,"events":[{"type":"a.b","data":{}},{"type":"a.c","data":{"x":1e300}}]}`,
		`{"expected_version":"exists","events":[{"type":"a.b","tenant":null,"data":{},"metadata":null}]}`,
		`{"expected_version":"any","events":[{"id":"0190a3a4-7d2c-7b8e-9a63-5c1f1d2e3f40","type":"a.b","data":{}},{"id":"0190a3a4-7d2c-7b8e-9a63-5c1f1d2e3f40","type":"a.b","data":{}}]}`,
		`{"events":[]}`,
		`{"events":[{"type":"A","data":[]}]}`,
		`{"events":[{"id":"x","type":"a.b","data":"s"}]}`,
		`{"events":[{"id":7,"type":["a.b"],"tenant":{},"data":{}}]}`,
		`{"events":null,"expected_version":-5}`,
		`{"expected_version":1.5,"events":[{"type":"a.b","data":{}}]}`,
		`{"events":[{"type":"a.b","data":{}}]} trailing`,
		`{"events":[{"type":"a.b","data":{},"extra":1}]}`,
		`[]`, `null`, `""`, ``, `{`, `{"events":[{"type":"\u0000.a","data":{"\ud800":1}}]}`,
	}
	for _, b := range bodies {
		f.Add([]byte(b), "order-1")
	}
	f.Add([]byte(bodies[0]), "hooklog-keys")
	f.Add([]byte(bodies[0]), "-bad")
	f.Add([]byte(bodies[0]), "a/b")
	f.Add([]byte(bodies[0]), "")
	s, keys := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte, stream string) {
		serveFuzz(t, s, http.MethodPost, "/v1/streams/"+url.PathEscape(stream)+"/events", keys.producer, body)
	})
}

func FuzzCreateSubscriptionRequest(f *testing.F) {
	bodies := []string{
		`{"url":"https://93.184.215.14/hooks"}`,
		`{"url":"https://hooks.example.com/x","description":"fulfillment","event_types":["payment.*"],"streams":["order-*"],
		  "tenant":"acme","start":"beginning","retry":{"schedule":["5s","5m"],"max_age":"72h"},
		  "ordered":true,"max_in_flight":16,"rate_limit":0.5,"headers":{"X-Team":"ops"}}`,
		`{"url":"https://93.184.215.14/","start":{"time":"2026-11-01T00:00:00Z"}}`,
		`{"url":"https://93.184.215.14/","start":{"after":"00000000000000000000000000000000"}}`,
		`{"url":"https://93.184.215.14/","start":{"after":"zz"},"retry":{"schedule":[]}}`,
		`{"url":"https://93.184.215.14/","start":{"time":"x","after":"y"}}`,
		`{"url":"https://93.184.215.14/","retry":{"schedule":["-1s","1h"],"max_age":"0s"}}`,
		`{"url":"https://93.184.215.14/","headers":{"":"x","Content-Type":"y","X\r\n":"z","X-A":"a\r\nb"}}`,
		`{"url":"https://93.184.215.14/","max_in_flight":-1,"rate_limit":1e309}`,
		`{"url":"http://2130706433/"}`, `{"url":"http://0x7f.1/"}`, `{"url":"http://[::ffff:127.0.0.1]/"}`,
		`{"url":"http://localhost/"}`, `{"url":"https://user:pw@93.184.215.14/"}`, `{"url":"javascript:alert(1)"}`,
		`{"url":"https://93.184.215.14/","event_types":["a*b","*",""],"streams":null}`,
		`{"url":5}`, `{"url":"x","unknown":1}`, `{}`, `[]`, `null`, ``, `{"url":"https://93.184.215.14/"} {}`,
	}
	for _, b := range bodies {
		f.Add([]byte(b), false)
	}
	f.Add([]byte(bodies[0]), true)
	f.Add([]byte(`{"url":"https://93.184.215.14/","tenant":"other"}`), true)
	s, keys := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte, asTenant bool) {
		key := keys.admin
		if asTenant {
			key = keys.tenantA
		}
		rec := serveFuzz(t, s, http.MethodPost, "/v1/subscriptions", key, body)
		if rec.Code == http.StatusCreated && asTenant && !bytes.Contains(rec.Body.Bytes(), []byte(`"tenant":"acme"`)) {
			t.Fatalf("a tenant key created a subscription outside its tenant: %s", rec.Body.Bytes())
		}
	})
}
