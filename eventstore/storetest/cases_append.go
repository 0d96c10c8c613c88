package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

func testAppendRoundTrip(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	if head := mustHead(ctx, t, s); head != eventstore.Start {
		t.Fatalf("empty store: Head = %s, want Start", head)
	}
	before := time.Now()
	in := []eventstore.ProposedEvent{
		{ID: uuid.Must(uuid.NewV7()), Type: "order.created", Tenant: "acme",
			Data:     json.RawMessage(`{"order":"o-1","amount":1250,"items":[{"sku":"a","qty":2}],"note":"ünïcode \"quoted\""}`),
			Metadata: json.RawMessage(`{"trace":"abc","source":"test"}`)},
		{Type: "order.paid", Data: json.RawMessage(`{"order":"o-1"}`)}, // zero id: the store assigns one
		{ID: uuid.Must(uuid.NewV7()), Type: "order.shipped", Tenant: "acme", Data: json.RawMessage(` {"empty":{}} `), Metadata: json.RawMessage(`null`)},
	}
	callerCopy := slices.Clone(in)
	res := mustAppend(ctx, t, s, "order-1", eventstore.NoStream, in...)
	after := time.Now()

	if res.Events[0].ID != in[0].ID || res.Events[2].ID != in[2].ID {
		t.Fatalf("result ids %v do not match the given ids", res.Events)
	}
	if res.Events[1].ID == uuid.Nil {
		t.Fatalf("a zero id must be replaced by a fresh one")
	}
	for i, a := range res.Events {
		if a.Version != int64(i) {
			t.Errorf("event %d: version %d, want %d", i, a.Version, i)
		}
		if i > 0 {
			prev := res.Events[i-1].Position
			if !prev.Less(a.Position) {
				t.Errorf("positions not increasing: %s then %s", prev, a.Position)
			}
			if prev.String() >= a.Position.String() {
				t.Errorf("position strings do not sort in log order: %s then %s", prev, a.Position)
			}
		}
		if a.Position.IsZero() {
			t.Errorf("event %d: zero position", i)
		}
	}
	if head := waitHead(ctx, t, s, res.Events[2].Position); head != res.Events[2].Position {
		t.Errorf("Head = %s, want the last appended position %s", head, res.Events[2].Position)
	}

	want := make([]eventstore.Event, len(in))
	for i := range in {
		want[i] = eventstore.Event{ID: res.Events[i].ID, Stream: "order-1", Type: callerCopy[i].Type, Tenant: callerCopy[i].Tenant,
			Data: callerCopy[i].Data, Metadata: callerCopy[i].Metadata, Position: res.Events[i].Position, Version: int64(i)}
	}

	got, next := readAllN(ctx, t, s, 3)
	if len(got) != 3 {
		t.Fatalf("ReadAll: %d events, want 3", len(got))
	}
	if next != res.Events[2].Position {
		t.Errorf("ReadAll: Next = %s, want %s", next, res.Events[2].Position)
	}
	for i := range got {
		at := got[i].RecordedAt
		// Allow for a backend clock with a little skew and microsecond rounding.
		if at.Before(before.Add(-time.Second)) || at.After(after.Add(time.Second)) {
			t.Errorf("event %d: recorded_at %s not within the append call [%s, %s]", i, at, before, after)
		}
		if i > 0 && at.Before(got[i-1].RecordedAt) {
			t.Errorf("recorded_at decreases within one append: %s then %s", got[i-1].RecordedAt, at)
		}
		want[i].RecordedAt = at
		assertSameEvent(t, "ReadAll", got[i], want[i])
	}

	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "order-1"})
	if err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	if len(stream) != 3 {
		t.Fatalf("ReadStream: %d events, want 3", len(stream))
	}
	for i := range stream {
		assertSameEvent(t, "ReadStream", stream[i], want[i])
	}
	for i := range want {
		e, err := s.Event(ctx, want[i].ID)
		if err != nil {
			t.Fatalf("Event(%s): %v", want[i].ID, err)
		}
		assertSameEvent(t, "Event", e, want[i])
	}

	// A second append continues the stream's versions and the log's positions.
	res2 := mustAppend(ctx, t, s, "order-1", eventstore.Exact(2), ev("order.closed", `{"n":1}`))
	if res2.Events[0].Version != 3 {
		t.Errorf("next version = %d, want 3", res2.Events[0].Version)
	}
	if !res.Events[2].Position.Less(res2.Events[0].Position) {
		t.Errorf("second append position %s not after %s", res2.Events[0].Position, res.Events[2].Position)
	}
	// The caller's slice is not required to stay untouched, but ids given by
	// the caller must not be changed.
	if in[0].ID != callerCopy[0].ID {
		t.Errorf("Append changed a caller-supplied id")
	}
}

