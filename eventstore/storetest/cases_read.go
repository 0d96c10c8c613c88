package storetest

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

func ptr(s string) *string { return &s }

func testReadAllFilters(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	type row struct {
		stream, typ, tenant string
	}
	rows := []row{
		{"orders-1", "order.created", "acme"},        // 0
		{"orders-2", "order.created", "globex"},      // 1
		{"payments-1", "payment.succeeded", ""},      // 2
		{"orders-1", "order.paid", "acme"},           // 3
		{"orders-10", "orders.archived", "acme"},     // 4: "order.*" must not match "orders.archived"
		{"payments-2", "payment.failed", "globex"},   // 5
		{"order", "order.created", ""},               // 6
		{"hooklog-subs", "subscription.created", ""}, // 7
	}
	var all []uuid.UUID
	for _, r := range rows {
		e := evTenant(r.typ, r.tenant)
		mustAppend(ctx, t, s, r.stream, eventstore.Any, e)
		all = append(all, e.ID)
	}
	pick := func(idx ...int) []uuid.UUID {
		out := make([]uuid.UUID, len(idx))
		for i, j := range idx {
			out[i] = all[j]
		}
		return out
	}
	cases := []struct {
		name string
		f    eventstore.Filter
		want []uuid.UUID
	}{
		{"zero filter", eventstore.Filter{}, all},
		{"type exact", eventstore.Filter{Types: []string{"order.created"}}, pick(0, 1, 6)},
		{"type prefix", eventstore.Filter{Types: []string{"order.*"}}, pick(0, 1, 3, 6)},
		{"type star", eventstore.Filter{Types: []string{"*"}}, all},
		{"types any of", eventstore.Filter{Types: []string{"payment.succeeded", "order.paid"}}, pick(2, 3)},
		{"type no match", eventstore.Filter{Types: []string{"nothing.here"}}, nil},
		{"stream exact", eventstore.Filter{Streams: []string{"orders-1"}}, pick(0, 3)},
		{"stream prefix", eventstore.Filter{Streams: []string{"orders-*"}}, pick(0, 1, 3, 4)},
		{"stream prefix without dash", eventstore.Filter{Streams: []string{"order*"}}, pick(0, 1, 3, 4, 6)},
		{"streams any of", eventstore.Filter{Streams: []string{"payments-*", "order"}}, pick(2, 5, 6)},
		{"internal streams", eventstore.Filter{Streams: []string{eventstore.InternalStreamPrefix + "*"}}, pick(7)},
		{"tenant", eventstore.Filter{Tenant: ptr("acme")}, pick(0, 3, 4)},
		{"no tenant", eventstore.Filter{Tenant: ptr("")}, pick(2, 6, 7)},
		{"unknown tenant", eventstore.Filter{Tenant: ptr("initech")}, nil},
		{"type and stream", eventstore.Filter{Types: []string{"order.*"}, Streams: []string{"orders-*"}}, pick(0, 1, 3)},
		{"type, stream and tenant", eventstore.Filter{Types: []string{"order.*", "payment.*"}, Streams: []string{"orders-*", "payments-*"}, Tenant: ptr("globex")}, pick(1, 5)},
	}
	// NoInternal drops hooklog-* streams; a backend may return them anyway
	// (a superset is still correct), but every other match must be there.
	noInternal, _ := readAll(ctx, t, s, eventstore.Start, eventstore.Filter{NoInternal: true, Types: []string{"order.*", "subscription.*"}})
	var external []uuid.UUID
	for _, e := range noInternal {
		if !eventstore.IsInternalStream(e.Stream) {
			external = append(external, e.ID)
		}
	}
	if want := pick(0, 1, 3, 6); !sameIDs(external, want) {
		t.Errorf("NoInternal: non-internal events %v, want %v", external, want)
	}

	head := mustHead(ctx, t, s)
	for _, c := range cases {
		got, next := readAll(ctx, t, s, eventstore.Start, c.f)
		if !sameIDs(ids(got), c.want) {
			t.Errorf("%s: got %v, want %v", c.name, ids(got), c.want)
		}
		for _, e := range got {
			if !c.f.Match(&e) {
				t.Errorf("%s: returned %s, which does not match", c.name, fmtEvent(e))
			}
		}
		if next != head {
			t.Errorf("%s: final Next = %s, want the head %s (the cursor moves past non-matching events)", c.name, next, head)
		}
	}
}

