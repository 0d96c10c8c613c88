package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hooklog/hooklog/eventstore"
)

// FileName is the bbolt file inside Config.Path.
const FileName = "hooklog.db"

// lockTimeout bounds how long Open waits for another process's file lock.
var lockTimeout = time.Second

// ErrLocked: the directory is already open in another process (or another
// Store in this one).
var ErrLocked = errors.New("embedded: store directory is locked by another process")

// Config configures Open.
type Config struct {
	// Path is the directory holding the store; it is created if missing.
	// Required.
	Path string
	// NoSync skips fsync on commit. Only for tests and benchmarks that say so:
	// an acknowledged append may be lost on a crash. Default false.
	NoSync bool
}

func (c Config) validate() error {
	if c.Path == "" {
		return fmt.Errorf("embedded: Config.Path: %w", eventstore.Invalid("path", "is required"))
	}
	return nil
}

var (
	bucketEvents   = []byte("events")
	bucketIDs      = []byte("ids")
	bucketVersions = []byte("versions")
	bucketStreams  = []byte("streams")
	bucketMeta     = []byte("meta")
	bucketState    = []byte("state")
	keyFormat      = []byte("format")
)

// maxBatchWrites caps how many events and state ops one group commit takes,
// so one transaction stays a bounded size (a single request may exceed it).
const maxBatchWrites = 20000

// Store is the embedded eventstore.Store. Create it with Open.
type Store struct {
	db    *bolt.DB
	path  string
	watch *eventstore.HeadWatch

	reqs      chan *request
	commitMu  sync.Mutex // held while a group commit runs (committer or caller)
	done      chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup

	// Owned by the committer goroutine (read by Open before it starts).
	lastSeq      uint64
	lastRecorded int64
	wal          *wal
	walErr       error // set once the WAL failed: every later request fails

	mem     *memtable
	flushMu sync.Mutex    // one bbolt write of memtable entries at a time
	kick    chan struct{} // wakes the flusher after a WAL commit

	commits atomic.Int64 // group commits (one fsync each; tests, metrics)
	flushes atomic.Int64 // memtable flushes into bbolt
}

var _ eventstore.Store = (*Store)(nil)

// request is one unit of work for the committer: an Append (one append,
// no ops) or a CommitState (any appends, then ops). It is checked and applied
// as a whole: if any part fails, none of it is written.
type request struct {
	ctx     context.Context
	appends []pendingAppend
	ops     []eventstore.StateOp
	state   bool // from CommitState: an append's error names its index
	res     []eventstore.AppendResult
	err     error
	answer  chan struct{}

	// Append's single append and result, without more allocations.
	one    [1]pendingAppend
	oneRes [1]eventstore.AppendResult
}

// pendingAppend is one validated append, encoded in the caller's goroutine.
type pendingAppend struct {
	p       eventstore.AppendParams
	records [][]byte
	keys    []byte // room for each event's seq key and version key
}

// encodeAppend encodes p's records into one buffer with room for every key
// too: bbolt keeps references to values until the transaction commits.
func encodeAppend(p eventstore.AppendParams) pendingAppend {
	a := pendingAppend{p: p, records: make([][]byte, len(p.Events))}
	size := len(p.Events) * (8 + len(p.Stream) + 9)
	for i := range p.Events {
		size += recordSize(p.Stream, &p.Events[i])
	}
	buf := make([]byte, size)
	for i := range p.Events {
		a.records[i], buf = encodeRecord(buf, p.Stream, &p.Events[i])
	}
	a.keys = buf
	return a
}

// weight is what a request counts against maxBatchWrites.
func (r *request) weight() int {
	n := len(r.ops)
	for i := range r.appends {
		n += len(r.appends[i].p.Events)
	}
	return n
}

// inlineMinWeight: a request of at least this many events (a batch) is
// committed by its caller when no group commit is running.
const inlineMinWeight = 16

