package eventstore_test

import (
	"testing"

	"github.com/hooklog/hooklog/eventstore"
)

func TestMatchPattern(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"*", "anything", true},
		{"*", "", true},
		{"payment.*", "payment.succeeded", true},
		{"payment.*", "payment.", true},
		{"payment.*", "payment", false},
		{"payment.*", "payments.x", false},
		{"order-*", "order-123", true},
		{"order-*", "order", false},
		{"order*", "orders-1", true},
		{"order.created", "order.created", true},
		{"order.created", "order.created.v2", false},
		{"order.created", "order.create", false},
		{"a*b", "a*b", true}, // a '*' not at the end is literal (and ValidPattern rejects such patterns)
		{"a*b", "axb", false},
	} {
		if got := eventstore.MatchPattern(c.pattern, c.name); got != c.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
	if !eventstore.MatchAny(nil, "x") {
		t.Errorf("an empty pattern list must match everything")
	}
	if !eventstore.MatchAny([]string{"a.*", "b.c"}, "b.c") || eventstore.MatchAny([]string{"a.*", "b.c"}, "b.d") {
		t.Errorf("MatchAny is wrong")
	}
}

func TestValidPattern(t *testing.T) {
	for p, want := range map[string]bool{
		"*": true, "a.*": true, "order-1": true, "": false, "a*b": false, "**": false, "*a": false,
	} {
		if got := eventstore.ValidPattern(p); got != want {
			t.Errorf("ValidPattern(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestFilter(t *testing.T) {
	acme, none := "acme", ""
	e := func(typ, stream, tenant string) *eventstore.Event {
		return &eventstore.Event{Type: typ, Stream: stream, Tenant: tenant}
	}
	for _, c := range []struct {
		name string
		f    eventstore.Filter
		ev   *eventstore.Event
		want bool
	}{
		{"zero", eventstore.Filter{}, e("a.b", "s", "t"), true},
		{"type", eventstore.Filter{Types: []string{"a.*"}}, e("a.b", "s", ""), true},
		{"type miss", eventstore.Filter{Types: []string{"c.*"}}, e("a.b", "s", ""), false},
		{"stream", eventstore.Filter{Streams: []string{"s-*"}}, e("a.b", "s-1", ""), true},
		{"stream miss", eventstore.Filter{Streams: []string{"s-*"}}, e("a.b", "t-1", ""), false},
		{"tenant", eventstore.Filter{Tenant: &acme}, e("a.b", "s", "acme"), true},
		{"tenant miss", eventstore.Filter{Tenant: &acme}, e("a.b", "s", "globex"), false},
		{"tenant miss untenanted", eventstore.Filter{Tenant: &acme}, e("a.b", "s", ""), false},
		{"no tenant", eventstore.Filter{Tenant: &none}, e("a.b", "s", ""), true},
		{"no tenant miss", eventstore.Filter{Tenant: &none}, e("a.b", "s", "acme"), false},
		{"all three", eventstore.Filter{Types: []string{"a.b"}, Streams: []string{"s"}, Tenant: &acme}, e("a.b", "s", "acme"), true},
		{"all three, one miss", eventstore.Filter{Types: []string{"a.b"}, Streams: []string{"x"}, Tenant: &acme}, e("a.b", "s", "acme"), false},
		{"no internal", eventstore.Filter{NoInternal: true}, e("a.b", "hooklog-keys", ""), false},
		{"no internal, external", eventstore.Filter{NoInternal: true}, e("a.b", "hooklogs", ""), true},
		{"no internal beats stream patterns", eventstore.Filter{NoInternal: true, Streams: []string{"hooklog-*"}}, e("a.b", "hooklog-keys", ""), false},
	} {
		if got := c.f.Match(c.ev); got != c.want {
			t.Errorf("%s: Match = %v, want %v", c.name, got, c.want)
		}
		if got := c.f.MatchFields(c.ev.Type, c.ev.Stream, c.ev.Tenant); got != c.want {
			t.Errorf("%s: MatchFields = %v, want %v", c.name, got, c.want)
		}
	}
	if !(eventstore.Filter{}).IsZero() || (eventstore.Filter{Tenant: &none}).IsZero() || (eventstore.Filter{NoInternal: true}).IsZero() {
		t.Errorf("IsZero is wrong")
	}
	if !eventstore.IsInternalStream("hooklog-subscriptions") || eventstore.IsInternalStream("orders") {
		t.Errorf("IsInternalStream is wrong")
	}
}

func TestReadLimits(t *testing.T) {
	for _, c := range []struct {
		p              eventstore.ReadParams
		limit, maxScan int
	}{
		{eventstore.ReadParams{}, eventstore.DefaultReadLimit, eventstore.DefaultMaxScan},
		{eventstore.ReadParams{Limit: 5, MaxScan: 3}, 5, 5},
		{eventstore.ReadParams{Limit: 1 << 30}, eventstore.MaxReadLimit, eventstore.MaxReadLimit},
		{eventstore.ReadParams{Limit: 10, MaxScan: 50}, 10, 50},
	} {
		l, m := c.p.Limits()
		if l != c.limit || m != c.maxScan {
			t.Errorf("%+v.Limits() = %d, %d; want %d, %d", c.p, l, m, c.limit, c.maxScan)
		}
	}
}
