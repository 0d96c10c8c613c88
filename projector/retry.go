package projector

import (
	"math/rand/v2"
	"time"

	"github.com/hooklog/hooklog/subscriptions"
)

// DefaultJitterFraction is how far DefaultJitter moves a delay either way.
const DefaultJitterFraction = 0.1

// DefaultJitter spreads a delay uniformly over ±10%, so endpoints that failed
// together are not retried in lock step.
func DefaultJitter(d time.Duration) time.Duration { return Jitter(DefaultJitterFraction)(d) }

// Jitter returns a jitter function that spreads a delay uniformly over
// [d*(1-fraction), d*(1+fraction)]. fraction is clamped to [0, 1].
func Jitter(fraction float64) func(time.Duration) time.Duration {
	fraction = min(max(fraction, 0), 1)
	return func(d time.Duration) time.Duration {
		if d <= 0 || fraction == 0 {
			return d
		}
		f := 1 + fraction*(2*rand.Float64()-1)
		return time.Duration(float64(d) * f)
	}
}

// NoJitter leaves delays as they are (tests, deterministic schedules).
func NoJitter(d time.Duration) time.Duration { return d }

// NextDelay decides what follows a failed attempt: attempt is the 1-based
// number of the attempt that just failed, firstAt when the pair's first
// attempt was made, now the current time, retryAfter the Outcome's RetryAfter.
//
// The next attempt waits policy.Schedule[attempt-1] (Schedule[i] is the delay
// before attempt i+2), moved by jitter (DefaultJitter when nil), and never less
// than retryAfter. It is exhausted (dead letter; delay 0) when the schedule is
// spent (attempt > len(Schedule)) or when the next attempt would come after
// firstAt+MaxAge, since an attempt past max_age is never made (MaxAge <= 0:
// no age limit).
func NextDelay(policy subscriptions.RetryPolicy, attempt int, firstAt, now time.Time, retryAfter time.Duration, jitter func(time.Duration) time.Duration) (delay time.Duration, exhausted bool) {
	attempt = max(attempt, 1)
	if attempt > len(policy.Schedule) {
		return 0, true
	}
	if jitter == nil {
		jitter = DefaultJitter
	}
	delay = max(jitter(policy.Schedule[attempt-1]), retryAfter, 0)
	if policy.MaxAge > 0 && now.Add(delay).After(firstAt.Add(policy.MaxAge)) {
		return 0, true
	}
	return delay, false
}
