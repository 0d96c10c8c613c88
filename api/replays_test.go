package api

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

// replayWire mirrors the replay document; pointers tell null apart.
type replayWire struct {
	ID             string   `json:"id"`
	Status         string   `json:"status"`
	Subscriptions  []string `json:"subscriptions"`
	All            bool     `json:"all"`
	Tenant         *string  `json:"tenant"`
	From           string   `json:"from"`
	To             string   `json:"to"`
	EventTypes     []string `json:"event_types"`
	Total          *int64   `json:"total"`
	TotalEstimated *bool    `json:"total_estimated"`
	Delivered      *int64   `json:"delivered"`
	Failed         *int64   `json:"failed"`
	Error          *string  `json:"error"`
	CreatedAt      string   `json:"created_at"`
	UpdatedAt      string   `json:"updated_at"`
	FinishedAt     *string  `json:"finished_at"`
}

// deref shows what p points at, or nil.
func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// TestReplayRoutes: a replay through the API delivers the window again,
// marked as a replay, and reports its progress; the attempts show replay_id.
func TestReplayRoutes(t *testing.T) {
	t.Parallel()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnvOptions(t, b.open(t), Config{}, depsOptions{deliver: true})
			rc := newReceiver(t)
			var sub struct{ ID string }
			e.do(http.MethodPost, "/v1/subscriptions", e.admin, map[string]any{"url": rc.srv.URL + "/ok", "event_types": []string{"order.*"}}).want(t, http.StatusCreated).decode(t, &sub)
			from := time.Now()
			var appended struct{ Events []struct{ ID string } }
			e.do(http.MethodPost, "/v1/streams/order-1/events", e.producer, map[string]any{"events": []map[string]any{
				{"type": "order.created", "data": map[string]any{"n": 1}},
				{"type": "order.paid", "data": map[string]any{"n": 2}},
				{"type": "invoice.sent", "data": map[string]any{"n": 3}},
			}}).want(t, http.StatusCreated).decode(t, &appended)
			to := time.Now()
			eventually(t, "live deliveries", func() bool { return len(rc.ids("/ok")) == 2 })

			var r replayWire
			e.do(http.MethodPost, "/v1/replays", e.admin, map[string]any{"subscriptions": []string{sub.ID}, "from": rfc(from), "to": rfc(to)}).
				want(t, http.StatusAccepted).decode(t, &r)
			if r.Status != "running" || r.Total == nil || *r.Total != 2 || r.TotalEstimated == nil || *r.TotalEstimated ||
				r.Delivered == nil || r.Failed == nil || r.FinishedAt != nil || !slices.Equal(r.Subscriptions, []string{sub.ID}) || r.CreatedAt == "" {
				t.Fatalf("202 body %+v (total %v, estimated %v)", r, deref(r.Total), deref(r.TotalEstimated))
			}
			eventually(t, "the replay to complete", func() bool {
				e.do(http.MethodGet, "/v1/replays/"+r.ID, e.admin, nil).want(t, http.StatusOK).decode(t, &r)
				return r.Status == "completed"
			})
			if *r.Delivered != 2 || *r.Failed != 0 || r.FinishedAt == nil {
				t.Errorf("completed replay %+v", r)
			}
			got := rc.ids("/ok")
			slices.Sort(got)
			want := []string{appended.Events[0].ID, appended.Events[0].ID, appended.Events[1].ID, appended.Events[1].ID}
			slices.Sort(want)
			if !slices.Equal(got, want) { // live then replayed, each event twice
				t.Errorf("receiver got %v", got)
			}
			var list struct{ Attempts []attemptJSON }
			e.do(http.MethodGet, "/v1/subscriptions/"+sub.ID+"/deliveries", e.admin, nil).want(t, http.StatusOK).decode(t, &list)
			n := 0
			for _, a := range list.Attempts {
				if a.ReplayID != nil && *a.ReplayID == r.ID {
					n++
				}
			}
			if n != 2 {
				t.Errorf("%d attempts with replay_id %s, want 2", n, r.ID)
			}
			var rl struct{ Replays []replayWire }
			e.do(http.MethodGet, "/v1/replays", e.admin, nil).want(t, http.StatusOK).decode(t, &rl)
			if len(rl.Replays) != 1 || rl.Replays[0].ID != r.ID {
				t.Errorf("list %+v", rl)
			}
			// A finished replay cannot be cancelled.
			e.do(http.MethodPost, "/v1/replays/"+r.ID+"/cancel", e.admin, nil).want(t, http.StatusConflict).problem(t)
		})
	}
}

