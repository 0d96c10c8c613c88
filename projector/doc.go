// Package projector turns the log into signed outbound webhooks: one route per
// active subscription, each with its own cursor, in-flight window, retry
// queue, circuit breaker and rate limit, so a slow or failing endpoint never
// delays another subscription (DESIGN.md invariants 3-6).
//
// # Engine
//
// One shared tail reader follows the log from its head and hands each
// caught-up route the events its filter matches through a bounded inbox. A
// route that is behind (a subscription starting from the beginning, a time or
// a cursor; a route back from an open circuit; a route whose inbox
// overflowed) is detached: it reads the store on its own with its filter
// until it reaches the tail, then attaches again. A route accepts only events
// after the position it has read up to, so the seam has no gap and no
// duplicate.
//
// The cursor of a route is the lowest unsettled position: an event is settled
// once its outcome is durably recorded as delivered, dead-lettered, or (on
// routes that are not ordered) moved to the retry queue. Ordered routes
// deliver one event at a time and retry it in place, so they never reorder.
//
// Outcomes of all routes go through one batcher that commits, every
// Config.OutcomeFlush or Config.OutcomeBatch attempts, one
// eventstore.StateStore.CommitState: a "delivery.attempts" event in the
// internal stream "hooklog-deliveries" holding the attempts, plus the state
// entries they imply (the attempts index served by Deliveries, retry queue,
// dead letters) and the route checkpoints. Every state entry is derived data.
//
// # Memory
//
// Per route the engine holds at most Config.RouteInbox events in the inbox,
// about two reads' worth of events waiting for a window slot, max_in_flight
// deliveries, maxTracked unsettled positions and retryWindow*2 retry entries;
// everything else stays in the log and the state store. While a route's
// circuit is open it reads nothing new.
//
// # Crash safety
//
// A route resumes from its persisted cursor and retry queue. After a crash,
// at most the deliveries that were in flight, or whose outcomes were not yet
// committed, are sent again, always with the same webhook-id (the event id).
package projector
