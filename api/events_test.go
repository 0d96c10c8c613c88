package api

import (
	"net/http"
	"testing"
)

func TestAppendSmoke(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		r := e.do("POST", "/v1/streams/order-1/events", e.producer, `{"events":[{"type":"order.created","tenant":"acme","data":{"a":1}}]}`).want(t, http.StatusCreated)
		t.Logf("%s", r.body)
		r = e.do("GET", "/v1/events", e.admin, nil).want(t, 200)
		t.Logf("%s", r.body)
		r = e.do("GET", "/v1/events?after=zz", e.admin, nil).want(t, 400)
		t.Logf("%s", r.body)
		r = e.do("POST", "/v1/streams/order-1/events", e.producer, `{"events":[{"type":"order.created","tenant":"acme","data":{"a":1},"x":1}]}`).want(t, 400)
		t.Logf("%s", r.body)
		r = e.do("POST", "/v1/streams/hooklog-x/events", e.producer, `{"events":[{"id":"zz","type":"Order","data":[1]}], "expected_version":"q"}`).want(t, 400)
		t.Logf("%s", r.body)
		r = e.do("DELETE", "/v1/events", e.producer, nil).want(t, 405)
		t.Logf("%v %s", r.header, r.body)
	})
}
