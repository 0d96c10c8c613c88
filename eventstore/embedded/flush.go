package embedded

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hooklog/hooklog/eventstore"
)

// The flusher copies memtable entries into bbolt in large transactions, on
// its own goroutine (the other core, while the committer waits for the WAL's
// fsync). It flushes once the memtable holds flushEvents or flushBytes, or
// flushDelay after the memtable stopped being empty or a flush last left
// entries behind (memtable.oldest; an entry left behind by a flush so waits
// up to twice flushDelay, which delays its copy into bbolt, never its
// durability). The committer flushes itself when the memtable reaches
// memMaxBytes (back-pressure) and before any CommitState (commitBolt writes
// the memtable in the same transaction).
const (
	flushMax    = 8192 // entries per flush transaction
	memMaxBytes = 16 << 20
)

// Variables, not constants, so that tests can hold the flusher back.
var (
	flushEvents = 8192
	flushBytes  = 4 << 20
	flushDelay  = 50 * time.Millisecond
)

// walState checks a WAL group commit's appends against the log: the batch's
// own earlier appends, then the memtable, then bbolt, through lockedView.
type walState struct {
	s        *Store
	ids      *bolt.Bucket
	idCursor *bolt.Cursor
	maxID    []byte // the largest key of ids (nil: none)
	events   *bolt.Bucket
	streams  *bolt.Bucket
	lastSeq  uint64
	now      int64

	pending  []memEntry
	pendIDs  map[uuid.UUID]int // id → index in pending, for pending[:indexed]
	indexed  int
	pendVers map[string]int64 // stream → last version in pending
}

func (w *walState) byID(id *uuid.UUID) (uint64, []byte, int64, bool, error) {
	if i, ok := w.pendIDs[*id]; ok {
		e := &w.pending[i]
		return e.seq, []byte(e.stream), e.version, true, nil
	}
	m := w.s.mem
	if seq, ok := m.ids[*id]; ok {
		e := entryAt(m.entries, seq)
		return e.seq, []byte(e.stream), e.version, true, nil
	}
	if w.idCursor == nil {
		w.idCursor = w.ids.Cursor() // one cursor for the batch: Get makes one per call
		w.maxID, _ = w.idCursor.Last()
	}
	if bytes.Compare(id[:], w.maxID) > 0 {
		// Past the largest id in bbolt, so not in it: a new UUIDv7, mostly.
		return 0, nil, 0, false, nil
	}
	k, v := w.idCursor.Seek(id[:])
	if !bytes.Equal(k, id[:]) {
		return 0, nil, 0, false, nil
	}
	return eventByKey(w.events, id, v)
}

func (w *walState) streamVersion(stream string) int64 {
	if v, ok := w.pendVers[stream]; ok {
		return v
	}
	if ms, ok := w.s.mem.streams[stream]; ok {
		return ms.version
	}
	if v := w.streams.Get([]byte(stream)); v != nil {
		return int64(binary.BigEndian.Uint64(v))
	}
	return -1
}

// apply checks one Append request and adds its events to pending.
func (w *walState) apply(r *request) {
	a := &r.appends[0]
	p := &a.p
	// Index the batch's earlier events only now: a batch of one request
	// (a single writer's) never needs it.
	for ; w.indexed < len(w.pending); w.indexed++ {
		if w.pendIDs == nil {
			w.pendIDs = map[uuid.UUID]int{}
		}
		w.pendIDs[w.pending[w.indexed].id] = w.indexed
	}
	dup, current, err := checkAppend(w, p)
	switch {
	case err != nil:
		r.res, r.err = nil, err
		return
	case dup != nil:
		r.res = append(r.res[:0], *dup)
		return
	}
	res := eventstore.AppendResult{Events: make([]eventstore.AppendedEvent, len(p.Events))}
	for i := range p.Events {
		w.lastSeq++
		ver := current + 1 + int64(i)
		rec := a.records[i]
		setRecordFields(rec, w.now, ver)
		id := p.Events[i].ID
		w.pending = append(w.pending, memEntry{seq: w.lastSeq, rec: rec, id: id, stream: p.Stream, version: ver})
		res.Events[i] = eventstore.AppendedEvent{ID: id, Position: eventstore.Position{Lo: w.lastSeq}, Version: ver}
	}
	w.pendVers[p.Stream] = current + int64(len(p.Events))
	r.res = append(r.res[:0], res)
}

