// Package postgres is the PostgreSQL backend of eventstore.Store, built on
// github.com/jackc/pgx/v5 (pgxpool). It is the production single-node store and
// the place for the transactional outbox: AppendTx appends inside the
// application's own pgx.Tx, so its events commit (or roll back) with its writes.
//
// # Schema
//
// Everything lives in one schema, Config.Schema (default "hooklog"), created
// if missing. Versioned migrations (migrations/NNNN_name.sql, embedded in the
// binary) are applied by Open inside one transaction holding a
// pg_advisory_xact_lock, so several processes may start at once; the applied
// versions are listed in <schema>.schema_migrations. A database migrated by a
// newer binary is refused. All statements use schema-qualified names; the
// connections' search_path is left alone, so Pool() can be shared with the
// application.
//
// # Log order and visibility
//
// A plain bigserial is not a safe cursor: a row with a smaller number can
// commit after a reader has passed it. Each row is therefore stamped with its
// transaction's id (pg_current_xact_id(), 64 bits) and a per-row seq; the log
// order is (txid, seq) and a Position is {Hi: txid, Lo: seq}. Readers return
// only rows with txid below the xmin of their snapshot, i.e. rows whose
// transaction and every older transaction has finished: whatever commits later
// has a larger txid and sorts after every cursor already handed out. Appends
// to one stream are serialized by a transaction-scoped advisory lock on the
// stream, taken before the transaction id is assigned, so a stream's versions
// also follow log order.
//
// The price: one long-open write transaction anywhere in the PostgreSQL
// cluster (any database: the xmin horizon is cluster-wide, and it includes
// AppendTx callers that keep their transaction open) holds back what readers
// may see, for every reader, until it ends. Keep write transactions short.
// Appends already made stay durable; they just become readable later.
// ReadStream and Event read committed rows directly and are not held back.
// Under steady concurrent writing an event becomes readable once every older
// write transaction has finished, so the tail latency follows the slowest
// commits.
//
// Read-your-writes within one Store: when Head or ReadAll reach the end of the
// visible log before an event this Store's Append has committed, they wait for
// it (the watcher re-reads every 1-16ms meanwhile), at most one second,
// and not at all once the head has been stuck that long.
//
// # Appends
//
// An Append is one statement, so one round trip and one transaction: a fast
// path INSERT that appends when the stream's lock is free at once and the
// version check passes; otherwise (a busy stream, ids already in the log, a
// wrong version, a commit racing the statement) the append_events function,
// which waits for the stream's lock and answers duplicates, id conflicts and
// wrong versions without writing. AppendTx always uses append_events.
//
// A Store remembers the last version its Appends committed to each stream
// (up to 16384 streams). When the expected version allows, the fast path then
// sends the versions instead of looking the stream up: the log is append-only
// and versions are dense, so if another writer has appended meanwhile, the
// next version exists and the INSERT fails on the (stream, version) key; the
// Store forgets the stream and append_events answers.
//
// Single-event Appends on that path are group-committed (group.go): at most
// Config.AppendGroups statements of them run at once, and the ones that
// arrive while all are busy share the next statement and its transaction,
// each with its own stream lock, version and answer. A group whose statement
// fails commits nothing, and its Appends then run one by one.
//
// # Wait, LISTEN/NOTIFY and polling
//
// Each Store runs one watcher goroutine that owns an eventstore.HeadWatch and
// re-reads the visible head when this process's Append commits, when a
// notification arrives on channel "hooklog_events_<schema>" (a dedicated LISTEN
// connection, reconnected with backoff), or every PollInterval. After local
// appends the watcher sends a coalesced NOTIFY in its own tiny transaction,
// never inside the append's, but only while another Store listens on the
// channel: every listening connection holds a shared advisory lock, which the
// watcher looks for at most once a second (a Store that starts listening is
// woken by the others within about a second; until then its own poll sees
// their appends). Events appended with AppendTx, or by writers that do not
// notify, are seen within PollInterval.
//
// # State (eventstore.StateStore)
//
// Derived projector state lives in <schema>.state (bucket text, key bytea,
// value bytea, primary key (bucket, key)); bytea sorts as bytes, the order
// ScanState promises. CommitState sends its appends (append_events_strict, a
// wrapper of append_events that raises instead of answering a wrong version or
// an id conflict) and its state writes (one statement per DeletePrefix, one
// DELETE and one INSERT ... ON CONFLICT over unnest arrays for the rest, after
// reducing the ops to their net effect) as one pipeline: one round trip, one
// implicit transaction, all or nothing. Races the database detects rerun the
// commit, as for Append. Committed appends wake the watcher like Append's.
// ScanState reads pages (index range scans, 512 rows first, growing to 8192),
// releasing the connection before calling fn for a page's rows.
//
// # PositionAt
//
// Each row keeps recorded_at (clock_timestamp()) and xmin_at_insert, the xmin of
// the inserting statement's snapshot. PositionAt(t) looks up the first row with
// recorded_at >= t on an index and returns the cursor just before every row with
// txid >= its xmin_at_insert; the argument is written at Store.PositionAt. The
// result may be earlier than the last event before t when transactions overlap,
// never later. It assumes the database clock does not step backwards.
package postgres
