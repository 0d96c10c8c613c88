// Package replays owns the replay job aggregate: the commands that start,
// report, finish and cancel a replay of a time window of the log to some
// subscriptions, as events in the internal stream "hooklog-replays"
// (replay.requested, replay.progressed, replay.completed, replay.cancelled,
// replay.failed), and the read model folded from that stream with
// subscriptions/streamfold.
//
// The package knows nothing of subscriptions or delivery: the projector
// resolves a request (which subscriptions, the window's start position, the
// total) and runs the job; this package records what was asked and what
// happened, so that after a restart an unfinished replay resumes where its
// last replay.progressed event (or the projector's state) says it was.
//
// A replay's status is running until exactly one of replay.completed (every
// event of the window settled: delivered, or failed for good and counted in
// Failed), replay.cancelled or replay.failed (the job itself could not run)
// is recorded; after that it never changes.
package replays
