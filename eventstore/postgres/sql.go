package postgres

import (
	"strings"

	"github.com/hooklog/hooklog/eventstore"
)

// horizon is the xmin of the statement's snapshot as a bigint: every
// transaction with a smaller txid has finished, so rows below it are settled.
const horizon = `pg_snapshot_xmin(pg_current_snapshot())::text::bigint`

// eventCols are the columns scanned by scanEvent, in order.
const eventCols = `txid, seq, id, stream, version, type, tenant, data, metadata, recorded_at`

// sqlText holds the statements of one schema, built once at Open.
type sqlText struct {
	append      string
	appendFast  string
	appendNext1 string // appendNext for a single event
	appendNextN string
	appendGroup string // single-event Appends to different streams, grouped (group.go)
	head        string
	positionAt  string
	readAll     string // no filter
	readStream  string
	event       string
	notifyHead  string
	schemaQuote string
	state       stateSQL // the StateStore's statements (state.go)

	// readAllNoInternal is readAll with the data and metadata of internal
	// streams' rows left out (Filter.NoInternal only).
	readAllNoInternal string

	// listenLock takes the shared advisory lock a LISTEN connection holds
	// while it listens ($1 = listenKey); peers tells whether a session other
	// than the given pid ($2) of this database holds it: another Store
	// listening on this schema's channel.
	listenLock string
	peers      string
}

