package esdb

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	kdb "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// Append writes p.Events to the stream with KurrentDB's expected revision.
//
// Event ids follow the Store contract (all ids already in the stream: the
// original positions, Duplicate, whatever p.Expected says; some, or any in
// another stream: ErrIDConflict), which is stronger than the server's own
// idempotency (the same ids at the same expected revision succeed without
// writing; ids are not unique across streams). The store gets it from the
// esdb_ids table in PostgreSQL: the ids are reserved there first (a unique
// key), so of concurrent appends of the same ids exactly one writes and the
// others wait for it and answer Duplicate; the reservation is settled with
// the positions read back from the stream.
func (s *Store) Append(ctx context.Context, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	if s.closed.Load() {
		return eventstore.AppendResult{}, eventstore.ErrClosed
	}
	p.Events = slices.Clone(p.Events)
	if err := p.Validate(); err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, err
	}
	var res eventstore.AppendResult
	err := s.with(ctx, func(c *kdb.Client) error {
		var err error
		res, err = s.appendOne(ctx, c, p)
		return err
	})
	if err != nil {
		return eventstore.AppendResult{}, s.translate(err, "append to "+p.Stream)
	}
	return res, nil
}

func expected(e eventstore.ExpectedVersion) kdb.ExpectedRevision {
	switch {
	case e.IsNoStream():
		return kdb.NoStream{}
	case e.IsExists():
		return kdb.StreamExists{}
	}
	if v, ok := e.Exact(); ok {
		return kdb.Revision(uint64(v))
	}
	return kdb.Any{}
}

// appendOne appends validated params: reserve the ids, write, settle.
func (s *Store) appendOne(ctx context.Context, c *kdb.Client, p eventstore.AppendParams) (eventstore.AppendResult, error) {
	stream := s.esdbStream(p.Stream)
	ids := make([]uuid.UUID, len(p.Events))
	for i, e := range p.Events {
		ids[i] = e.ID
	}
	sorted := slices.Clone(ids) // reserve in one order: no deadlocks between overlapping appends
	slices.SortFunc(sorted, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	owner := uuid.New()
	tookOver := false

reserve:
	for attempt := 0; ; attempt++ {
		rows, err := s.pool.Query(ctx, s.sql.reserve, sorted, stream, owner)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		inserted := 0
		for rows.Next() {
			inserted++
		}
		if err := rows.Err(); err != nil {
			return eventstore.AppendResult{}, err
		}
		if inserted == len(ids) {
			break
		}
		if inserted > 0 {
			s.unreserve(sorted, owner)
		}
		known, err := s.lookupIDs(ctx, ids)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		if len(known) == 0 {
			continue // released meanwhile by a failed append: reserve again
		}
		pending, stale := false, true
		for _, id := range ids {
			r, ok := known[id]
			if !ok || r.stream != stream {
				return eventstore.AppendResult{}, fmt.Errorf("esdb: append to %s: %w", p.Stream, eventstore.ErrIDConflict)
			}
			if !r.settled {
				pending = true
				stale = stale && r.stale
			}
		}
		if !pending {
			res := eventstore.AppendResult{Duplicate: true, Events: make([]eventstore.AppendedEvent, len(ids))}
			for i, id := range ids {
				r := known[id]
				res.Events[i] = eventstore.AppendedEvent{ID: id, Position: r.pos, Version: r.version}
			}
			return res, nil
		}
		if stale { // its append died without settling: take the ids over
			rows, err := s.pool.Query(ctx, s.sql.takeover, sorted, owner, s.cfg.ReservationTTL)
			if err != nil {
				return eventstore.AppendResult{}, err
			}
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Err(); err != nil {
				return eventstore.AppendResult{}, err
			}
			if n == len(ids) {
				tookOver = true
				break reserve
			}
			continue
		}
		// The same ids are being appended right now: wait for that append.
		select {
		case <-time.After(min(time.Duration(attempt+1)*2*time.Millisecond, 50*time.Millisecond)):
		case <-ctx.Done():
			return eventstore.AppendResult{}, ctx.Err()
		}
	}

	data := make([]kdb.EventData, len(p.Events))
	for i, e := range p.Events {
		d, err := encode(e)
		if err != nil {
			s.unreserve(sorted, owner)
			return eventstore.AppendResult{}, err
		}
		data[i] = d
	}
	wr, err := c.AppendToStream(ctx, stream, kdb.AppendToStreamOptions{ExpectedRevision: expected(p.Expected)}, data...)
	if err != nil {
		if actual, ok := wrongVersion(err); ok {
			if tookOver { // the dead append may have written them after all
				if found, err := s.findInStream(ctx, c, stream, ids); err == nil && found != nil {
					if err := s.settle(ctx, found); err != nil {
						return eventstore.AppendResult{}, err
					}
					return eventstore.AppendResult{Duplicate: true, Events: found}, nil
				}
			}
			s.unreserve(sorted, owner)
			return eventstore.AppendResult{}, &eventstore.WrongVersionError{Stream: p.Stream, Expected: p.Expected, Actual: actual}
		}
		// Unknown outcome: release the ids; if the events were written
		// anyway, the indexer records them when it follows the log.
		s.unreserve(sorted, owner)
		return eventstore.AppendResult{}, err
	}
	appended, err := s.locate(ctx, c, stream, ids, wr)
	if err != nil {
		// Written but not located: the reservation stays, and the indexer
		// settles it when it follows the log.
		return eventstore.AppendResult{}, fmt.Errorf("locate appended events: %w", err)
	}
	if err := s.settle(ctx, appended); err != nil {
		return eventstore.AppendResult{}, err
	}
	return eventstore.AppendResult{Events: appended}, nil
}

// unreserve releases the ids this append reserved, with a context of its
// own (the caller's may be what failed).
func (s *Store) unreserve(ids []uuid.UUID, owner uuid.UUID) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, s.sql.unreserve, ids, owner); err != nil {
		s.cfg.Logger.Warn("esdb: release id reservation", "err", err)
	}
}

