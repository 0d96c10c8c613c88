package esdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	kdb "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hooklog/hooklog/eventstore"
)

// readChunk is the most events one $all read asks for when a filter may
// skip many of them.
const readChunk = 1000

// ReadAll reads $all forwards after p.After in chunks, skipping foreign
// events and filtering on the client: the v4 client's ReadAll takes no
// filter (only subscriptions do, and their checkpoints are the server's
// next read position rather than an examined event, so they cannot serve as
// an exclusive cursor). MaxScan bounds the hooklog events examined; Next is
// the last of them, or, when a whole scan saw only foreign events, the last
// foreign one, so a long run of system events cannot hold a reader back.
// KurrentDB serves a read only up to what is committed, so what it returns
// is settled.
func (s *Store) ReadAll(ctx context.Context, p eventstore.ReadParams) (eventstore.ReadResult, error) {
	if s.closed.Load() {
		return eventstore.ReadResult{}, eventstore.ErrClosed
	}
	limit, maxScan := p.Limits()
	res := eventstore.ReadResult{Next: p.After}
	err := s.with(ctx, func(c *kdb.Client) error {
		res.Events = res.Events[:0]
		res.Next = p.After
		cursor := p.After // the last position seen, foreign or not
		scanned, examined := 0, 0
		var lastForeign eventstore.Position
		for {
			var from kdb.AllPosition = kdb.Start{}
			if !cursor.IsZero() {
				from = fromPos(cursor)
			}
			want := readChunk
			if p.Filter.IsZero() {
				want = limit - len(res.Events)
			}
			n := uint64(min(maxScan-scanned, want) + 1) // +1: a read from a position includes it
			rs, err := c.ReadAll(ctx, kdb.ReadAllOptions{From: from}, n)
			if err != nil {
				return err
			}
			got, done := uint64(0), false
			err = recv(rs, func(re *kdb.ResolvedEvent) bool {
				got++
				r := re.OriginalEvent()
				pos := toPos(r.Position)
				if !cursor.Less(pos) {
					return true
				}
				cursor = pos
				scanned++
				e, ok := s.decode(r)
				if !ok {
					lastForeign = pos
				} else {
					examined++
					res.Next = pos
					if p.Filter.Match(&e) {
						res.Events = append(res.Events, e)
					}
				}
				done = len(res.Events) >= limit || scanned >= maxScan
				return !done
			})
			if err != nil {
				return err
			}
			if done || got < n {
				break
			}
		}
		if examined == 0 && scanned >= maxScan {
			res.Next = lastForeign
		}
		return nil
	})
	if err != nil {
		if !p.After.IsZero() && isBadPosition(err) {
			return eventstore.ReadResult{}, fmt.Errorf("esdb: read all after %s: %w", p.After, eventstore.ErrBadPosition)
		}
		return eventstore.ReadResult{}, s.translate(err, "read all")
	}
	return res, nil
}

// isBadPosition reports whether the server rejected a read's start position.
func isBadPosition(err error) bool {
	switch status.Code(unwrapStatus(err)) {
	case codes.InvalidArgument, codes.OutOfRange:
		return true
	}
	return false
}

// ReadStream reads one stream forwards from p.FromVersion.
func (s *Store) ReadStream(ctx context.Context, p eventstore.ReadStreamParams) ([]eventstore.Event, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	limit := p.Limit
	if limit <= 0 {
		limit = eventstore.DefaultReadLimit
	}
	limit = min(limit, eventstore.MaxReadLimit)
	from := max(p.FromVersion, 0)
	var out []eventstore.Event
	err := s.with(ctx, func(c *kdb.Client) error {
		var err error
		out, err = s.readStream(ctx, c, s.esdbStream(p.Stream), uint64(from), uint64(limit))
		return err
	})
	if err != nil {
		return nil, s.translate(err, "read stream")
	}
	if out == nil {
		out = []eventstore.Event{}
	}
	return out, nil
}

