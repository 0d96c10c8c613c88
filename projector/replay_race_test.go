//go:build race

package projector_test

// raceEnabled: the race detector slows delivery about tenfold; the heaviest
// tests shrink under it (see their comments) to keep the package's run short.
const raceEnabled = true