// commitWAL checks live (Append requests only) against the log, writes the
// events that pass to the WAL with one fsync, adds them to the memtable,
// advances the head and answers every request.
func (s *Store) commitWAL(live []*request) {
	if _, size, _ := s.mem.stats(); size > memMaxBytes {
		// The flusher is behind: take a share of its work before going on.
		if err := s.flush(flushMax); err != nil {
			for _, r := range live {
				r.res, r.err = nil, err
				close(r.answer)
			}
			return
		}
	}
	now := time.Now().UnixNano()
	if now < s.lastRecorded {
		now = s.lastRecorded
	}
	n := 0
	for _, r := range live {
		n += len(r.appends[0].p.Events)
	}
	w := walState{s: s, lastSeq: s.lastSeq, now: now, pendVers: map[string]int64{}, pending: make([]memEntry, 0, n)}
	tx, err := s.lockedView()
	if err == nil {
		w.ids, w.events, w.streams = tx.Bucket(bucketIDs), tx.Bucket(bucketEvents), tx.Bucket(bucketStreams)
		for _, r := range live {
			w.apply(r)
		}
		s.mem.mu.Unlock()
		_ = tx.Rollback()
	}
	if err == nil && len(w.pending) > 0 {
		if err = s.wal.append(w.pending); err != nil {
			s.walErr = fmt.Errorf("%w: %w", errWALFailed, err)
			err = s.walErr
		}
	}
	if err != nil {
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			err = eventstore.ErrClosed
		}
		for _, r := range live {
			r.res, r.err = nil, err
			close(r.answer)
		}
		return
	}
	s.commits.Add(1)
	if len(w.pending) > 0 {
		s.mem.add(w.pending)
		s.lastSeq, s.lastRecorded = w.lastSeq, now
		s.watch.Advance(eventstore.Position{Lo: w.lastSeq})
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	for _, r := range live {
		close(r.answer)
	}
}

// lockedView opens a bbolt read transaction and then locks the memtable,
// such that the two together hold the whole log: every entry the memtable
// has dropped is in the transaction. (The transaction is opened first so
// that the memtable is never locked while bbolt makes it wait.)
func (s *Store) lockedView() (*bolt.Tx, error) {
	for {
		tx, err := s.db.Begin(false)
		if err != nil {
			return nil, err
		}
		var boltLast uint64
		if k, _ := tx.Bucket(bucketEvents).Cursor().Last(); k != nil {
			boltLast = binary.BigEndian.Uint64(k)
		}
		s.mem.mu.Lock()
		if s.mem.trimmed <= boltLast {
			return tx, nil
		}
		// A flush committed and dropped entries after tx began: again.
		s.mem.mu.Unlock()
		_ = tx.Rollback()
	}
}

// writeEntries puts memtable entries into bbolt, as an append would have.
func writeEntries(tx *bolt.Tx, ents []memEntry) error {
	if len(ents) == 0 {
		return nil
	}
	events, ids, versions, streams := tx.Bucket(bucketEvents), tx.Bucket(bucketIDs), tx.Bucket(bucketVersions), tx.Bucket(bucketStreams)
	events.FillPercent, ids.FillPercent, versions.FillPercent = 1.0, 0.9, 0.9
	// bbolt keeps references to keys and values until the commit.
	keys := make([]byte, 8*len(ents))
	last := map[string]int64{}
	for i := range ents {
		e := &ents[i]
		key := keys[8*i : 8*i+8 : 8*i+8]
		binary.BigEndian.PutUint64(key, e.seq)
		if err := events.Put(key, e.rec); err != nil {
			return fmt.Errorf("%w: events: %w", errWrite, err)
		}
		if err := ids.Put(e.id[:], key); err != nil {
			return fmt.Errorf("%w: ids: %w", errWrite, err)
		}
		if err := versions.Put(versionKey(e.stream, e.version), key); err != nil {
			return fmt.Errorf("%w: versions: %w", errWrite, err)
		}
		last[e.stream] = e.version
	}
	for stream, v := range last {
		if err := streams.Put([]byte(stream), putUint64(uint64(v))); err != nil {
			return fmt.Errorf("%w: streams: %w", errWrite, err)
		}
	}
	return nil
}