// readStream reads count events of an ESDB stream from a revision. Events a
// server sends without their $all position get it from the id index.
func (s *Store) readStream(ctx context.Context, c *kdb.Client, stream string, from, count uint64) ([]eventstore.Event, error) {
	rs, err := c.ReadStream(ctx, stream, kdb.ReadStreamOptions{From: kdb.Revision(from)}, count)
	if err != nil {
		return nil, err
	}
	var out []eventstore.Event
	var missing []uuid.UUID
	err = recv(rs, func(re *kdb.ResolvedEvent) bool {
		r := re.OriginalEvent()
		if e, ok := s.decode(r); ok {
			if !validPos(r.Position) {
				e.Position = eventstore.Position{}
				missing = append(missing, e.ID)
			}
			out = append(out, e)
		}
		return true
	})
	if err != nil || len(missing) == 0 {
		return out, err
	}
	rows, err := s.lookupIDs(ctx, missing)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if r, ok := rows[out[i].ID]; ok && r.settled && out[i].Position.IsZero() {
			out[i].Position = r.pos
		}
	}
	return out, nil
}

// Event finds the id in the id index, then reads the event from its stream.
// An id the index does not know (yet) is looked up again once the indexer
// has followed the log up to the head.
func (s *Store) Event(ctx context.Context, id uuid.UUID) (eventstore.Event, error) {
	if s.closed.Load() {
		return eventstore.Event{}, eventstore.ErrClosed
	}
	for attempt := 0; ; attempt++ {
		rows, err := s.lookupIDs(ctx, []uuid.UUID{id})
		if err != nil {
			return eventstore.Event{}, s.translate(err, "event")
		}
		if r, ok := rows[id]; ok && r.settled {
			var evs []eventstore.Event
			err := s.with(ctx, func(c *kdb.Client) error {
				var err error
				evs, err = s.readStream(ctx, c, r.stream, uint64(r.version), 1)
				return err
			})
			if err != nil {
				return eventstore.Event{}, s.translate(err, "event")
			}
			if len(evs) == 1 && evs[0].ID == id {
				if evs[0].Position.IsZero() {
					evs[0].Position = r.pos
				}
				return evs[0], nil
			}
			return eventstore.Event{}, fmt.Errorf("esdb: event %s: %w", id, eventstore.ErrNotFound)
		}
		if attempt > 0 {
			return eventstore.Event{}, fmt.Errorf("esdb: event %s: %w", id, eventstore.ErrNotFound)
		}
		if err := s.waitIndexedHead(ctx); err != nil {
			return eventstore.Event{}, s.translate(err, "event")
		}
	}
}

// waitIndexedHead waits (at most 10s) until the indexer has recorded every
// event up to the current head.
func (s *Store) waitIndexedHead(ctx context.Context) error {
	head, err := s.head(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		at := s.indexed.Head()
		if !at.Less(head) {
			return nil
		}
		if err := s.indexed.Wait(wctx, at); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return fmt.Errorf("esdb: the indexer is behind the head: %w", ErrUnavailable)
			}
			return err
		}
	}
}

// PositionAt answers from the time index: the sample taken before
// t - ClockSkew (the sampled event and all before it were recorded before
// t), so reading after it returns every event recorded at or after t; the
// head when t is after every recorded time. It waits for the indexer to
// reach the head first.
func (s *Store) PositionAt(ctx context.Context, t time.Time) (eventstore.Position, error) {
	if s.closed.Load() {
		return eventstore.Position{}, eventstore.ErrClosed
	}
	head, err := s.head(ctx)
	if err != nil {
		return eventstore.Position{}, s.translate(err, "position at")
	}
	if head.IsZero() || t.Before(time.Unix(0, 0)) {
		return eventstore.Start, nil // nothing, or a time before any recorded one
	}
	if err := s.waitIndexedHead(ctx); err != nil {
		return eventstore.Position{}, s.translate(err, "position at")
	}
	s.idxMu.Lock()
	maxAt := s.maxRecordedAt
	s.idxMu.Unlock()
	if t.After(maxAt) {
		return head, nil
	}
	var c, p int64
	err = s.pool.QueryRow(ctx, s.sql.positionAt, t.Add(-s.cfg.ClockSkew)).Scan(&c, &p)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return eventstore.Start, nil
		}
		return eventstore.Position{}, s.translate(err, "position at")
	}
	at := eventstore.Position{Hi: uint64(c), Lo: uint64(p)}
	if head.Less(at) {
		at = head
	}
	return at, nil
}

// Wait returns once the subscription delivered an event after `after`.
func (s *Store) Wait(ctx context.Context, after eventstore.Position) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	return s.watch.Wait(ctx, after)
}