func testAppendValidation(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)
	seed := mustAppend(ctx, t, s, "valid-1", eventstore.Any, ev("seed.event", ""))
	head := seed.Events[0].Position

	good := func() eventstore.ProposedEvent { return ev("order.created", `{"a":1}`) }
	withType := func(typ string) []eventstore.ProposedEvent {
		e := good()
		e.Type = typ
		return []eventstore.ProposedEvent{good(), e}
	}
	withData := func(data string) []eventstore.ProposedEvent {
		e := good()
		e.Data = json.RawMessage(data)
		return []eventstore.ProposedEvent{good(), e}
	}
	withMeta := func(meta string) []eventstore.ProposedEvent {
		e := good()
		e.Metadata = json.RawMessage(meta)
		return []eventstore.ProposedEvent{good(), e}
	}
	withTenant := func(tenant string) []eventstore.ProposedEvent {
		e := good()
		e.Tenant = tenant
		return []eventstore.ProposedEvent{good(), e}
	}
	many := make([]eventstore.ProposedEvent, eventstore.MaxEventsPerAppend+1)
	for i := range many {
		many[i] = good()
	}
	dup := good()
	dupIDs := []eventstore.ProposedEvent{dup, good(), dup}

	cases := []struct {
		name   string
		p      eventstore.AppendParams
		field  string
		stream string // stream checked to stay unchanged; default p.Stream
	}{
		{"empty stream", eventstore.AppendParams{Stream: "", Events: []eventstore.ProposedEvent{good()}}, "stream", "valid-1"},
		{"stream starts with dash", eventstore.AppendParams{Stream: "-order", Events: []eventstore.ProposedEvent{good()}}, "stream", "valid-1"},
		{"stream with space", eventstore.AppendParams{Stream: "order 1", Events: []eventstore.ProposedEvent{good()}}, "stream", "valid-1"},
		{"stream with slash", eventstore.AppendParams{Stream: "order/1", Events: []eventstore.ProposedEvent{good()}}, "stream", "valid-1"},
		{"stream non-ascii", eventstore.AppendParams{Stream: "ordér", Events: []eventstore.ProposedEvent{good()}}, "stream", "valid-1"},
		{"stream too long", eventstore.AppendParams{Stream: strings.Repeat("a", eventstore.MaxStreamLen+1), Events: []eventstore.ProposedEvent{good()}}, "stream", "valid-1"},
		{"no events", eventstore.AppendParams{Stream: "valid-1"}, "events", ""},
		{"too many events", eventstore.AppendParams{Stream: "valid-1", Events: many}, "events", ""},
		{"duplicate ids in one request", eventstore.AppendParams{Stream: "valid-1", Events: dupIDs}, "events[2].id", ""},
		{"missing type", eventstore.AppendParams{Stream: "valid-1", Events: withType("")}, "events[1].type", ""},
		{"type without dot", eventstore.AppendParams{Stream: "valid-1", Events: withType("created")}, "events[1].type", ""},
		{"type upper case", eventstore.AppendParams{Stream: "valid-1", Events: withType("Order.Created")}, "events[1].type", ""},
		{"type empty segment", eventstore.AppendParams{Stream: "valid-1", Events: withType("order..created")}, "events[1].type", ""},
		{"type wildcard", eventstore.AppendParams{Stream: "valid-1", Events: withType("order.*")}, "events[1].type", ""},
		{"type with space", eventstore.AppendParams{Stream: "valid-1", Events: withType("order. created")}, "events[1].type", ""},
		{"data array", eventstore.AppendParams{Stream: "valid-1", Events: withData(`[1,2]`)}, "events[1].data", ""},
		{"data string", eventstore.AppendParams{Stream: "valid-1", Events: withData(`"x"`)}, "events[1].data", ""},
		{"data number", eventstore.AppendParams{Stream: "valid-1", Events: withData(`12`)}, "events[1].data", ""},
		{"data null", eventstore.AppendParams{Stream: "valid-1", Events: withData(`null`)}, "events[1].data", ""},
		{"data empty", eventstore.AppendParams{Stream: "valid-1", Events: withData(``)}, "events[1].data", ""},
		{"data malformed", eventstore.AppendParams{Stream: "valid-1", Events: withData(`{"a":`)}, "events[1].data", ""},
		// PostgreSQL's jsonb refuses these; every backend must refuse them
		// the same way, before anything is written.
		{"data invalid utf-8", eventstore.AppendParams{Stream: "valid-1", Events: withData("{\"a\":\"\xff\"}")}, "events[1].data", ""},
		{"data lone surrogate escape", eventstore.AppendParams{Stream: "valid-1", Events: withData(`{"a":"\ud800"}`)}, "events[1].data", ""},
		{"data NUL escape", eventstore.AppendParams{Stream: "valid-1", Events: withData(`{"a":"\u0000"}`)}, "events[1].data", ""},
		{"data with a non-JSON space", eventstore.AppendParams{Stream: "valid-1", Events: withData("{\"a\":1}\u00a0")}, "events[1].data", ""},
		{"data trailing value", eventstore.AppendParams{Stream: "valid-1", Events: withData(`{"a":1} {}`)}, "events[1].data", ""},
		{"metadata array", eventstore.AppendParams{Stream: "valid-1", Events: withMeta(`[]`)}, "events[1].metadata", ""},
		{"metadata malformed", eventstore.AppendParams{Stream: "valid-1", Events: withMeta(`{`)}, "events[1].metadata", ""},
		{"bad tenant", eventstore.AppendParams{Stream: "valid-1", Events: withTenant("a b")}, "events[1].tenant", ""},
		{"negative exact version", eventstore.AppendParams{Stream: "valid-1", Expected: eventstore.Exact(-1), Events: []eventstore.ProposedEvent{good()}}, "expected_version", ""},
	}
	for _, c := range cases {
		_, err := s.Append(ctx, c.p)
		if !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", c.name, err)
			continue
		}
		var ve *eventstore.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: err %v is not a *ValidationError", c.name, err)
		} else if _, ok := ve.Fields[c.field]; !ok {
			t.Errorf("%s: field errors %v do not name %q", c.name, ve.Fields, c.field)
		}
		assertHead(ctx, t, s, head, c.name)
		for _, e := range c.p.Events {
			if e.ID != uuid.Nil {
				assertNotFound(ctx, t, s, e.ID, c.name)
				break // one is enough; the head check covers the rest
			}
		}
	}
	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "valid-1"})
	if err != nil || len(stream) != 1 {
		t.Errorf("valid-1 after rejected appends: %d events, err %v; want just the seed", len(stream), err)
	}
}

