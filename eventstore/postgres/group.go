package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"github.com/hooklog/hooklog/eventstore"
)

// Group commit for single-event Appends.
//
// Every Append is a transaction, and on a busy store most of a single-event
// append's cost is the transaction's, not the row's: the round trip, the
// statement's start, the commit record and its WAL flush, the wake-ups of the
// backend and of the caller. So single-event Appends whose stream's version
// this Store knows (the appendNext1 fast path) are grouped: at most
// Config.AppendGroups group statements run at once, and the Appends that
// arrive while they are all busy wait and go together in the next one, one
// transaction for all of them. An Append that finds a group slot free runs at
// once, alone, on the single-event statement: grouping adds no latency when
// the store is not busy. When it is, an Append waits for a slot instead of
// queueing inside PostgreSQL for the same CPU and WAL flushes, and the
// transactions it no longer needs leave more of both for the rows.
//
// Each grouped Append keeps its own semantics. Its stream's advisory lock is
// tried as in appendNext1; an Append whose lock is busy gets no row and takes
// the slow path on its own, after the group has committed. A statement that
// fails (a guessed version the stream has passed, an id already in the log,
// a lost connection) commits nothing, and every Append of the group then runs
// alone, as if it had not been grouped: the single-event statement, then
// append_events, which gives each its own answer.
//
// The events of one group share a transaction id, so they are adjacent in the
// log, in no particular order among themselves (each is a different stream).

// DefaultAppendGroups is Config.AppendGroups' default. With 32 appenders on
// the 2-core development machine, PostgreSQL on the same machine, 2 gave the
// most events/s (1 about 10% fewer, 4 about 30% fewer, 16 half); a database
// with more cores may take more.
const DefaultAppendGroups = 2

// maxGroup bounds the Appends of one group statement.
const maxGroup = 256

// appendGroup queues single-event Appends for group statements.
type appendGroup struct {
	max int // group statements at once

	mu      sync.Mutex
	running int          // group statements running (or about to)
	queue   []*groupCall // waiting; non-empty only while running == max
}

// groupCall is one Append in a group.
type groupCall struct {
	ctx       context.Context // its caller's
	stream    string
	version   int64 // the version to write
	event     eventstore.ProposedEvent
	abandoned bool // its caller has returned (under appendGroup.mu)

	res  eventstore.AppendResult
	err  error
	done chan struct{} // closed when res and err are set
}

// appendGrouped appends p (one event, validated) as version last+1 of its
// stream, grouped with whatever other single-event Appends are waiting. Its
// errors are appendNext's: errSlowPath when the stream's lock was busy, the
// statement's error otherwise.
func (s *Store) appendGrouped(ctx context.Context, p eventstore.AppendParams, last int64) (eventstore.AppendResult, error) {
	g := s.group
	c := &groupCall{ctx: ctx, stream: p.Stream, version: last + 1, event: p.Events[0], done: make(chan struct{})}
	g.mu.Lock()
	if g.running < g.max {
		// A free slot: run now, with nothing else (the queue is empty while
		// a slot is free), on the calling goroutine.
		g.running++
		g.mu.Unlock()
		s.runGroup([]*groupCall{c})
		return c.res, c.err
	}
	g.queue = append(g.queue, c)
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		g.mu.Lock()
		// Skipped if no group has taken it yet. If one has, the event may
		// still commit, as a cancelled single statement's may.
		c.abandoned = true
		g.mu.Unlock()
		select {
		case <-c.done: // finished meanwhile: report what happened
			return c.res, c.err
		default:
			return eventstore.AppendResult{}, ctx.Err()
		}
	}
}

// runGroup runs calls, then the groups that queued meanwhile, until the
// queue is empty; then it frees its slot. Only the first group runs on the
// caller's goroutine: the next ones run on a new one, so that the caller
// returns as soon as its own Append has committed.
func (s *Store) runGroup(calls []*groupCall) {
	s.execGroup(calls)
	if next := s.group.take(); next != nil {
		go func() {
			for next != nil {
				s.execGroup(next)
				next = s.group.take()
			}
		}()
	}
}

// take returns the next group from the queue, without the calls whose caller
// has left, or frees a slot and returns nil when nothing waits.
func (g *appendGroup) take() []*groupCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.queue) > 0 {
		n := min(len(g.queue), maxGroup)
		calls := make([]*groupCall, 0, n)
		for _, c := range g.queue[:n] {
			if !c.abandoned {
				calls = append(calls, c)
			}
		}
		g.queue = append(g.queue[:0:0], g.queue[n:]...)
		if len(calls) > 0 {
			return calls
		}
	}
	g.running--
	return nil
}

// execGroup appends the events of calls in one statement and transaction, and
// sets every call's result. A call alone runs appendNext1, with its caller's
// context; a group runs without the callers' cancellation (one leaving must
// not fail the others), and a caller that leaves stops waiting for it.
func (s *Store) execGroup(calls []*groupCall) {
	defer func() {
		for _, c := range calls {
			close(c.done)
		}
	}()
	alone := func(c *groupCall) {
		c.res, c.err = s.appendNext(c.ctx, eventstore.AppendParams{Stream: c.stream, Events: []eventstore.ProposedEvent{c.event}}, c.version-1)
	}
	if len(calls) == 1 {
		alone(calls[0])
		return
	}
	n := len(calls)
	streams := make([]string, n)
	versions := make([]int64, n)
	ids := make([][16]byte, n)
	types := make([]string, n)
	tenants := make([]string, n)
	data := make([]json.RawMessage, n)
	meta := make([]json.RawMessage, n)
	byID := make(map[[16]byte]*groupCall, n)
	for i, c := range calls {
		e := c.event
		streams[i], versions[i], ids[i], types[i], tenants[i], data[i], meta[i] = c.stream, c.version, e.ID, e.Type, e.Tenant, e.Data, e.Metadata
		byID[ids[i]] = c
	}
	ctx := context.WithoutCancel(calls[0].ctx)
	if err := s.queryGroup(ctx, byID, streams, versions, ids, types, tenants, data, meta); err != nil {
		// Nothing was committed: each Append runs alone and gets its own
		// answer (appendNext's error leads Append to append_events).
		for _, c := range calls {
			c.res = eventstore.AppendResult{}
			alone(c)
		}
		return
	}
	for _, c := range calls {
		if c.res.Events == nil {
			c.err = errSlowPath // its stream's lock was busy
		}
	}
}

// queryGroup runs appendGroup and sets the result of every call whose event
// it appended.
func (s *Store) queryGroup(ctx context.Context, byID map[[16]byte]*groupCall, args ...any) error {
	rows, err := s.pool.Query(ctx, s.q.appendGroup, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id                 [16]byte
			txid, seq, version int64
		)
		if err := rows.Scan(&id, &txid, &seq, &version); err != nil {
			return err
		}
		c := byID[id]
		if c == nil || c.res.Events != nil || version != c.version {
			return errors.New("postgres: append group returned a row it was not asked for")
		}
		c.res = eventstore.AppendResult{Events: []eventstore.AppendedEvent{{
			ID: c.event.ID, Position: eventstore.Position{Hi: uint64(txid), Lo: uint64(seq)}, Version: version,
		}}}
	}
	// The statement's implicit transaction has committed once the rows are
	// drained without error.
	return rows.Err()
}
