package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// caseTimeout bounds every store call of a case, so a hang fails instead of
// stalling the whole run.
const caseTimeout = 30 * time.Second

// open opens a fresh store and closes it at cleanup.
func open(t *testing.T, h Harness) (eventstore.Store, func(t *testing.T) eventstore.Store) {
	t.Helper()
	s, reopen := h.Open(t)
	t.Cleanup(func() { _ = s.Close() })
	return s, func(t *testing.T) eventstore.Store {
		t.Helper()
		s2 := reopen(t)
		t.Cleanup(func() { _ = s2.Close() })
		return s2
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
	t.Cleanup(cancel)
	return ctx
}

// ev is a proposed event with a fresh id and a small data object.
func ev(typ string, data string) eventstore.ProposedEvent {
	if data == "" {
		data = `{}`
	}
	return eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: typ, Data: json.RawMessage(data)}
}

func evTenant(typ, tenant string) eventstore.ProposedEvent {
	e := ev(typ, fmt.Sprintf(`{"tenant":%q}`, tenant))
	e.Tenant = tenant
	return e
}

func mustAppend(ctx context.Context, t *testing.T, s eventstore.Store, stream string, exp eventstore.ExpectedVersion, events ...eventstore.ProposedEvent) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Expected: exp, Events: events})
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	if res.Duplicate {
		t.Fatalf("append to %s: unexpected Duplicate", stream)
	}
	if len(res.Events) != len(events) {
		t.Fatalf("append to %s: %d results for %d events", stream, len(res.Events), len(events))
	}
	return res
}

// readAllN is readAll for a test that knows at least n events are committed
// (and no transaction of its own is held open): while fewer are visible it
// waits for the head to move and reads again, until ctx ends. A backend
// whose readers wait for older open transactions (PostgreSQL's visibility
// horizon is cluster-wide) may keep a test's own commits back for as long
// as an unrelated session holds an older transaction, for example another
// package's tests on the same cluster; Append's read-your-writes wait is
// bounded (a second), the test's patience is not.
func readAllN(ctx context.Context, t *testing.T, s eventstore.Store, n int) ([]eventstore.Event, eventstore.Position) {
	t.Helper()
	for {
		all, next := readAll(ctx, t, s, eventstore.Start, eventstore.Filter{})
		if len(all) >= n {
			return all, next
		}
		if err := s.Wait(ctx, next); err != nil {
			return all, next // the caller reports the shortfall
		}
	}
}

// waitHead waits until the head is at least pos (see readAllN) and returns it.
func waitHead(ctx context.Context, t *testing.T, s eventstore.Store, pos eventstore.Position) eventstore.Position {
	t.Helper()
	for {
		h := mustHead(ctx, t, s)
		if !h.Less(pos) {
			return h
		}
		if err := s.Wait(ctx, h); err != nil {
			return h
		}
	}
}

func mustHead(ctx context.Context, t *testing.T, s eventstore.Store) eventstore.Position {
	t.Helper()
	h, err := s.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return h
}

// readAll reads every event after `after` matching f, page by page, until a
// read no longer moves the cursor. It returns the events and the last cursor.
func readAll(ctx context.Context, t *testing.T, s eventstore.Store, after eventstore.Position, f eventstore.Filter) ([]eventstore.Event, eventstore.Position) {
	t.Helper()
	var out []eventstore.Event
	for {
		res, err := s.ReadAll(ctx, eventstore.ReadParams{After: after, Filter: f, Limit: 1000})
		if err != nil {
			t.Fatalf("ReadAll after %s: %v", after, err)
		}
		if res.Next.Less(after) {
			t.Fatalf("ReadAll after %s: Next %s moved backwards", after, res.Next)
		}
		for _, e := range res.Events {
			if !after.Less(e.Position) {
				t.Fatalf("ReadAll after %s returned event at %s", after, e.Position)
			}
		}
		out = append(out, res.Events...)
		if res.Next == after {
			if len(res.Events) > 0 {
				t.Fatalf("ReadAll after %s returned events but did not move Next", after)
			}
			return out, after
		}
		after = res.Next
	}
}

// assertHead fails unless the head is still want (nothing was written).
func assertHead(ctx context.Context, t *testing.T, s eventstore.Store, want eventstore.Position, what string) {
	t.Helper()
	if got := mustHead(ctx, t, s); got != want {
		t.Errorf("%s: head moved from %s to %s; nothing may be written", what, want, got)
	}
	if evs, _ := readAll(ctx, t, s, want, eventstore.Filter{}); len(evs) != 0 {
		t.Errorf("%s: %d events after the old head %s; nothing may be written", what, len(evs), want)
	}
}

func assertNotFound(ctx context.Context, t *testing.T, s eventstore.Store, id uuid.UUID, what string) {
	t.Helper()
	if _, err := s.Event(ctx, id); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("%s: Event(%s) = %v, want ErrNotFound (it must not have been written)", what, id, err)
	}
}

func ids(evs []eventstore.Event) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func proposedIDs(evs []eventstore.ProposedEvent) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func emptyMetadata(m json.RawMessage) bool {
	return len(m) == 0 || string(m) == "null"
}

// assertSameEvent compares every field of two recorded events.
func assertSameEvent(t *testing.T, what string, got, want eventstore.Event) {
	t.Helper()
	if got.ID != want.ID || got.Stream != want.Stream || got.Type != want.Type || got.Tenant != want.Tenant ||
		got.Position != want.Position || got.Version != want.Version || !got.RecordedAt.Equal(want.RecordedAt) ||
		!jsonEqual(got.Data, want.Data) || !(emptyMetadata(got.Metadata) && emptyMetadata(want.Metadata) || jsonEqual(got.Metadata, want.Metadata)) {
		t.Errorf("%s:\n got %s\nwant %s", what, fmtEvent(got), fmtEvent(want))
	}
}

func fmtEvent(e eventstore.Event) string {
	return fmt.Sprintf("{id %s stream %s type %s tenant %q pos %s v%d at %s data %s meta %s}",
		e.ID, e.Stream, e.Type, e.Tenant, e.Position, e.Version, e.RecordedAt.Format(time.RFC3339Nano), e.Data, e.Metadata)
}

func sameIDs(got, want []uuid.UUID) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
