package esdb

import (
	"context"
	"fmt"
	"slices"

	kdb "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// CommitState appends c.Appends to KurrentDB, then applies c.Ops in one
// PostgreSQL transaction (through the postgres store's StateStore). The two
// engines do not share a transaction:
//
//   - Before writing anything, every append is checked (ids against the id
//     index, expected versions against the streams, in commit order), so a
//     commit that fails those checks writes nothing. Only a concurrent
//     writer slipping in between the check and the write can fail a later
//     append after an earlier one was written.
//   - A crash (or a PostgreSQL error) after the appends and before the ops
//     leaves the events in the log without their ops. The ops are derived
//     and rebuildable; the caller's retry sends the same event ids, which
//     come back as Duplicate, and then applies the ops. So the gap causes
//     re-delivery, never loss.
func (s *Store) CommitState(ctx context.Context, c eventstore.StateCommit) ([]eventstore.AppendResult, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	appends := make([]eventstore.AppendParams, len(c.Appends))
	for i, a := range c.Appends {
		a.Events = slices.Clone(a.Events)
		appends[i] = a
	}
	c.Appends = appends
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	results := make([]eventstore.AppendResult, 0, len(c.Appends))
	if len(c.Appends) > 0 {
		err := s.with(ctx, func(cl *kdb.Client) error {
			if err := s.precheck(ctx, cl, c.Appends); err != nil {
				return err
			}
			for _, a := range c.Appends {
				r, err := s.appendOne(ctx, cl, a)
				if err != nil {
					return err
				}
				results = append(results, r)
			}
			return nil
		})
		if err != nil {
			return nil, s.translate(err, "commit state")
		}
	}
	if len(c.Ops) > 0 {
		if _, err := s.pg.CommitState(ctx, eventstore.StateCommit{Ops: c.Ops}); err != nil {
			return nil, s.translate(err, "commit state")
		}
	}
	return results, nil
}

// precheck runs the id and version checks of every append in order, each
// seeing the versions the earlier ones leave.
func (s *Store) precheck(ctx context.Context, c *kdb.Client, appends []eventstore.AppendParams) error {
	var ids []uuid.UUID
	for _, a := range appends {
		for _, e := range a.Events {
			ids = append(ids, e.ID)
		}
	}
	known, err := s.lookupIDs(ctx, ids)
	if err != nil {
		return err
	}
	versions := map[string]int64{}
	for _, a := range appends {
		stream := s.esdbStream(a.Stream)
		n := 0
		for _, e := range a.Events {
			if r, ok := known[e.ID]; ok {
				if r.stream != stream {
					return fmt.Errorf("esdb: append to %s: %w", a.Stream, eventstore.ErrIDConflict)
				}
				n++
			}
		}
		if n == len(a.Events) {
			continue // a retry: answered as Duplicate, versions unchanged
		}
		if n > 0 {
			return fmt.Errorf("esdb: append to %s: %w", a.Stream, eventstore.ErrIDConflict)
		}
		cur, ok := versions[stream]
		if !ok {
			if cur, err = streamVersion(ctx, c, stream); err != nil {
				return err
			}
		}
		if err := a.Expected.Check(a.Stream, cur); err != nil {
			return err
		}
		versions[stream] = cur + int64(len(a.Events))
	}
	return nil
}

// streamVersion is the revision of the stream's last event, -1 when none.
func streamVersion(ctx context.Context, c *kdb.Client, stream string) (int64, error) {
	rs, err := c.ReadStream(ctx, stream, kdb.ReadStreamOptions{Direction: kdb.Backwards, From: kdb.End{}}, 1)
	if err != nil {
		return 0, err
	}
	v := int64(-1)
	err = recv(rs, func(e *kdb.ResolvedEvent) bool { v = int64(e.OriginalEvent().EventNumber); return false })
	return v, err
}

// GetState reads from the PostgreSQL state table.
func (s *Store) GetState(ctx context.Context, bucket string, key []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	v, err := s.pg.GetState(ctx, bucket, key)
	return v, s.translate(err, "get state")
}

// ScanState scans the PostgreSQL state table.
func (s *Store) ScanState(ctx context.Context, p eventstore.ScanParams, fn func(key, value []byte) error) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	return s.translate(s.pg.ScanState(ctx, p, fn), "scan state")
}
