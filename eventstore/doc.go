// Package eventstore owns hooklog's append-only log: the Store interface every
// backend implements, the event and position types, input validation, filters and
// the typed errors callers test with errors.Is.
//
// Backends live in sub-packages (embedded, postgres, esdb) and all pass the same
// conformance suite in eventstore/storetest. Positions are opaque to callers: they
// are totally ordered, compare with Position.Compare, and their string form sorts
// in log order.
package eventstore
