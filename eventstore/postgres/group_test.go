package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// groupStore opens a Store with one group slot, so that Appends made while
// occupySlot holds it wait and go together in one group statement.
func groupStore(t *testing.T, schema string) *postgres.Store {
	cfg := pgtest.Config(t, schema)
	cfg.AppendGroups = 1
	cfg.MaxConns = 16
	return pgtest.OpenConfig(t, cfg)
}

// waitFor polls cond until it holds, or fails t after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// occupySlot makes s's only group slot busy with a single-event Append that
// waits inside PostgreSQL: its event's id is also in a transaction held open
// on another stream, so its INSERT waits for that transaction. release rolls
// the transaction back; the waiting Append then commits.
func occupySlot(ctx context.Context, t *testing.T, s *postgres.Store) (release func()) {
	t.Helper()
	appendOne(ctx, t, s, "slot") // s now knows the stream's version: the fast path
	ev := event("test.slot")
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendTx(ctx, tx, eventstore.AppendParams{Stream: "slot-holder", Events: []eventstore.ProposedEvent{ev}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, eventstore.AppendParams{Stream: "slot", Events: []eventstore.ProposedEvent{ev}})
		done <- err
	}()
	waitFor(t, "the slot to be taken", func() bool { r, _ := postgres.GroupState(s); return r == 1 })
	return func() {
		t.Helper()
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("the Append holding the slot: %v", err)
		}
	}
}

type groupResult struct {
	res eventstore.AppendResult
	err error
}

// appendQueued starts a single-event Append of ev to stream and waits until
// it is queued for the next group.
func appendQueued(ctx context.Context, t *testing.T, s *postgres.Store, stream string, ev eventstore.ProposedEvent) <-chan groupResult {
	t.Helper()
	_, before := postgres.GroupState(s)
	out := make(chan groupResult, 1)
	go func() {
		res, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Events: []eventstore.ProposedEvent{ev}})
		out <- groupResult{res, err}
	}()
	waitFor(t, "the Append on "+stream+" to queue", func() bool { _, q := postgres.GroupState(s); return q == before+1 })
	return out
}

// queueMany queues a single-event Append on each of the streams
// prefix-0 .. prefix-(n-1), as appendQueued does.
func queueMany(ctx context.Context, t *testing.T, s *postgres.Store, prefix string, n int) ([]eventstore.ProposedEvent, []<-chan groupResult) {
	t.Helper()
	evs := make([]eventstore.ProposedEvent, n)
	outs := make([]<-chan groupResult, n)
	for i := range n {
		evs[i] = event("test.grouped")
		outs[i] = appendQueued(ctx, t, s, fmt.Sprintf("%s-%d", prefix, i), evs[i])
	}
	return evs, outs
}

// positionsIn maps the ids of the whole log to their events.
func positionsIn(ctx context.Context, t *testing.T, s eventstore.Store) map[[16]byte]eventstore.Event {
	t.Helper()
	m := map[[16]byte]eventstore.Event{}
	for _, e := range readEverything(ctx, t, s, eventstore.Start, eventstore.Filter{}) {
		m[e.ID] = e
	}
	return m
}

