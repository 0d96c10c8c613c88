package subscriptions

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend opens real stores for a test.
type backend struct {
	name string
	// open returns a fresh empty store owned by t, and a function that opens
	// another handle on the same data. For PostgreSQL the handles can be open
	// at once (two processes); the embedded store allows one at a time, so
	// its second handle may only be opened after the first is closed.
	open func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store)
	// shared reports whether two handles can be open together.
	shared bool
}

var backends = []backend{
	{
		name: "embedded",
		open: func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store) {
			dir := t.TempDir()
			open := func(t *testing.T) eventstore.Store {
				s, err := embedded.Open(embedded.Config{Path: dir, NoSync: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return s
			}
			return open(t), open
		},
	},
	{
		name:   "postgres",
		shared: true,
		open: func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store) {
			schema := pgtest.Schema(t)
			open := func(t *testing.T) eventstore.Store { return pgtest.Open(t, schema) }
			return open(t), open
		},
	},
}

// forEachBackend runs fn once per backend, in parallel subtests.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b)
		})
	}
}

// testClock is a settable clock, advancing by a microsecond per reading so
// every command gets a distinct time.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Add(int64(time.Microsecond))).UTC() }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// startService starts a Service on store and stops it when t ends.
func startService(t *testing.T, store eventstore.Store, cfg Config) *Service {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = newTestClock().Now
	}
	s, err := New(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func head(t *testing.T, s eventstore.Store) eventstore.Position {
	t.Helper()
	h, err := s.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