func testReadAllPaging(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	// Empty log: Next is never empty, it stays at Start.
	res, err := s.ReadAll(ctx, eventstore.ReadParams{})
	if err != nil {
		t.Fatalf("ReadAll on empty log: %v", err)
	}
	if len(res.Events) != 0 || res.Next != eventstore.Start {
		t.Fatalf("ReadAll on empty log: %d events, Next %s; want none and Start", len(res.Events), res.Next)
	}

	var pos []eventstore.Position
	var all []uuid.UUID
	for i := range 10 {
		typ := "page.even"
		if i%2 == 1 {
			typ = "page.odd"
		}
		if i == 9 {
			typ = "page.last"
		}
		e := ev(typ, "")
		r := mustAppend(ctx, t, s, "paging-1", eventstore.Any, e)
		pos = append(pos, r.Events[0].Position)
		all = append(all, e.ID)
	}

	// Limit: exactly Limit events, Next at the last returned.
	res, err = s.ReadAll(ctx, eventstore.ReadParams{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !sameIDs(ids(res.Events), all[:3]) || res.Next != pos[2] {
		t.Fatalf("Limit 3: got %v Next %s, want %v Next %s", ids(res.Events), res.Next, all[:3], pos[2])
	}
	// Paging with Limit 3 visits every event once.
	var got []uuid.UUID
	after := eventstore.Start
	for range 20 {
		res, err := s.ReadAll(ctx, eventstore.ReadParams{After: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(res.Events)...)
		if res.Next == after {
			break
		}
		after = res.Next
	}
	if !sameIDs(got, all) || after != pos[9] {
		t.Errorf("paging by 3: got %v ending at %s, want %v ending at %s", got, after, all, pos[9])
	}

	// Limit with a filter: Next is the last examined event, which is the last match.
	res, err = s.ReadAll(ctx, eventstore.ReadParams{Filter: eventstore.Filter{Types: []string{"page.odd"}}, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !sameIDs(ids(res.Events), []uuid.UUID{all[1], all[3]}) || res.Next != pos[3] {
		t.Errorf("odd, Limit 2: got %v Next %s, want %v Next %s", ids(res.Events), res.Next, []uuid.UUID{all[1], all[3]}, pos[3])
	}

	// MaxScan: a sparse filter returns nothing yet moves Next past what it examined.
	f := eventstore.Filter{Types: []string{"page.last"}}
	res, err = s.ReadAll(ctx, eventstore.ReadParams{Filter: f, Limit: 1, MaxScan: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 0 || res.Next != pos[2] {
		t.Errorf("MaxScan 3: got %d events Next %s, want none and Next %s", len(res.Events), res.Next, pos[2])
	}
	after, reads := eventstore.Start, 0
	var found []uuid.UUID
	for after != pos[9] && reads < 10 {
		res, err := s.ReadAll(ctx, eventstore.ReadParams{After: after, Filter: f, Limit: 1, MaxScan: 3})
		if err != nil {
			t.Fatal(err)
		}
		found = append(found, ids(res.Events)...)
		after = res.Next
		reads++
	}
	if !sameIDs(found, all[9:]) || reads != 4 {
		t.Errorf("MaxScan 3 over 10 events: found %v in %d reads, want %v in 4", found, reads, all[9:])
	}

	// A filter that matches nothing still moves the cursor to the head.
	res, err = s.ReadAll(ctx, eventstore.ReadParams{Filter: eventstore.Filter{Types: []string{"no.match"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 0 || res.Next != pos[9] {
		t.Errorf("no match: %d events Next %s, want none and Next %s", len(res.Events), res.Next, pos[9])
	}
	// Reading after the head returns nothing and keeps the cursor.
	res, err = s.ReadAll(ctx, eventstore.ReadParams{After: pos[9]})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 0 || res.Next != pos[9] {
		t.Errorf("after head: %d events Next %s, want none and Next %s", len(res.Events), res.Next, pos[9])
	}
	// A cursor past the end (clients can send any well-formed position):
	// nothing, and Next does not move back; or ErrBadPosition.
	far := eventstore.Position{Hi: pos[9].Hi, Lo: math.MaxUint64}
	res, err = s.ReadAll(ctx, eventstore.ReadParams{After: far})
	if err != nil && !errors.Is(err, eventstore.ErrBadPosition) {
		t.Errorf("after %s: %v, want no error or ErrBadPosition", far, err)
	} else if err == nil && (len(res.Events) != 0 || res.Next.Less(far)) {
		t.Errorf("after %s: %d events, Next %s; want none and Next not before the cursor", far, len(res.Events), res.Next)
	}
	// Reading after a middle event starts right after it.
	res, err = s.ReadAll(ctx, eventstore.ReadParams{After: pos[4], Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !sameIDs(ids(res.Events), all[5:7]) {
		t.Errorf("after event 4: got %v, want %v", ids(res.Events), all[5:7])
	}
}

func testReadStream(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	var want []uuid.UUID
	for i := range 3 {
		a, b := ev("stream.event", ""), ev("stream.event", "")
		mustAppend(ctx, t, s, "rs-1", eventstore.Any, a, b)
		want = append(want, a.ID, b.ID)
		// Interleave other streams, one whose name extends rs-1.
		mustAppend(ctx, t, s, "rs-10", eventstore.Any, ev("stream.other", ""))
		if i == 0 {
			mustAppend(ctx, t, s, "rs-", eventstore.Any, ev("stream.other", ""))
		}
	}
	read := func(from int64, limit int) []eventstore.Event {
		t.Helper()
		evs, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "rs-1", FromVersion: from, Limit: limit})
		if err != nil {
			t.Fatalf("ReadStream from %d limit %d: %v", from, limit, err)
		}
		for i, e := range evs {
			if e.Stream != "rs-1" || e.Version != from+int64(i) {
				t.Errorf("ReadStream from %d: event %d is %s v%d, want rs-1 v%d", from, i, e.Stream, e.Version, from+int64(i))
			}
		}
		return evs
	}
	if got := read(0, 0); !sameIDs(ids(got), want) {
		t.Errorf("from 0: %v, want %v", ids(got), want)
	}
	if got := read(2, 0); !sameIDs(ids(got), want[2:]) {
		t.Errorf("from 2: %v, want %v", ids(got), want[2:])
	}
	if got := read(1, 2); !sameIDs(ids(got), want[1:3]) {
		t.Errorf("from 1 limit 2: %v, want %v", ids(got), want[1:3])
	}
	if got := read(5, 10); !sameIDs(ids(got), want[5:]) {
		t.Errorf("from 5: %v, want %v", ids(got), want[5:])
	}
	if got := read(6, 0); len(got) != 0 {
		t.Errorf("from 6 (past the end): %d events, want none", len(got))
	}
	evs, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "no-such-stream"})
	if err != nil || len(evs) != 0 {
		t.Errorf("missing stream: %d events, err %v; want none and no error", len(evs), err)
	}
	evs, err = s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "rs-10"})
	if err != nil || len(evs) != 3 {
		t.Errorf("rs-10: %d events, err %v; want 3", len(evs), err)
	}
	// Positions in a stream follow log order.
	all := read(0, 0)
	for i := 1; i < len(all); i++ {
		if !all[i-1].Position.Less(all[i].Position) {
			t.Errorf("stream positions not increasing: %s then %s", all[i-1].Position, all[i].Position)
		}
	}
}

func testEventByID(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	if _, err := s.Event(ctx, uuid.Must(uuid.NewV7())); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("empty store: Event = %v, want ErrNotFound", err)
	}
	a, b := evTenant("order.created", "acme"), ev("order.paid", `{"x":[1,2,3]}`)
	mustAppend(ctx, t, s, "byid-1", eventstore.Any, a)
	mustAppend(ctx, t, s, "byid-2", eventstore.Any, b)
	all, _ := readAll(ctx, t, s, eventstore.Start, eventstore.Filter{})
	for _, want := range all {
		got, err := s.Event(ctx, want.ID)
		if err != nil {
			t.Fatalf("Event(%s): %v", want.ID, err)
		}
		assertSameEvent(t, "Event", got, want)
	}
	if _, err := s.Event(ctx, uuid.Must(uuid.NewRandom())); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("unknown id: Event = %v, want ErrNotFound", err)
	}
	if _, err := s.Event(ctx, uuid.Nil); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("nil id: Event = %v, want ErrNotFound", err)
	}
}

func testPositionAt(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	if p, err := s.PositionAt(ctx, time.Now()); err != nil || p != eventstore.Start {
		t.Errorf("empty store: PositionAt = %s, %v; want Start", p, err)
	}
	// Five events in four appends with gaps, the last two in one append
	// (equal recorded_at is allowed for them).
	mustAppend(ctx, t, s, "pa-1", eventstore.Any, ev("time.one", ""))
	time.Sleep(15 * time.Millisecond)
	mustAppend(ctx, t, s, "pa-1", eventstore.Any, ev("time.two", ""))
	time.Sleep(15 * time.Millisecond)
	mustAppend(ctx, t, s, "pa-2", eventstore.Any, ev("time.three", ""))
	time.Sleep(15 * time.Millisecond)
	mustAppend(ctx, t, s, "pa-1", eventstore.Any, ev("time.four", ""), ev("time.five", ""))
	all, _ := readAllN(ctx, t, s, 5)
	if len(all) != 5 {
		t.Fatalf("%d events, want 5", len(all))
	}
	head := mustHead(ctx, t, s)
	for i := 1; i < len(all); i++ {
		if all[i].RecordedAt.Before(all[i-1].RecordedAt) {
			t.Logf("note: recorded_at is not monotone along the log (%s then %s)", all[i-1].RecordedAt, all[i].RecordedAt)
		}
	}

	check := func(what string, at time.Time) {
		t.Helper()
		c, err := s.PositionAt(ctx, at)
		if err != nil {
			t.Fatalf("%s: PositionAt: %v", what, err)
		}
		if head.Less(c) {
			t.Errorf("%s: PositionAt = %s, beyond the head %s", what, c, head)
		}
		got, _ := readAll(ctx, t, s, c, eventstore.Filter{})
		seen := map[uuid.UUID]bool{}
		for _, e := range got {
			seen[e.ID] = true
		}
		var want []uuid.UUID
		for _, e := range all {
			if !e.RecordedAt.Before(at) {
				want = append(want, e.ID)
				if !seen[e.ID] {
					t.Errorf("%s: reading after PositionAt(%s) = %s skips %s recorded at %s",
						what, at.Format(time.RFC3339Nano), c, e.ID, e.RecordedAt.Format(time.RFC3339Nano))
				}
			}
		}
		if h.ExactPositionAt && !sameIDs(ids(got), want) {
			t.Errorf("%s: reading after PositionAt(%s) = %s gives %v, want exactly %v",
				what, at.Format(time.RFC3339Nano), c, ids(got), want)
		}
	}
	check("long before the first", all[0].RecordedAt.Add(-time.Hour))
	check("just before the first", all[0].RecordedAt.Add(-time.Microsecond))
	check("at the first", all[0].RecordedAt)
	check("at the second", all[1].RecordedAt)
	check("between second and third", all[1].RecordedAt.Add(all[2].RecordedAt.Sub(all[1].RecordedAt)/2))
	check("at the third", all[2].RecordedAt)
	check("just after the third", all[2].RecordedAt.Add(time.Microsecond))
	check("at the fourth (same append as the fifth)", all[3].RecordedAt)
	check("at the last", all[4].RecordedAt)
	check("zero time", time.Time{})

	for _, at := range []time.Time{all[4].RecordedAt.Add(time.Microsecond), all[4].RecordedAt.Add(time.Hour), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)} {
		c, err := s.PositionAt(ctx, at)
		if err != nil || c != head {
			t.Errorf("beyond the last event (%s): PositionAt = %s, %v; want the head %s", at, c, err, head)
		}
	}
}
