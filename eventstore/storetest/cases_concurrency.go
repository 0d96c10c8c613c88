package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// seenOnce checks a reader's events: each once, in strictly increasing
// position order.
func seenOnce(t *testing.T, what string, evs []eventstore.Event) map[uuid.UUID]eventstore.Position {
	t.Helper()
	out := make(map[uuid.UUID]eventstore.Position, len(evs))
	for i, e := range evs {
		if _, dup := out[e.ID]; dup {
			t.Errorf("%s: event %s delivered twice", what, e.ID)
		}
		out[e.ID] = e.Position
		if i > 0 && !evs[i-1].Position.Less(e.Position) {
			t.Errorf("%s: positions not strictly increasing: %s then %s", what, evs[i-1].Position, e.Position)
		}
	}
	return out
}

func testCommitOrder(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)
	mustAppend(ctx, t, s, "co-seed", eventstore.Any, ev("commit.seed", ""))

	a, b := ev("commit.a", ""), ev("commit.b", "")
	if h.BeginHeld == nil {
		// Serialized writers: A commits before B starts; a reader between
		// them sees A, and continuing from its cursor sees B, each once.
		mustAppend(ctx, t, s, "co-a", eventstore.Any, a)
		first, cur := readAll(ctx, t, s, eventstore.Start, eventstore.Filter{})
		mustAppend(ctx, t, s, "co-b", eventstore.Any, b)
		second, _ := readAll(ctx, t, s, cur, eventstore.Filter{})
		got := seenOnce(t, "serialized", append(first, second...))
		if _, ok := got[a.ID]; !ok {
			t.Errorf("reader missed A")
		}
		if _, ok := got[b.ID]; !ok {
			t.Errorf("reader missed B")
		}
		return
	}

	// Tx A appends and stays open; tx B appends and commits.
	resA, commitA, rollbackA, err := h.BeginHeld(ctx, t, s, eventstore.AppendParams{Stream: "co-a", Events: []eventstore.ProposedEvent{a}})
	if err != nil {
		t.Fatalf("BeginHeld(A): %v", err)
	}
	committed := false
	t.Cleanup(func() {
		if !committed {
			_ = rollbackA()
		}
	})
	resB := mustAppend(ctx, t, s, "co-b", eventstore.Any, b)
	headWhileHeld := mustHead(ctx, t, s)

	// A reader from Start reads everything it can while A is open.
	first, cur := readAll(ctx, t, s, eventstore.Start, eventstore.Filter{})
	for _, e := range first {
		if e.ID == a.ID {
			t.Fatalf("reader saw A before its transaction committed")
		}
	}
	if n := len(resA.Events); n == 1 && !resA.Events[0].Position.IsZero() && !cur.Less(resA.Events[0].Position) {
		t.Errorf("reader cursor %s passed A's position %s while A is uncommitted", cur, resA.Events[0].Position)
	}
	// Wait at the reader's cursor while A is open may wake (spuriously) or
	// time out; it must not fail otherwise.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if err := s.Wait(wctx, cur); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait while A is open: %v", err)
	}
	cancel()

	if err := commitA(); err != nil {
		t.Fatalf("commit A: %v", err)
	}
	committed = true

	// Continuing from the cursor delivers A (the reader never skipped it),
	// and over both reads A and B arrive exactly once each.
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	var second []eventstore.Event
	c := cur
	for {
		var more []eventstore.Event
		more, c = readAll(ctx, t, s, c, eventstore.Filter{})
		second = append(second, more...)
		if containsID(second, a.ID) || wctx.Err() != nil {
			break
		}
		if err := s.Wait(wctx, c); err != nil {
			break
		}
	}
	cancel()
	all := append(append([]eventstore.Event{}, first...), second...)
	got := seenOnce(t, "commit order", all)
	posA, okA := got[a.ID]
	posB, okB := got[b.ID]
	if !okA {
		t.Fatalf("after A committed, a reader continuing from %s never saw A: it skipped it", cur)
	}
	if !okB {
		t.Fatalf("reader never saw B")
	}
	if posB != resB.Events[0].Position {
		t.Errorf("B read at %s, appended at %s", posB, resB.Events[0].Position)
	}
	if p := resA.Events[0].Position; !p.IsZero() && p != posA {
		t.Errorf("A read at %s, BeginHeld returned %s", posA, p)
	}
	// A reader that started "now" (at the head) while A was open must not skip A either.
	fromHead, _ := readAll(ctx, t, s, headWhileHeld, eventstore.Filter{})
	if !containsID(fromHead, a.ID) {
		t.Errorf("a reader starting at the head %s taken while A was open never sees A", headWhileHeld)
	}
	// And a fresh reader from Start sees both, once, in log order.
	seenOnce(t, "fresh reader", func() []eventstore.Event { e, _ := readAll(ctx, t, s, eventstore.Start, eventstore.Filter{}); return e }())
}