func testExpectedVersion(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	wrong := func(what, stream string, exp eventstore.ExpectedVersion, actual int64) {
		t.Helper()
		head := mustHead(ctx, t, s)
		e := ev("version.check", "")
		_, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Expected: exp, Events: []eventstore.ProposedEvent{e, ev("version.check", "")}})
		if !errors.Is(err, eventstore.ErrWrongVersion) {
			t.Fatalf("%s: err = %v, want ErrWrongVersion", what, err)
		}
		var we *eventstore.WrongVersionError
		if !errors.As(err, &we) {
			t.Fatalf("%s: err %v is not a *WrongVersionError", what, err)
		}
		if we.Actual != actual || we.Stream != stream || !we.Expected.Equal(exp) {
			t.Errorf("%s: WrongVersionError{Stream %q, Expected %s, Actual %d}, want {%q, %s, %d}",
				what, we.Stream, we.Expected, we.Actual, stream, exp, actual)
		}
		assertHead(ctx, t, s, head, what)
		assertNotFound(ctx, t, s, e.ID, what)
	}

	// A stream that does not exist.
	wrong("exists on missing stream", "ev-1", eventstore.StreamExists, -1)
	wrong("exact 0 on missing stream", "ev-1", eventstore.Exact(0), -1)
	mustAppend(ctx, t, s, "ev-1", eventstore.NoStream, ev("version.check", ""), ev("version.check", "")) // versions 0, 1

	// A stream at version 1.
	wrong("no_stream on existing stream", "ev-1", eventstore.NoStream, 1)
	wrong("exact 0 on version 1", "ev-1", eventstore.Exact(0), 1)
	wrong("exact 2 on version 1", "ev-1", eventstore.Exact(2), 1)
	r := mustAppend(ctx, t, s, "ev-1", eventstore.Exact(1), ev("version.check", ""))
	if r.Events[0].Version != 2 {
		t.Errorf("exact 1: appended version %d, want 2", r.Events[0].Version)
	}
	r = mustAppend(ctx, t, s, "ev-1", eventstore.StreamExists, ev("version.check", ""))
	if r.Events[0].Version != 3 {
		t.Errorf("exists: appended version %d, want 3", r.Events[0].Version)
	}
	r = mustAppend(ctx, t, s, "ev-1", eventstore.Any, ev("version.check", ""))
	if r.Events[0].Version != 4 {
		t.Errorf("any: appended version %d, want 4", r.Events[0].Version)
	}
	r = mustAppend(ctx, t, s, "ev-2", eventstore.Any, ev("version.check", ""))
	if r.Events[0].Version != 0 {
		t.Errorf("any on a new stream: version %d, want 0", r.Events[0].Version)
	}
	// Versions are per stream: ev-2 does not move ev-1.
	wrong("exact 0 on version 4", "ev-1", eventstore.Exact(0), 4)
	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "ev-1"})
	if err != nil || len(stream) != 5 {
		t.Fatalf("ev-1: %d events, err %v; want 5", len(stream), err)
	}
}