// flush moves up to max memtable entries into bbolt, or all of them when
// max <= 0 (in transactions of flushMax, so that bbolt's dirty pages stay
// a bounded amount of memory).
func (s *Store) flush(max int) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for {
		ents := s.mem.snapshot(cmp.Or(max, flushMax))
		if len(ents) == 0 {
			return nil
		}
		if err := s.db.Update(func(tx *bolt.Tx) error { return writeEntries(tx, ents) }); err != nil {
			return fmt.Errorf("embedded: flush to %s: %w", s.path, err)
		}
		s.flushed(ents)
		if max > 0 {
			return nil
		}
	}
}

// Checkpoint copies into bbolt every acknowledged event that is still only in
// the write-ahead log (and the memtable), and returns once they are committed
// there. Appends do not need it: they are durable when acknowledged, and a
// flusher does this in the background. The append benchmark calls it to
// charge the store for that deferred work.
func (s *Store) Checkpoint(ctx context.Context) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.flush(0)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return eventstore.ErrClosed
	}
	return err
}

// flushed drops ents, now committed to bbolt, from the memtable and the WAL.
func (s *Store) flushed(ents []memEntry) {
	last := ents[len(ents)-1].seq
	s.mem.trim(last)
	s.wal.release(last)
	s.flushes.Add(1)
}

func (s *Store) flushLoop() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n, size, oldest := s.mem.stats()
		var wait <-chan time.Time
		if n > 0 {
			due := flushDelay - time.Since(oldest)
			if n >= flushEvents || size >= flushBytes || due <= 0 {
				if err := s.flush(flushMax); err == nil {
					continue
				}
				// bbolt refused (a full disk?): the entries stay in the
				// memtable and the WAL; try again later, and the committer
				// fails appends with the error once the memtable is full.
				due = flushDelay
			}
			timer.Reset(due)
			wait = timer.C
		}
		select {
		case <-s.done:
			return
		case <-s.kick:
		case <-wait:
		}
	}
}

// recover copies into bbolt the WAL records that a crash left only there,
// then removes the WAL. It runs in Open, before the committer starts.
func (s *Store) recover(dir string) error {
	var batch []memEntry
	apply := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.db.Update(func(tx *bolt.Tx) error { return writeEntries(tx, batch) }); err != nil {
			return fmt.Errorf("embedded: recover the write-ahead log into %s: %w", s.path, err)
		}
		batch = nil
		return nil
	}
	err := replayWAL(dir, s.lastSeq, func(seq uint64, rec []byte) error {
		// The WAL skips the seqs that commits of state put straight into
		// bbolt, but those are all at or below after: above it, the WAL
		// must go on from the log's end.
		if seq != s.lastSeq+1 {
			return fmt.Errorf("embedded: the write-ahead log in %s continues at seq %d but the log ends at %d", dir, seq, s.lastSeq)
		}
		h, err := decodeHeader(rec)
		if err != nil {
			return fmt.Errorf("embedded: write-ahead log, seq %d: %w", seq, err)
		}
		batch = append(batch, memEntry{seq: seq, rec: rec, id: h.id, stream: string(h.stream), version: h.version})
		s.lastSeq, s.lastRecorded = seq, max(s.lastRecorded, h.recordedAt)
		if len(batch) >= flushMax {
			return apply()
		}
		return nil
	})
	if err == nil {
		err = apply()
	}
	if err != nil {
		return err
	}
	paths, err := walSegments(dir)
	if err != nil {
		return fmt.Errorf("embedded: list the write-ahead log: %w", err)
	}
	// One full-size segment becomes the spare: a store that crashed while
	// busy need not write a new one with zeros.
	for _, p := range paths {
		if err := s.wal.retire(p); err != nil {
			return fmt.Errorf("embedded: remove %s: %w", p, err)
		}
	}
	return nil
}
