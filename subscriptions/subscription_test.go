package subscriptions

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

func TestStartSpecJSON(t *testing.T) {
	t.Parallel()
	pos := eventstore.Position{Hi: 1, Lo: 42}
	cases := map[string]StartSpec{
		`"now"`:                            {Kind: StartNow},
		`"beginning"`:                      {Kind: StartBeginning},
		`{"time":"2026-11-01T00:00:00Z"}`:  {Kind: StartTime, Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)},
		`{"after":"` + pos.String() + `"}`: {Kind: StartAfter, After: pos},
	}
	for in, want := range cases {
		var got StartSpec
		if err := json.Unmarshal([]byte(in), &got); err != nil || !got.Time.Equal(want.Time) || got.Kind != want.Kind || got.After != want.After {
			t.Errorf("Unmarshal(%s) = %+v, %v; want %+v", in, got, err, want)
			continue
		}
		out, err := json.Marshal(got)
		if err != nil || string(out) != in {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", got, out, err, in)
		}
	}
	for _, in := range []string{`"later"`, `""`, `1`, `null`, `{}`, `{"time":"yesterday"}`, `{"time":"2026-11-01T00:00:00"}`,
		`{"after":"xyz"}`, `{"time":"2026-11-01T00:00:00Z","after":""}`, `["now"]`, `{"after":1}`} {
		var got StartSpec
		err := json.Unmarshal([]byte(in), &got)
		if in == `null` { // null leaves the value alone, like every JSON type
			continue
		}
		assertFields(t, err, "start")
	}
}

func TestRetryPolicyJSON(t *testing.T) {
	t.Parallel()
	def := DefaultRetryPolicy()
	b, err := json.Marshal(def)
	if err != nil || string(b) != `{"schedule":["5s","5m0s","30m0s","2h0m0s","5h0m0s","10h0m0s","10h0m0s"],"max_age":"72h0m0s"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var back RetryPolicy
	if err := json.Unmarshal([]byte(`{"schedule":["5s","5m","30m","2h","5h","10h","10h"],"max_age":"72h"}`), &back); err != nil || !reflect.DeepEqual(back, def) {
		t.Fatalf("Unmarshal = %+v, %v", back, err)
	}
	var partial RetryPolicy
	if err := json.Unmarshal([]byte(`{"max_age":"1h"}`), &partial); err != nil || partial.Schedule != nil || partial.MaxAge != time.Hour {
		t.Fatalf("partial = %+v, %v", partial, err)
	}
	for in, fields := range map[string][]string{
		`{"schedule":["5s","soon"]}`:           {"retry.schedule[1]"},
		`{"schedule":[5]}`:                     {"retry.schedule[0]"},
		`{"schedule":[]}`:                      {"retry.schedule"},
		`{"max_age":"0s"}`:                     {"retry.max_age"},
		`{"max_age":"forever","schedule":[1]}`: {"retry.max_age", "retry.schedule[0]"},
		`"5s"`:                                 {"retry"},
	} {
		var r RetryPolicy
		assertFields(t, json.Unmarshal([]byte(in), &r), fields...)
	}
}

// TestCreateParamsJSON: the API can decode a request straight into
// CreateParams, and decoding errors name the JSON field.
func TestCreateParamsJSON(t *testing.T) {
	t.Parallel()
	var p CreateParams
	body := `{"url":"https://example.com/hooks","description":"fulfillment","event_types":["payment.*"],"streams":["order-*"],
		"tenant":"acme","start":{"time":"2026-11-01T00:00:00Z"},"retry":{"schedule":["5s","5m"],"max_age":"72h"},
		"ordered":false,"max_in_flight":16,"rate_limit":0,"headers":{"X-Team":"ops"}}`
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	if p.URL != "https://example.com/hooks" || p.Start.Kind != StartTime || len(p.Retry.Schedule) != 2 || *p.MaxInFlight != 16 ||
		p.Ordered == nil || *p.Ordered || p.RateLimit == nil || p.Headers["X-Team"] != "ops" {
		t.Fatalf("decoded %+v", p)
	}
	var bad CreateParams
	assertFields(t, json.Unmarshal([]byte(`{"url":"x","retry":{"schedule":["5s","nope"]}}`), &bad), "retry.schedule[1]")
	assertFields(t, json.Unmarshal([]byte(`{"start":"tomorrow"}`), &bad), "start")

	var u UpdateParams
	if err := json.Unmarshal([]byte(`{"event_types":[],"headers":{}}`), &u); err != nil || u.EventTypes == nil || len(*u.EventTypes) != 0 || u.Headers == nil || u.URL != nil {
		t.Fatalf("update decoded %+v, %v", u, err)
	}
}

func TestSubscriptionJSONHidesSecrets(t *testing.T) {
	t.Parallel()
	s := Subscription{ID: "x", Secrets: []Secret{{Value: "whsec_abc"}}}.clone()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if _, ok := m["secrets"]; ok || string(b) == "" {
		t.Fatalf("secrets in JSON: %s", b)
	}
	if m["event_types"] == nil || m["headers"] == nil {
		t.Fatalf("empty lists must encode as [] and {}: %s", b)
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	ev := func(stream, typ, tenant string) *eventstore.Event {
		return &eventstore.Event{Stream: stream, Type: typ, Tenant: tenant}
	}
	all := Subscription{}
	acme := Subscription{Tenant: "acme", EventTypes: []string{"payment.*", "order.created"}, Streams: []string{"order-*"}}
	cases := []struct {
		sub  Subscription
		e    *eventstore.Event
		want bool
	}{
		{all, ev("order-1", "order.created", ""), true},
		{all, ev("order-1", "order.created", "acme"), true},
		{all, ev("hooklog-subscriptions", "subscription.created", ""), false},
		{all, ev("hooklog-apikeys", "apikey.created", ""), false},
		{acme, ev("order-1", "payment.succeeded", "acme"), true},
		{acme, ev("order-1", "order.created", "acme"), true},
		{acme, ev("order-1", "order.updated", "acme"), false},
		{acme, ev("cart-1", "payment.succeeded", "acme"), false},
		{acme, ev("order-1", "payment.succeeded", "globex"), false},
		{acme, ev("order-1", "payment.succeeded", ""), false},
	}
	for _, c := range cases {
		if got := c.sub.Matches(c.e); got != c.want {
			t.Errorf("%+v Matches %+v = %v, want %v", c.sub, *c.e, got, c.want)
		}
	}
	if f := all.Filter(); f.Tenant != nil || !f.IsZero() {
		t.Errorf("Filter of an all-tenant subscription: %+v", f)
	}
	if f := acme.Filter(); f.Tenant == nil || *f.Tenant != "acme" {
		t.Errorf("Filter of acme: %+v", f)
	}
}
