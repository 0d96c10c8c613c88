package projector_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

// TestRestartKeepsRetryQueue: a pair waiting in the retry queue when the
// projector stops is retried by the next one, with its attempt count.
func TestRestartKeepsRetryQueue(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		var rcs []*receiver
		for _, ordered := range []bool{false, true} {
			rc := newReceiver(t)
			rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int {
				if n == 1 {
					return http.StatusInternalServerError
				}
				return http.StatusOK
			})
			rcs = append(rcs, rc)
			e.create(subscriptions.CreateParams{URL: rc.URL(), Ordered: ptr(ordered), Retry: &subscriptions.RetryPolicy{Schedule: []time.Duration{700 * time.Millisecond}}})
		}
		time.Sleep(50 * time.Millisecond)
		ev := e.appendN("rq-1", "thing.happened", "", 1)[0]
		for _, rc := range rcs {
			waitFor(t, 5*time.Second, "the first attempt", func() bool { return len(rc.all()) == 1 })
		}
		e.stop(5 * time.Second)
		e.start()
		for i, rc := range rcs {
			waitFor(t, 5*time.Second, "the retry after the restart", func() bool { return rc.distinctOK() == 1 })
			hits := rc.all()
			if gap := hits[1].At.Sub(hits[0].At); gap < 600*time.Millisecond {
				t.Errorf("subscription %d retried %s after the first attempt, want the 700ms schedule kept across the restart", i, gap)
			}
		}
		ctx := context.Background()
		for _, s := range e.subs.List(ctx, nil) {
			var as []projector.Attempt
			waitFor(t, 5*time.Second, "attempts recorded", func() bool {
				as, _ = e.p.Deliveries(ctx, s.ID, projector.DeliveriesQuery{EventID: ev.ID.String()})
				return len(as) == 2
			})
			if as[0].Attempt != 2 || as[0].Status != projector.StatusSucceeded {
				t.Errorf("ordered=%v: attempts %+v, want the second attempt to succeed", s.Ordered, as)
			}
		}
		time.Sleep(100 * time.Millisecond)
		for i, rc := range rcs {
			if n := len(rc.all()); n != 2 {
				t.Errorf("subscription %d: %d requests, want one failure and one success", i, n)
			}
		}
	})
}

// TestAttemptRetention: attempt records older than AttemptRetention are
// pruned; a subscription deleted while the projector was down loses its state.
func TestAttemptRetention(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		rc := newReceiver(t)
		keep := e.create(subscriptions.CreateParams{URL: rc.URL()})
		gone := e.create(subscriptions.CreateParams{URL: rc.URL()})
		time.Sleep(50 * time.Millisecond)
		e.appendN("ret-1", "thing.happened", "", 3)
		ctx := context.Background()
		waitFor(t, 5*time.Second, "attempts recorded", func() bool {
			a, _ := e.p.Deliveries(ctx, keep.ID, projector.DeliveriesQuery{})
			b, _ := e.p.Deliveries(ctx, gone.ID, projector.DeliveriesQuery{})
			return len(a) == 3 && len(b) == 3
		})
		e.stop(5 * time.Second)
		if err := e.subs.Delete(ctx, gone.ID); err != nil {
			t.Fatal(err)
		}
		e.cfg.AttemptRetention = time.Nanosecond
		e.start()
		waitFor(t, 5*time.Second, "old attempts pruned", func() bool {
			a, err := e.p.Deliveries(ctx, keep.ID, projector.DeliveriesQuery{})
			return err == nil && len(a) == 0
		})
		for _, q := range []projector.DeliveriesQuery{{Status: projector.StatusSucceeded}, {EventID: "not-a-uuid"}} {
			if a, err := e.p.Deliveries(ctx, keep.ID, q); err != nil || len(a) != 0 {
				t.Errorf("Deliveries(%+v) = %v, %v after pruning", q, a, err)
			}
		}
		waitFor(t, 5*time.Second, "the deleted subscription's state removed", func() bool { return e.stateKeys(gone.ID) == 0 })
		if e.stateKeys(keep.ID) == 0 {
			t.Error("the kept subscription has no state left")
		}
	})
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	store, state := openEmbedded(t)
	subs, err := subscriptions.New(store, subscriptions.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg   projector.Config
		field string
	}{
		{projector.Config{OutcomeBatch: -1}, "OutcomeBatch"},
		{projector.Config{TailBatch: 1 << 20}, "TailBatch"},
		{projector.Config{CircuitCooldown: -time.Second}, "CircuitCooldown"},
	} {
		_, err := projector.New(c.cfg, projector.Deps{Store: store, State: state, Subs: subs})
		if !errors.Is(err, projector.ErrInvalidProjectorConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("New(%+v) = %v, want an error naming %s", c.cfg, err, c.field)
		}
	}
	if _, err := projector.New(projector.Config{}, projector.Deps{Store: store, Subs: subs}); err == nil {
		t.Error("New without a StateStore: want an error")
	}
	p, err := projector.New(projector.Config{}, projector.Deps{Store: store, State: state, Subs: subs})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(context.Background()); err != nil { // never started
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); !errors.Is(err, projector.ErrNotRunning) {
		t.Errorf("Start after Stop = %v, want ErrNotRunning", err)
	}
}
