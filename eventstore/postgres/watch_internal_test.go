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
