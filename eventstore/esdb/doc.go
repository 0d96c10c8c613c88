// Package esdb is the KurrentDB/EventStoreDB backend of eventstore.Store and
// eventstore.StateStore, on github.com/EventStore/EventStore-Client-Go/v4,
// for users who run the log on a replicated cluster. PostgreSQL (pgx) holds
// what the log cannot serve efficiently.
//
// Mapping. A hooklog stream s is the KurrentDB stream Config.StreamPrefix+s;
// an event's type is the KurrentDB event type, its data the event data (JSON
// content type), and its tenant and metadata the user metadata
// {"tenant":…,"metadata":…}. Version is the stream revision, RecordedAt the
// server's "created" time (100 ns ticks since the Unix epoch), and Position
// {Hi: commit, Lo: prepare}, which compares in $all order. System events
// ($-prefixed streams or types) and, with a StreamPrefix, other streams are
// foreign: never returned, not counted as the head.
//
// Appends use the server's expected revision. The Store's id contract (a
// retry of ids already in the stream is a Duplicate with the original
// positions whatever the expected version; ids in another stream conflict)
// is stronger than the server's idempotency and comes from the esdb_ids
// table in PostgreSQL: ids are reserved there before the write, so one of
// several concurrent appends of the same ids writes and the others answer
// Duplicate, then settled with the positions read back from the stream.
//
// Reads. ReadAll reads $all forwards in chunks and filters on the client
// (the v4 client's ReadAll has no server-side filter); the one long-lived
// subscription to $all per Store uses the server-side filter (the stream
// prefix, or no system events) and feeds Wait and the indexer. The indexer
// writes, as it follows the log, the id index (for Event and for ids written
// by other processes) and a time-to-position index (one row per
// Config.TimeIndexInterval of recorded time) that PositionAt answers from
// without scanning $all. All of it is derived: deleting the esdb_* rows and
// restarting rebuilds them from the log.
//
// State. GetState, ScanState and the ops of CommitState use the postgres
// package's state table. CommitState appends to KurrentDB first and then
// applies its ops in one PostgreSQL transaction: the two engines share no
// transaction, so a crash in between leaves the events without their ops,
// which a retry (its ids answered as Duplicate) completes: re-delivery,
// never loss.
//
// Failures. When the server goes away, calls fail (ErrUnavailable), Ping
// fails (so /readyz reports not ready) and the subscription drops; the
// store reconnects with backoff, making a new client each time, since a
// client whose discovery failed stays dead, and resubscribes after the last
// event it saw, so Wait and the indexes resume without a gap.
package esdb
