package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hooklog/hooklog/eventstore"
)

// maxAppendAttempts bounds the reruns of an Append that lost a race the
// database detected (see isRetryable).
const maxAppendAttempts = 5

// querier is what append needs: the pool (one statement = one transaction) or
// the caller's pgx.Tx.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Append implements eventstore.Store. An append is one statement, so one round
// trip and one transaction, durable when it returns: first the fast path (a
// single INSERT that succeeds when the stream is not being appended to at that
// moment and the ids and version check out), else the append_events function,
// which waits for the stream and answers duplicates, conflicts and wrong
// versions. Races the database detects are retried (see isRetryable).
func (s *Store) Append(ctx context.Context, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	if s.closed.Load() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	p.Events = slices.Clone(p.Events) // Validate fills in ids: leave the caller's slice alone
	if err := p.Validate(); err != nil {
		return eventstore.AppendResult{}, err
	}
	var (
		res  eventstore.AppendResult
		err  error
		args []any
	)
	last, ok := s.knownNext(p)
	defer s.appendDone(p.Stream)
	if ok {
		if len(p.Events) == 1 && s.group != nil {
			res, err = s.appendGrouped(ctx, p, last)
		} else {
			res, err = s.appendNext(ctx, p, last)
		}
		if err != nil && !errors.Is(err, errSlowPath) {
			s.forgetVersion(p.Stream) // moved on (or an id conflict): ask the database
		}
	} else {
		args = appendArgs(p)
		res, err = s.appendWith(ctx, s.pool, s.q.appendFast, p, args)
	}
	if err == nil {
		s.appendedVersion(p.Stream, res)
		s.appended(res)
		return res, nil
	}
	if !errors.Is(err, errSlowPath) && !isRetryable(err) {
		return eventstore.AppendResult{}, s.translate(err, "append")
	}
	if args == nil {
		args = appendArgs(p)
	}
	for attempt := 1; ; attempt++ {
		res, err := s.appendWith(ctx, s.pool, s.q.append, p, args)
		if err != nil && attempt < maxAppendAttempts && isRetryable(err) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return eventstore.AppendResult{}, s.translate(err, "append")
		}
		s.appendedVersion(p.Stream, res)
		s.appended(res)
		return res, nil
	}
}

// appended records a committed Append for read-your-writes and wakes the
// watcher.
func (s *Store) appended(res eventstore.AppendResult) {
	s.noteAppended(res.Events[len(res.Events)-1].Position)
	if !res.Duplicate {
		s.kick(s.localKick)
	}
}

// appendedVersion remembers the stream's last version after a committed
// Append that wrote.
func (s *Store) appendedVersion(stream string, res eventstore.AppendResult) {
	if !res.Duplicate {
		s.noteVersion(stream, res.Events[len(res.Events)-1].Version)
	}
}

// maxKnownStreams bounds Store.versions; when full it is emptied, and the
// streams appended to next are learnt again from their appends.
const maxKnownStreams = 1 << 14

// noteVersion remembers v as stream's last version, committed by this
// Store's Append. Only ever a lower bound of the stream's true last version:
// the log is append-only and another writer can only have added to it.
func (s *Store) noteVersion(stream string, v int64) {
	s.verMu.Lock()
	defer s.verMu.Unlock()
	if s.versions == nil || len(s.versions) >= maxKnownStreams {
		s.versions = make(map[string]int64)
	}
	if cur, ok := s.versions[stream]; !ok || cur < v {
		s.versions[stream] = v
	}
}

// forgetVersion drops what this Store remembers of stream's last version.
func (s *Store) forgetVersion(stream string) {
	s.verMu.Lock()
	delete(s.versions, stream)
	s.verMu.Unlock()
}

