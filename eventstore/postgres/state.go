package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hooklog/hooklog/eventstore"
)

var _ eventstore.StateStore = (*Store)(nil)

// SQLSTATEs raised by append_events_strict (migrations/0002_state.sql).
const (
	codeIDConflict   = "HL409"
	codeWrongVersion = "HL412"
)

// stateSQL holds the StateStore's statements of one schema.
type stateSQL struct {
	appendStrict  string
	put           string
	ins           string // put of keys hinted New: no conflict check
	del           string
	delPrefix     string // a prefix with an upper bound
	delPrefixOpen string // a prefix without one (empty or all 0xff)
	get           string
	scan          [16]string // by scanVariant
}

func newStateSQL(schema string) stateSQL {
	r := strings.NewReplacer("{{schema}}", schema)
	q := stateSQL{
		appendStrict: r.Replace(`SELECT r_status, r_id, r_txid, r_seq, r_version
			FROM {{schema}}.append_events_strict($1, $2, $3, $4, $5, $6, $7, $8)`),
		// Values that did not change are not rewritten (no dead tuple, no WAL).
		put: r.Replace(`INSERT INTO {{schema}}.state AS s (bucket, key, value)
			SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])
			ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value
			WHERE s.value <> EXCLUDED.value`),
		// A plain insert costs about half an upsert (no look for the key
		// before inserting, no speculative insertion to confirm).
		ins: r.Replace(`INSERT INTO {{schema}}.state (bucket, key, value)
			SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])`),
		del: r.Replace(`DELETE FROM {{schema}}.state s
			USING unnest($1::text[], $2::bytea[]) AS d(bucket, key)
			WHERE s.bucket = d.bucket AND s.key = d.key`),
		// One statement per prefix: a join with an array of ranges is
		// planned as a sequential scan of the whole table.
		delPrefix:     r.Replace(`DELETE FROM {{schema}}.state WHERE bucket = $1 AND key >= $2 AND key < $3`),
		delPrefixOpen: r.Replace(`DELETE FROM {{schema}}.state WHERE bucket = $1 AND key >= $2`),
		get:           r.Replace(`SELECT value FROM {{schema}}.state WHERE bucket = $1 AND key = $2`),
	}
	for v := range q.scan {
		q.scan[v] = scanSQL(schema, scanVariant(v))
	}
	return q
}

// scanVariant selects one of the ScanState statements: which bounds are set
// and the direction.
type scanVariant int

const (
	scanLo      scanVariant = 1 << iota // key >= prefix
	scanHi                              // key < successor of prefix
	scanAfter                           // key > after (key < after in reverse)
	scanReverse                         // descending
)

