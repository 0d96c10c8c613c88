package eventstore

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Store is the append-only log. Every backend implements it and passes
// storetest.Run. All methods are safe for concurrent use; after Close they return
// ErrClosed.
type Store interface {
	// Append writes p.Events to p.Stream atomically, once durable (fsync or
	// commit). It validates first (ErrInvalid) and writes nothing on any error.
	// Ids: if every id is already in p.Stream the call returns the original
	// positions with Duplicate set and writes nothing, whatever p.Expected says;
	// if only some are, or any is in another stream, it returns ErrIDConflict.
	// Otherwise p.Expected is checked (ErrWrongVersion).
	Append(ctx context.Context, p AppendParams) (AppendResult, error)

	// ReadAll reads the log forwards after p.After (exclusive), in log order.
	// It never returns an event that a later read could see before an event it
	// already returned: what it returns is settled (commit-order safe).
	ReadAll(ctx context.Context, p ReadParams) (ReadResult, error)

	// ReadStream reads one stream from version p.FromVersion (inclusive), up to
	// p.Limit events. A stream with no events returns an empty slice, not an error.
	ReadStream(ctx context.Context, p ReadStreamParams) ([]Event, error)

	// Event returns one event by id, or ErrNotFound.
	Event(ctx context.Context, id uuid.UUID) (Event, error)

	// Head is the position of the last settled event (Start on an empty log).
	// Reading after Head returns nothing until something new is appended.
	Head(ctx context.Context) (Position, error)

	// PositionAt returns a cursor C such that reading after C returns every
	// event with RecordedAt >= t, and C is as late as the backend can cheaply
	// make it (embedded: exactly the last event before t). It does not scan the
	// log. A time beyond the last event returns Head.
	PositionAt(ctx context.Context, t time.Time) (Position, error)

	// Wait blocks until the log may hold settled events after `after`, or ctx
	// ends (returning ctx.Err()). Wake-ups may be spurious; callers re-read. Any
	// number of waiters share one notification mechanism per store: waiting
	// does not query the backend per waiter.
	Wait(ctx context.Context, after Position) error

	// Ping reports whether the backend is reachable (for /readyz).
	Ping(ctx context.Context) error

	// Close releases the store. It is idempotent.
	Close() error
}

// ReadParams selects a forward read of the whole log.
type ReadParams struct {
	After  Position // exclusive; Start reads from the beginning
	Filter Filter
	Limit  int // maximum events returned; <= 0 means DefaultReadLimit
	// MaxScan bounds how many events the read may examine (matching or not)
	// before returning; <= 0 means DefaultMaxScan. It keeps sparse filters from
	// scanning the whole log in one call.
	MaxScan int
}

// ReadResult is a page of the log.
type ReadResult struct {
	Events []Event
	// Next is the cursor to continue from: the position of the last event
	// examined (matching or not), or p.After when nothing was examined. Reading
	// after Next never returns an event already returned or skipped.
	Next Position
}

// ReadStreamParams selects a read of one stream.
type ReadStreamParams struct {
	Stream      string
	FromVersion int64
	Limit       int // <= 0 means DefaultReadLimit
}

// Defaults of the read calls.
const (
	DefaultReadLimit = 100
	DefaultMaxScan   = 10000
	MaxReadLimit     = 10000
)

// Limits returns p's Limit and MaxScan with defaults applied.
func (p ReadParams) Limits() (limit, maxScan int) {
	limit, maxScan = p.Limit, p.MaxScan
	if limit <= 0 {
		limit = DefaultReadLimit
	}
	if limit > MaxReadLimit {
		limit = MaxReadLimit
	}
	if maxScan <= 0 {
		maxScan = DefaultMaxScan
	}
	if maxScan < limit {
		maxScan = limit
	}
	return limit, maxScan
}