func testIdempotentRetry(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	events := []eventstore.ProposedEvent{ev("order.created", `{"n":1}`), ev("order.paid", `{"n":2}`), ev("order.shipped", `{"n":3}`)}
	orig := mustAppend(ctx, t, s, "idem-1", eventstore.NoStream, events...)
	mustAppend(ctx, t, s, "idem-2", eventstore.Any, ev("other.event", ""))
	head := mustHead(ctx, t, s)

	check := func(what string, exp eventstore.ExpectedVersion, retry []eventstore.ProposedEvent, want []eventstore.AppendedEvent) {
		t.Helper()
		res, err := s.Append(ctx, eventstore.AppendParams{Stream: "idem-1", Expected: exp, Events: retry})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !res.Duplicate {
			t.Errorf("%s: Duplicate = false, want true", what)
		}
		if len(res.Events) != len(want) {
			t.Fatalf("%s: %d results, want %d", what, len(res.Events), len(want))
		}
		for i := range want {
			if res.Events[i] != want[i] {
				t.Errorf("%s: result %d = %+v, want the original %+v", what, i, res.Events[i], want[i])
			}
		}
		assertHead(ctx, t, s, head, what)
	}
	check("same request", eventstore.NoStream, events, orig.Events)
	// Whatever expected_version says: a retry of an append that succeeded
	// would otherwise fail its own check.
	check("retry with exact 0", eventstore.Exact(0), events, orig.Events)
	check("retry with exists", eventstore.StreamExists, events, orig.Events)
	check("subset in another order", eventstore.Any,
		[]eventstore.ProposedEvent{events[2], events[0]}, []eventstore.AppendedEvent{orig.Events[2], orig.Events[0]})

	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "idem-1"})
	if err != nil || len(stream) != 3 {
		t.Errorf("idem-1: %d events, err %v; want 3", len(stream), err)
	}
	// The stream continues normally afterwards.
	r := mustAppend(ctx, t, s, "idem-1", eventstore.Exact(2), ev("order.closed", ""))
	if r.Events[0].Version != 3 {
		t.Errorf("append after retries: version %d, want 3", r.Events[0].Version)
	}
}

func testIDConflict(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	old := []eventstore.ProposedEvent{ev("order.created", ""), ev("order.paid", "")}
	mustAppend(ctx, t, s, "conf-1", eventstore.Any, old...)
	mustAppend(ctx, t, s, "conf-2", eventstore.Any, ev("other.event", ""))
	head := mustHead(ctx, t, s)

	conflict := func(what, stream string, events []eventstore.ProposedEvent, fresh uuid.UUID) {
		t.Helper()
		_, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Events: events})
		if !errors.Is(err, eventstore.ErrIDConflict) {
			t.Errorf("%s: err = %v, want ErrIDConflict", what, err)
		}
		assertHead(ctx, t, s, head, what)
		if fresh != uuid.Nil {
			assertNotFound(ctx, t, s, fresh, what)
		}
	}
	n1 := ev("order.shipped", "")
	conflict("old then new", "conf-1", []eventstore.ProposedEvent{old[0], n1}, n1.ID)
	n2 := ev("order.shipped", "")
	conflict("new then old", "conf-1", []eventstore.ProposedEvent{n2, old[1]}, n2.ID)
	conflict("all ids in another stream", "conf-2", old, uuid.Nil)
	conflict("ids in another, new stream", "conf-3", old[:1], uuid.Nil)
	n3 := ev("order.shipped", "")
	conflict("new and another stream's", "conf-2", []eventstore.ProposedEvent{n3, old[0]}, n3.ID)

	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "conf-1"})
	if err != nil || len(stream) != 2 {
		t.Errorf("conf-1: %d events, err %v; want 2", len(stream), err)
	}
}

func testAppendCanceled(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)
	mustAppend(ctx, t, s, "cancel-1", eventstore.Any, ev("seed.event", ""))
	head := mustHead(ctx, t, s)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	e := ev("order.created", "")
	_, err := s.Append(cctx, eventstore.AppendParams{Stream: "cancel-1", Events: []eventstore.ProposedEvent{e}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("append with a canceled context: err = %v, want context.Canceled", err)
	}
	assertHead(ctx, t, s, head, "canceled append")
	assertNotFound(ctx, t, s, e.ID, "canceled append")
	// The id is free for a real append afterwards.
	mustAppend(ctx, t, s, "cancel-1", eventstore.Any, e)
}