// scanSQL builds one ScanState page query. Parameters: $1 bucket, then the
// bounds that are set in the order lo, hi, after, then the row limit. Every
// bound is an index condition on (bucket, key); where two lower (or upper)
// bounds apply, the B-tree uses the tighter one.
func scanSQL(schema string, v scanVariant) string {
	var sb strings.Builder
	sb.WriteString("SELECT key, value FROM " + schema + ".state WHERE bucket = $1")
	n := 1
	param := func() string { n++; return "$" + strconv.Itoa(n) + "::bytea" }
	if v&scanLo != 0 {
		sb.WriteString(" AND key >= " + param())
	}
	if v&scanHi != 0 {
		sb.WriteString(" AND key < " + param())
	}
	if v&scanAfter != 0 {
		if v&scanReverse != 0 {
			sb.WriteString(" AND key < " + param())
		} else {
			sb.WriteString(" AND key > " + param())
		}
	}
	if v&scanReverse != 0 {
		sb.WriteString(" ORDER BY key DESC")
	} else {
		sb.WriteString(" ORDER BY key")
	}
	n++
	sb.WriteString(" LIMIT $" + strconv.Itoa(n))
	return sb.String()
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

// stateWrites are a commit's ops reduced to their net effect: first the
// prefix deletions (one statement each), then the deletions, then the upserts
// (one statement each, over arrays). Running them in that order has the
// effect of the ops in their order (see planState).
type stateWrites struct {
	putBucket []string
	putKey    [][]byte
	putValue  [][]byte

	// Sets of keys hinted New, inserted without a conflict clause.
	insBucket []string
	insKey    [][]byte
	insValue  [][]byte

	delBucket []string
	delKey    [][]byte

	prefixes []prefixRange
}

// prefixRange is the key range of one DeletePrefix: lo <= key < hi, or
// lo <= key when hi is nil.
type prefixRange struct {
	bucket string
	lo, hi []byte
}

func (w *stateWrites) empty() bool {
	return len(w.putKey) == 0 && len(w.insKey) == 0 && len(w.delKey) == 0 && len(w.prefixes) == 0
}

// planState reduces validated ops to stateWrites. For each key only its last
// set or delete counts, and a DeletePrefix cancels the earlier sets and
// deletes of the keys it covers: a key's final state is then decided by its
// last set or delete after the last prefix deletion covering it, and absent
// such, by that prefix deletion (or it is untouched). Running every prefix
// deletion first, then the remaining deletes and sets, gives exactly that.
// The keys of each statement are sorted, so concurrent commits lock rows in
// the same order, and no key is set twice in one INSERT ... ON CONFLICT.
// With hints, sets marked New go to the plain INSERT; without, every set is
// an upsert.
func planState(ops []eventstore.StateOp, hints bool) stateWrites {
	type last struct {
		op  *eventstore.StateOp
		key string // bucket NUL key (buckets contain no NUL)
	}
	final := make(map[string]*eventstore.StateOp, len(ops))
	var w stateWrites
	for i := range ops {
		op := &ops[i]
		mk := op.Bucket + "\x00" + string(op.Key)
		if !op.DeletePrefix {
			final[mk] = op
			continue
		}
		for k := range final {
			if strings.HasPrefix(k, mk) {
				delete(final, k)
			}
		}
		w.prefixes = append(w.prefixes, prefixRange{bucket: op.Bucket, lo: nonNil(op.Key), hi: prefixEnd(op.Key)})
	}
	keys := make([]last, 0, len(final))
	for k, op := range final {
		keys = append(keys, last{op: op, key: k})
	}
	slices.SortFunc(keys, func(a, b last) int { return strings.Compare(a.key, b.key) })
	for _, k := range keys {
		switch {
		case k.op.Delete:
			w.delBucket = append(w.delBucket, k.op.Bucket)
			w.delKey = append(w.delKey, k.op.Key)
		case hints && k.op.New:
			w.insBucket = append(w.insBucket, k.op.Bucket)
			w.insKey = append(w.insKey, k.op.Key)
			w.insValue = append(w.insValue, nonNil(k.op.Value))
		default:
			w.putBucket = append(w.putBucket, k.op.Bucket)
			w.putKey = append(w.putKey, k.op.Key)
			w.putValue = append(w.putValue, nonNil(k.op.Value))
		}
	}
	return w
}

// nonNil turns nil into an empty slice: pgx encodes a nil []byte as NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// CommitsHoldBackReaders implements eventstore.CommitsHoldBackReaders: a
// CommitState transaction has a txid, and readers return no row of a later
// transaction until it ends.
func (s *Store) CommitsHoldBackReaders() bool { return true }

// CommitState implements eventstore.StateStore. The appends (each through
// append_events, like AppendTx) and the state writes (one statement per
// prefix deletion, then one for all deletions and one for all upserts, over
// unnest arrays) go to PostgreSQL as one pipeline in one implicit transaction: one round trip,
// durable when it returns. An append that must write nothing (wrong version,
// id conflict) raises inside the transaction, so nothing of the commit is
// written; a duplicate append (every id already in its stream) is answered
// with the original positions, like Append, and the ops are applied anyway.
// Races the database detects (a serialization failure, a deadlock, the same
// id appended elsewhere at once) rerun the whole commit.
//
// The appends run first, so their transaction id is assigned after the
// stream locks (see append_events); while the state writes run, events
// committed by later transactions are held back from readers (see the package
// documentation), so very large commits lengthen tail latency.
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
	w := planState(c.Ops, true)
	if len(c.Appends) == 0 && w.empty() {
		return []eventstore.AppendResult{}, nil
	}
	args := make([][]any, len(c.Appends))
	for i, p := range c.Appends {
		args[i] = appendArgs(p)
	}
	for attempt := 1; ; attempt++ {
		res, err := s.commitState(ctx, c.Appends, args, &w)
		if err != nil && attempt < maxAppendAttempts && isRetryable(err) && ctx.Err() == nil {
			if len(w.insKey) > 0 && isUniqueViolation(err) {
				// A key hinted New exists (a commit whose outcome was lost,
				// sent again): run it again as upserts.
				w = planState(c.Ops, false)
			}
			continue
		}
		if err != nil {
			return nil, s.translate(err, "commit state")
		}
		for _, r := range res {
			s.appended(r)
		}
		return res, nil
	}
}