func testCommitOrderRollback(t *testing.T, h Harness) {
	t.Parallel()
	if h.BeginHeld == nil {
		t.Skip("writes are serialized: no held transactions to roll back")
	}
	ctx := testCtx(t)
	s, _ := open(t, h)

	a, b := ev("commit.a", ""), ev("commit.b", "")
	_, _, rollbackA, err := h.BeginHeld(ctx, t, s, eventstore.AppendParams{Stream: "rb-a", Events: []eventstore.ProposedEvent{a}})
	if err != nil {
		t.Fatalf("BeginHeld(A): %v", err)
	}
	mustAppend(ctx, t, s, "rb-b", eventstore.Any, b)
	first, cur := readAll(ctx, t, s, eventstore.Start, eventstore.Filter{})
	if err := rollbackA(); err != nil {
		t.Fatalf("rollback A: %v", err)
	}
	c := mustAppend(ctx, t, s, "rb-c", eventstore.Any, ev("commit.c", ""))
	// B and C arrive once each, A never; the reader gets past A's hole.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	all := first
	for !containsID(all, c.Events[0].ID) && wctx.Err() == nil {
		var more []eventstore.Event
		more, cur = readAll(ctx, t, s, cur, eventstore.Filter{})
		all = append(all, more...)
		if !containsID(all, c.Events[0].ID) {
			_ = s.Wait(wctx, cur)
		}
	}
	got := seenOnce(t, "rollback", all)
	if _, ok := got[a.ID]; ok {
		t.Errorf("reader saw rolled-back A")
	}
	if _, ok := got[b.ID]; !ok {
		t.Errorf("reader never saw B")
	}
	if _, ok := got[c.Events[0].ID]; !ok {
		t.Errorf("reader never got past the rolled-back A to C")
	}
	assertNotFound(ctx, t, s, a.ID, "rolled back")
}

func containsID(evs []eventstore.Event, id uuid.UUID) bool {
	for _, e := range evs {
		if e.ID == id {
			return true
		}
	}
	return false
}

