package projector

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// ErrInvalidProjectorConfig is wrapped by New's configuration errors.
var ErrInvalidProjectorConfig = errors.New("projector: invalid config")

// Config configures a Projector. The zero value is usable; each field says
// its default.
type Config struct {
	// Delivery configures the HTTP side (timeout, private networks, URL
	// policy). When Delivery.Policy is the zero value, the subscription
	// service's URLPolicy is used; when Delivery.MaxIdleConnsPerHost is 0,
	// the projector keeps up to DefaultIdleConnsPerHost idle connections per
	// host (several subscriptions often share one host, each with up to
	// max_in_flight requests at once).
	Delivery DelivererConfig
	// OutcomeFlush is how long the outcome batcher waits after the first
	// attempt of a batch before committing it. Default 25ms: each commit has
	// a fixed cost (an fsync, bbolt's page writes), and under load 25ms
	// commits cost a fan-out about 10% of its throughput less than 10ms
	// ones did (hooklog bench fanout, embedded: 0.60 -> 0.67-0.69 of raw).
	// On a state store whose commits hold back the log's readers
	// (eventstore.CommitsHoldBackReaders: PostgreSQL) the default is
	// HoldBackOutcomeFlush, 10ms: bigger commits stay open longer, and
	// every event appended meanwhile waits for them (fan-out p99 at 500
	// events/s 0.28-0.34 s with 10ms, 0.43-0.53 s with 25ms on a machine
	// whose disk stalled).
	// It delays when an attempt shows in the deliveries API and when a
	// route's cursor moves past it, not the delivery itself. A batch that
	// holds a replay's attempts waits at most 10ms (replays pace themselves
	// on their commits).
	OutcomeFlush time.Duration
	// OutcomeBatch commits a batch as soon as it holds this many attempts.
	// Default 1000.
	OutcomeBatch int
	// AttemptRetention is how long attempt records stay in the deliveries
	// index. Default 168h (7 days). The delivery.attempts events stay in the log.
	AttemptRetention time.Duration
	// CircuitFailures consecutive failed attempts open a route's circuit.
	// Default 5.
	CircuitFailures int
	// CircuitCooldown is how long an open circuit waits before one probe
	// attempt (half open); it doubles on every failed probe up to
	// MaxCircuitCooldown. Default 5s.
	CircuitCooldown time.Duration
	// TailBatch is the number of events the shared tail (and a detached
	// route) reads at once. Default 256.
	TailBatch int
	// RouteInbox bounds the events buffered for one attached route; a route
	// that falls further behind detaches and reads the store on its own.
	// Keep it a few times TailBatch so a burst does not detach every route.
	// Default 1024.
	RouteInbox int
	// Logger reports store errors and dropped work. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of retry due times, circuit and status times.
	// Default time.Now.
	Now func() time.Time
	// Jitter moves retry delays. Default DefaultJitter (±10%).
	Jitter func(time.Duration) time.Duration
	// Replay configures replays (replay.go).
	Replay ReplayConfig
}

// Defaults of Config.
const (
	DefaultOutcomeFlush     = 25 * time.Millisecond
	HoldBackOutcomeFlush    = 10 * time.Millisecond
	DefaultOutcomeBatch     = 1000
	DefaultAttemptRetention = 7 * 24 * time.Hour
	DefaultCircuitFailures  = 5
	DefaultCircuitCooldown  = 5 * time.Second
	MaxCircuitCooldown      = 5 * time.Minute
	DefaultTailBatch        = 256
	DefaultRouteInbox       = 1024
	DefaultIdleConnsPerHost = subscriptions.MaxMaxInFlight
)

func (c Config) withDefaults() (Config, error) {
	bad := func(field, format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: %s %s", ErrInvalidProjectorConfig, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.OutcomeFlush < 0:
		return bad("OutcomeFlush", "must not be negative (0 = %s), got %s", DefaultOutcomeFlush, c.OutcomeFlush)
	case c.OutcomeBatch < 0:
		return bad("OutcomeBatch", "must not be negative (0 = %d), got %d", DefaultOutcomeBatch, c.OutcomeBatch)
	case c.AttemptRetention < 0:
		return bad("AttemptRetention", "must not be negative (0 = %s), got %s", DefaultAttemptRetention, c.AttemptRetention)
	case c.CircuitFailures < 0:
		return bad("CircuitFailures", "must not be negative (0 = %d), got %d", DefaultCircuitFailures, c.CircuitFailures)
	case c.CircuitCooldown < 0:
		return bad("CircuitCooldown", "must not be negative (0 = %s), got %s", DefaultCircuitCooldown, c.CircuitCooldown)
	case c.TailBatch < 0 || c.TailBatch > eventstore.MaxReadLimit:
		return bad("TailBatch", "must be between 0 (= %d) and %d, got %d", DefaultTailBatch, eventstore.MaxReadLimit, c.TailBatch)
	case c.RouteInbox < 0:
		return bad("RouteInbox", "must not be negative (0 = %d), got %d", DefaultRouteInbox, c.RouteInbox)
	}
	if c.OutcomeFlush == 0 {
		c.OutcomeFlush = DefaultOutcomeFlush
	}
	if c.OutcomeBatch == 0 {
		c.OutcomeBatch = DefaultOutcomeBatch
	}
	if c.AttemptRetention == 0 {
		c.AttemptRetention = DefaultAttemptRetention
	}
	if c.CircuitFailures == 0 {
		c.CircuitFailures = DefaultCircuitFailures
	}
	if c.CircuitCooldown == 0 {
		c.CircuitCooldown = DefaultCircuitCooldown
	}
	if c.TailBatch == 0 {
		c.TailBatch = DefaultTailBatch
	}
	if c.RouteInbox == 0 {
		c.RouteInbox = DefaultRouteInbox
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Jitter == nil {
		c.Jitter = DefaultJitter
	}
	return c, nil
}

// Deps are the parts a Projector works on. All are required.
type Deps struct {
	Store eventstore.Store
	// State keeps checkpoints, retry queues, dead letters and the attempts
	// index. Both built-in backends implement it on their *Store.
	State eventstore.StateStore
	// Subs is the subscription service; it must be started.
	Subs *subscriptions.Service
}
