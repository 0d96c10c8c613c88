// Package embedded is hooklog's default event store: one directory, no server,
// on bbolt (go.etcd.io/bbolt), an ordered key/value file with ACID transactions.
//
// Layout. The directory holds hooklog.db, the bbolt file that is the log's
// home, and the write-ahead log (wal-<seq>.log segments and a spare,
// wal-spare.tmp; see wal.go). hooklog.db has these buckets:
//
//	events   seq (8 bytes, big-endian, 1-based, dense)  → record
//	ids      event id (16 bytes)                         → seq
//	versions stream + 0x00 + version (8 bytes)           → seq
//	streams  stream                                      → last version (8 bytes)
//	meta     "format"                                    → record format number
//	state    one nested bucket per StateStore bucket name: key → value
//
// A Position is {Hi: 0, Lo: seq}; the head is the last sequence number.
//
// A record is a compact binary encoding, not JSON: a format byte, the
// recorded_at time (unix nanoseconds) and the stream version at fixed offsets,
// the event id, then type, stream and tenant (length-prefixed) so ReadAll can
// filter an event before decoding its data, then data and metadata.
//
// Writes. Every Append is validated and encoded in the caller's goroutine.
// An append of many events that finds no group commit running then runs one
// itself; any other request goes to the committer goroutine, which runs the
// next one.
// A group commit takes every request that is waiting and checks each one on
// its own against the log as it stands (a request that fails writes nothing
// and does not affect its neighbours; later requests see the writes of
// earlier ones), one group at a time.
//
//   - A batch of Appends is written to the write-ahead log with one write and
//     one fdatasync. Only then are the events put in the memtable (an
//     in-memory index of the events not yet in bbolt), the head advanced and
//     every caller answered: an acknowledged event is durable. A flusher
//     goroutine copies the memtable into bbolt in large transactions, on the
//     other core, and the WAL segments it has copied are recycled. Readers see
//     bbolt and the memtable as one log.
//   - A batch holding a CommitState (state ops) is one bbolt transaction
//     (commit with fsync) that first takes in the whole memtable, so the
//     state and the events it was derived from are in bbolt together.
//
// A crash loses nothing acknowledged: Open copies into bbolt what the WAL
// holds beyond bbolt's last event before it serves anything. Why a WAL in
// front of bbolt: a bbolt commit costs two fsyncs and a copy-on-write B+tree
// update in the caller's path; a WAL commit costs one sequential write and
// one fdatasync of a pre-written file, and the B+tree work moves off it.
//
// Cancellation: a caller whose context ends before the committer takes its
// request gets the context's error and nothing is written. Once the committer
// has taken a request it is committed (or rejected) and the caller waits for
// that answer, which takes at most one commit; the committer re-checks the
// context just before applying the request, so a request whose context ended
// while it was queued is dropped with the context's error.
//
// recorded_at is assigned at commit, with nanosecond precision in UTC, and is
// forced to be non-decreasing along the log (max(now, previous)), so PositionAt
// is a binary search over the sequence-keyed events bucket, never a scan.
//
// Only one process may open a directory at a time: a second Open fails with
// ErrLocked after a short timeout instead of hanging.
package embedded
