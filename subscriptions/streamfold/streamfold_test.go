package streamfold

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const stream = "hooklog-test"

func openStore(t *testing.T) eventstore.Store {
	t.Helper()
	s, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// counter is a model: the "n" of every event, in fold order.
type counter struct {
	mu   sync.Mutex
	seen []int
}

func (c *counter) apply(e *eventstore.Event) {
	var d struct{ N int }
	_ = json.Unmarshal(e.Data, &d)
	c.mu.Lock()
	c.seen = append(c.seen, d.N)
	c.mu.Unlock()
}

func (c *counter) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func ev(n int) eventstore.ProposedEvent {
	return eventstore.ProposedEvent{Type: "test.event", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

func appendN(t *testing.T, s eventstore.Store, stream string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := s.Append(context.Background(), eventstore.AppendParams{Stream: stream, Events: []eventstore.ProposedEvent{ev(i)}}); err != nil {
			t.Fatal(err)
		}
	}
}

func newFolder(t *testing.T, s eventstore.Store, c *counter, cfg Config) *Folder {
	t.Helper()
	cfg.Stream, cfg.Apply = stream, c.apply
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f, err := New(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

func TestFoldInPagesThenFollow(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	appendN(t, s, stream, 0, 23)
	appendN(t, s, "other", 0, 5)
	var c counter
	f := newFolder(t, s, &c, Config{PageSize: 5})
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.len() != 23 || f.Version() != 22 {
		t.Fatalf("folded %d events, version %d", c.len(), f.Version())
	}
	for i, n := range c.seen {
		if n != i {
			t.Fatalf("fold order %v", c.seen)
		}
	}
	watch, stop := f.Watch()
	defer stop()
	appendN(t, s, stream, 23, 1)
	select {
	case <-watch:
	case <-time.After(time.Second):
		t.Fatal("no change signal within 1s of an append by someone else")
	}
	if c.len() != 24 {
		t.Fatalf("folded %d", c.len())
	}
}

// headCounter counts Head calls: one per catch-up.
type headCounter struct {
	eventstore.Store
	heads atomic.Int64
}

func (h *headCounter) Head(ctx context.Context) (eventstore.Position, error) {
	h.heads.Add(1)
	return h.Store.Head(ctx)
}

func TestFollowerIsThrottled(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	hc := &headCounter{Store: s}
	var c counter
	f := newFolder(t, hc, &c, Config{MinRefreshInterval: 100 * time.Millisecond})
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	hc.heads.Store(0)
	for time.Since(began) < 500*time.Millisecond { // a busy log, none of it ours
		appendN(t, s, "busy", 0, 1)
	}
	elapsed := time.Since(began)
	if n, max := hc.heads.Load(), int64(elapsed/(100*time.Millisecond))+2; n > max {
		t.Fatalf("%d catch-ups in %v, want at most %d", n, elapsed, max)
	}
}

func TestExecConflictsAndRetries(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	var c1, c2 counter
	f1 := newFolder(t, s, &c1, Config{})
	f2 := newFolder(t, s, &c2, Config{})
	for _, f := range []*Folder{f1, f2} {
		if err := f.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Two writers on one stream: every command lands once.
	var wg sync.WaitGroup
	var n atomic.Int64
	for range 10 {
		for _, f := range []*Folder{f1, f2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := f.Exec(context.Background(), func() ([]eventstore.ProposedEvent, error) {
					return []eventstore.ProposedEvent{ev(int(n.Add(1)))}, nil
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	for _, f := range []*Folder{f1, f2} {
		if err := f.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if c1.len() != 20 || c2.len() != 20 || f1.Version() != 19 {
		t.Fatalf("folded %d and %d, version %d", c1.len(), c2.len(), f1.Version())
	}

	// A writer that always wins: Exec gives up with ErrConflict.
	var decided int
	_, err := f1.Exec(context.Background(), func() ([]eventstore.ProposedEvent, error) {
		decided++
		appendN(t, s, stream, 1000, 1)
		return []eventstore.ProposedEvent{ev(0)}, nil
	})
	if !errors.Is(err, ErrConflict) || decided != 11 {
		t.Fatalf("err %v after %d decisions", err, decided)
	}

	// decide's error and no-ops write nothing.
	v := f1.Version()
	boom := errors.New("boom")
	if _, err := f1.Exec(context.Background(), func() ([]eventstore.ProposedEvent, error) { return nil, boom }); err != boom {
		t.Fatal(err)
	}
	if res, err := f1.Exec(context.Background(), func() ([]eventstore.ProposedEvent, error) { return nil, nil }); err != nil || res != nil {
		t.Fatal(res, err)
	}
	if f1.Version() != v {
		t.Fatal("wrote")
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	var c counter
	f := newFolder(t, s, &c, Config{})
	if _, err := f.Exec(context.Background(), func() ([]eventstore.ProposedEvent, error) { return []eventstore.ProposedEvent{ev(1)}, nil }); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Exec before Start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel() // Start's ctx bounds the initial fold only
	if _, err := f.Exec(context.Background(), func() ([]eventstore.ProposedEvent, error) { return []eventstore.ProposedEvent{ev(1)}, nil }); err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	f.Stop()
	f.Stop()
	if _, err := f.Exec(context.Background(), func() ([]eventstore.ProposedEvent, error) { return []eventstore.ProposedEvent{ev(1)}, nil }); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Exec after Stop: %v", err)
	}
	if c.len() != 1 {
		t.Fatalf("folded %d", c.len())
	}
	if _, err := New(s, Config{Stream: stream}); err == nil {
		t.Fatal("New without Apply succeeded")
	}

	// The store closing under a running follower ends it quietly.
	s2 := openStore(t)
	f2 := newFolder(t, s2, &c, Config{})
	if err := f2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = s2.Close()
	f2.Stop()
}

// stalledHead is a real store whose head never seems to move, as a
// PostgreSQL store's settled head does while an old transaction stays open.
type stalledHead struct{ eventstore.Store }

func (stalledHead) Wait(ctx context.Context, _ eventstore.Position) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestFollowerRefreshesWithoutHeadMovement(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	var c counter
	f := newFolder(t, stalledHead{s}, &c, Config{MaxRefreshInterval: 200 * time.Millisecond})
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, stream, 0, 1)
	deadline := time.Now().Add(time.Second)
	for c.len() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("not folded within 1s while the head stalls")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
