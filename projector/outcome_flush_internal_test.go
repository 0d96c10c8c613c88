package projector

import (
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/subscriptions"
)

// TestOutcomeFlushDefaultFollowsTheStore: the outcome batcher waits 25ms by
// default, but 10ms on a state store whose commits hold back the log's
// readers (PostgreSQL), and a configured OutcomeFlush wins on both.
func TestOutcomeFlushDefaultFollowsTheStore(t *testing.T) {
	emb, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Close() })
	pg := pgtest.NewStore(t)
	for _, c := range []struct {
		name  string
		store interface {
			eventstore.Store
			eventstore.StateStore
		}
		set, want time.Duration
	}{
		{"embedded", emb, 0, DefaultOutcomeFlush},
		{"postgres", pg, 0, HoldBackOutcomeFlush},
		{"embedded, set", emb, 7 * time.Millisecond, 7 * time.Millisecond},
		{"postgres, set", pg, 40 * time.Millisecond, 40 * time.Millisecond},
	} {
		subs, err := subscriptions.New(c.store, subscriptions.Config{})
		if err != nil {
			t.Fatal(err)
		}
		p, err := New(Config{OutcomeFlush: c.set}, Deps{Store: c.store, State: c.store, Subs: subs})
		if err != nil {
			t.Fatalf("%s: New: %v", c.name, err)
		}
		if p.cfg.OutcomeFlush != c.want {
			t.Errorf("%s: OutcomeFlush = %s, want %s", c.name, p.cfg.OutcomeFlush, c.want)
		}
	}
	if DefaultOutcomeFlush == HoldBackOutcomeFlush {
		t.Errorf("the two defaults are the same (%s)", DefaultOutcomeFlush)
	}
}
