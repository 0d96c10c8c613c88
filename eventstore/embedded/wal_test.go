package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/hooklog/hooklog/eventstore"
)

// crash stops s the way a killed process would: no final flush into bbolt,
// no WAL cleanup. Whatever the flusher had copied into bbolt stays there.
func crash(t *testing.T, s *Store) {
	t.Helper()
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.wg.Wait()
		s.wal.prep.Wait()
		if s.wal.f != nil {
			_ = s.wal.f.Close()
		}
		s.watch.Close()
		if err := s.db.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

type walCase struct {
	id      uuid.UUID
	stream  string
	pos     uint64
	version int64
}

// crashReopen crashes s and opens its directory again, closed at the end
// of the test.
func crashReopen(t *testing.T, s *Store, dir string) *Store {
	t.Helper()
	crash(t, s)
	s, err := Open(Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// appendSome appends n events in batches of 10 over 3 streams and returns
// what each append said.
func appendSome(t *testing.T, s *Store, n int) []walCase {
	t.Helper()
	var out []walCase
	for i := 0; i < n; i += 10 {
		stream := fmt.Sprintf("wal-%d", i%3)
		evs := make([]eventstore.ProposedEvent, 10)
		for j := range evs {
			evs[j] = eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: "wal.test", Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":"%0200d"}`, i+j, 0))}
		}
		res, err := s.Append(context.Background(), eventstore.AppendParams{Stream: stream, Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		for j, e := range res.Events {
			out = append(out, walCase{id: evs[j].ID, stream: stream, pos: e.Position.Lo, version: e.Version})
		}
	}
	return out
}

// checkLog: the reopened store holds exactly want, at the same positions and
// versions, readable by ReadAll, ReadStream and Event.
func checkLog(t *testing.T, s *Store, want []walCase) {
	t.Helper()
	ctx := context.Background()
	var got []eventstore.Event
	for after := (eventstore.Position{}); ; {
		res, err := s.ReadAll(ctx, eventstore.ReadParams{After: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res.Events...)
		if len(res.Events) == 0 {
			break
		}
		after = res.Next
	}
	if len(got) != len(want) {
		t.Fatalf("ReadAll: %d events, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.ID != w.id || g.Position.Lo != w.pos || g.Version != w.version || g.Stream != w.stream {
			t.Fatalf("event %d: got %s %s@%d pos %d, want %s %s@%d pos %d", i, g.ID, g.Stream, g.Version, g.Position.Lo, w.id, w.stream, w.version, w.pos)
		}
		if ev, err := s.Event(ctx, w.id); err != nil || ev.Position.Lo != w.pos {
			t.Fatalf("Event(%s): %v %v", w.id, ev.Position, err)
		}
	}
	for k := range 3 {
		stream := fmt.Sprintf("wal-%d", k)
		evs, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: stream, Limit: eventstore.MaxReadLimit})
		if err != nil {
			t.Fatal(err)
		}
		for v, e := range evs {
			if e.Version != int64(v) || e.Stream != stream {
				t.Fatalf("ReadStream(%s)[%d]: version %d stream %s", stream, v, e.Version, e.Stream)
			}
		}
	}
	if h, _ := s.Head(ctx); len(want) > 0 && h.Lo != want[len(want)-1].pos {
		t.Fatalf("head %d, want %d", h.Lo, want[len(want)-1].pos)
	}
}

// TestWALRecoversAfterCrash: events acknowledged but not yet flushed into
// bbolt survive a crash; the WAL is replayed into bbolt on Open, a torn frame
// at the end is ignored, and appending carries on (versions, idempotency).
func TestWALRecoversAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	want := appendSome(t, s, 500)
	if n, _, _ := s.mem.stats(); n == 0 {
		t.Log("the flusher had flushed everything; the crash loses nothing either way")
	} else {
		t.Logf("%d events only in the WAL at the crash", n)
	}
	crash(t, s)
	segs, _ := walSegments(dir)
	if len(segs) == 0 {
		t.Fatal("no WAL segment after a crash")
	}
	// A write whose fsync never returned: half a frame at the end.
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0, 0, 1, 0, 0xde, 0xad}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s, err = Open(Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	if segs, _ := walSegments(dir); len(segs) != 0 {
		t.Errorf("after recovery %d WAL segments are left", len(segs))
	}
	checkLog(t, s, want)
	// Idempotency sees the recovered ids; versions carry on.
	res, err := s.Append(context.Background(), eventstore.AppendParams{Stream: want[0].stream, Events: []eventstore.ProposedEvent{{ID: want[0].id, Type: "wal.test", Data: json.RawMessage(`{}`)}}})
	if err != nil || !res.Duplicate || res.Events[0].Position.Lo != want[0].pos {
		t.Fatalf("re-append of a recovered id: %+v %v", res, err)
	}
	want = append(want, appendSome(t, s, 30)...)
	checkLog(t, s, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWALSegmentsRotateAndRecycle runs the WAL through many small segments,
// pre-written spares and recycled ones (whose old frames must not be taken for
// new ones), crashes at several points and checks every acknowledged event.
func TestWALSegmentsRotateAndRecycle(t *testing.T) {
	oldSize, oldPrep := walSegmentSize, walPrepareAfter
	walSegmentSize, walPrepareAfter = 64<<10, 16<<10
	t.Cleanup(func() { walSegmentSize, walPrepareAfter = oldSize, oldPrep })

	dir := t.TempDir()
	var want []walCase
	for round := range 4 {
		s, err := Open(Config{Path: dir})
		if err != nil {
			t.Fatal(err)
		}
		checkLog(t, s, want)
		for range 10 {
			want = append(want, appendSome(t, s, 200)...)
			if err := s.flush(0); err != nil { // release segments now, as a busy flusher would
				t.Fatal(err)
			}
		}
		want = append(want, appendSome(t, s, 150)...) // some left only in the WAL
		checkLog(t, s, want)
		s.wal.mu.Lock()
		recycled, prewritten := s.wal.recycled, s.wal.prewritten
		s.wal.mu.Unlock()
		n, _, _ := s.mem.stats()
		t.Logf("round %d: %d segments recycled, active pre-written %v, %d events only in the WAL", round, recycled, prewritten, n)
		if recycled == 0 {
			t.Errorf("round %d: no segment was recycled", round)
		}
		if round == 3 {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			break
		}
		crash(t, s)
	}
	s, err := Open(Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkLog(t, s, want)
	if _, err := os.Stat(filepath.Join(dir, walSpareName)); err != nil {
		t.Errorf("no spare segment kept after a busy run: %v", err)
	}
}

// TestWALRecoveryKeepsSpare: Open after a crash replays the WAL and keeps a
// full-size replayed segment as the spare instead of deleting it, and the
// next Open (of that spare, now holding old frames) reads the same log.
func TestWALRecoveryKeepsSpare(t *testing.T) {
	oldSize, oldPrep := walSegmentSize, walPrepareAfter
	walSegmentSize, walPrepareAfter = 64<<10, 16<<10
	t.Cleanup(func() { walSegmentSize, walPrepareAfter = oldSize, oldPrep })

	dir := t.TempDir()
	s, err := Open(Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	// Append until the WAL has rotated into a pre-written spare: the spare
	// is written in the background, and on a busy machine the first
	// rotations may come before it is ready.
	want := appendSome(t, s, 100)
	for i := 0; ; i++ {
		s.wal.prep.Wait()
		s.wal.mu.Lock()
		prewritten := s.wal.prewritten
		s.wal.mu.Unlock()
		if prewritten {
			break
		}
		if i == 200 {
			t.Fatal("the WAL never rotated into a pre-written spare")
		}
		want = append(want, appendSome(t, s, 50)...)
	}
	crash(t, s)
	// As if the crash came before the next spare was ready.
	spare := filepath.Join(dir, walSpareName)
	if err := os.Remove(spare); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	full := 0
	segs, _ := walSegments(dir)
	for _, p := range segs {
		if fi, err := os.Stat(p); err == nil && fi.Size() >= walSegmentSize {
			full++
		}
	}
	if full == 0 {
		t.Fatalf("no full-size segment among %d at the crash; the test needs one", len(segs))
	}
	s, err = Open(Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	recovered := s
	t.Cleanup(func() { _ = recovered.Close() }) // a no-op after the crash below
	checkLog(t, s, want)
	if fi, err := os.Stat(spare); err != nil || fi.Size() < walSegmentSize {
		t.Errorf("after recovery: spare %v (size %v), want a full-size one kept", err, fi)
	}
	if segs, _ := walSegments(dir); len(segs) != 0 {
		t.Errorf("after recovery %d segments remain: %v", len(segs), segs)
	}
	want = append(want, appendSome(t, s, 400)...) // rotates into the spare
	checkLog(t, crashReopen(t, s, dir), want)
}

// TestCheckpoint: after Checkpoint every acknowledged event is in bbolt and
// nothing is left in the memtable; the log reads the same.
func TestCheckpoint(t *testing.T) {
	s, err := Open(Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	want := appendSome(t, s, 300)
	if err := s.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, size, _ := s.mem.stats(); n != 0 || size != 0 {
		t.Errorf("after Checkpoint the memtable holds %d events (%d bytes)", n, size)
	}
	var inBolt int
	if err := s.db.View(func(tx *bolt.Tx) error {
		inBolt = tx.Bucket(bucketEvents).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inBolt != len(want) {
		t.Errorf("bbolt holds %d events, want %d", inBolt, len(want))
	}
	checkLog(t, s, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(context.Background()); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Checkpoint after Close: %v, want ErrClosed", err)
	}
}

// TestWALRecoversAroundStateCommits: a CommitState puts its events straight
// into bbolt, so the WAL skips their seqs. Events appended after it, only in
// the WAL at a crash, must still be recovered (the gap is not the end).
func TestWALRecoversAroundStateCommits(t *testing.T) {
	oldEvents, oldBytes, oldDelay := flushEvents, flushBytes, flushDelay
	flushEvents, flushBytes, flushDelay = 1<<30, 1<<40, time.Hour // no flush but the commits' own
	t.Cleanup(func() { flushEvents, flushBytes, flushDelay = oldEvents, oldBytes, oldDelay })

	dir := t.TempDir()
	s, err := Open(Config{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var want []walCase
	for round := range 3 {
		want = append(want, appendSome(t, s, 50)...)
		id := uuid.Must(uuid.NewV7())
		res, err := s.CommitState(ctx, eventstore.StateCommit{
			Appends: []eventstore.AppendParams{{Stream: "wal-state", Events: []eventstore.ProposedEvent{{ID: id, Type: "wal.state", Data: json.RawMessage(`{}`)}}}},
			Ops:     []eventstore.StateOp{{Bucket: "wal", Key: []byte("round"), Value: []byte{byte(round)}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, walCase{id: id, stream: "wal-state", pos: res[0].Events[0].Position.Lo, version: res[0].Events[0].Version})
	}
	want = append(want, appendSome(t, s, 50)...)
	if n, _, _ := s.mem.stats(); n != 50 {
		t.Fatalf("%d events only in the WAL before the crash, want 50", n)
	}
	s = crashReopen(t, s, dir)
	checkLog(t, s, want)
	if v, err := s.GetState(ctx, "wal", []byte("round")); err != nil || len(v) != 1 || v[0] != 2 {
		t.Errorf("state after recovery: %v %v", v, err)
	}
}