// submit has r committed and waits for its answer. A batch (inlineMinWeight
// events or more) finding no group commit running is committed by its
// caller, with whatever else is waiting: it pays no goroutine handoff, there
// and back, and it shares little anyway. Anything else goes to the committer
// goroutine, which takes it with the next group: small appends from many
// callers share its fsyncs best that way (with caller commits they shared
// none in a package test run under the race detector on a busy machine).
func (s *Store) submit(r *request) error {
	if r.weight() >= inlineMinWeight && s.commitMu.TryLock() {
		if s.closed.Load() {
			s.commitMu.Unlock()
			return eventstore.ErrClosed
		}
		s.commit(s.drain([]*request{r}))
		s.commitMu.Unlock()
		<-r.answer
		return r.err
	}
	select {
	case s.reqs <- r:
	case <-s.done:
		return eventstore.ErrClosed
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	<-r.answer // taken: the outcome is decided by the committer, wait for it
	return r.err
}

// Open opens or creates the store in cfg.Path.
func Open(cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Path, 0o750); err != nil {
		return nil, fmt.Errorf("embedded: create %s: %w", cfg.Path, err)
	}
	file := filepath.Join(cfg.Path, FileName)
	db, err := bolt.Open(file, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		NoSync:  cfg.NoSync,
		// The freelist is written on every commit (one small page): with
		// NoFreelistSync, Open would walk every page of the file, making a
		// restart O(whole log).
		FreelistType: bolt.FreelistMapType,
		// Map generously up front so growth rarely remaps under appends.
		InitialMmapSize: 64 << 20,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (is another hooklog running on it?)", ErrLocked, file)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", file, err)
	}
	s := &Store{
		db:   db,
		path: file,
		reqs: make(chan *request),
		done: make(chan struct{}),
		wal:  newWAL(cfg.Path, cfg.NoSync),
		mem:  newMemtable(),
		kick: make(chan struct{}, 1),
	}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.recover(cfg.Path); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.watch = eventstore.NewHeadWatch(eventstore.Position{Lo: s.lastSeq})
	s.wg.Add(2)
	go s.commitLoop()
	go s.flushLoop()
	return s, nil
}

// init creates the buckets and reads the head.
func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEvents, bucketIDs, bucketVersions, bucketStreams, bucketMeta, bucketState} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("embedded: create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if f := meta.Get(keyFormat); f == nil {
			if err := meta.Put(keyFormat, putUint64(recordFormat)); err != nil {
				return fmt.Errorf("embedded: write format: %w", err)
			}
		} else if len(f) != 8 || binary.BigEndian.Uint64(f) != recordFormat {
			return fmt.Errorf("embedded: %s has an unknown record format %x", s.path, f)
		}
		k, v := tx.Bucket(bucketEvents).Cursor().Last()
		if k != nil {
			s.lastSeq = binary.BigEndian.Uint64(k)
			at, err := recordedAtOf(v)
			if err != nil {
				return fmt.Errorf("embedded: last event: %w", err)
			}
			s.lastRecorded = at
		}
		return nil
	})
}

// Path is the bbolt file's path.
func (s *Store) Path() string { return s.path }

// Close stops the committer and the flusher (finishing the group commit in
// progress), wakes waiters, copies what is only in the WAL into bbolt,
// removes the WAL segments (a pre-written spare stays for the next Open)
// and closes the file. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.wg.Wait()
		s.commitMu.Lock() // a caller's group commit in progress ends first
		defer s.commitMu.Unlock()
		s.watch.Close()
		// Leave everything in bbolt and no WAL behind, so that the next
		// Open has nothing to recover.
		ferr := s.flush(0)
		werr := s.wal.close(ferr == nil && s.walErr == nil)
		s.closeErr = errors.Join(ferr, werr)
		if err := s.db.Close(); err != nil {
			s.closeErr = errors.Join(s.closeErr, fmt.Errorf("embedded: close: %w", err))
		}
	})
	return s.closeErr
}

// Append implements eventstore.Store. See the package doc for group commit and
// cancellation.
func (s *Store) Append(ctx context.Context, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	if s.closed.Load() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	// Work on a copy so that Validate filling in ids never touches the caller's slice.
	p.Events = slices.Clone(p.Events)
	if err := p.Validate(); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	r := &request{ctx: ctx, answer: make(chan struct{})}
	r.one[0] = encodeAppend(p)
	r.appends, r.res = r.one[:], r.oneRes[:0]
	if err := s.submit(r); err != nil {
		return eventstore.AppendResult{}, err
	}
	return r.res[0], nil
}

func (s *Store) commitLoop() {
	defer s.wg.Done()
	var batch []*request
	for {
		select {
		case <-s.done:
			return
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		}
		s.commitMu.Lock()
		batch = s.drain(batch)
		s.commit(batch)
		s.commitMu.Unlock()
		clear(batch)
	}
}

// drain adds to batch the requests waiting for the committer, up to
// maxBatchWrites.
func (s *Store) drain(batch []*request) []*request {
	n := 0
	for _, r := range batch {
		n += r.weight()
	}
	for n < maxBatchWrites {
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
			n += r.weight()
		default:
			return batch
		}
	}
	return batch
}

