package eventstore

import "context"

// StateStore keeps derived projector state beside the log: route checkpoints,
// retry queues, dead-letter and attempt indexes. None of it is a source of
// truth: every value can be rebuilt by folding events of the log (invariant 1).
// It lives in the same engine as the log where the backend allows (one bbolt
// file, one PostgreSQL schema) so that a delivery outcome event and the index
// entries it implies commit in one durable transaction.
//
// Buckets are flat namespaces of ordered byte keys. Keys sort as bytes; encode
// numbers big-endian (and invert them for newest-first scans).
type StateStore interface {
	// CommitState appends c.Appends (each validated and checked like Append,
	// all or nothing) and applies c.Ops in one durable transaction. On any
	// error nothing is written.
	CommitState(ctx context.Context, c StateCommit) ([]AppendResult, error)

	// GetState returns one value, or ErrNotFound.
	GetState(ctx context.Context, bucket string, key []byte) ([]byte, error)

	// ScanState calls fn for the keys of bucket that start with prefix and sort
	// after `after` (nil: from the first), in ascending order, at most limit
	// (<= 0: no limit); with p.Reverse, in descending order from the last key,
	// sorting before `after`. fn's slices are valid only during the call. Returning
	// ErrStopScan from fn ends the scan without error.
	ScanState(ctx context.Context, p ScanParams, fn func(key, value []byte) error) error
}

// CommitsHoldBackReaders is implemented by a StateStore whose CommitState
// transactions hold back the log's readers while they run, so that a long
// one delays every event appended meanwhile. PostgreSQL's do: readers stop
// at the oldest open transaction (see the postgres package). Callers that
// batch state writes keep such commits short.
type CommitsHoldBackReaders interface {
	CommitsHoldBackReaders() bool
}

// StateCommit is one atomic unit of derived state, optionally with log appends.
type StateCommit struct {
	Appends []AppendParams
	Ops     []StateOp
}

// StateOp sets (Value != nil), deletes (Delete) one key, or deletes every key
// with the prefix Key (DeletePrefix).
type StateOp struct {
	Bucket       string
	Key          []byte
	Value        []byte
	Delete       bool
	DeletePrefix bool
	// New, on a set, is a hint that the key is not in the bucket (a key
	// made fresh, such as one holding a new unique id): a backend may write
	// it without looking for a value to replace. The result is the same as
	// without the hint, also when the key does exist (the PostgreSQL backend
	// then runs the commit again as upserts).
	New bool
}

// ScanParams selects keys for ScanState.
type ScanParams struct {
	Bucket string
	Prefix []byte
	After  []byte
	Limit  int
	// Reverse visits the keys in descending order (newest first for keys that
	// encode a time). After, when set, then means "sort before After": a page
	// continues below the last key of the previous page.
	Reverse bool
}

// ErrStopScan ends ScanState early from inside fn.
var ErrStopScan = errorString("eventstore: stop scan")

type errorString string

func (e errorString) Error() string { return string(e) }