// TestReplayRequestValidation: bad requests get 400 naming the field and
// write nothing.
func TestReplayRequestValidation(t *testing.T) {
	t.Parallel()
	e := newEnvOptions(t, backends()[0].open(t), Config{}, depsOptions{deliver: true})
	rc := newReceiver(t)
	var sub struct{ ID string }
	e.do(http.MethodPost, "/v1/subscriptions", e.admin, map[string]any{"url": rc.srv.URL + "/ok"}).want(t, http.StatusCreated).decode(t, &sub)
	now := time.Now()
	for name, c := range map[string]struct {
		body  any
		field string
	}{
		"to before from":       {map[string]any{"subscriptions": []string{sub.ID}, "from": rfc(now), "to": rfc(now.Add(-time.Second))}, "to"},
		"to equals from":       {map[string]any{"subscriptions": []string{sub.ID}, "from": rfc(now), "to": rfc(now)}, "to"},
		"window over 30 days":  {map[string]any{"subscriptions": []string{sub.ID}, "from": rfc(now.Add(-31 * 24 * time.Hour)), "to": rfc(now)}, "to"},
		"unknown subscription": {map[string]any{"subscriptions": []string{uuid.NewString()}, "from": rfc(now.Add(-time.Hour)), "to": rfc(now)}, "subscriptions[0]"},
		"malformed id":         {map[string]any{"subscriptions": []string{"x"}, "from": rfc(now.Add(-time.Hour)), "to": rfc(now)}, "subscriptions[0]"},
		"no subscriptions":     {map[string]any{"from": rfc(now.Add(-time.Hour)), "to": rfc(now)}, "subscriptions"},
		"empty list":           {map[string]any{"subscriptions": []string{}, "from": rfc(now.Add(-time.Hour)), "to": rfc(now)}, "subscriptions"},
		"not all":              {map[string]any{"subscriptions": "some", "from": rfc(now.Add(-time.Hour)), "to": rfc(now)}, "subscriptions"},
		"a number":             {map[string]any{"subscriptions": 3, "from": rfc(now.Add(-time.Hour)), "to": rfc(now)}, "subscriptions"},
		"no offset":            {map[string]any{"subscriptions": "all", "from": "2026-11-01T00:00:00", "to": rfc(now)}, "from"},
		"no to":                {map[string]any{"subscriptions": "all", "from": rfc(now.Add(-time.Hour))}, "to"},
		"bad event type":       {map[string]any{"subscriptions": "all", "from": rfc(now.Add(-time.Hour)), "to": rfc(now), "event_types": []string{"a*b"}}, "event_types[0]"},
		"unknown field":        {map[string]any{"subscriptions": "all", "from": rfc(now.Add(-time.Hour)), "to": rfc(now), "window": "1h"}, "window"},
	} {
		p := e.do(http.MethodPost, "/v1/replays", e.admin, c.body).want(t, http.StatusBadRequest).problem(t)
		if p.Errors[c.field] == "" {
			t.Errorf("%s: problem %+v does not name %q", name, p, c.field)
		}
	}
	e.do(http.MethodPost, "/v1/replays", e.producer, map[string]any{"subscriptions": "all", "from": rfc(now.Add(-time.Hour)), "to": rfc(now)}).want(t, http.StatusForbidden)
	e.do(http.MethodPost, "/v1/replays", "", map[string]any{"subscriptions": "all", "from": rfc(now.Add(-time.Hour)), "to": rfc(now)}).want(t, http.StatusUnauthorized)
	var rl struct{ Replays []replayWire }
	e.do(http.MethodGet, "/v1/replays", e.admin, nil).want(t, http.StatusOK).decode(t, &rl)
	if len(rl.Replays) != 0 {
		t.Errorf("refused requests wrote %d replays", len(rl.Replays))
	}
	e.do(http.MethodGet, "/v1/replays/"+uuid.NewString(), e.admin, nil).want(t, http.StatusNotFound).problem(t)
	e.do(http.MethodGet, "/v1/replays/nope", e.admin, nil).want(t, http.StatusNotFound).problem(t)
	e.do(http.MethodPost, "/v1/replays/"+uuid.NewString()+"/cancel", e.admin, nil).want(t, http.StatusNotFound).problem(t)
}