// commit answers every request of batch with one group commit: a batch of
// appends goes to the WAL (commitWAL); a batch holding a CommitState goes to
// bbolt in one transaction, with the memtable's entries first (commitBolt).
func (s *Store) commit(batch []*request) {
	live := batch[:0:0]
	state := false
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.answer)
			continue
		}
		live = append(live, r)
		state = state || r.state
	}
	switch {
	case len(live) == 0:
	case s.walErr != nil:
		for _, r := range live {
			r.res, r.err = nil, s.walErr
			close(r.answer)
		}
	case state:
		s.flushMu.Lock()
		s.commitBolt(live)
		s.flushMu.Unlock()
	default:
		s.commitWAL(live)
	}
}

// commitBolt applies live in one bbolt transaction and answers every
// request. The caller holds flushMu.
func (s *Store) commitBolt(live []*request) {
	for len(live) > 0 {
		undo, err := s.update(live)
		switch {
		case err == nil:
			for _, r := range live {
				close(r.answer)
			}
			return
		case undo >= 0:
			// live[undo] failed after writing part of itself. It has its
			// error; run the batch again without it (bbolt has no savepoints).
			close(live[undo].answer)
			live = slices.Delete(live, undo, undo+1)
		case len(live) > 1:
			// Retry each request in a transaction of its own, so one bad
			// request cannot fail its neighbours.
			for _, r := range live {
				s.commitBolt([]*request{r})
			}
			return
		default:
			r := live[0]
			r.res, r.err = nil, fmt.Errorf("embedded: commit: %w", err)
			close(r.answer)
			return
		}
	}
}

// update runs live in one write transaction and, when it committed, advances
// the head. When a request failed after writing (errUndo), it returns that
// request's index and the transaction is rolled back; otherwise undo is -1.
func (s *Store) update(live []*request) (undo int, err error) {
	undo = -1
	now := time.Now().UnixNano()
	if now < s.lastRecorded {
		now = s.lastRecorded
	}
	var lastSeq uint64
	ents := s.mem.snapshot(0) // every event before lastSeq that bbolt lacks
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := writeEntries(tx, ents); err != nil {
			return err
		}
		st := txState{
			events:   tx.Bucket(bucketEvents),
			ids:      tx.Bucket(bucketIDs),
			versions: tx.Bucket(bucketVersions),
			streams:  tx.Bucket(bucketStreams),
			state:    tx.Bucket(bucketState),
			lastSeq:  s.lastSeq,
			now:      now,
		}
		// Keys of the events bucket only ever grow, and ids (UUIDv7) and
		// stream versions mostly do: fill pages instead of splitting them
		// half-empty, so a commit writes (and fsyncs) fewer pages.
		st.events.FillPercent = 1.0
		st.ids.FillPercent = 0.9
		st.versions.FillPercent = 0.9
		for i, r := range live {
			if err := st.apply(r); err != nil {
				if errors.Is(err, errUndo) {
					undo = i
				}
				return err // this transaction cannot commit as it is
			}
		}
		lastSeq = st.lastSeq
		return nil
	})
	if err != nil {
		return undo, err
	}
	s.commits.Add(1)
	if len(ents) > 0 {
		s.flushed(ents)
	}
	if lastSeq != s.lastSeq {
		s.lastSeq = lastSeq
		s.lastRecorded = now
		s.watch.Advance(eventstore.Position{Lo: lastSeq})
	}
	return -1, nil
}

var (
	// errWrite: a bbolt write failed; the transaction cannot be trusted.
	errWrite = errors.New("embedded: write failed")
	// errUndo: a request failed after some of its writes; the transaction
	// must roll back and run again without it.
	errUndo = errors.New("embedded: request must be undone")
)

// get looks id up in the ids bucket through one reused cursor (Bucket.Get
// allocates a fresh cursor stack on every call).
func (st *txState) get(id []byte) []byte {
	if st.idCursor == nil {
		st.idCursor = st.ids.Cursor()
	}
	k, v := st.idCursor.Seek(id)
	if !bytes.Equal(k, id) {
		return nil
	}
	return v
}

type txState struct {
	idCursor                       *bolt.Cursor
	events, ids, versions, streams *bolt.Bucket
	state                          *bolt.Bucket // parent of the state buckets
	lastSeq                        uint64
	now                            int64

	// The state bucket the last op used.
	curName   string
	curBucket *bolt.Bucket
}

