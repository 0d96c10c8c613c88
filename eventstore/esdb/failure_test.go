package esdb_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/esdb"
	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

func appendN(ctx context.Context, t *testing.T, s eventstore.Store, from, n int) []uuid.UUID {
	t.Helper()
	var out []uuid.UUID
	for i := from; i < from+n; i++ {
		e := eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: "outage.event", Data: []byte(fmt.Sprintf(`{"i":%d}`, i))}
		if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "outage-1", Events: []eventstore.ProposedEvent{e}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		out = append(out, e.ID)
	}
	return out
}

// eventually polls cond every 20ms for up to d.
func eventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestServerGoesAwayAndComesBack stops the server under a tailing reader and
// a waiter: Ping and appends fail while it is away, then everything resumes
// after Restart on the same port, with every event read exactly once.
func TestServerGoesAwayAndComesBack(t *testing.T) {
	t.Parallel()
	pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	srv := esdbtest.Start(t)
	s := opener(t, srv.URL(), "")(t)

	want := appendN(ctx, t, s, 0, 5)

	// A reader that retries through errors, like the projector's tail.
	var mu sync.Mutex
	var seen []uuid.UUID
	readErrs := 0
	var lastErr error
	rctx, stopReader := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		after := eventstore.Start
		for rctx.Err() == nil {
			res, err := s.ReadAll(rctx, eventstore.ReadParams{After: after, Limit: 2})
			if err != nil {
				mu.Lock()
				readErrs++
				lastErr = err
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				continue
			}
			mu.Lock()
			seen = append(seen, ids(res.Events)...)
			mu.Unlock()
			if res.Next == after {
				wctx, c := context.WithTimeout(rctx, 200*time.Millisecond)
				_ = s.Wait(wctx, after)
				c()
			}
			after = res.Next
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	if !eventually(10*time.Second, func() bool { return count() == 5 }) {
		t.Fatalf("reader saw %d of 5 events before the outage", count())
	}
	head, err := s.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.Wait(ctx, head) }()

	srv.Stop()
	if !eventually(5*time.Second, func() bool { return s.Ping(ctx) != nil }) {
		t.Fatalf("Ping still succeeds with the server stopped")
	}
	err = s.Ping(ctx)
	t.Logf("Ping while the server is away: %v", err)
	_, err = s.Append(ctx, eventstore.AppendParams{Stream: "outage-1", Events: []eventstore.ProposedEvent{{Type: "outage.lost", Data: []byte(`{}`)}}})
	if err == nil {
		t.Fatalf("Append with the server stopped: nil error")
	}
	if !errors.Is(err, esdb.ErrUnavailable) {
		t.Logf("note: Append while away failed with %v (not ErrUnavailable)", err)
	}
	time.Sleep(300 * time.Millisecond) // let the reader and the subscription hit the outage
	select {
	case err := <-waited:
		t.Fatalf("Wait returned %v during the outage with nothing new", err)
	default:
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if !eventually(10*time.Second, func() bool { return s.Ping(ctx) == nil }) {
		t.Fatalf("Ping still fails 10s after Restart: %v", s.Ping(ctx))
	}
	want = append(want, appendN(ctx, t, s, 5, 5)...)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("Wait across the outage: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Wait did not wake after the restart and a new append")
	}
	if !eventually(10*time.Second, func() bool { return count() >= 10 }) {
		mu.Lock()
		errs, last := readErrs, lastErr
		mu.Unlock()
		t.Fatalf("reader saw %d of 10 events after the restart (%d read errors, the last: %v)", count(), errs, last)
	}
	stopReader()
	<-readerDone
	mu.Lock()
	defer mu.Unlock()
	t.Logf("reader: %d read errors during the outage", readErrs)
	if len(seen) != len(want) {
		t.Fatalf("reader saw %d events, want %d", len(seen), len(want))
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("event %d: read %s, want %s", i, seen[i], want[i])
		}
	}
	// The indexer followed across the outage too.
	if _, err := s.Event(ctx, want[9]); err != nil {
		t.Fatalf("Event of an event appended after the restart: %v", err)
	}
}

func ids(evs []eventstore.Event) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// TestOpenValidates names the bad field.
func TestOpenValidates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, c := range []struct {
		cfg  esdb.Config
		want string
	}{
		{esdb.Config{}, "Config.URL"},
		{esdb.Config{URL: "esdb://127.0.0.1:1?tls=false"}, "Config.Postgres"},
		{esdb.Config{URL: "esdb://127.0.0.1:1?tls=false", PostgresURL: "postgres://x", Schema: "Bad"}, "Config.Schema"},
		{esdb.Config{URL: "esdb://127.0.0.1:1?tls=false", PostgresURL: "postgres://x", StreamPrefix: "a b"}, "Config.StreamPrefix"},
	} {
		if _, err := esdb.Open(ctx, c.cfg); err == nil || !contains(err.Error(), c.want) {
			t.Errorf("Open(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
