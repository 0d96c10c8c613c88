package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hooklog/hooklog/eventstore"
)

var _ eventstore.StateStore = (*Store)(nil)

// CommitState implements eventstore.StateStore. The commit is one request to
// the committer, like an Append: it shares the group commit's transaction
// and fsync with concurrent appends and commits. Inside the transaction its
// appends are checked and written like Append's, in order (a later append
// sees the earlier ones), then its ops are applied in order. If an append
// fails, nothing of the commit is written (see commit: a commit that fails
// after writing part of itself is undone by running the batch again without
// it). A duplicate append (every id already in its stream) is answered with
// the original positions, like Append, and the ops are applied anyway.
//
// The ops' keys and values are read by the committer until CommitState
// returns; the caller must not change them before then.
func (s *Store) CommitState(ctx context.Context, c eventstore.StateCommit) ([]eventstore.AppendResult, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	// Validate fills in ids: leave the caller's slices alone.
	c.Appends = slices.Clone(c.Appends)
	for i := range c.Appends {
		c.Appends[i].Events = slices.Clone(c.Appends[i].Events)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(c.Appends) == 0 && len(c.Ops) == 0 {
		return []eventstore.AppendResult{}, nil
	}
	r := &request{
		ctx:     ctx,
		appends: make([]pendingAppend, len(c.Appends)),
		ops:     c.Ops,
		state:   true,
		res:     make([]eventstore.AppendResult, 0, len(c.Appends)),
		answer:  make(chan struct{}),
	}
	for i, p := range c.Appends {
		r.appends[i] = encodeAppend(p)
	}
	if err := s.submit(r); err != nil {
		return nil, err
	}
	return r.res, nil
}

// applyOps applies validated ops in their order. State bucket "name" is the
// nested bucket "name" of the parent bucket "state", so no state bucket can
// collide with the log's buckets. Deleting leaves a bucket in place, even
// when empty, except DeletePrefix of the empty prefix, which drops it.
func (st *txState) applyOps(ops []eventstore.StateOp) error {
	for i := range ops {
		op := &ops[i]
		if op.DeletePrefix && len(op.Key) == 0 {
			err := st.state.DeleteBucket([]byte(op.Bucket))
			if err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return fmt.Errorf("%w: state bucket %q: %w", errWrite, op.Bucket, err)
			}
			st.curName, st.curBucket = "", nil
			continue
		}
		set := !op.Delete && !op.DeletePrefix
		b, err := st.stateBucket(op.Bucket, set)
		if err != nil {
			return err
		}
		if b == nil {
			continue // nothing to delete
		}
		switch {
		case set:
			err = b.Put(op.Key, op.Value)
		case op.Delete:
			err = b.Delete(op.Key)
		default:
			// Seek again after each Delete: bbolt's Cursor.Delete leaves
			// the cursor on the following key, so Next would skip it.
			c := b.Cursor()
			for k, _ := c.Seek(op.Key); k != nil && bytes.HasPrefix(k, op.Key); k, _ = c.Seek(op.Key) {
				if err = c.Delete(); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("%w: state bucket %q: %w", errWrite, op.Bucket, err)
		}
	}
	return nil
}

// stateBucket returns the state bucket name, creating it when create is set;
// nil if it does not exist and create is not set.
func (st *txState) stateBucket(name string, create bool) (*bolt.Bucket, error) {
	if st.curBucket != nil && st.curName == name {
		return st.curBucket, nil
	}
	var b *bolt.Bucket
	if create {
		var err error
		if b, err = st.state.CreateBucketIfNotExists([]byte(name)); err != nil {
			return nil, fmt.Errorf("%w: create state bucket %q: %w", errWrite, name, err)
		}
	} else if b = st.state.Bucket([]byte(name)); b == nil {
		return nil, nil
	}
	st.curName, st.curBucket = name, b
	return b, nil
}

// GetState implements eventstore.StateStore. The value is a copy.
func (s *Store) GetState(ctx context.Context, bucket string, key []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !storableKey(bucket, key) {
		return nil, stateNotFound(bucket, key) // CommitState cannot have stored it
	}
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		var v []byte
		if b := tx.Bucket(bucketState).Bucket([]byte(bucket)); b != nil {
			v = b.Get(key)
		}
		if v == nil {
			return stateNotFound(bucket, key)
		}
		out = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func stateNotFound(bucket string, key []byte) error {
	return fmt.Errorf("embedded: state bucket %q key %q: %w", bucket, key, eventstore.ErrNotFound)
}

// storableKey reports whether CommitState could have stored (bucket, key)
// (see eventstore.StateCommit.Validate).
func storableKey(bucket string, key []byte) bool {
	return storableBucket(bucket) && len(key) > 0 && len(key) <= eventstore.MaxStateKeyLen
}

func storableBucket(bucket string) bool {
	return bucket != "" && len(bucket) <= eventstore.MaxStateBucketLen &&
		utf8.ValidString(bucket) && strings.IndexByte(bucket, 0) < 0
}

// Pages of ScanState: the first is small, so scans that stop early stay
// cheap; later ones grow. A page also ends once it holds scanPageBytes (but
// always holds at least one pair).
const (
	scanFirstPage = 256
	scanMaxPage   = 4096
	scanPageBytes = 1 << 20
)

// ScanState implements eventstore.StateStore. It copies a page of pairs out
// of a short read transaction, ends the transaction, then calls fn for the
// page: fn may take its time or call the Store (even CommitState) without
// holding a bbolt read transaction open, which would keep the committer from
// reusing freed pages and from growing the file's memory map. The next page
// continues after the last key seen, in a new transaction, so a scan never
// repeats or reorders keys, but keys committed during a long scan may or may
// not be seen. fn's slices are valid only during the call.
func (s *Store) ScanState(ctx context.Context, p eventstore.ScanParams, fn func(key, value []byte) error) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	if !storableBucket(p.Bucket) {
		if err := ctx.Err(); err != nil {
			return err
		}
		return nil // no such bucket can exist
	}
	after := p.After
	remaining := p.Limit // <= 0: no limit
	size := scanFirstPage
	var pg scanPage
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := size
		if remaining > 0 && remaining < n {
			n = remaining
		}
		more := false
		err := s.view(func(tx *bolt.Tx) error {
			more = pg.read(tx, &p, after, n)
			return nil
		})
		if err != nil {
			return err
		}
		for i := range pg.Len() {
			k, v := pg.Row(i)
			if err := fn(k, v); err != nil {
				if errors.Is(err, eventstore.ErrStopScan) {
					return nil
				}
				return err
			}
		}
		if !more {
			return nil
		}
		if remaining > 0 {
			if remaining -= pg.Len(); remaining == 0 {
				return nil
			}
		}
		last, _ := pg.Row(pg.Len() - 1)
		after = bytes.Clone(last)
		size = min(2*size, scanMaxPage)
	}
}