// commitState sends one commit as one pipeline.
func (s *Store) commitState(ctx context.Context, appends []eventstore.AppendParams, args [][]any, w *stateWrites) ([]eventstore.AppendResult, error) {
	q := &s.q.state
	b := &pgx.Batch{}
	for i := range appends {
		b.Queue(q.appendStrict, args[i]...)
	}
	for _, p := range w.prefixes {
		if p.hi != nil {
			b.Queue(q.delPrefix, p.bucket, p.lo, p.hi)
		} else {
			b.Queue(q.delPrefixOpen, p.bucket, p.lo)
		}
	}
	if len(w.delKey) > 0 {
		b.Queue(q.del, w.delBucket, w.delKey)
	}
	if len(w.putKey) > 0 {
		b.Queue(q.put, w.putBucket, w.putKey, w.putValue)
	}
	if len(w.insKey) > 0 {
		b.Queue(q.ins, w.insBucket, w.insKey, w.insValue)
	}
	br := s.pool.SendBatch(ctx, b)
	res, err := readCommit(br, appends, b.Len()-len(appends))
	if cerr := br.Close(); err == nil {
		err = cerr // the implicit transaction commits at the end of the pipeline
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// readCommit reads the results of commitState's pipeline up to the first
// error, translating append_events_strict's refusals to typed errors.
func readCommit(br pgx.BatchResults, appends []eventstore.AppendParams, writes int) ([]eventstore.AppendResult, error) {
	res := make([]eventstore.AppendResult, len(appends))
	for i, p := range appends {
		rows, err := br.Query()
		if err == nil {
			res[i], err = readAppendRows(rows, p)
		}
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				switch pgErr.Code {
				case codeIDConflict:
					return nil, fmt.Errorf("appends[%d]: stream %q: %w", i, p.Stream, eventstore.ErrIDConflict)
				case codeWrongVersion:
					actual, perr := strconv.ParseInt(pgErr.Detail, 10, 64)
					if perr != nil {
						return nil, fmt.Errorf("appends[%d]: %w (bad detail %q)", i, err, pgErr.Detail)
					}
					return nil, &eventstore.WrongVersionError{Stream: p.Stream, Expected: p.Expected, Actual: actual}
				}
			}
			return nil, err
		}
	}
	for range writes {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// GetState implements eventstore.StateStore.
func (s *Store) GetState(ctx context.Context, bucket string, key []byte) ([]byte, error) {
	if s.closed.Load() {
		return nil, eventstore.ErrClosed
	}
	if !storableKey(bucket, key) {
		return nil, fmt.Errorf("postgres: get state: %w", eventstore.ErrNotFound)
	}
	var v []byte
	if err := s.pool.QueryRow(ctx, s.q.state.get, bucket, key).Scan(&v); err != nil {
		return nil, s.translate(err, "get state")
	}
	return nonNil(v), nil
}

// storableKey reports whether CommitState could have stored (bucket, key)
// (see eventstore.StateCommit.Validate); other lookups find nothing without
// asking (PostgreSQL would reject a NUL or invalid UTF-8 in bucket).
func storableKey(bucket string, key []byte) bool {
	return storableBucket(bucket) && len(key) > 0 && len(key) <= eventstore.MaxStateKeyLen
}

func storableBucket(bucket string) bool {
	return bucket != "" && len(bucket) <= eventstore.MaxStateBucketLen &&
		utf8.ValidString(bucket) && strings.IndexByte(bucket, 0) < 0
}

// Page sizes of ScanState: the first page is small, so scans that stop early
// stay cheap; later pages grow.
const (
	scanFirstPage = 512
	scanMaxPage   = 8192
)

// ScanState implements eventstore.StateStore. It reads pages of rows (each one
// index range scan, in its own snapshot), copies each page into one buffer,
// releases the connection, then calls fn for the page's rows: fn may take its
// time or call the Store, and memory is bounded by the page size. The next
// page continues after the last key seen, so a scan never repeats or
// reorders keys, but keys committed during a long scan may or may not be
// seen. fn's slices are valid only during the call.
func (s *Store) ScanState(ctx context.Context, p eventstore.ScanParams, fn func(key, value []byte) error) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	if !storableBucket(p.Bucket) {
		return nil // no such bucket can exist
	}
	var v scanVariant
	bounds := []any{p.Bucket}
	if len(p.Prefix) > 0 {
		v |= scanLo
		bounds = append(bounds, p.Prefix)
		if hi := prefixEnd(p.Prefix); hi != nil {
			v |= scanHi
			bounds = append(bounds, hi)
		}
	}
	if p.Reverse {
		v |= scanReverse
	}
	after := p.After
	remaining := p.Limit // <= 0: no limit
	page := scanFirstPage
	var pg scanPage
	for {
		n := page
		if remaining > 0 && remaining < n {
			n = remaining
		}
		args := bounds
		sql := s.q.state.scan[v]
		if len(after) > 0 {
			args = append(slices.Clip(bounds), after)
			sql = s.q.state.scan[v|scanAfter]
		}
		args = append(slices.Clip(args), n)
		if err := pg.read(ctx, s, sql, args); err != nil {
			return s.translate(err, "scan state")
		}
		for i := range pg.Len() {
			k, val := pg.Row(i)
			if err := fn(k, val); err != nil {
				if errors.Is(err, eventstore.ErrStopScan) {
					return nil
				}
				return err
			}
		}
		got := pg.Len()
		if got < n {
			return nil
		}
		if remaining > 0 {
			if remaining -= got; remaining == 0 {
				return nil
			}
		}
		last, _ := pg.Row(got - 1)
		after = bytes.Clone(last)
		page = min(2*page, scanMaxPage)
	}
}

// scanPage is one page of a scan, filled by read.
type scanPage struct{ eventstore.StatePage }

// read runs one page query and copies its rows. Binary bytea results are the
// raw bytes, copied straight from pgx's read buffer.
func (pg *scanPage) read(ctx context.Context, s *Store, sql string, args []any) error {
	pg.Reset()
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	fds := rows.FieldDescriptions()
	raw := len(fds) == 2 && fds[0].Format == pgx.BinaryFormatCode && fds[1].Format == pgx.BinaryFormatCode
	for rows.Next() {
		if raw {
			vals := rows.RawValues()
			pg.Add(vals[0], vals[1])
			continue
		}
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		pg.Add(k, v)
	}
	return rows.Err()
}