// apply checks and writes one request against the transaction's current
// state, setting r.res or r.err. A request that fails a check before writing
// anything writes nothing and apply returns nil: the transaction goes on with
// the next request. apply returns an error only when the transaction must not
// commit as it is: errUndo (r failed after writing some of its appends; r.err
// is set) or errWrite (a failed write).
func (st *txState) apply(r *request) error {
	r.res, r.err = r.res[:0], nil
	wrote := false
	for i := range r.appends {
		res, err := st.append(&r.appends[i])
		if err != nil {
			if errors.Is(err, errWrite) {
				return err
			}
			if r.state {
				err = fmt.Errorf("appends[%d]: %w", i, err)
			}
			r.res, r.err = nil, err
			if wrote {
				return errUndo
			}
			return nil
		}
		wrote = wrote || !res.Duplicate
		r.res = append(r.res, res)
	}
	return st.applyOps(r.ops)
}

// logView is what an append is checked against: the log as the group
// commit in progress sees it, its own earlier writes included.
type logView interface {
	// byID finds event id: its seq, stream and version.
	byID(id *uuid.UUID) (seq uint64, stream []byte, version int64, ok bool, err error)
	// streamVersion is the stream's last version, -1 if it has no event.
	streamVersion(stream string) int64
}

// checkAppend checks p against v: idempotency (all ids already in the stream:
// dup holds the original positions), then the expected version. On success
// with dup == nil, the events get versions current+1, current+2, ...
func checkAppend(v logView, p *eventstore.AppendParams) (dup *eventstore.AppendResult, current int64, err error) {
	found := 0
	var orig []eventstore.AppendedEvent
	for i := range p.Events {
		id := &p.Events[i].ID
		seq, stream, version, ok, err := v.byID(id)
		if err != nil {
			return nil, 0, err
		}
		if !ok {
			continue
		}
		found++
		if string(stream) != p.Stream {
			return nil, 0, fmt.Errorf("%w: event %s is in another stream", eventstore.ErrIDConflict, id)
		}
		orig = append(orig, eventstore.AppendedEvent{ID: *id, Position: eventstore.Position{Lo: seq}, Version: version})
	}
	if found == len(p.Events) {
		return &eventstore.AppendResult{Events: orig, Duplicate: true}, 0, nil
	}
	if found > 0 {
		return nil, 0, fmt.Errorf("%w: %d of %d event ids are already in stream %q", eventstore.ErrIDConflict, found, len(p.Events), p.Stream)
	}
	current = v.streamVersion(p.Stream)
	if err := p.Expected.Check(p.Stream, current); err != nil {
		return nil, 0, err
	}
	return nil, current, nil
}

func (st *txState) byID(id *uuid.UUID) (uint64, []byte, int64, bool, error) {
	v := st.get(id[:])
	if v == nil {
		return 0, nil, 0, false, nil
	}
	return eventByKey(st.events, id, v)
}

// eventByKey is byID's answer for event id, found under seq key k of the
// events bucket.
func eventByKey(events *bolt.Bucket, id *uuid.UUID, k []byte) (uint64, []byte, int64, bool, error) {
	seq := binary.BigEndian.Uint64(k)
	h, err := decodeHeader(events.Get(k))
	if err != nil {
		return 0, nil, 0, false, fmt.Errorf("embedded: event %s (seq %d): %w", id, seq, err)
	}
	return seq, h.stream, h.version, true, nil
}

func (st *txState) streamVersion(stream string) int64 {
	if v := st.streams.Get([]byte(stream)); v != nil {
		return int64(binary.BigEndian.Uint64(v))
	}
	return -1
}

// append checks one append against the transaction's current state and, if
// it passes, writes it. Checks come before any write, so a rejected append
// writes nothing.
func (st *txState) append(a *pendingAppend) (eventstore.AppendResult, error) {
	p := &a.p
	dup, current, err := checkAppend(st, p)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if dup != nil {
		return *dup, nil
	}

	res := eventstore.AppendResult{Events: make([]eventstore.AppendedEvent, len(p.Events))}
	for i := range p.Events {
		seq := st.lastSeq + 1
		ver := current + 1 + int64(i)
		rec := a.records[i]
		setRecordFields(rec, st.now, ver)
		keys := a.keys[i*(8+len(p.Stream)+9):]
		key := keys[:8:8]
		binary.BigEndian.PutUint64(key, seq)
		vkey := keys[8 : 8+len(p.Stream)+9 : 8+len(p.Stream)+9]
		putVersionKey(vkey, p.Stream, ver)
		id := &p.Events[i].ID
		if err := st.events.Put(key, rec); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("%w: events: %w", errWrite, err)
		}
		if err := st.ids.Put(id[:], key); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("%w: ids: %w", errWrite, err)
		}
		if err := st.versions.Put(vkey, key); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("%w: versions: %w", errWrite, err)
		}
		st.lastSeq = seq
		res.Events[i] = eventstore.AppendedEvent{ID: *id, Position: eventstore.Position{Lo: seq}, Version: ver}
	}
	if err := st.streams.Put([]byte(p.Stream), putUint64(uint64(current+int64(len(p.Events))))); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("%w: streams: %w", errWrite, err)
	}
	return res, nil
}

