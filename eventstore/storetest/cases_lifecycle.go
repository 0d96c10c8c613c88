package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

func testWait(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	// Nothing after the head: Wait ends with the context.
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	start := time.Now()
	err := s.Wait(wctx, eventstore.Start)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on an empty log: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Wait took %s past its 100ms deadline", d)
	}

	r := mustAppend(ctx, t, s, "wait-1", eventstore.Any, ev("wait.first", ""))
	// Something after `after` already: Wait returns at once.
	wctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	if err := s.Wait(wctx, eventstore.Start); err != nil {
		t.Errorf("Wait with events after the cursor: %v, want nil", err)
	}
	cancel()

	// Several waiters at the head all wake on one append.
	head := r.Events[0].Position
	const waiters = 5
	errs := make(chan error, waiters)
	woke := make(chan time.Time, waiters)
	for range waiters {
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			err := s.Wait(wctx, head)
			woke <- time.Now()
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case <-woke:
		t.Fatalf("Wait returned before anything was appended")
	default:
	}
	appended := time.Now()
	r2 := mustAppend(ctx, t, s, "wait-1", eventstore.Any, ev("wait.second", ""))
	for range waiters {
		if err := <-errs; err != nil {
			t.Errorf("Wait after an append: %v, want nil", err)
		}
		if d := (<-woke).Sub(appended); d > 2*time.Second {
			t.Errorf("Wait woke %s after the append", d)
		}
	}
	evs, _ := readAll(ctx, t, s, head, eventstore.Filter{})
	if len(evs) != 1 || evs[0].ID != r2.Events[0].ID {
		t.Errorf("read after wake-up: %v, want the new event", ids(evs))
	}
}

// history appends a little of everything and returns what the log holds.
func history(ctx context.Context, t *testing.T, s eventstore.Store) ([]eventstore.Event, []eventstore.ProposedEvent) {
	t.Helper()
	var sent []eventstore.ProposedEvent
	for i := range 5 {
		a := evTenant("order.created", "acme")
		a.Metadata = []byte(fmt.Sprintf(`{"i":%d}`, i))
		b := ev("order.paid", fmt.Sprintf(`{"i":%d}`, i))
		mustAppend(ctx, t, s, fmt.Sprintf("reopen-%d", i%2), eventstore.Any, a, b)
		sent = append(sent, a, b)
	}
	all, _ := readAllN(ctx, t, s, len(sent))
	return all, sent
}

func testReopen(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, reopen := open(t, h)
	before, sent := history(ctx, t, s)
	head := mustHead(ctx, t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := reopen(t)
	if got := mustHead(ctx, t, s2); got != head {
		t.Fatalf("after reopen: Head = %s, want %s", got, head)
	}
	after, _ := readAll(ctx, t, s2, eventstore.Start, eventstore.Filter{})
	if len(after) != len(before) {
		t.Fatalf("after reopen: %d events, want %d", len(after), len(before))
	}
	for i := range before {
		assertSameEvent(t, "after reopen", after[i], before[i])
		e, err := s2.Event(ctx, before[i].ID)
		if err != nil {
			t.Fatalf("after reopen: Event(%s): %v", before[i].ID, err)
		}
		assertSameEvent(t, "after reopen, by id", e, before[i])
	}
	// Ids are still known: a retry is a duplicate with the original positions.
	res, err := s2.Append(ctx, eventstore.AppendParams{Stream: "reopen-0", Events: sent[:2]})
	if err != nil || !res.Duplicate || res.Events[0].Position != before[0].Position || res.Events[1].Position != before[1].Position {
		t.Errorf("retry after reopen: %+v, %v; want Duplicate with positions %s, %s", res, err, before[0].Position, before[1].Position)
	}
	if _, err := s2.Append(ctx, eventstore.AppendParams{Stream: "reopen-0", Events: []eventstore.ProposedEvent{sent[0], ev("order.new", "")}}); !errors.Is(err, eventstore.ErrIDConflict) {
		t.Errorf("mixed ids after reopen: %v, want ErrIDConflict", err)
	}
	// Stream versions survive: reopen-0 holds 6 events (versions 0..5).
	if _, err := s2.Append(ctx, eventstore.AppendParams{Stream: "reopen-0", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{ev("order.new", "")}}); !errors.Is(err, eventstore.ErrWrongVersion) {
		t.Errorf("no_stream after reopen: %v, want ErrWrongVersion", err)
	}
	r := mustAppend(ctx, t, s2, "reopen-0", eventstore.Exact(5), ev("order.new", ""))
	if r.Events[0].Version != 6 || !head.Less(r.Events[0].Position) {
		t.Errorf("append after reopen: version %d at %s, want version 6 after %s", r.Events[0].Version, r.Events[0].Position, head)
	}
	if got := mustHead(ctx, t, s2); got != r.Events[0].Position {
		t.Errorf("after reopen and append: Head = %s, want %s", got, r.Events[0].Position)
	}
	// PositionAt still works on the reopened data.
	if p, err := s2.PositionAt(ctx, before[0].RecordedAt.Add(-time.Hour)); err != nil || !p.Less(before[0].Position) {
		t.Errorf("PositionAt before everything after reopen: %s, %v; want a cursor before %s", p, err, before[0].Position)
	}
}

func testClosed(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)
	r := mustAppend(ctx, t, s, "closed-1", eventstore.Any, ev("closed.event", ""))

	// A waiter blocked at Close time is released.
	waitErr := make(chan error, 1)
	go func() { waitErr <- s.Wait(ctx, r.Events[0].Position) }()
	time.Sleep(50 * time.Millisecond)

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil (idempotent)", err)
	}
	select {
	case err := <-waitErr:
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("Wait blocked during Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Wait still blocked 5s after Close")
	}

	closed := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", what, err)
		}
	}
	_, err := s.Append(ctx, eventstore.AppendParams{Stream: "closed-1", Events: []eventstore.ProposedEvent{ev("closed.event", "")}})
	closed("Append", err)
	_, err = s.ReadAll(ctx, eventstore.ReadParams{})
	closed("ReadAll", err)
	_, err = s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "closed-1"})
	closed("ReadStream", err)
	_, err = s.Event(ctx, r.Events[0].ID)
	closed("Event", err)
	_, err = s.Head(ctx)
	closed("Head", err)
	_, err = s.PositionAt(ctx, time.Now())
	closed("PositionAt", err)
	closed("Wait", s.Wait(ctx, eventstore.Start))
	closed("Ping", s.Ping(ctx))
}

func testCloseRacing(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, reopen := open(t, h)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	const writers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[uuid.UUID]bool{}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				e := ev("race.event", "")
				_, err := s.Append(ctx, eventstore.AppendParams{Stream: fmt.Sprintf("race-%d", w), Events: []eventstore.ProposedEvent{e}})
				if errors.Is(err, eventstore.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append racing Close: %v, want nil or ErrClosed", err)
					return
				}
				mu.Lock()
				acked[e.ID] = true
				mu.Unlock()
				// Readers race Close too.
				if _, err := s.ReadAll(ctx, eventstore.ReadParams{Limit: 5}); err != nil && !errors.Is(err, eventstore.ErrClosed) {
					t.Errorf("ReadAll racing Close: %v, want nil or ErrClosed", err)
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Errorf("Close with appends in flight: %v", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("appenders still running 10s after Close")
	}
	t.Logf("%d appends acknowledged before Close", len(acked))

	// Every acknowledged append is there after reopening.
	s2 := reopen(t)
	for id := range acked {
		if _, err := s2.Event(ctx, id); err != nil {
			t.Errorf("acknowledged event %s after reopen: %v", id, err)
		}
	}
}
