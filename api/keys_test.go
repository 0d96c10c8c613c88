package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestKeys(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		var k keyJSON
		e.do("POST", "/v1/keys", e.admin, `{"name":"shop","role":"tenant","tenant":"shop"}`).want(t, http.StatusCreated).decode(t, &k)
		if k.ID == "" || k.Name != "shop" || k.Role != "tenant" || k.Tenant == nil || *k.Tenant != "shop" || !strings.HasPrefix(k.Key, "hlk_") ||
			!recordedAtRE.MatchString(k.CreatedAt) {
			t.Fatalf("created %+v", k)
		}
		// The new key works at once, with its role.
		e.do("GET", "/v1/subscriptions", k.Key, nil).want(t, http.StatusOK)
		e.do("POST", "/v1/streams/s/events", k.Key, `{"events":[{"type":"a.b","data":{}}]}`).want(t, http.StatusForbidden).problem(t)

		var p keyJSON
		e.do("POST", "/v1/keys", e.admin, `{"name":"orders","role":"producer","tenant":null}`).want(t, http.StatusCreated).decode(t, &p)
		if p.Tenant != nil {
			t.Fatalf("producer key with a tenant: %+v", p)
		}

		// Listed without plaintexts.
		r := e.do("GET", "/v1/keys", e.admin, nil).want(t, http.StatusOK)
		var list keyList
		r.decode(t, &list)
		if len(list.Keys) != 6 || strings.Contains(string(r.body), k.Key) || strings.Contains(string(r.body), `"key"`) {
			t.Fatalf("list: %s", r.body)
		}

		// Revoked keys stop working.
		e.do("DELETE", "/v1/keys/"+k.ID, e.admin, nil).want(t, http.StatusNoContent)
		r = e.do("GET", "/v1/subscriptions", k.Key, nil).want(t, http.StatusUnauthorized)
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("401 without WWW-Authenticate: %v", r.header)
		}
		e.do("DELETE", "/v1/keys/"+k.ID, e.admin, nil).want(t, http.StatusNotFound).problem(t)
		e.do("DELETE", "/v1/keys/"+uuid.NewString(), e.admin, nil).want(t, http.StatusNotFound)
		e.do("DELETE", "/v1/keys/config", e.admin, nil).want(t, http.StatusNotFound)

		head := e.head()
		for _, c := range []struct {
			name, key, method, path, body string
			status                        int
			field                         string
		}{
			{"no name", e.admin, "POST", "/v1/keys", `{"role":"admin"}`, 400, "name"},
			{"bad role", e.admin, "POST", "/v1/keys", `{"name":"x","role":"root"}`, 400, "role"},
			{"tenant without tenant", e.admin, "POST", "/v1/keys", `{"name":"x","role":"tenant"}`, 400, "tenant"},
			{"tenant on producer", e.admin, "POST", "/v1/keys", `{"name":"x","role":"producer","tenant":"acme"}`, 400, "tenant"},
			{"unknown field", e.admin, "POST", "/v1/keys", `{"name":"x","role":"admin","scopes":[]}`, 400, "scopes"},
			{"oversized", e.admin, "POST", "/v1/keys", `{"name":"` + strings.Repeat("n", 1<<20) + `","role":"admin"}`, 413, ""},
			{"producer creates", e.producer, "POST", "/v1/keys", `{"name":"x","role":"admin"}`, 403, ""},
			{"tenant lists", e.tenantA, "GET", "/v1/keys", ``, 403, ""},
			{"tenant revokes", e.tenantA, "DELETE", "/v1/keys/" + p.ID, ``, 403, ""},
			{"no key", "", "GET", "/v1/keys", ``, 401, ""},
			{"revoked key", k.Key, "GET", "/v1/keys", ``, 401, ""},
		} {
			var body any
			if c.body != "" {
				body = c.body
			}
			r := e.do(c.method, c.path, c.key, body)
			if r.status != c.status {
				t.Fatalf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
			}
			if pr := r.problem(t); c.field != "" && pr.Errors[c.field] == "" {
				t.Fatalf("%s: errors %v lack %q", c.name, pr.Errors, c.field)
			}
			e.unchanged(head)
		}
	})
}

func TestAuthorizationHeader(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *env) {
		for _, h := range []string{"", "Bearer", "Bearer ", "Basic " + e.admin, e.admin, "Bearer " + e.admin + "x"} {
			req, _ := http.NewRequest("GET", e.srv.URL+"/v1/events", nil)
			if h != "" {
				req.Header.Set("Authorization", h)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("Authorization %q: %d %s", h, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
		}
		// The scheme is case-insensitive.
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/events", nil)
		req.Header.Set("Authorization", "bearer "+e.admin)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("lower-case bearer: %d", resp.StatusCode)
		}
	})
}