// view runs fn in a read transaction, translating a closed database.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return eventstore.ErrClosed
	}
	return err
}

func checkPosition(p eventstore.Position) error {
	if p.Hi != 0 {
		return fmt.Errorf("%w: %s is not an embedded store position", eventstore.ErrBadPosition, p)
	}
	return nil
}

// ReadAll implements eventstore.Store. Everything a read transaction sees is
// committed and the sequence is dense, so every read is settled.
func (s *Store) ReadAll(ctx context.Context, p eventstore.ReadParams) (eventstore.ReadResult, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.ReadResult{}, err
	}
	if err := checkPosition(p.After); err != nil {
		return eventstore.ReadResult{}, err
	}
	limit, maxScan := p.Limits()
	res := eventstore.ReadResult{Events: []eventstore.Event{}, Next: p.After}
	if p.After.Lo == math.MaxUint64 {
		// Nothing can follow (and After.Lo+1 would wrap to the start).
		if s.closed.Load() {
			return eventstore.ReadResult{}, eventstore.ErrClosed
		}
		return res, nil
	}
	scanned := 0
	// visit reads one record; done: the page is full.
	visit := func(seq uint64, v []byte) (done bool, err error) {
		h, err := decodeHeader(v)
		if err != nil {
			return true, fmt.Errorf("embedded: seq %d: %w", seq, err)
		}
		scanned++
		res.Next = eventstore.Position{Lo: seq}
		if h.match(&p.Filter) {
			ev, err := h.event(seq)
			if err != nil {
				return true, fmt.Errorf("embedded: seq %d: %w", seq, err)
			}
			res.Events = append(res.Events, ev)
			if len(res.Events) >= limit {
				return true, nil
			}
		}
		if scanned >= maxScan {
			return true, nil
		}
		if scanned%1024 == 0 && ctx.Err() != nil {
			return true, ctx.Err()
		}
		return false, nil
	}
	head, ents := s.readSnapshot()
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		end := memStart(head, ents) // bbolt holds the log before it
		for k, v := c.Seek(seqKey(p.After.Lo + 1)); k != nil; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			if seq >= end {
				break
			}
			if done, err := visit(seq, v); done {
				return err
			}
		}
		for seq := max(p.After.Lo+1, end); seq <= head; seq++ {
			if done, err := visit(seq, entryAt(ents, seq).rec); done {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return eventstore.ReadResult{}, err
	}
	return res, nil
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, p eventstore.ReadStreamParams) ([]eventstore.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !eventstore.ValidStream(p.Stream) {
		return nil, eventstore.Invalid("stream", "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
	}
	if p.FromVersion < 0 {
		return nil, eventstore.Invalid("from_version", "must not be negative")
	}
	limit := p.Limit
	if limit <= 0 {
		limit = eventstore.DefaultReadLimit
	}
	limit = min(limit, eventstore.MaxReadLimit)
	out := []eventstore.Event{}
	head, ents := s.readSnapshot()
	err := s.view(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		prefix := versionKey(p.Stream, 0)[:len(p.Stream)+1]
		end := memStart(head, ents)
		c := tx.Bucket(bucketVersions).Cursor()
		for k, v := c.Seek(versionKey(p.Stream, p.FromVersion)); k != nil && len(out) < limit; k, v = c.Next() {
			if len(k) != len(prefix)+8 || string(k[:len(prefix)]) != string(prefix) {
				break
			}
			seq := binary.BigEndian.Uint64(v)
			if seq >= end {
				break // the stream goes on in the memtable
			}
			ev, err := decodeEvent(seq, events.Get(v))
			if err != nil {
				return fmt.Errorf("embedded: %w", err)
			}
			out = append(out, ev)
		}
		for i := range ents {
			e := &ents[i]
			if len(out) >= limit {
				break
			}
			if e.stream != p.Stream || e.version < p.FromVersion {
				continue
			}
			ev, err := decodeEvent(e.seq, e.rec)
			if err != nil {
				return fmt.Errorf("embedded: %w", err)
			}
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Event implements eventstore.Store.
func (s *Store) Event(ctx context.Context, id uuid.UUID) (eventstore.Event, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Event{}, err
	}
	if s.closed.Load() {
		return eventstore.Event{}, eventstore.ErrClosed
	}
	if seq, rec := s.memEvent(id); rec != nil {
		ev, err := decodeEvent(seq, rec)
		if err != nil {
			return eventstore.Event{}, fmt.Errorf("embedded: %w", err)
		}
		return ev, nil
	}
	var ev eventstore.Event
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketIDs).Get(id[:])
		if v == nil {
			return fmt.Errorf("%w: event %s", eventstore.ErrNotFound, id)
		}
		var err error
		ev, err = decodeEvent(binary.BigEndian.Uint64(v), tx.Bucket(bucketEvents).Get(v))
		if err != nil {
			return fmt.Errorf("embedded: %w", err)
		}
		return nil
	})
	return ev, err
}