// Single-event Appends that wait for a group slot share one statement and
// one transaction. One whose stream is locked by an open transaction is left
// out of the group and waits for that transaction alone: the others commit
// without it.
func TestGroupedAppendsShareATransaction(t *testing.T) {
	ctx := ctxFor(t)
	s := groupStore(t, pgtest.Schema(t))
	const n = 8
	for i := range n {
		appendOne(ctx, t, s, fmt.Sprintf("g-%d", i))
	}
	appendOne(ctx, t, s, "busy")
	busyTx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer busyTx.Rollback(context.Background())
	if _, err := s.AppendTx(ctx, busyTx, eventstore.AppendParams{Stream: "busy", Events: []eventstore.ProposedEvent{event("test.tx")}}); err != nil {
		t.Fatal(err)
	}

	release := occupySlot(ctx, t, s)
	evs, outs := queueMany(ctx, t, s, "g", n)
	busyEv := event("test.busy")
	busyOut := appendQueued(ctx, t, s, "busy", busyEv)
	release()

	var txid uint64
	results := make([]eventstore.AppendResult, n)
	for i, out := range outs {
		r := <-out
		if r.err != nil {
			t.Fatalf("grouped append %d: %v", i, r.err)
		}
		results[i] = r.res
		e := r.res.Events[0]
		if e.ID != evs[i].ID || e.Version != 1 {
			t.Fatalf("grouped append %d: id %s version %d, want %s version 1", i, e.ID, e.Version, evs[i].ID)
		}
		if i == 0 {
			txid = e.Position.Hi
		} else if e.Position.Hi != txid {
			t.Fatalf("grouped append %d committed in transaction %d, append 0 in %d: want one transaction for the group", i, e.Position.Hi, txid)
		}
	}
	select {
	case r := <-busyOut:
		t.Fatalf("the Append on the locked stream returned while the lock was held: %+v, %v", r.res, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := busyTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-busyOut
	if r.err != nil || r.res.Events[0].Version != 2 {
		t.Fatalf("Append on the locked stream after its transaction committed: %+v, %v; want version 2", r.res, r.err)
	}

	log := positionsIn(ctx, t, s)
	for i, res := range results {
		got, ok := log[evs[i].ID]
		if !ok || got.Position != res.Events[0].Position || got.Stream != fmt.Sprintf("g-%d", i) || got.Version != 1 {
			t.Fatalf("grouped append %d: the log has %+v (found %v), the Append returned %+v", i, got, ok, res.Events[0])
		}
	}
	if got := log[busyEv.ID]; got.Position != r.res.Events[0].Position || got.Position.Hi == txid {
		t.Fatalf("Append on the locked stream: the log has %+v, the Append returned %+v", got, r.res.Events[0])
	}
}

// A group whose statement fails commits nothing, and every member then runs
// alone and gets its own answer: one member's error is not the others'.
// First one member's remembered version is stale and another's id is already
// in the log (errors Append retries on its own); then a member's row is
// refused by a trigger (an error no retry cures).
func TestGroupFailureAnswersEachAppend(t *testing.T) {
	ctx := ctxFor(t)
	schema := pgtest.Schema(t)
	s := groupStore(t, schema)
	other := pgtest.Open(t, schema)
	const n = 6
	for i := range n {
		appendOne(ctx, t, s, fmt.Sprintf("f-%d", i))
	}
	appendOne(ctx, t, s, "stale")
	appendOne(ctx, t, other, "stale") // s remembers version 0; the stream is at 1
	dupEv := event("test.dup")
	first, err := s.Append(ctx, eventstore.AppendParams{Stream: "dup", Events: []eventstore.ProposedEvent{dupEv}})
	if err != nil {
		t.Fatal(err)
	}

	appendOne(ctx, t, s, "poison")
	q := pgx.Identifier{schema}.Sanitize()
	if _, err := s.Pool().Exec(ctx, `CREATE FUNCTION `+q+`.poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.type = 'test.poison' THEN RAISE EXCEPTION 'poisoned event'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER poison BEFORE INSERT ON `+q+`.events FOR EACH ROW EXECUTE FUNCTION `+q+`.poison()`); err != nil {
		t.Fatal(err)
	}
	release := occupySlot(ctx, t, s)
	evs, outs := queueMany(ctx, t, s, "f", n)
	staleEv := event("test.stale")
	staleOut := appendQueued(ctx, t, s, "stale", staleEv)
	dupOut := appendQueued(ctx, t, s, "dup", dupEv)
	release()

	for i, out := range outs {
		r := <-out
		if r.err != nil || r.res.Duplicate || r.res.Events[0].ID != evs[i].ID || r.res.Events[0].Version != 1 {
			t.Fatalf("append %d: %+v, %v; want version 1 of its stream", i, r.res, r.err)
		}
	}
	if r := <-staleOut; r.err != nil || r.res.Events[0].Version != 2 {
		t.Fatalf("append with a stale remembered version: %+v, %v; want version 2", r.res, r.err)
	}
	r := <-dupOut
	if r.err != nil || !r.res.Duplicate || r.res.Events[0].Position != first.Events[0].Position {
		t.Fatalf("re-append of an id in the log: %+v, %v; want a duplicate at %s", r.res, r.err, first.Events[0].Position)
	}
	log := positionsIn(ctx, t, s)
	for _, ev := range append(evs, staleEv) {
		if _, ok := log[ev.ID]; !ok {
			t.Fatalf("event %s is not in the log", ev.ID)
		}
	}
	// f-*: n each before and in the group; stale: s, other, the group; dup:
	// once; poison: its first; slot: appendOne and the Append that held the
	// slot (slot-holder rolled back).
	if got, want := len(log), 2*n+3+1+1+2; got != want {
		t.Fatalf("the log holds %d events, want %d", got, want)
	}

	// A member whose row fails with an error no retry cures: the others
	// still commit.
	release = occupySlot(ctx, t, s)
	evs, outs = queueMany(ctx, t, s, "f", n)
	poisonEv := event("test.poison")
	poisonOut := appendQueued(ctx, t, s, "poison", poisonEv)
	release()
	for i, out := range outs {
		r := <-out
		if r.err != nil || r.res.Events[0].ID != evs[i].ID || r.res.Events[0].Version != 2 {
			t.Fatalf("append %d in the group with a refused row: %+v, %v; want version 2 of its stream", i, r.res, r.err)
		}
	}
	if r := <-poisonOut; r.err == nil || !strings.Contains(r.err.Error(), "poisoned event") {
		t.Fatalf("append of a row the trigger refuses: %+v, %v; want the trigger's error", r.res, r.err)
	}
	log = positionsIn(ctx, t, s)
	if _, ok := log[poisonEv.ID]; ok {
		t.Fatal("the refused row is in the log")
	}
	for _, ev := range evs {
		if _, ok := log[ev.ID]; !ok {
			t.Fatalf("event %s is not in the log", ev.ID)
		}
	}
}

// An Append whose caller leaves while it waits for a group returns the
// context's error at once and appends nothing; the rest of the group commits.
func TestGroupedAppendCallerLeaves(t *testing.T) {
	ctx := ctxFor(t)
	s := groupStore(t, pgtest.Schema(t))
	appendOne(ctx, t, s, "stays")
	appendOne(ctx, t, s, "leaves")

	release := occupySlot(ctx, t, s)
	staysEv, leavesEv := event("test.stays"), event("test.leaves")
	stays := appendQueued(ctx, t, s, "stays", staysEv)
	lctx, cancel := context.WithCancel(ctx)
	leaves := appendQueued(lctx, t, s, "leaves", leavesEv)
	cancel()
	select {
	case r := <-leaves:
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("the Append whose context ended: %+v, %v; want context.Canceled", r.res, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Append whose context ended did not return while the group slot was busy")
	}
	release()
	if r := <-stays; r.err != nil {
		t.Fatalf("the Append that stayed: %v", r.err)
	}
	log := positionsIn(ctx, t, s)
	if _, ok := log[staysEv.ID]; !ok {
		t.Fatal("the Append that stayed is not in the log")
	}
	if _, ok := log[leavesEv.ID]; ok {
		t.Fatal("the Append whose caller left before its group ran was appended")
	}
}

// Many single-event Appends on few group slots, several writers per stream
// and writers on streams of their own: every Append's answer is what the
// log holds, and each stream's versions are dense and follow log order.
func TestGroupedAppendsConcurrent(t *testing.T) {
	ctx := ctxFor(t)
	cfg := pgtest.Config(t, pgtest.Schema(t))
	cfg.AppendGroups = 2
	cfg.MaxConns = 8
	s := pgtest.OpenConfig(t, cfg)
	const writers, each = 48, 40
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got = map[[16]byte]eventstore.AppendedEvent{}
	)
	errs := make(chan error, writers)
	for w := range writers {
		stream := fmt.Sprintf("own-%d", w)
		if w%3 == 0 {
			stream = fmt.Sprintf("shared-%d", w%4) // three or four writers each
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				res, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Events: []eventstore.ProposedEvent{event("test.c")}})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				got[res.Events[0].ID] = res.Events[0]
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
	evs := readEverything(ctx, t, s, eventstore.Start, eventstore.Filter{})
	if len(evs) != writers*each {
		t.Fatalf("read %d events, want %d", len(evs), writers*each)
	}
	next := map[string]int64{}
	for _, e := range evs {
		if e.Version != next[e.Stream] {
			t.Fatalf("stream %s: version %d in log order after %d events", e.Stream, e.Version, next[e.Stream])
		}
		next[e.Stream]++
		if r := got[e.ID]; r.Position != e.Position || r.Version != e.Version {
			t.Fatalf("event %s: Append returned %+v, the log has %s version %d", e.ID, r, e.Position, e.Version)
		}
	}
	txids := map[uint64]int{}
	for _, e := range evs {
		txids[e.Position.Hi]++
	}
	t.Logf("%d events in %d transactions", len(evs), len(txids))
	if len(txids) >= len(evs) {
		t.Errorf("%d events in %d transactions: no Appends were grouped", len(evs), len(txids))
	}
}
