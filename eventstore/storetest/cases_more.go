package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

func init() {
	cases = append(cases,
		testCase{"LargeEvents", testLargeEvents},
		testCase{"ConcurrentExpectedVersion", testConcurrentExpectedVersion},
		testCase{"ConcurrentRetriesOfOneAppend", testConcurrentRetries},
		testCase{"FollowFilter", testFollowFilter},
	)
}

// testLargeEvents: events much larger than a page, and a full 1000-event
// append, round-trip unchanged.
func testLargeEvents(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	big := ev("blob.stored", fmt.Sprintf(`{"blob":%q}`, strings.Repeat("0123456789abcdef", 32<<10))) // ~512 KiB
	big.Metadata = json.RawMessage(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("m", 10000)))
	mustAppend(ctx, t, s, "large-1", eventstore.NoStream, big)
	got, err := s.Event(ctx, big.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(got.Data, big.Data) || !jsonEqual(got.Metadata, big.Metadata) {
		t.Errorf("a %d-byte event did not round-trip", len(big.Data))
	}

	many := make([]eventstore.ProposedEvent, eventstore.MaxEventsPerAppend)
	for i := range many {
		many[i] = ev("bulk.event", fmt.Sprintf(`{"i":%d}`, i))
	}
	res := mustAppend(ctx, t, s, "large-2", eventstore.NoStream, many...)
	for i := 1; i < len(res.Events); i++ {
		if !res.Events[i-1].Position.Less(res.Events[i].Position) || res.Events[i].Version != int64(i) {
			t.Fatalf("event %d of a full append: version %d at %s after %s", i, res.Events[i].Version, res.Events[i].Position, res.Events[i-1].Position)
		}
	}
	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "large-2", Limit: eventstore.MaxEventsPerAppend})
	if err != nil || len(stream) != len(many) {
		t.Fatalf("ReadStream of a full append: %d events, %v", len(stream), err)
	}
	for i, e := range stream {
		if e.ID != many[i].ID || !jsonEqual(e.Data, many[i].Data) {
			t.Fatalf("event %d: %s, want %s", i, fmtEvent(e), many[i].ID)
		}
	}
	// Default limit.
	stream, err = s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "large-2"})
	if err != nil || len(stream) != eventstore.DefaultReadLimit {
		t.Errorf("ReadStream without a limit: %d events, %v; want %d", len(stream), err, eventstore.DefaultReadLimit)
	}
}

// testConcurrentExpectedVersion: writers racing on the same expected version
// of one stream: exactly one wins each round, the rest get ErrWrongVersion and
// write nothing; the stream's versions stay dense.
func testConcurrentExpectedVersion(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	const rounds, writers = 5, 8
	var winners []uuid.UUID
	for round := range rounds {
		exp := eventstore.NoStream
		if round > 0 {
			exp = eventstore.Exact(int64(round - 1))
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []uuid.UUID
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := ev("race.version", "")
				_, err := s.Append(ctx, eventstore.AppendParams{Stream: "race-1", Expected: exp, Events: []eventstore.ProposedEvent{e}})
				switch {
				case err == nil:
					mu.Lock()
					won = append(won, e.ID)
					mu.Unlock()
				case errors.Is(err, eventstore.ErrWrongVersion):
				default:
					t.Errorf("round %d: %v, want nil or ErrWrongVersion", round, err)
				}
			}()
		}
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("round %d (expected %s): %d writers won, want exactly 1", round, exp, len(won))
		}
		winners = append(winners, won[0])
	}
	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "race-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !sameIDs(ids(stream), winners) {
		t.Errorf("stream holds %v, want the winners %v", ids(stream), winners)
	}
	all, _ := readAllN(ctx, t, s, rounds)
	if len(all) != rounds {
		t.Errorf("log holds %d events, want %d (losers write nothing)", len(all), rounds)
	}
}

// testConcurrentRetries: the same append sent several times at once (a client
// retrying while the first attempt is in flight) is written once; every call
// succeeds with the same positions, all but one as Duplicate.
func testConcurrentRetries(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	const senders = 8
	for round := range 3 {
		events := []eventstore.ProposedEvent{ev("retry.one", ""), ev("retry.two", "")}
		results := make([]eventstore.AppendResult, senders)
		errs := make([]error, senders)
		var wg sync.WaitGroup
		for i := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = s.Append(ctx, eventstore.AppendParams{Stream: "retry-1", Events: events})
			}()
		}
		wg.Wait()
		fresh := 0
		for i := range senders {
			if errs[i] != nil {
				t.Fatalf("round %d: sender %d: %v, want success (first write or Duplicate)", round, i, errs[i])
			}
			if !results[i].Duplicate {
				fresh++
			}
			for j, a := range results[i].Events {
				if a != results[0].Events[j] {
					t.Errorf("round %d: sender %d got %+v, sender 0 got %+v", round, i, a, results[0].Events[j])
				}
			}
		}
		if fresh != 1 {
			t.Errorf("round %d: %d senders wrote, want exactly 1", round, fresh)
		}
	}
	all, _ := readAllN(ctx, t, s, 6)
	if len(all) != 6 {
		t.Errorf("log holds %d events, want 6", len(all))
	}
}

// testFollowFilter: eventstore.Follow with a filter delivers only matching
// events, catch-up then live, each once, and reports progress past the
// events it skipped.
func testFollowFilter(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, _ := open(t, h)

	var want []uuid.UUID
	appendSome := func(n int) {
		for i := range n {
			typ := "follow.skip"
			if i%3 == 0 {
				typ = "follow.keep"
			}
			e := ev(typ, "")
			mustAppend(ctx, t, s, "follow-1", eventstore.Any, e)
			if typ == "follow.keep" {
				want = append(want, e.ID)
			}
		}
	}
	appendSome(10) // catch-up part

	fctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	var got []eventstore.Event
	var progress eventstore.Position
	done := make(chan error, 1)
	go func() {
		done <- eventstore.Follow(fctx, s, eventstore.FollowParams{Filter: eventstore.Filter{Types: []string{"follow.keep"}}, Batch: 2},
			func(_ context.Context, evs []eventstore.Event) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, evs...)
				return nil
			},
			func(p eventstore.Position) {
				mu.Lock()
				defer mu.Unlock()
				if p.Less(progress) {
					t.Errorf("progress went back from %s to %s", progress, p)
				}
				progress = p
			})
	}()
	time.Sleep(50 * time.Millisecond)
	appendSome(8) // live part
	head := mustHead(ctx, t, s)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		reached := progress == head
		mu.Unlock()
		if reached || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Follow ended with %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if progress != head {
		t.Errorf("progress %s, want the head %s (progress moves past skipped events)", progress, head)
	}
	seenOnce(t, "filtered follow", got)
	if !sameIDs(ids(got), want) {
		t.Errorf("Follow delivered %v, want %v", ids(got), want)
	}
}
