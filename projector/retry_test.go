package projector_test

import (
	"testing"
	"time"

	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

func TestNextDelay(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	pol := subscriptions.RetryPolicy{
		Schedule: []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute},
		MaxAge:   72 * time.Hour,
	}
	noAge := pol
	noAge.MaxAge = 0
	cases := []struct {
		name       string
		pol        subscriptions.RetryPolicy
		attempt    int
		firstAt    time.Time
		retryAfter time.Duration
		want       time.Duration
		exhausted  bool
	}{
		{"after attempt 1: schedule[0]", pol, 1, now, 0, 5 * time.Second, false},
		{"after attempt 2: schedule[1]", pol, 2, now, 0, 5 * time.Minute, false},
		{"after the last scheduled attempt", pol, 3, now, 0, 30 * time.Minute, false},
		{"schedule spent", pol, 4, now, 0, 0, true},
		{"far past the schedule", pol, 40, now, 0, 0, true},
		{"attempt 0 counts as 1", pol, 0, now, 0, 5 * time.Second, false},
		{"empty schedule", subscriptions.RetryPolicy{MaxAge: time.Hour}, 1, now, 0, 0, true},
		{"next attempt inside max_age", pol, 1, now.Add(-72*time.Hour + 10*time.Second), 0, 5 * time.Second, false},
		{"next attempt exactly at max_age", pol, 1, now.Add(-72*time.Hour + 5*time.Second), 0, 5 * time.Second, false},
		{"next attempt would pass max_age", pol, 2, now.Add(-72*time.Hour + 10*time.Second), 0, 0, true},
		{"max_age already passed", pol, 1, now.Add(-73 * time.Hour), 0, 0, true},
		{"no max_age", noAge, 2, now.Add(-1000 * time.Hour), 0, 5 * time.Minute, false},
		{"Retry-After above the schedule is the floor", pol, 1, now, time.Minute, time.Minute, false},
		{"Retry-After below the schedule changes nothing", pol, 2, now, time.Second, 5 * time.Minute, false},
		{"Retry-After does not revive a spent schedule", pol, 4, now, time.Second, 0, true},
		{"Retry-After past max_age", pol, 1, now.Add(-71 * time.Hour), 2 * time.Hour, 0, true},
	}
	for _, tc := range cases {
		got, exhausted := projector.NextDelay(tc.pol, tc.attempt, tc.firstAt, now, tc.retryAfter, projector.NoJitter)
		if got != tc.want || exhausted != tc.exhausted {
			t.Errorf("%s: NextDelay = (%s, %v), want (%s, %v)", tc.name, got, exhausted, tc.want, tc.exhausted)
		}
	}
}

func TestNextDelayJitterBounds(t *testing.T) {
	t.Parallel()
	now := time.Now()
	pol := subscriptions.RetryPolicy{Schedule: []time.Duration{100 * time.Second}, MaxAge: 72 * time.Hour}
	lo, hi := 90*time.Second, 110*time.Second
	minSeen, maxSeen := hi, lo
	for range 5000 {
		d, exhausted := projector.NextDelay(pol, 1, now, now, 0, nil) // nil = DefaultJitter
		if exhausted || d < lo || d > hi {
			t.Fatalf("NextDelay with default jitter = (%s, %v), want within [%s, %s]", d, exhausted, lo, hi)
		}
		minSeen, maxSeen = min(minSeen, d), max(maxSeen, d)
	}
	if minSeen > 92*time.Second || maxSeen < 108*time.Second {
		t.Errorf("jitter covers [%s, %s] in 5000 draws, want close to [%s, %s]", minSeen, maxSeen, lo, hi)
	}
	// Jitter never takes a delay below Retry-After.
	for range 1000 {
		if d, _ := projector.NextDelay(pol, 1, now, now, 105*time.Second, nil); d < 105*time.Second {
			t.Fatalf("jittered delay %s is below Retry-After 105s", d)
		}
	}
	// A jitter function that goes negative is clamped.
	if d, _ := projector.NextDelay(pol, 1, now, now, 0, func(time.Duration) time.Duration { return -time.Second }); d != 0 {
		t.Errorf("negative jitter gave %s, want 0", d)
	}
}

func TestJitter(t *testing.T) {
	t.Parallel()
	if d := projector.Jitter(0)(time.Minute); d != time.Minute {
		t.Errorf("Jitter(0) = %s", d)
	}
	if d := projector.Jitter(0.5)(0); d != 0 {
		t.Errorf("Jitter of 0 = %s", d)
	}
	j := projector.Jitter(3) // clamped to 1: [0, 2d]
	for range 1000 {
		if d := j(time.Minute); d < 0 || d > 2*time.Minute {
			t.Fatalf("Jitter(3) clamped to 1 gave %s", d)
		}
	}
}
