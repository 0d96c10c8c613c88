package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hooklog/hooklog/eventstore"
)

// scanEvent scans the eventCols of one row.
func scanEvent(row pgx.Row, extra ...any) (eventstore.Event, error) {
	var (
		e         eventstore.Event
		txid, seq int64
		data      []byte
		meta      []byte
	)
	dest := append([]any{&txid, &seq, &e.ID, &e.Stream, &e.Version, &e.Type, &e.Tenant, &data, &meta, &e.RecordedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return eventstore.Event{}, err
	}
	e.Position = eventstore.Position{Hi: uint64(txid), Lo: uint64(seq)}
	e.Data = json.RawMessage(data)
	if meta != nil {
		e.Metadata = json.RawMessage(meta)
	}
	return e, nil
}

// cursorArgs converts a cursor to the (txid, seq) bigint pair. Positions this
// backend hands out fit in int64; a larger one (from another backend) is
// clamped, which only means "after everything".
func cursorArgs(p eventstore.Position) (int64, int64) {
	clamp := func(v uint64) int64 {
		if v > math.MaxInt64 {
			return math.MaxInt64
		}
		return int64(v)
	}
	return clamp(p.Hi), clamp(p.Lo)
}

// ReadAll implements eventstore.Store. The filter is evaluated in SQL; only
// matching rows (and at most one marker row for the cursor) are sent.
//
// Read-your-writes: when the page ends at the end of the visible log before an
// event this Store's Append has committed (held back by an older open
// transaction somewhere in the cluster), ReadAll waits up to settleTimeout for
// the visible log to grow and reads again (see settle).
func (s *Store) ReadAll(ctx context.Context, p eventstore.ReadParams) (eventstore.ReadResult, error) {
	if s.closed.Load() {
		return eventstore.ReadResult{}, eventstore.ErrClosed
	}
	res, atEnd, err := s.readAll(ctx, p)
	if err != nil || !atEnd || !s.settle(ctx, res.Next, false) {
		return res, err
	}
	res, _, err = s.readAll(ctx, p)
	return res, err
}

// readAll is one ReadAll query. atEnd reports that it stopped at the end of the
// visible log (not at Limit or MaxScan).
func (s *Store) readAll(ctx context.Context, p eventstore.ReadParams) (res eventstore.ReadResult, atEnd bool, err error) {
	limit, maxScan := p.Limits()
	hi, lo := cursorArgs(p.After)
	res = eventstore.ReadResult{Next: p.After}
	fail := func(err error) (eventstore.ReadResult, bool, error) {
		return eventstore.ReadResult{}, false, s.translate(err, "read all")
	}

	where, fargs, all := filterSQL(p.Filter, 5)
	if all {
		// NoInternal alone: the rows of internal streams come without their
		// data (hooklog's delivery outcomes are large) and are dropped here;
		// they still move Next.
		sql := s.q.readAll
		if p.Filter.NoInternal {
			sql = s.q.readAllNoInternal
		}
		rows, err := s.pool.Query(ctx, sql, hi, lo, limit)
		if err != nil {
			return fail(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			e, err := scanEvent(rows)
			if err != nil {
				return fail(err)
			}
			n++
			res.Next = e.Position
			if p.Filter.NoInternal && eventstore.IsInternalStream(e.Stream) {
				continue
			}
			res.Events = append(res.Events, e)
		}
		if err := rows.Err(); err != nil {
			return fail(err)
		}
		return res, n < limit, nil
	}

	args := append([]any{hi, lo, maxScan, limit}, fargs...)
	rows, err := s.pool.Query(ctx, s.q.readFiltered(where), args...)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	var scanned int64
	for rows.Next() {
		var match bool
		e, err := scanEvent(rows, &match, &scanned)
		if err != nil {
			return fail(err)
		}
		if match {
			res.Events = append(res.Events, e)
		}
		res.Next = e.Position
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return res, len(res.Events) < limit && scanned < int64(maxScan), nil
}

// filterSQL turns f into a boolean SQL expression over the events columns,
// with its parameters numbered from first. all reports that f matches every
// event (no expression needed), apart from f.NoInternal, which is left to
// the caller.
func filterSQL(f eventstore.Filter, first int) (where string, args []any, all bool) {
	var conds []string
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(first+len(args)-1)
	}
	list := func(col string, patterns []string) {
		if len(patterns) == 0 {
			return
		}
		var exact, prefixes []string
		for _, pat := range patterns {
			if prefix, ok := strings.CutSuffix(pat, "*"); ok {
				if prefix == "" {
					return // "*" matches everything
				}
				prefixes = append(prefixes, likeEscape(prefix)+"%")
			} else {
				exact = append(exact, pat)
			}
		}
		var or []string
		if len(exact) > 0 {
			or = append(or, col+" = ANY("+param(exact)+"::text[])")
		}
		if len(prefixes) > 0 {
			or = append(or, col+" LIKE ANY("+param(prefixes)+"::text[])")
		}
		conds = append(conds, "("+strings.Join(or, " OR ")+")")
	}
	list("type", f.Types)
	list("stream", f.Streams)
	if f.Tenant != nil {
		conds = append(conds, "tenant = "+param(*f.Tenant)+"::text")
	}
	if len(conds) == 0 {
		return "", nil, true
	}
	return strings.Join(conds, " AND "), args, false
}

// likeEscape escapes LIKE's metacharacters (with the default escape, '\').
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// ReadStream implements eventstore.Store. Versions of one stream are assigned
// under the stream's advisory lock, so committed rows of a stream never gain a
// lower version later: no visibility horizon is needed, and a reader sees its
// own committed appends at once.
func (s *Store) ReadStream(ctx context.Context, p eventstore.ReadStreamParams) ([]eventstore.Event, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	limit := p.Limit
	if limit <= 0 {
		limit = eventstore.DefaultReadLimit
	}
	if limit > eventstore.MaxReadLimit {
		limit = eventstore.MaxReadLimit
	}
	from := p.FromVersion
	if from < 0 {
		from = 0
	}
	rows, err := s.pool.Query(ctx, s.q.readStream, p.Stream, from, limit)
	if err != nil {
		return nil, s.translate(err, "read stream")
	}
	defer rows.Close()
	out := []eventstore.Event{}
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, s.translate(err, "read stream")
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.translate(err, "read stream")
	}
	return out, nil
}

// Event implements eventstore.Store.
func (s *Store) Event(ctx context.Context, id uuid.UUID) (eventstore.Event, error) {
	if s.closed.Load() {
		return eventstore.Event{}, eventstore.ErrClosed
	}
	e, err := scanEvent(s.pool.QueryRow(ctx, s.q.event, id))
	if err != nil {
		return eventstore.Event{}, s.translate(err, fmt.Sprintf("event %s", id))
	}
	return e, nil
}

// Head implements eventstore.Store: the last row below the visibility horizon.
// Like ReadAll it waits (up to settleTimeout) for this Store's own committed
// appends to become visible.
func (s *Store) Head(ctx context.Context) (eventstore.Position, error) {
	if s.closed.Load() {
		return eventstore.Position{}, eventstore.ErrClosed
	}
	head, _, err := s.refresh(ctx, false)
	if err == nil && s.settle(ctx, head, true) {
		head, _, err = s.refresh(ctx, false)
	}
	if err != nil {
		return eventstore.Position{}, s.translate(err, "head")
	}
	return head, nil
}

// PositionAt implements eventstore.Store with one index lookup.
//
// Let F be the first row in (recorded_at, txid, seq) order with recorded_at >= t,
// and X its xmin_at_insert: the xmin of a snapshot taken before F's recorded_at
// was read from the clock. The answer is C = (X, 0), the largest cursor before
// every row with txid >= X (seq starts at 1). Why reading after C returns every
// row R with recorded_at >= t: suppose R.txid < X. A txid below a snapshot's
// xmin belongs to a transaction that had finished when the snapshot was taken,
// so R's transaction committed before F's snapshot, hence before F's
// recorded_at was taken, and R.recorded_at (read inside R's transaction) is
// earlier still: t <= R.recorded_at < F.recorded_at. R committed before F, so
// the lookup that found F also sees R, which sorts first: a contradiction with
// F being first. Rows not yet committed now are running or future transactions;
// both have txid >= X, since everything below X had finished before F's
// snapshot. So no row with recorded_at >= t sorts at or before C.
//
// With no row at or after t the answer is Head, read in the same statement:
// every row invisible to that snapshot has a txid at or above its xmin, above
// the head.
//
// C may be earlier than the last event before t (by the transactions that were
// open when F was written) or later than Head (F committed but not yet below
// the horizon); both are fine for a cursor.
func (s *Store) PositionAt(ctx context.Context, t time.Time) (eventstore.Position, error) {
	if s.closed.Load() {
		return eventstore.Position{}, eventstore.ErrClosed
	}
	var xmin, htxid, hseq *int64
	if err := s.pool.QueryRow(ctx, s.q.positionAt, t).Scan(&xmin, &htxid, &hseq); err != nil {
		return eventstore.Position{}, s.translate(err, "position at")
	}
	if xmin != nil {
		return eventstore.Position{Hi: uint64(*xmin), Lo: 0}, nil
	}
	if htxid == nil || hseq == nil {
		return eventstore.Start, nil
	}
	return eventstore.Position{Hi: uint64(*htxid), Lo: uint64(*hseq)}, nil
}
