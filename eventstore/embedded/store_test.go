package embedded_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
)

func event(typ string) eventstore.ProposedEvent {
	return eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: typ, Data: json.RawMessage(`{}`)}
}

func TestOpenConfig(t *testing.T) {
	t.Parallel()
	_, err := embedded.Open(embedded.Config{})
	var ve *eventstore.ValidationError
	if !errors.As(err, &ve) || ve.Fields["path"] == "" {
		t.Errorf("Open without Path: %v, want a validation error naming path", err)
	}
	// A file where the directory should be.
	dir := t.TempDir()
	s := openStore(t, dir)
	_ = s.Close()
	if _, err := embedded.Open(embedded.Config{Path: filepath.Join(dir, embedded.FileName)}); err == nil {
		t.Errorf("Open on a file path: no error")
	}
}

// TestOpenLocked: a second opener of the same directory (another process, or
// another Store in this one) gets a clear error instead of hanging.
func TestOpenLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir)
	start := time.Now()
	_, err := embedded.Open(embedded.Config{Path: dir})
	if !errors.Is(err, embedded.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("second Open took %s", d)
	}
	t.Logf("second Open: %v", err)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	openStore(t, dir) // free again
}

func TestUnknownFormat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, embedded.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("format"), []byte{0, 0, 0, 0, 0, 0, 0, 99})
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := embedded.Open(embedded.Config{Path: dir}); err == nil {
		_ = s.Close()
		t.Errorf("Open of an unknown record format: no error")
	}
}

// TestRecordedAt: UTC, sub-millisecond precision, non-decreasing along the log
// under concurrent appends.
func TestRecordedAt(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "clock", Events: []eventstore.ProposedEvent{event("clock.tick")}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	res, err := s.ReadAll(ctx, eventstore.ReadParams{Limit: 1000})
	if err != nil || len(res.Events) != 200 {
		t.Fatalf("ReadAll: %d events, %v", len(res.Events), err)
	}
	fine := false
	for i, e := range res.Events {
		if e.RecordedAt.Location() != time.UTC {
			t.Fatalf("recorded_at %s is not UTC", e.RecordedAt)
		}
		if e.RecordedAt.Nanosecond()%int(time.Millisecond) != 0 {
			fine = true
		}
		if i > 0 && e.RecordedAt.Before(res.Events[i-1].RecordedAt) {
			t.Errorf("recorded_at decreases at %s: %s then %s", e.Position, res.Events[i-1].RecordedAt, e.RecordedAt)
		}
	}
	if !fine {
		t.Errorf("recorded_at has no sub-millisecond precision")
	}
}

func TestForeignPosition(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	_, err := s.ReadAll(ctx, eventstore.ReadParams{After: eventstore.Position{Hi: 1}})
	if !errors.Is(err, eventstore.ErrBadPosition) {
		t.Errorf("ReadAll after a position with Hi set: %v, want ErrBadPosition", err)
	}
	if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "s", Events: []eventstore.ProposedEvent{event("a.b")}}); err != nil {
		t.Fatal(err)
	}
	// A cursor past anything this store can hold (a client can send any hex).
	last := eventstore.Position{Lo: math.MaxUint64}
	res, err := s.ReadAll(ctx, eventstore.ReadParams{After: last})
	if err != nil || len(res.Events) != 0 || res.Next != last {
		t.Errorf("ReadAll after the largest position: %d events, Next %s, %v; want none and Next unchanged", len(res.Events), res.Next, err)
	}
}

// TestPositionAtLargeLog checks PositionAt against a brute-force answer on a
// log of many commits with equal and distinct timestamps.
func TestPositionAtLargeLog(t *testing.T) {
	t.Parallel()
	s, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true}) // NoSync: speed only, durability is not under test
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	for i := range 300 {
		evs := []eventstore.ProposedEvent{event("pa.one")}
		if i%3 == 0 {
			evs = append(evs, event("pa.two"), event("pa.three"))
		}
		if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "pa", Events: evs}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.ReadAll(ctx, eventstore.ReadParams{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	all := res.Events
	for i := 0; i < len(all); i += 7 {
		for _, at := range []time.Time{all[i].RecordedAt, all[i].RecordedAt.Add(time.Nanosecond), all[i].RecordedAt.Add(-time.Nanosecond)} {
			want := eventstore.Start
			for _, e := range all {
				if e.RecordedAt.Before(at) {
					want = e.Position
				}
			}
			got, err := s.PositionAt(ctx, at)
			if err != nil || got != want {
				t.Fatalf("PositionAt(%s) = %s, %v; want %s", at.Format(time.RFC3339Nano), got, err, want)
			}
		}
	}
}

// TestNoInternal: the embedded store drops internal streams exactly (it
// filters on the record header, before decoding).
func TestNoInternal(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	for _, stream := range []string{"orders-1", "hooklog-subscriptions", "hooklog", "orders-2"} {
		if _, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Events: []eventstore.ProposedEvent{event("a.b")}}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.ReadAll(ctx, eventstore.ReadParams{Filter: eventstore.Filter{NoInternal: true}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range res.Events {
		got = append(got, e.Stream)
	}
	if len(got) != 3 || got[0] != "orders-1" || got[1] != "hooklog" || got[2] != "orders-2" || res.Next.Lo != 4 {
		t.Errorf("NoInternal: streams %v, Next %s; want [orders-1 hooklog orders-2] and Next 4", got, res.Next)
	}
}
