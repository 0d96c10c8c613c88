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
	done      chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup

	// Owned by the committer goroutine (read by Open before it starts).
	lastSeq      uint64
	lastRecorded int64

	commits atomic.Int64 // write transactions committed (tests, metrics)
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

// submit hands r to the committer and waits for its answer.
func (s *Store) submit(r *request) error {
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
	}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.watch = eventstore.NewHeadWatch(eventstore.Position{Lo: s.lastSeq})
	s.wg.Add(1)
	go s.commitLoop()
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

// Close stops the committer (finishing the group commit in progress), wakes
// waiters and closes the file. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.wg.Wait()
		s.watch.Close()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("embedded: close: %w", err)
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
		n := batch[0].weight()
	drain:
		for n < maxBatchWrites {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
				n += r.weight()
			default:
				break drain
			}
		}
		s.commit(batch)
		clear(batch)
	}
}

// commit applies batch in one transaction and answers every request.
func (s *Store) commit(batch []*request) {
	live := batch[:0:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.answer)
			continue
		}
		live = append(live, r)
	}
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
				s.commit([]*request{r})
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
	err = s.db.Update(func(tx *bolt.Tx) error {
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

// append checks one append against the transaction's current state and, if
// it passes, writes it. Checks come before any write, so a rejected append
// writes nothing.
func (st *txState) append(a *pendingAppend) (eventstore.AppendResult, error) {
	p := &a.p
	// Idempotency: all ids already in this stream → the original positions.
	found := 0
	var dup []eventstore.AppendedEvent
	for i := range p.Events {
		id := p.Events[i].ID
		v := st.get(id[:])
		if v == nil {
			continue
		}
		found++
		seq := binary.BigEndian.Uint64(v)
		h, err := decodeHeader(st.events.Get(v))
		if err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("embedded: event %s (seq %d): %w", id, seq, err)
		}
		if string(h.stream) != p.Stream {
			return eventstore.AppendResult{}, fmt.Errorf("%w: event %s is in another stream", eventstore.ErrIDConflict, id)
		}
		dup = append(dup, eventstore.AppendedEvent{ID: id, Position: eventstore.Position{Lo: seq}, Version: h.version})
	}
	if found == len(p.Events) {
		return eventstore.AppendResult{Events: dup, Duplicate: true}, nil
	}
	if found > 0 {
		return eventstore.AppendResult{}, fmt.Errorf("%w: %d of %d event ids are already in stream %q", eventstore.ErrIDConflict, found, len(p.Events), p.Stream)
	}

	current := int64(-1)
	if v := st.streams.Get([]byte(p.Stream)); v != nil {
		current = int64(binary.BigEndian.Uint64(v))
	}
	if err := p.Expected.Check(p.Stream, current); err != nil {
		return eventstore.AppendResult{}, err
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
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		scanned := 0
		for k, v := c.Seek(seqKey(p.After.Lo + 1)); k != nil; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			h, err := decodeHeader(v)
			if err != nil {
				return fmt.Errorf("embedded: seq %d: %w", seq, err)
			}
			scanned++
			res.Next = eventstore.Position{Lo: seq}
			if h.match(&p.Filter) {
				ev, err := h.event(seq)
				if err != nil {
					return fmt.Errorf("embedded: seq %d: %w", seq, err)
				}
				res.Events = append(res.Events, ev)
				if len(res.Events) >= limit {
					break
				}
			}
			if scanned >= maxScan {
				break
			}
			if scanned%1024 == 0 && ctx.Err() != nil {
				return ctx.Err()
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
	err := s.view(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		prefix := versionKey(p.Stream, 0)[:len(p.Stream)+1]
		c := tx.Bucket(bucketVersions).Cursor()
		for k, v := c.Seek(versionKey(p.Stream, p.FromVersion)); k != nil && len(out) < limit; k, v = c.Next() {
			if len(k) != len(prefix)+8 || string(k[:len(prefix)]) != string(prefix) {
				break
			}
			seq := binary.BigEndian.Uint64(v)
			ev, err := decodeEvent(seq, events.Get(v))
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
	err := s.view(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		k, _ := events.Cursor().Last()
		if k == nil || !t.After(minNanos) {
			return nil
		}
		n := binary.BigEndian.Uint64(k)
		if t.After(maxNanos) {
			pos.Lo = n
			return nil
		}
		tn := t.UnixNano()
		var ferr error
		// First index i in [0, n) whose event (seq i+1) has recorded_at >= t.
		i := sort.Search(int(n), func(i int) bool {
			at, err := recordedAtOf(events.Get(seqKey(uint64(i) + 1)))
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