// knownNext registers an Append on p's stream (appendDone ends it) and
// returns the stream's remembered last version when appending p on it needs
// no other check: no other Append of this Store is running on the stream, and
// the expected version is any, exists, or exactly the remembered one. (If the
// stream has moved on since, the append fails on the next version's unique
// key and falls back; see appendNext1 in sql.go.) Concurrent Appends on one
// stream would all guess the same next version and all but one fail on that
// key, each costing a failed statement and an error in the server's log: they
// take the lookup path, whose try-lock makes them wait their turn quietly.
func (s *Store) knownNext(p eventstore.AppendParams) (int64, bool) {
	s.verMu.Lock()
	if s.inflight == nil {
		s.inflight = make(map[string]int)
	}
	s.inflight[p.Stream]++
	alone := s.inflight[p.Stream] == 1
	last, ok := s.versions[p.Stream]
	s.verMu.Unlock()
	if !ok || !alone || p.Expected.IsNoStream() {
		return 0, false
	}
	if v, exact := p.Expected.Exact(); exact && v != last {
		return 0, false
	}
	return last, true
}

// appendDone ends the registration knownNext made.
func (s *Store) appendDone(stream string) {
	s.verMu.Lock()
	if s.inflight[stream]--; s.inflight[stream] <= 0 {
		delete(s.inflight, stream)
	}
	s.verMu.Unlock()
}

// appendNext is the fast path with the versions known: p's events become
// versions last+1... errSlowPath when the stream's lock is busy; a unique
// violation when the stream has moved on or an id is already in the log.
func (s *Store) appendNext(ctx context.Context, p eventstore.AppendParams, last int64) (eventstore.AppendResult, error) {
	var rows pgx.Rows
	var err error
	if len(p.Events) == 1 {
		e := p.Events[0]
		var meta any
		if len(e.Metadata) > 0 {
			meta = e.Metadata
		}
		rows, err = s.pool.Query(ctx, s.q.appendNext1, p.Stream, last+1, [16]byte(e.ID), e.Type, e.Tenant, e.Data, meta)
	} else {
		a := appendArgs(p)
		rows, err = s.pool.Query(ctx, s.q.appendNextN, p.Stream, last, a[3], a[4], a[5], a[6], a[7])
	}
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	res := eventstore.AppendResult{Events: make([]eventstore.AppendedEvent, len(p.Events))}
	n := 0
	for rows.Next() {
		var txid, seq, version int64
		if err := rows.Scan(&txid, &seq, &version); err != nil {
			rows.Close()
			return eventstore.AppendResult{}, err
		}
		i := version - last - 1
		if i < 0 || i >= int64(len(p.Events)) {
			rows.Close()
			return eventstore.AppendResult{}, fmt.Errorf("append returned version %d after %d for %d events", version, last, len(p.Events))
		}
		res.Events[i] = eventstore.AppendedEvent{ID: p.Events[i].ID, Position: eventstore.Position{Hi: uint64(txid), Lo: uint64(seq)}, Version: version}
		n++
	}
	// The statement's implicit transaction has committed once the rows are
	// drained without error.
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	switch n {
	case 0:
		return eventstore.AppendResult{}, errSlowPath
	case len(p.Events):
		return res, nil
	}
	return eventstore.AppendResult{}, fmt.Errorf("append returned %d rows for %d events", n, len(p.Events))
}

// AppendTx appends p inside the caller's transaction (transactional outbox):
// the events commit or roll back with tx. The positions returned are final,
// but readers see the events only after tx commits (and, like every append,
// once older transactions have finished). In-process waiters notice them at
// the next poll (Config.PollInterval).
//
// A wrong version, an id conflict or a duplicate are answered without
// disturbing tx. Races the database detects are not retried here: a
// serialization failure (another transaction appended to the same stream in an
// order the log cannot represent, or tx runs at REPEATABLE READ or above) is
// returned as the pgx error, and the same id committed concurrently to another
// stream as ErrIDConflict; in both cases tx is aborted and the caller retries
// the whole transaction. Use READ COMMITTED (the default) for tx.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	if s.closed.Load() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	p.Events = slices.Clone(p.Events) // Validate fills in ids: leave the caller's slice alone
	if err := p.Validate(); err != nil {
		return eventstore.AppendResult{}, err
	}
	res, err := s.appendWith(ctx, tx, s.q.append, p, appendArgs(p))
	if err != nil {
		return eventstore.AppendResult{}, s.translate(err, "append in transaction")
	}
	return res, nil
}

