package postgres

import "strings"

// horizon is the xmin of the statement's snapshot as a bigint: every
// transaction with a smaller txid has finished, so rows below it are settled.
const horizon = `pg_snapshot_xmin(pg_current_snapshot())::text::bigint`

// eventCols are the columns scanned by scanEvent, in order.
const eventCols = `txid, seq, id, stream, version, type, tenant, data, metadata, recorded_at`

// sqlText holds the statements of one schema, built once at Open.
type sqlText struct {
	append      string
	head        string
	positionAt  string
	readAll     string // no filter
	readStream  string
	event       string
	notifyHead  string
	schemaQuote string
}

func newSQLText(schema string) sqlText {
	r := strings.NewReplacer("{{schema}}", schema, "{{horizon}}", horizon, "{{cols}}", eventCols)
	headSQL := `SELECT txid, seq FROM {{schema}}.events WHERE txid < {{horizon}} ORDER BY txid DESC, seq DESC LIMIT 1`
	// The last committed row not yet below the horizon (held back by an older
	// open transaction); rows of open transactions are invisible here.
	pendingSQL := `SELECT txid, seq FROM {{schema}}.events WHERE txid >= {{horizon}} ORDER BY txid DESC, seq DESC LIMIT 1`
	return sqlText{
		schemaQuote: schema,
		append: r.Replace(`SELECT r_status, r_id, r_txid, r_seq, r_version
			FROM {{schema}}.append_events($1, $2, $3, $4, $5, $6, $7, $8)`),
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
		readStream: r.Replace(`SELECT {{cols}} FROM {{schema}}.events
			WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3`),
		event: r.Replace(`SELECT {{cols}} FROM {{schema}}.events WHERE id = $1`),
		// The head re-read plus the wake-up for other processes, in one round
		// trip and one tiny transaction of its own.
		notifyHead: r.Replace(`SELECT h.txid, h.seq, p.txid, p.seq, pg_notify($1, $2) FROM (SELECT 1) AS one
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
