package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// A public address literal: no DNS lookup, accepted by the URL policy.
const hookURL = "https://93.184.215.14/hooks"

func (e *env) createSub(key, body string) subscriptionJSON {
	e.t.Helper()
	var out subscriptionJSON
	e.do("POST", "/v1/subscriptions", key, body).want(e.t, http.StatusCreated).decode(e.t, &out)
	return out
}

func TestSubscriptionLifecycle(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		// Only url is required; defaults fill the rest.
		sub := e.createSub(e.admin, `{"url":"`+hookURL+`"}`)
		if _, err := uuid.Parse(sub.ID); err != nil || !strings.HasPrefix(sub.Secret, "whsec_") || len(sub.Secret) < 6+32 {
			t.Fatalf("created %+v", sub)
		}
		if sub.State != "active" || sub.Tenant != nil || sub.MaxInFlight != 16 || sub.Ordered ||
			len(sub.EventTypes) != 0 || len(sub.Streams) != 0 || len(sub.Retry.Schedule) != 7 {
			t.Fatalf("defaults %+v", sub)
		}
		raw := e.do("GET", "/v1/subscriptions/"+sub.ID, e.admin, nil).want(t, http.StatusOK)
		var m map[string]json.RawMessage
		raw.decode(t, &m)
		if _, ok := m["secret"]; ok {
			t.Fatalf("GET shows the secret: %s", raw.body)
		}
		if string(m["start"]) != `"now"` || !strings.Contains(string(m["retry"]), `"max_age":"72h0m0s"`) {
			t.Fatalf("GET %s", raw.body)
		}

		// Full create.
		full := e.createSub(e.admin, `{"url":"`+hookURL+`","description":"fulfillment","event_types":["payment.*"],
			"streams":["order-*"],"tenant":"acme","start":"beginning","retry":{"schedule":["1s","1m"],"max_age":"1h"},
			"ordered":true,"max_in_flight":4,"rate_limit":2.5,"headers":{"X-Team":"ops"}}`)
		if full.Tenant == nil || *full.Tenant != "acme" || !full.Ordered || full.MaxInFlight != 4 || full.RateLimit != 2.5 ||
			full.Headers["X-Team"] != "ops" || full.Description != "fulfillment" || !slices.Equal(full.EventTypes, []string{"payment.*"}) {
			t.Fatalf("full create %+v", full)
		}

		// Update only the fields present.
		var upd subscriptionJSON
		e.do("PATCH", "/v1/subscriptions/"+full.ID, e.admin, `{"description":"billing","max_in_flight":8}`).want(t, http.StatusOK).decode(t, &upd)
		if upd.Description != "billing" || upd.MaxInFlight != 8 || !upd.Ordered || upd.Secret != "" {
			t.Fatalf("update %+v", upd)
		}
		e.do("PATCH", "/v1/subscriptions/"+full.ID, e.admin, `{}`).want(t, http.StatusOK)

		// Pause, resume, rotate.
		var st subscriptionJSON
		e.do("POST", "/v1/subscriptions/"+full.ID+"/pause", e.admin, nil).want(t, http.StatusOK).decode(t, &st)
		if st.State != "paused" {
			t.Fatalf("pause: %+v", st)
		}
		e.do("POST", "/v1/subscriptions/"+full.ID+"/resume", e.admin, `{}`).want(t, http.StatusOK).decode(t, &st)
		if st.State != "active" {
			t.Fatalf("resume: %+v", st)
		}
		e.do("POST", "/v1/subscriptions/"+full.ID+"/rotate-secret", e.admin, nil).want(t, http.StatusOK).decode(t, &st)
		if !strings.HasPrefix(st.Secret, "whsec_") || st.Secret == full.Secret {
			t.Fatalf("rotate: %+v", st)
		}

		// List, then delete.
		var list subscriptionList
		e.do("GET", "/v1/subscriptions", e.admin, nil).want(t, http.StatusOK).decode(t, &list)
		if len(list.Subscriptions) != 2 || list.Subscriptions[0].ID != sub.ID || list.Subscriptions[0].Secret != "" {
			t.Fatalf("list %+v", list)
		}
		e.do("GET", "/v1/subscriptions?tenant=acme", e.admin, nil).want(t, http.StatusOK).decode(t, &list)
		if len(list.Subscriptions) != 1 || list.Subscriptions[0].ID != full.ID {
			t.Fatalf("list tenant=acme %+v", list)
		}
		r := e.do("DELETE", "/v1/subscriptions/"+sub.ID, e.admin, nil).want(t, http.StatusNoContent)
		if len(r.body) != 0 {
			t.Fatalf("204 with body %s", r.body)
		}
		e.do("GET", "/v1/subscriptions/"+sub.ID, e.admin, nil).want(t, http.StatusNotFound).problem(t)
		e.do("DELETE", "/v1/subscriptions/"+sub.ID, e.admin, nil).want(t, http.StatusNotFound)

		// The projector's routes, after the usual checks (their answers are
		// tested with a running projector in delivery_test.go).
		for _, rt := range []struct {
			method, path string
			status       int
		}{{"GET", "/status", 200}, {"GET", "/deliveries", 200}, {"POST", "/redrive", 200}} {
			e.do(rt.method, "/v1/subscriptions/"+full.ID+rt.path, e.admin, nil).want(t, rt.status)
			e.do(rt.method, "/v1/subscriptions/"+full.ID+rt.path, e.tenantA, nil).want(t, rt.status)
			e.do(rt.method, "/v1/subscriptions/"+uuid.NewString()+rt.path, e.admin, nil).want(t, http.StatusNotFound).problem(t)
			e.do(rt.method, "/v1/subscriptions/"+sub.ID+rt.path, e.admin, nil).want(t, http.StatusNotFound) // deleted
			e.do(rt.method, "/v1/subscriptions/"+full.ID+rt.path, e.tenantB, nil).want(t, http.StatusNotFound)
			e.do(rt.method, "/v1/subscriptions/"+full.ID+rt.path, e.producer, nil).want(t, http.StatusForbidden)
		}
	})
}