// appendArgs are the parameters of append_events for a validated p.
func appendArgs(p eventstore.AppendParams) []any {
	n := len(p.Events)
	// [16]byte, not uuid.UUID: pgx encodes it in binary directly, while a
	// uuid.UUID goes through its driver.Valuer, a string parsed back.
	ids := make([][16]byte, n)
	types := make([]string, n)
	tenants := make([]string, n)
	data := make([]json.RawMessage, n)
	meta := make([]json.RawMessage, n)
	for i, e := range p.Events {
		ids[i], types[i], tenants[i], data[i], meta[i] = e.ID, e.Type, e.Tenant, e.Data, e.Metadata
	}
	var kind int32
	var exp int64
	switch {
	case p.Expected.IsNoStream():
		kind = 1
	case p.Expected.IsExists():
		kind = 2
	default:
		if v, ok := p.Expected.Exact(); ok {
			kind, exp = 3, v
		}
	}
	return []any{p.Stream, kind, exp, ids, types, tenants, data, meta}
}

// Status codes of append_events (see migrations/0001_init.sql).
const (
	statusAppended  = 0
	statusDuplicate = 1
	statusConflict  = 2
	statusWrongVer  = 3
	statusSlowPath  = 4 // the fast path appended nothing; use append_events
)

// errSlowPath: the fast path appended nothing.
var errSlowPath = errors.New("postgres: append fast path declined")

func (s *Store) appendWith(ctx context.Context, q querier, sql string, p eventstore.AppendParams, args []any) (eventstore.AppendResult, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	return readAppendRows(rows, p)
}

// readAppendRows reads the rows of append_events (or the fast path, or
// append_events_strict) for p and closes them.
func readAppendRows(rows pgx.Rows, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	res := eventstore.AppendResult{Events: make([]eventstore.AppendedEvent, 0, len(p.Events))}
	status := -1
	var actual int64
	for rows.Next() {
		var (
			st                 int32
			id                 *uuid.UUID
			txid, seq, version *int64
		)
		if err := rows.Scan(&st, &id, &txid, &seq, &version); err != nil {
			rows.Close()
			return eventstore.AppendResult{}, err
		}
		status = int(st)
		switch st {
		case statusAppended, statusDuplicate:
			if id == nil || txid == nil || seq == nil || version == nil {
				rows.Close()
				return eventstore.AppendResult{}, errors.New("append_events returned a null position")
			}
			res.Events = append(res.Events, eventstore.AppendedEvent{
				ID:       *id,
				Position: eventstore.Position{Hi: uint64(*txid), Lo: uint64(*seq)},
				Version:  *version,
			})
		case statusWrongVer:
			if version != nil {
				actual = *version
			}
		}
	}
	// For Append the statement's implicit transaction has committed once the
	// rows are drained without error.
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	switch status {
	case statusAppended, statusDuplicate:
		if len(res.Events) != len(p.Events) {
			return eventstore.AppendResult{}, fmt.Errorf("append_events returned %d rows for %d events", len(res.Events), len(p.Events))
		}
		res.Duplicate = status == statusDuplicate
		return res, nil
	case statusConflict:
		return eventstore.AppendResult{}, fmt.Errorf("stream %q: %w", p.Stream, eventstore.ErrIDConflict)
	case statusWrongVer:
		return eventstore.AppendResult{}, &eventstore.WrongVersionError{Stream: p.Stream, Expected: p.Expected, Actual: actual}
	case statusSlowPath:
		return eventstore.AppendResult{}, errSlowPath
	}
	return eventstore.AppendResult{}, fmt.Errorf("append_events returned status %d", status)
}
