// Package projector turns the log into signed outbound webhooks: one route per
// active subscription, each with its own cursor, in-flight window, retry
// queue, circuit breaker and rate limit, so a slow or failing endpoint never
// delays another subscription (DESIGN.md invariants 3-6). The HTTP side of
// one attempt (Deliverer, Classify, Sign, NextDelay) is in delivery.go,
// outcome.go, signing.go and retry.go; the engine is the rest.
//
// # Routes and the shared tail
//
// A Projector reconciles its routes with the subscriptions on every change
// (subscriptions.Service.Watch) and at least every second: a created,
// resumed or updated subscription takes effect within a second, and a
// paused, disabled or deleted one stops at once, abandoning its deliveries
// in flight (they stay unsettled and are sent again when it resumes). A
// change of filter or of ordered restarts the route from its cursor; other
// changes apply to the next attempt.
//
// One shared tail reader follows the log from its head and hands each
// caught-up route the events its filter matches through a bounded inbox
// (Config.RouteInbox events). A route that is behind (a subscription starting
// from the beginning, a time or a cursor; a route whose circuit was open; a
// route whose inbox overflowed) is detached: it reads the store on its own
// with its filter until it reaches the tail, then attaches again; the part of
// the log the tail read lately (its last 16 MB of events) it reads from the
// tail's memory instead, so routes that fall behind in a burst do not each
// read it again. A route
// takes only events after the position it has read up to, so the seam has no
// gap and no duplicate. Readers use eventstore.Filter.NoInternal: hooklog's
// own streams are never delivered.
//
// # Settling, retries and ordering
//
// The cursor of a route is the lowest unsettled position. An event is
// settled once its outcome is committed as delivered, dead-lettered, or (on
// routes that are not ordered) moved to the retry queue. Unordered routes run
// up to max_in_flight attempts at once, retry-queue entries first when due.
// Ordered routes run one attempt at a time and retry a failed event in place,
// so they never reorder; a redrive on an ordered route delivers the re-queued
// dead letters one at a time before going on with the log. Retries follow
// the subscription's schedule with Config.Jitter, never sooner than a 429/503
// Retry-After, until the schedule or max_age (counted from the first attempt)
// runs out: then the pair is dead-lettered. 410 Gone disables the
// subscription; the event that got it stays unsettled.
//
// CircuitFailures consecutive failures open a route's circuit: it starts and
// reads nothing for CircuitCooldown, then lets one probe through (half open);
// a failed probe doubles the cooldown (up to MaxCircuitCooldown), a success
// closes the circuit.
//
// # Recording outcomes
//
// Outcomes go through a few batchers (lanes; a subscription always uses the
// same one). Each flush, every Config.OutcomeFlush or Config.OutcomeBatch
// attempts, is one eventstore.StateStore.CommitState: one "delivery.attempts"
// event (AttemptsData) in the internal stream "hooklog-deliveries", the
// attempts index entries (served by Deliveries), the retry-queue and
// dead-letter changes the attempts imply, and the routes' checkpoints. A
// route counts an attempt settled only once its flush committed. The state
// (StateBuckets) is derived data: every key starts with the subscription id,
// and a deleted subscription's entries are deleted. The StateStore must apply
// a commit's ops in order and support ScanParams.Reverse (newest first).
//
// # Memory
//
// Per route the engine holds at most RouteInbox events in its inbox, about
// two reads (TailBatch) of events waiting for a window slot, max_in_flight
// attempts, 65,536 tracked unsettled positions and 512 retry-queue entries;
// shared by all routes are the tail's recent reads and the delivery bodies
// (16 MB each); everything else stays in the log and the state store. While a route's
// circuit is open it reads nothing new.
//
// # Crash safety
//
// A route resumes from its persisted cursor and retry queue. After a crash,
// at most the attempts that were in flight, or whose outcomes were not yet
// committed, are sent again, always with the same webhook-id (the event id).
// Stop waits for the attempts in flight (until its context ends), records
// their outcomes and checkpoints, and leaves no goroutine behind.
package projector