func newSQLText(schema string) sqlText {
	r := strings.NewReplacer("{{schema}}", schema, "{{horizon}}", horizon, "{{cols}}", eventCols,
		"{{internal}}", likeEscape(eventstore.InternalStreamPrefix)+"%")
	headSQL := `SELECT txid, seq FROM {{schema}}.events WHERE txid < {{horizon}} ORDER BY txid DESC, seq DESC LIMIT 1`
	// The last committed row not yet below the horizon (held back by an older
	// open transaction); rows of open transactions are invisible here.
	pendingSQL := `SELECT txid, seq FROM {{schema}}.events WHERE txid >= {{horizon}} ORDER BY txid DESC, seq DESC LIMIT 1`
	return sqlText{
		schemaQuote: schema,
		state:       newStateSQL(schema),
		append: r.Replace(`SELECT r_status, r_id, r_txid, r_seq, r_version
			FROM {{schema}}.append_events($1, $2, $3, $4, $5, $6, $7, $8)`),
		// Append's fast path: one statement that appends only when the
		// stream's lock is free right away, so its snapshot (taken before the
		// lock) is not older than the previous appender's commit, and the
		// version check passes. Otherwise it appends nothing and returns one
		// row with status 4; append_events then gives the authoritative
		// answer. Ids already in the log (a retry, a conflict) fail the
		// INSERT on events_id_key, and a commit to the stream between this
		// statement's snapshot and its lock on events_stream_version_key:
		// Append then also falls back to append_events. The lock key matches
		// append_events'. Rows get txid and xmin_at_insert from the column
		// defaults; the transaction id is assigned by this INSERT, after the
		// lock, so it is larger than the previous appender's.
		appendFast: r.Replace(`WITH lk AS MATERIALIZED (
				SELECT pg_try_advisory_xact_lock(hashtextextended('hooklog.stream.{{schema}}.' || $1, 0)) AS ok
			), cur AS MATERIALIZED (
				SELECT coalesce((SELECT version FROM {{schema}}.events WHERE stream = $1 ORDER BY version DESC LIMIT 1), -1) AS v
			), ins AS (
				INSERT INTO {{schema}}.events AS e (id, stream, version, type, tenant, data, metadata)
				SELECT u.id, $1, cur.v + u.ord, u.type, u.tenant, u.data, u.metadata
				  FROM lk, cur, unnest($4::uuid[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[])
				       WITH ORDINALITY AS u(id, type, tenant, data, metadata, ord)
				 WHERE lk.ok
				   AND ($2::int = 0 OR ($2 = 1 AND cur.v = -1) OR ($2 = 2 AND cur.v >= 0) OR ($2 = 3 AND cur.v = $3::bigint))
				 ORDER BY u.ord
				RETURNING e.id, e.txid, e.seq, e.version
			)
			SELECT 0, id, txid, seq, version FROM ins
			UNION ALL
			SELECT 4, NULL, NULL, NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM ins)`),
		// Append's fast path when this Store knows the stream's last
		// version (see Store.lastVersion): no lookup, the versions are sent.
		// Versions are dense and the log is append-only, so a stale (too
		// small) guess cannot slip in: the stream's row with the next version
		// exists and the INSERT fails on events_stream_version_key, and
		// Append falls back to append_events, as for ids already in the log.
		// A busy stream lock returns no row (fall back too). The lock is the
		// fast path's own, for the same reason: the transaction id, assigned
		// by the INSERT after the lock, is larger than the previous
		// appender's. The single-event form takes scalars ($2 = the version
		// to write); the batch form computes the transaction id and the
		// snapshot xmin once (after the lock; an earlier xmin is still valid
		// for PositionAt) instead of in every row's column defaults.
		//
		// The lock is the INSERT's one-time filter (evaluated once, before
		// any row is produced, so before the transaction id is assigned), not
		// a CTE: the plan is a Result node instead of a CTE and its scan,
		// cheaper to start for every single-event append.
		appendNext1: r.Replace(`INSERT INTO {{schema}}.events AS e (id, stream, version, type, tenant, data, metadata)
			SELECT $3::uuid, $1, $2::bigint, $4::text, $5::text, $6::jsonb, $7::jsonb
			 WHERE pg_try_advisory_xact_lock(hashtextextended('hooklog.stream.{{schema}}.' || $1, 0))
			RETURNING e.txid, e.seq, e.version`),
		// $2 = the stream's last version; the batch's versions follow it.
		appendNextN: r.Replace(`WITH lk AS MATERIALIZED (
				SELECT pg_try_advisory_xact_lock(hashtextextended('hooklog.stream.{{schema}}.' || $1, 0)) AS ok
			), x AS MATERIALIZED (
				SELECT pg_current_xact_id()::text::bigint AS txid, {{horizon}} AS xmin FROM lk WHERE lk.ok
			)
			INSERT INTO {{schema}}.events AS e (txid, xmin_at_insert, id, stream, version, type, tenant, data, metadata)
			SELECT x.txid, x.xmin, u.id, $1, $2::bigint + u.ord, u.type, u.tenant, u.data, u.metadata
			  FROM x, unnest($3::uuid[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
			       WITH ORDINALITY AS u(id, type, tenant, data, metadata, ord)
			 ORDER BY u.ord
			RETURNING e.txid, e.seq, e.version`),
		// Grouped single-event Appends (group.go), one per stream: $1 the
		// streams, $2 the versions to write, then the events' columns. Each
		// stream's lock is tried as in appendNext1, and all of them before
		// the transaction id is taken (the aggregate in x reads every row of
		// u first), so that, as there, the id is larger than each stream's
		// previous appender's. An event whose lock is busy is left out. The
		// snapshot xmin is taken once, before the rows' clock_timestamp().
		appendGroup: r.Replace(`WITH u AS MATERIALIZED (
				SELECT u.*, pg_try_advisory_xact_lock(hashtextextended('hooklog.stream.{{schema}}.' || u.stream, 0)) AS ok
				  FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
				       AS u(stream, version, id, type, tenant, data, metadata)
			), x AS MATERIALIZED (
				SELECT pg_current_xact_id()::text::bigint AS txid, {{horizon}} AS xmin
				  FROM (SELECT bool_or(ok) AS any FROM u) AS a WHERE a.any
			)
			INSERT INTO {{schema}}.events AS e (txid, xmin_at_insert, id, stream, version, type, tenant, data, metadata)
			SELECT x.txid, x.xmin, u.id, u.stream, u.version, u.type, u.tenant, u.data, u.metadata
			  FROM x, u WHERE u.ok
			RETURNING e.id, e.txid, e.seq, e.version`),
		head: r.Replace(`SELECT h.txid, h.seq, p.txid, p.seq FROM (SELECT 1) AS one
			LEFT JOIN LATERAL (` + headSQL + `) AS h ON true
			LEFT JOIN LATERAL (` + pendingSQL + `) AS p ON true`),
		// One statement, so the lookup and the head come from one snapshot.
		positionAt: r.Replace(`SELECT f.xmin_at_insert, h.txid, h.seq
			FROM (SELECT 1) AS one
			LEFT JOIN LATERAL (SELECT xmin_at_insert FROM {{schema}}.events
				WHERE recorded_at >= $1 ORDER BY recorded_at, txid, seq LIMIT 1) AS f ON true
			LEFT JOIN LATERAL (` + headSQL + `) AS h ON true`),
		readAll: r.Replace(`SELECT {{cols}} FROM {{schema}}.events
			WHERE (txid, seq) > ($1, $2) AND txid < {{horizon}}
			ORDER BY txid, seq LIMIT $3`),
		readAllNoInternal: r.Replace(`SELECT txid, seq, id, stream, version, type, tenant,
				CASE WHEN stream LIKE '{{internal}}' THEN NULL ELSE data END,
				CASE WHEN stream LIKE '{{internal}}' THEN NULL ELSE metadata END, recorded_at
			FROM {{schema}}.events
			WHERE (txid, seq) > ($1, $2) AND txid < {{horizon}}
			ORDER BY txid, seq LIMIT $3`),
		listenLock: `SELECT pg_advisory_lock_shared(hashtextextended($1, 0))`,
		// pg_locks shows an advisory lock on one bigint key as (classid,
		// objid) = its high and low 32 bits, objsubid 1. It is visible to
		// every role, unlike pg_stat_activity's details.
		peers: `SELECT EXISTS (SELECT 1 FROM pg_locks l
			WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.pid <> $2
			  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
			  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0))`,
		readStream: r.Replace(`SELECT {{cols}} FROM {{schema}}.events
			WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3`),
		event: r.Replace(`SELECT {{cols}} FROM {{schema}}.events WHERE id = $1`),
		// The head re-read plus the wake-up for other processes, in one round
		// trip and one tiny transaction of its own.
		// synchronous_commit is off for this transaction only: its commit
		// need not wait for a WAL flush (it wrote nothing but the NOTIFY).
		notifyHead: r.Replace(`SELECT h.txid, h.seq, p.txid, p.seq,
				set_config('synchronous_commit', 'off', true), pg_notify($1, $2) FROM (SELECT 1) AS one
			LEFT JOIN LATERAL (` + headSQL + `) AS h ON true
			LEFT JOIN LATERAL (` + pendingSQL + `) AS p ON true`),
	}
}