// Head implements eventstore.Store.
func (s *Store) Head(ctx context.Context) (eventstore.Position, error) {
	if s.closed.Load() {
		return eventstore.Position{}, eventstore.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return eventstore.Position{}, err
	}
	return s.watch.Head(), nil
}

var (
	minNanos = time.Unix(0, math.MinInt64)
	maxNanos = time.Unix(0, math.MaxInt64)
)

// PositionAt implements eventstore.Store: the position of the last event
// recorded before t (Start if none), by binary search over the events bucket
// (recorded_at is non-decreasing along the log): O(log n) lookups, no scan.
func (s *Store) PositionAt(ctx context.Context, t time.Time) (eventstore.Position, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Position{}, err
	}
	var pos eventstore.Position
	head, ents := s.readSnapshot()
	err := s.view(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		end := memStart(head, ents)
		n := head
		if n == 0 || !t.After(minNanos) {
			return nil
		}
		if t.After(maxNanos) {
			pos.Lo = n
			return nil
		}
		tn := t.UnixNano()
		var ferr error
		// First index i in [0, n) whose event (seq i+1) has recorded_at >= t.
		i := sort.Search(int(n), func(i int) bool {
			seq := uint64(i) + 1
			var rec []byte
			if seq >= end {
				rec = entryAt(ents, seq).rec
			} else {
				rec = events.Get(seqKey(seq))
			}
			at, err := recordedAtOf(rec)
			if err != nil && ferr == nil {
				ferr = fmt.Errorf("embedded: seq %d: %w", i+1, err)
			}
			return at >= tn
		})
		pos.Lo = uint64(i) // the event before it, or Start
		return ferr
	})
	return pos, err
}

// Wait implements eventstore.Store: every waiter shares one HeadWatch, which
// the committer advances after each commit.
func (s *Store) Wait(ctx context.Context, after eventstore.Position) error {
	return s.watch.Wait(ctx, after)
}

// Ping implements eventstore.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.view(func(*bolt.Tx) error { return nil })
}

// readSnapshot is what a read sees: the head, and the memtable's entries up
// to it. Everything before the first entry (or up to the head, when there is
// none) is in bbolt for any read transaction opened after this call.
func (s *Store) readSnapshot() (head uint64, ents []memEntry) {
	head = s.watch.Head().Lo // first: every entry up to it is in the memtable or bbolt
	ents = s.mem.snapshot(0)
	if len(ents) == 0 || ents[0].seq > head {
		return head, nil
	}
	if last := ents[len(ents)-1].seq; last < head {
		// Not expected: the head passes the memtable only after the
		// memtable was flushed. Read no further than it goes.
		return last, ents
	}
	return head, ents[:head-ents[0].seq+1]
}

// memStart is the first seq that a read must take from the memtable
// snapshot ents rather than bbolt.
func memStart(head uint64, ents []memEntry) uint64 {
	if len(ents) == 0 {
		return head + 1
	}
	return ents[0].seq
}

// memEvent finds event id in the memtable, if it is there and acknowledged.
func (s *Store) memEvent(id uuid.UUID) (uint64, []byte) {
	head := s.watch.Head().Lo
	m := s.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	seq, ok := m.ids[id]
	if !ok || seq > head {
		return 0, nil
	}
	return seq, entryAt(m.entries, seq).rec
}