func (s *Store) settle(ctx context.Context, evs []eventstore.AppendedEvent) error {
	n := len(evs)
	ids, versions, cs, ps := make([]uuid.UUID, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, e := range evs {
		ids[i], versions[i], cs[i], ps[i] = e.ID, e.Version, int64(e.Position.Hi), int64(e.Position.Lo)
	}
	_, err := s.pool.Exec(ctx, s.sql.settle, ids, versions, cs, ps)
	return err
}

var gotRE = regexp.MustCompile(`but got '([^']*)'`)

// wrongVersion reports whether err is the server's wrong expected version,
// with the stream's actual revision (-1: no stream). The client carries the
// revision only in the message.
func wrongVersion(err error) (int64, bool) {
	var ee *kdb.Error
	if !errors.As(err, &ee) || ee.Code() != kdb.ErrorCodeWrongExpectedVersion {
		return 0, false
	}
	actual := int64(-1)
	if ee.Err() != nil {
		if m := gotRE.FindStringSubmatch(ee.Err().Error()); m != nil && m[1] != "no_stream" {
			if v, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				actual = v
			}
		}
	}
	return actual, true
}

// locate reads the appended events back from the stream for their $all
// positions: the append's answer carries only the last revision.
func (s *Store) locate(ctx context.Context, c *kdb.Client, stream string, ids []uuid.UUID, wr *kdb.WriteResult) ([]eventstore.AppendedEvent, error) {
	n := uint64(len(ids))
	if last := wr.NextExpectedVersion; last+1 >= n {
		rs, err := c.ReadStream(ctx, stream, kdb.ReadStreamOptions{From: kdb.Revision(last + 1 - n)}, n)
		if err != nil {
			return nil, err
		}
		out := make([]eventstore.AppendedEvent, 0, n)
		ok := true
		err = recv(rs, func(re *kdb.ResolvedEvent) bool {
			r := re.OriginalEvent()
			i := len(out)
			if i >= len(ids) || r.EventID != ids[i] || !validPos(r.Position) {
				ok = false
				return false
			}
			out = append(out, eventstore.AppendedEvent{ID: r.EventID, Position: toPos(r.Position), Version: int64(r.EventNumber)})
			return true
		})
		if err != nil {
			return nil, err
		}
		if ok && len(out) == len(ids) {
			return out, nil
		}
	}
	found, err := s.findInStream(ctx, c, stream, ids)
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("esdb: appended events not found in %s", stream)
	}
	return found, nil
}

// findInStream looks for every id among the last events of the stream (and,
// for positions a stream read does not carry, of $all); nil when one is
// missing.
func (s *Store) findInStream(ctx context.Context, c *kdb.Client, stream string, ids []uuid.UUID) ([]eventstore.AppendedEvent, error) {
	want := make(map[uuid.UUID]int, len(ids))
	for i, id := range ids {
		want[id] = i
	}
	out := make([]eventstore.AppendedEvent, len(ids))
	found, located := 0, 0
	rs, err := c.ReadStream(ctx, stream, kdb.ReadStreamOptions{Direction: kdb.Backwards, From: kdb.End{}}, uint64(len(ids))+eventstore.MaxEventsPerAppend)
	if err != nil {
		return nil, err
	}
	err = recv(rs, func(re *kdb.ResolvedEvent) bool {
		r := re.OriginalEvent()
		if i, ok := want[r.EventID]; ok && out[i].ID == uuid.Nil {
			out[i] = eventstore.AppendedEvent{ID: r.EventID, Version: int64(r.EventNumber)}
			found++
			if validPos(r.Position) {
				out[i].Position = toPos(r.Position)
				located++
			}
		}
		return found < len(ids)
	})
	if err != nil || found < len(ids) {
		return nil, err
	}
	if located == len(ids) {
		return out, nil
	}
	// Positions from $all, read backwards from its end.
	rs, err = c.ReadAll(ctx, kdb.ReadAllOptions{Direction: kdb.Backwards, From: kdb.End{}}, 10000)
	if err != nil {
		return nil, err
	}
	err = recv(rs, func(re *kdb.ResolvedEvent) bool {
		r := re.OriginalEvent()
		if i, ok := want[r.EventID]; ok && r.StreamID == stream && out[i].Position.IsZero() {
			out[i].Position = toPos(r.Position)
			located++
		}
		return located < len(ids)
	})
	if err != nil || located < len(ids) {
		return nil, err
	}
	return out, nil
}