func TestSubscriptionRejections(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		key    string // "" admin, "-" none, "producer", "bogus"
		method string
		path   string // "{id}" is an existing subscription
		body   string
		status int
		field  string
	}{
		{"url missing", "", "POST", "/v1/subscriptions", `{}`, 400, "url"},
		{"url relative", "", "POST", "/v1/subscriptions", `{"url":"/hooks"}`, 400, "url"},
		{"url ftp", "", "POST", "/v1/subscriptions", `{"url":"ftp://93.184.215.14/x"}`, 400, "url"},
		{"url userinfo", "", "POST", "/v1/subscriptions", `{"url":"https://u:p@93.184.215.14/x"}`, 400, "url"},
		{"url loopback", "", "POST", "/v1/subscriptions", `{"url":"http://127.0.0.1:8080/x"}`, 400, "url"},
		{"url decimal loopback", "", "POST", "/v1/subscriptions", `{"url":"http://2130706433/"}`, 400, "url"},
		{"url private v6-mapped", "", "POST", "/v1/subscriptions", `{"url":"http://[::ffff:10.0.0.1]/"}`, 400, "url"},
		{"bad event type pattern", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","event_types":["a*b"]}`, 400, "event_types[0]"},
		{"bad start", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","start":"yesterday"}`, 400, "start"},
		{"bad start time", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","start":{"time":"monday"}}`, 400, "start"},
		{"bad retry", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","retry":{"schedule":["soon"]}}`, 400, "retry.schedule[0]"},
		{"bad max_in_flight", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","max_in_flight":0}`, 400, "max_in_flight"},
		{"reserved header", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","headers":{"webhook-id":"x"}}`, 400, "headers.webhook-id"},
		{"unknown field", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","colour":"red"}`, 400, "colour"},
		{"wrong type", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","ordered":"yes"}`, 400, "ordered"},
		{"malformed json", "", "POST", "/v1/subscriptions", `{"url":`, 400, ""},
		{"oversized", "", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","description":"` + strings.Repeat("d", 1<<20) + `"}`, 413, ""},
		{"tenant names another tenant", "tenant", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `","tenant":"globex"}`, 400, "tenant"},
		{"patch tenant", "", "PATCH", "/v1/subscriptions/{id}", `{"tenant":"globex"}`, 400, "tenant"},
		{"patch bad url", "", "PATCH", "/v1/subscriptions/{id}", `{"url":"http://10.1.2.3/"}`, 400, "url"},
		{"patch unknown id", "", "PATCH", "/v1/subscriptions/" + uuid.NewString(), `{}`, 404, ""},
		{"pause with a body", "", "POST", "/v1/subscriptions/{id}/pause", `{"now":true}`, 400, "now"},
		{"no key", "-", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `"}`, 401, ""},
		{"bogus key", "bogus", "GET", "/v1/subscriptions", ``, 401, ""},
		{"producer may not", "producer", "POST", "/v1/subscriptions", `{"url":"` + hookURL + `"}`, 403, ""},
		{"producer may not list", "producer", "GET", "/v1/subscriptions", ``, 403, ""},
		{"unknown id", "", "GET", "/v1/subscriptions/" + uuid.NewString(), ``, 404, ""},
		{"malformed id", "", "GET", "/v1/subscriptions/nope", ``, 404, ""},
		{"another tenant's", "tenantB", "GET", "/v1/subscriptions/{id}", ``, 404, ""},
		{"another tenant's patch", "tenantB", "PATCH", "/v1/subscriptions/{id}", `{"description":"mine"}`, 404, ""},
		{"another tenant's delete", "tenantB", "DELETE", "/v1/subscriptions/{id}", ``, 404, ""},
		{"another tenant's pause", "tenantB", "POST", "/v1/subscriptions/{id}/pause", ``, 404, ""},
		{"another tenant's rotate", "tenantB", "POST", "/v1/subscriptions/{id}/rotate-secret", ``, 404, ""},
	}
	forEachBackend(t, func(t *testing.T, e *env) {
		sub := e.createSub(e.tenantA, `{"url":"`+hookURL+`"}`)
		head := e.head()
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				key := map[string]string{"": e.admin, "-": "", "producer": e.producer, "bogus": "nope", "tenant": e.tenantA, "tenantB": e.tenantB}[c.key]
				var body any
				if c.body != "" {
					body = c.body
				}
				r := e.do(c.method, strings.ReplaceAll(c.path, "{id}", sub.ID), key, body)
				if r.status != c.status {
					t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
				}
				p := r.problem(t)
				if c.field != "" && p.Errors[c.field] == "" {
					t.Fatalf("errors %v lack %q", p.Errors, c.field)
				}
				e.unchanged(head)
			})
		}
		// Nothing about the subscription changed.
		var got subscriptionJSON
		e.do("GET", "/v1/subscriptions/"+sub.ID, e.tenantA, nil).want(t, http.StatusOK).decode(t, &got)
		if got.State != "active" || got.Description != "" || got.UpdatedAt != sub.UpdatedAt {
			t.Fatalf("subscription changed by rejected requests: %+v", got)
		}
	})
}

func TestTenantIsolationSubscriptions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		// A tenant key's subscription is forced to its tenant.
		a := e.createSub(e.tenantA, `{"url":"`+hookURL+`"}`)
		if a.Tenant == nil || *a.Tenant != "acme" {
			t.Fatalf("tenant subscription %+v", a)
		}
		a2 := e.createSub(e.tenantA, `{"url":"`+hookURL+`","tenant":"acme"}`)
		b := e.createSub(e.tenantB, `{"url":"`+hookURL+`"}`)
		all := e.createSub(e.admin, `{"url":"`+hookURL+`"}`)

		ids := func(key string) []string {
			var list subscriptionList
			e.do("GET", "/v1/subscriptions", key, nil).want(t, http.StatusOK).decode(t, &list)
			var out []string
			for _, s := range list.Subscriptions {
				out = append(out, s.ID)
			}
			return out
		}
		if got := ids(e.tenantA); !slices.Equal(got, []string{a.ID, a2.ID}) {
			t.Fatalf("acme lists %v", got)
		}
		if got := ids(e.tenantB); !slices.Equal(got, []string{b.ID}) {
			t.Fatalf("globex lists %v", got)
		}
		if got := ids(e.admin); len(got) != 4 {
			t.Fatalf("admin lists %v", got)
		}
		// A tenant cannot list another tenant's with ?tenant=.
		var list subscriptionList
		e.do("GET", "/v1/subscriptions?tenant=globex", e.tenantA, nil).want(t, http.StatusOK).decode(t, &list)
		if len(list.Subscriptions) != 2 {
			t.Fatalf("acme with ?tenant=globex sees %d", len(list.Subscriptions))
		}
		for _, id := range []string{b.ID, all.ID} {
			e.do("GET", "/v1/subscriptions/"+id, e.tenantA, nil).want(t, http.StatusNotFound)
		}
		e.do("GET", "/v1/subscriptions/"+a.ID, e.tenantA, nil).want(t, http.StatusOK)
		e.do("GET", "/v1/subscriptions/"+a.ID, e.admin, nil).want(t, http.StatusOK)
		e.do("DELETE", "/v1/subscriptions/"+a2.ID, e.tenantA, nil).want(t, http.StatusNoContent)
		e.do("PATCH", "/v1/subscriptions/"+a.ID, e.tenantA, fmt.Sprintf(`{"url":%q}`, hookURL+"/v2")).want(t, http.StatusOK)
	})
}
