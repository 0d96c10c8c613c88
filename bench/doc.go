// Package bench holds hooklog's whole-system benchmark scenarios, the ones
// `hooklog bench` runs. Each scenario measures hooklog and a raw baseline in the
// same run, on the same machine and disk, and reports the ratio, so a figure
// says how close hooklog gets to what the hardware allows rather than an
// absolute number that only means something on one machine.
//
// RunAppend measures the event store alone (embedded and PostgreSQL): batch
// appends, concurrent single-event appends and append-to-tail latency. The
// per-backend `go test -bench` benchmarks live next to each backend; these
// scenarios are the end-to-end figures.
//
// Baselines alternate with the measured side in rounds (baseline, hooklog,
// baseline, hooklog) so that load from other processes on a shared machine
// falls on both sides alike.
package bench