// scanPage is one page of a scan, filled by read.
type scanPage struct{ eventstore.StatePage }

// read copies up to n pairs of p's bucket, with p's prefix, after `after` in
// p's direction. It reports whether it stopped before the end of the range.
func (pg *scanPage) read(tx *bolt.Tx, p *eventstore.ScanParams, after []byte, n int) (more bool) {
	pg.Reset()
	b := tx.Bucket(bucketState).Bucket([]byte(p.Bucket))
	if b == nil {
		return false
	}
	c := b.Cursor()
	var k, v []byte
	next := c.Next
	if p.Reverse {
		next = c.Prev
		// Start below the tighter of two exclusive upper bounds: the
		// successor of the prefix and After.
		bound := prefixEnd(p.Prefix)
		if len(after) > 0 && (bound == nil || bytes.Compare(after, bound) < 0) {
			bound = after
		}
		if bound == nil {
			k, v = c.Last()
		} else if k, _ = c.Seek(bound); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	} else {
		// Start at the tighter of two lower bounds: the prefix (inclusive)
		// and After (exclusive).
		from := p.Prefix
		if len(after) > 0 && bytes.Compare(after, from) >= 0 {
			from = after
		}
		if len(from) == 0 {
			k, v = c.First()
		} else {
			k, v = c.Seek(from)
		}
		if len(after) > 0 && bytes.Equal(k, after) {
			k, v = c.Next()
		}
	}
	// Keys with the prefix are contiguous: the first one without it ends the
	// range in either direction.
	for ; k != nil && bytes.HasPrefix(k, p.Prefix); k, v = next() {
		if pg.Len() == n || pg.Len() > 0 && pg.Size() >= scanPageBytes {
			return true
		}
		pg.Add(k, v)
	}
	return false
}

// prefixEnd is the smallest key greater than every key starting with prefix,
// or nil when there is none (prefix empty or all 0xff).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
