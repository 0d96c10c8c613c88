// Package streamfold keeps an in-memory model folded from one stream of the
// log and current with it. It is the machinery under hooklog's event-sourced
// read models (subscriptions, API keys): Start folds the stream from version 0
// in pages, a follower goroutine re-reads the stream whenever the log's head
// moves (at most ten times a second), and Exec runs a command with optimistic
// concurrency: it appends with the stream version the model has folded and, if
// another process wrote first, catches up and decides again.
//
// The model itself belongs to the caller, who passes an Apply function that
// folds one event. Apply must be deterministic and depend only on the event's
// ID, Type, Data and Version: events folded right after a local append carry no
// RecordedAt, and rebuilding from the log must give the same state.
package streamfold