// readFiltered builds the filtered ReadAll statement. It examines at most
// MaxScan rows after the cursor, in log order, and returns the matching ones up
// to Limit, plus one marker row (m = false) for the last row examined when that
// row is not itself returned, so Next can be computed without sending the
// non-matching rows. where is the filter expression over the row's columns.
//
// Each row also carries how many rows were examined in all.
//
// Parameters: $1,$2 cursor, $3 MaxScan, $4 Limit, then the filter's own.
func (q sqlText) readFiltered(where string) string {
	return strings.NewReplacer("{{schema}}", q.schemaQuote, "{{horizon}}", horizon, "{{cols}}", eventCols, "{{where}}", where).Replace(`
		WITH scan AS (
			SELECT {{cols}}, ({{where}}) AS m
			FROM {{schema}}.events
			WHERE (txid, seq) > ($1, $2) AND txid < {{horizon}}
			ORDER BY txid, seq LIMIT $3
		), counted AS (
			SELECT *,
				count(*) FILTER (WHERE m) OVER w AS k,
				count(*) FILTER (WHERE m) OVER () AS total,
				lead(txid) OVER w IS NULL AS last,
				count(*) OVER () AS scanned
			FROM scan WINDOW w AS (ORDER BY txid, seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
		)
		SELECT {{cols}}, m, scanned FROM counted
		WHERE (m AND k <= $4) OR (last AND NOT m AND total < $4)
		ORDER BY txid, seq`)
}