// testConcurrentWriters: 16 writers append for a while (some holding their
// transactions open 50-200ms when the backend has held transactions, some of
// those rolling back) while a reader tails the log with eventstore.Follow. The
// reader must see every committed event exactly once, in strictly increasing
// positions, at the positions Append returned, and no rolled-back event.
func testConcurrentWriters(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	const (
		writers  = 16
		duration = 1500 * time.Millisecond
	)
	var (
		mu         sync.Mutex
		committed  = map[uuid.UUID]eventstore.Position{} // zero position: not reported by BeginHeld
		rolledBack = map[uuid.UUID]bool{}
		seen       []eventstore.Event
		readerErr  error
	)
	rctx, stopReader := context.WithCancel(ctx)
	defer stopReader()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		err := eventstore.Follow(rctx, s, eventstore.FollowParams{Batch: 50}, func(_ context.Context, evs []eventstore.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if n := len(seen); n > 0 && !seen[n-1].Position.Less(evs[0].Position) {
				return fmt.Errorf("reader went backwards: %s then %s", seen[n-1].Position, evs[0].Position)
			}
			seen = append(seen, evs...)
			return nil
		}, nil)
		if err != nil && !errors.Is(err, context.Canceled) {
			mu.Lock()
			readerErr = err
			mu.Unlock()
		}
	}()

	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	var appends atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			held := h.BeginHeld != nil && w%4 == 0 // 4 of 16 hold their transactions
			for i := 0; time.Now().Before(deadline); i++ {
				n := 1 + rng.IntN(3)
				events := make([]eventstore.ProposedEvent, n)
				for j := range events {
					events[j] = ev("concurrent.event", fmt.Sprintf(`{"w":%d,"i":%d,"j":%d}`, w, i, j))
				}
				p := eventstore.AppendParams{Stream: fmt.Sprintf("conc-%d", rng.IntN(4)), Events: events}
				if held {
					res, commit, rollback, err := h.BeginHeld(ctx, t, s, p)
					if err != nil {
						t.Errorf("writer %d: BeginHeld: %v", w, err)
						return
					}
					time.Sleep(time.Duration(50+rng.IntN(151)) * time.Millisecond)
					if rng.IntN(5) == 0 {
						if err := rollback(); err != nil {
							t.Errorf("writer %d: rollback: %v", w, err)
							return
						}
						mu.Lock()
						for _, e := range events {
							rolledBack[e.ID] = true
						}
						mu.Unlock()
						continue
					}
					if err := commit(); err != nil {
						t.Errorf("writer %d: commit: %v", w, err)
						return
					}
					record(&mu, committed, events, res)
					appends.Add(1)
					continue
				}
				res, err := s.Append(ctx, p)
				if err != nil {
					t.Errorf("writer %d: Append: %v", w, err)
					return
				}
				record(&mu, committed, events, res)
				appends.Add(1)
			}
		}()
	}
	wg.Wait()

	// Let the reader catch up with the head, then stop it.
	head := mustHead(ctx, t, s)
	catchUp := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n, err := len(seen), readerErr
		var last eventstore.Position
		if n > 0 {
			last = seen[n-1].Position
		}
		mu.Unlock()
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
		if !last.Less(head) || time.Now().After(catchUp) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopReader()
	<-readerDone

	mu.Lock()
	defer mu.Unlock()
	if readerErr != nil {
		t.Fatalf("reader: %v", readerErr)
	}
	t.Logf("%d appends, %d events committed, %d rolled back, reader saw %d", appends.Load(), len(committed), len(rolledBack), len(seen))
	if len(committed) == 0 {
		t.Fatalf("no event committed")
	}
	got := seenOnce(t, "tailing reader", seen)
	missing := 0
	for id, pos := range committed {
		p, ok := got[id]
		if !ok {
			missing++
			if missing <= 5 {
				t.Errorf("committed event %s (position %s) never seen by the tailing reader", id, pos)
			}
			continue
		}
		if !pos.IsZero() && p != pos {
			t.Errorf("event %s: Append returned position %s, reader saw %s", id, pos, p)
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d committed events missed by the reader", missing, len(committed))
	}
	for id := range got {
		if rolledBack[id] {
			t.Errorf("reader saw rolled-back event %s", id)
		} else if _, ok := committed[id]; !ok {
			t.Errorf("reader saw event %s that no writer committed", id)
		}
	}
}

func record(mu *sync.Mutex, committed map[uuid.UUID]eventstore.Position, events []eventstore.ProposedEvent, res eventstore.AppendResult) {
	mu.Lock()
	defer mu.Unlock()
	for i, e := range events {
		var pos eventstore.Position
		if i < len(res.Events) {
			pos = res.Events[i].Position
		}
		committed[e.ID] = pos
	}
}
