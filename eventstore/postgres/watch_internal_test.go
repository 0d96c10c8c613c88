package postgres

import (
	"testing"
	"time"
)

// TestFastPollDelay: while rows are held back the watcher re-reads every
// millisecond at first, then at most every 16ms for the first second, so
// rows held back by a blocker that ends within that second are seen within
// 16ms of its end; only then does it back off (to PollInterval, capped by
// the caller).
func TestFastPollDelay(t *testing.T) {
	var elapsed time.Duration
	n := 0
	for ; elapsed < time.Second; n++ {
		d := fastPollDelay(n)
		if d > 16*time.Millisecond {
			t.Fatalf("re-read %d waits %s after %s held back; want at most 16ms within the first second", n, d, elapsed)
		}
		elapsed += d
	}
	for prev := fastPollDelay(n); n < 200; n++ {
		d := fastPollDelay(n)
		if d < prev {
			t.Fatalf("re-read %d waits %s, less than the one before (%s)", n, d, prev)
		}
		prev = d
	}
	if d := fastPollDelay(200); d < DefaultPollInterval {
		t.Errorf("a transaction open for long is re-read every %s; want the back-off to reach PollInterval (%s)", d, DefaultPollInterval)
	}
}

// TestRoundPause: the watcher waits after a round as long as it took, at
// most maxRoundPause, counted from its end; not at all once that has passed.
func TestRoundPause(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		took, since, want time.Duration
	}{
		{took: 300 * time.Microsecond, since: 0, want: 300 * time.Microsecond},
		{took: 300 * time.Microsecond, since: 100 * time.Microsecond, want: 200 * time.Microsecond},
		{took: 300 * time.Microsecond, since: time.Millisecond, want: -700 * time.Microsecond},
		{took: 50 * time.Millisecond, since: 0, want: maxRoundPause},
		{took: 50 * time.Millisecond, since: 3 * time.Millisecond, want: -time.Millisecond},
	} {
		r := round{start: t0, end: t0.Add(c.took)}
		if got := r.pause(r.end.Add(c.since)); got != c.want {
			t.Errorf("round of %s, %s after it: pause %s, want %s", c.took, c.since, got, c.want)
		}
	}
	if got := (round{}).pause(time.Now()); got > 0 {
		t.Errorf("before any round: pause %s, want none", got)
	}
}
