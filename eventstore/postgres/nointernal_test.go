package postgres_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// TestReadAllNoInternal: with Filter.NoInternal alone, ReadAll pages through
// the log without the internal streams' events (whose data is never sent),
// and its cursor moves past them, also over pages holding only them.
func TestReadAllNoInternal(t *testing.T) {
	ctx := ctxFor(t)
	s := pgtest.NewStore(t)
	big := json.RawMessage(`{"attempts":"` + strings.Repeat("x", 100_000) + `"}`)
	var want []string
	for i := range 6 {
		want = append(want, appendOne(ctx, t, s, "order-1").ID.String())
		n := 1
		if i == 2 {
			n = 7 // more than a page of internal events in a row
		}
		for range n {
			e := event("delivery.attempts")
			e.Data = big
			if _, err := s.Append(ctx, eventstore.AppendParams{Stream: eventstore.InternalStreamPrefix + "deliveries", Events: []eventstore.ProposedEvent{e}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	head, err := s.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	after := eventstore.Start
	for range 100 {
		res, err := s.ReadAll(ctx, eventstore.ReadParams{After: after, Limit: 3, Filter: eventstore.Filter{NoInternal: true}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range res.Events {
			if eventstore.IsInternalStream(e.Stream) {
				t.Fatalf("internal event %s returned", e.ID)
			}
			got = append(got, e.ID.String())
		}
		if !after.Less(res.Next) {
			break
		}
		after = res.Next
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("read %v, want %v", got, want)
	}
	if after != head {
		t.Errorf("the cursor stopped at %s, the head is %s", after, head)
	}
	// Without NoInternal the internal events come whole.
	res, err := s.ReadAll(ctx, eventstore.ReadParams{After: eventstore.Start, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 2 || len(res.Events[1].Data) < len(big) {
		t.Errorf("unfiltered read: %d events", len(res.Events))
	}
}