// TestReplayTenants: a tenant key replays, sees and cancels only its own
// subscriptions' replays; another tenant's are unknown.
func TestReplayTenants(t *testing.T) {
	t.Parallel()
	e := newEnvOptions(t, backends()[0].open(t), Config{}, depsOptions{deliver: true})
	rc := newReceiver(t)
	var acme, globex struct{ ID string }
	e.do(http.MethodPost, "/v1/subscriptions", e.tenantA, map[string]any{"url": rc.srv.URL + "/ok"}).want(t, http.StatusCreated).decode(t, &acme)
	e.do(http.MethodPost, "/v1/subscriptions", e.tenantB, map[string]any{"url": rc.srv.URL + "/ok"}).want(t, http.StatusCreated).decode(t, &globex)
	now := time.Now()
	window := func(subs any) map[string]any {
		// A window reaching into the future keeps the replay running.
		return map[string]any{"subscriptions": subs, "from": rfc(now.Add(-time.Hour)), "to": rfc(now.Add(time.Hour))}
	}
	p := e.do(http.MethodPost, "/v1/replays", e.tenantB, window([]string{acme.ID})).want(t, http.StatusBadRequest).problem(t)
	if p.Errors["subscriptions[0]"] != "unknown subscription" {
		t.Errorf("another tenant's subscription: %+v", p)
	}
	var r replayWire
	e.do(http.MethodPost, "/v1/replays", e.tenantA, window("all")).want(t, http.StatusAccepted).decode(t, &r)
	if !slices.Equal(r.Subscriptions, []string{acme.ID}) || !r.All || r.Tenant == nil || *r.Tenant != "acme" {
		t.Errorf("tenant's all: %+v", r)
	}
	e.do(http.MethodGet, "/v1/replays/"+r.ID, e.tenantB, nil).want(t, http.StatusNotFound)
	e.do(http.MethodPost, "/v1/replays/"+r.ID+"/cancel", e.tenantB, nil).want(t, http.StatusNotFound)
	var rl struct{ Replays []replayWire }
	e.do(http.MethodGet, "/v1/replays", e.tenantB, nil).want(t, http.StatusOK).decode(t, &rl)
	if len(rl.Replays) != 0 {
		t.Errorf("tenant B sees %d replays", len(rl.Replays))
	}
	e.do(http.MethodGet, "/v1/replays", e.tenantA, nil).want(t, http.StatusOK).decode(t, &rl)
	if len(rl.Replays) != 1 {
		t.Errorf("tenant A sees %d replays", len(rl.Replays))
	}
	e.do(http.MethodGet, "/v1/replays?tenant=globex", e.admin, nil).want(t, http.StatusOK).decode(t, &rl)
	if len(rl.Replays) != 0 {
		t.Errorf("admin's ?tenant=globex: %d replays", len(rl.Replays))
	}
	var c replayWire
	e.do(http.MethodPost, "/v1/replays/"+r.ID+"/cancel", e.tenantA, nil).want(t, http.StatusOK).decode(t, &c)
	if c.Status != "cancelled" || c.FinishedAt == nil {
		t.Errorf("cancelled: %+v", c)
	}
	e.do(http.MethodPost, "/v1/replays/"+r.ID+"/cancel", e.tenantA, "{}").want(t, http.StatusOK)
	e.do(http.MethodGet, "/v1/replays/"+r.ID, e.admin, nil).want(t, http.StatusOK).decode(t, &c)
	if c.Status != "cancelled" {
		t.Errorf("after cancel: %+v", c)
	}
}

// TestOpenAPIReplaySchemas pins the documented replay document to replayJSON.
func TestOpenAPIReplaySchemas(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Required   []string       `json:"required"`
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatal(err)
	}
	schema := doc.Components.Schemas["Replay"]
	all, required := jsonFields(reflect.TypeOf(replayJSON{}))
	var props []string
	for k := range schema.Properties {
		props = append(props, k)
	}
	slices.Sort(props)
	req := slices.Clone(schema.Required)
	slices.Sort(req)
	if !slices.Equal(props, all) || !slices.Equal(req, required) {
		t.Errorf("schema Replay: properties %v required %v; the handler writes %v, always %v", props, req, all, required)
	}
}
