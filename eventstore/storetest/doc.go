// Package storetest is the conformance suite every eventstore backend runs:
// storetest.Run(t, harness) from the backend's own _test.go file, and
// storetest.Bench(b, open) for the shared benchmarks.
//
// Each case calls t.Parallel and opens its own store through Harness.Open, so
// the suite runs in parallel and in any order. Cases that differ between
// backends read the Harness flags (BeginHeld for concurrent write
// transactions, ExactPositionAt for exact time lookup).
package storetest
