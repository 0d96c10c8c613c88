package projector_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

// TestSubscriptionChanges: create, update, pause, resume and delete take
// effect on the running projector within a second.
func TestSubscriptionChanges(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		ctx := context.Background()
		rc, rc2 := newReceiver(t), newReceiver(t)
		sub := e.create(subscriptions.CreateParams{URL: rc.URL()})
		e.appendN("c-1", "thing.happened", "", 1)
		waitFor(t, time.Second, "delivery to a subscription just created", func() bool { return rc.distinctOK() == 1 })

		if _, err := e.subs.Update(ctx, sub.ID, subscriptions.UpdateParams{URL: ptr(rc2.URL())}); err != nil {
			t.Fatal(err)
		}
		updated := time.Now()
		for rc2.distinctOK() == 0 { // an event appended at once may still go to the old URL
			if time.Since(updated) > time.Second {
				t.Fatal("no delivery to the updated URL within a second")
			}
			e.appendN("c-1", "thing.happened", "", 1)
			time.Sleep(20 * time.Millisecond)
		}
		waitFor(t, time.Second, "deliveries of events appended before the change", func() bool {
			return rc.distinctOK()+rc2.distinctOK() == len(e.matching("c-1"))
		})
		delivered := rc2.distinctOK()

		if _, err := e.subs.Pause(ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		paused := e.appendN("c-1", "thing.happened", "", 2)
		time.Sleep(500 * time.Millisecond)
		if n := rc2.distinctOK(); n != delivered {
			t.Fatalf("paused subscription got %d deliveries, want none after the pause", n-delivered)
		}
		st, err := e.p.Status(ctx, sub.ID)
		if err != nil || st.State != subscriptions.StatePaused || st.Lag != 2 {
			t.Errorf("paused status %+v, %v: want paused with lag 2", st, err)
		}
		if _, err := e.subs.Resume(ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, time.Second, "the events appended while paused", func() bool { return rc2.distinctOK() == delivered+2 })
		got := rc2.succeeded()
		if !slices.Contains(got, paused[0].ID.String()) || !slices.Contains(got, paused[1].ID.String()) {
			t.Errorf("after resume got %v, want the paused events", got)
		}

		if err := e.subs.Delete(ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		e.appendN("c-1", "thing.happened", "", 1)
		time.Sleep(500 * time.Millisecond)
		if n := len(rc2.all()); n != delivered+2 {
			t.Errorf("deleted subscription: %d requests, want none after the delete", n-delivered-2)
		}
		if _, err := e.p.Status(ctx, sub.ID); !errors.Is(err, subscriptions.ErrNotFound) {
			t.Errorf("status of a deleted subscription: %v", err)
		}
		if _, err := e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{}); !errors.Is(err, subscriptions.ErrNotFound) {
			t.Errorf("deliveries of a deleted subscription: %v", err)
		}
		waitFor(t, time.Second, "the deleted subscription's state removed", func() bool { return e.stateKeys(sub.ID) == 0 })
	})
}

// TestRestartResumes: a projector stopped while deliveries are in flight and
// a new one on the same store deliver every event, re-sending at most what
// was in flight, with the same webhook-id.
func TestRestartResumes(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		rc := newReceiver(t)
		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int {
			select {
			case <-time.After(10 * time.Millisecond):
			case <-r.Context().Done():
			}
			return http.StatusOK
		})
		const window = 4
		sub := e.create(subscriptions.CreateParams{URL: rc.URL(), MaxInFlight: ptr(window)})
		time.Sleep(50 * time.Millisecond)
		evs := e.appendBatch("rs-1", "thing.happened", 200)
		waitFor(t, 10*time.Second, "some deliveries", func() bool { return len(rc.all()) >= 40 })
		e.stop(time.Millisecond) // abandon what is in flight
		stoppedAt := len(rc.all())
		time.Sleep(50 * time.Millisecond)
		if n := len(rc.all()); n > stoppedAt+window {
			t.Errorf("%d requests after Stop returned", n-stoppedAt)
		}
		e.start()
		waitFor(t, 20*time.Second, "every event", func() bool { return rc.distinctOK() == len(evs) })
		perID := map[string]int{}
		for _, h := range rc.all() {
			if h.ID != h.BodyID {
				t.Fatalf("webhook-id %s differs from the body's id %s", h.ID, h.BodyID)
			}
			perID[h.ID]++
		}
		dups := 0
		for _, n := range perID {
			dups += n - 1
		}
		t.Logf("stopped after %d requests; %d re-sent after the restart", stoppedAt, dups)
		if dups > window {
			t.Errorf("%d events sent twice, want at most the %d in flight", dups, window)
		}
		// A graceful stop and restart re-sends nothing.
		e.stop(5 * time.Second)
		before := len(rc.all())
		e.start()
		more := e.appendBatch("rs-1", "thing.happened", 10)
		waitFor(t, 5*time.Second, "events after the second restart", func() bool { return rc.distinctOK() == len(evs)+len(more) })
		time.Sleep(100 * time.Millisecond)
		if n := len(rc.all()) - before; n != len(more) {
			t.Errorf("after a graceful restart %d requests for %d new events", n, len(more))
		}
		// The cursor passes an event once its attempt is recorded, a batch
		// commit after the receiver answered: wait for it rather than guess.
		var st projector.RouteStatus
		var err error
		settled := func() bool {
			st, err = e.p.Status(context.Background(), sub.ID)
			return err == nil && (!st.Cursor.Less(more[len(more)-1].Position) || st.Lag == 0)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !settled() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !settled() {
			t.Errorf("status after 5s: %+v, %v", st, err)
		}
	})
}

// TestStartBeginning: a subscription starting at the beginning gets the
// history in order, then live events, with no gap or duplicate at the seam,
// also when its inbox overflows and it detaches and rejoins the tail.
func TestStartBeginning(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, func(c *projector.Config) { c.TailBatch, c.RouteInbox = 8, 8 })
		history := e.appendBatch("sb-1", "thing.happened", 300)
		other := e.appendBatch("sb-2", "other.thing", 50) // not matched
		_ = other
		ordered, unordered := newReceiver(t), newReceiver(t)
		e.create(subscriptions.CreateParams{URL: ordered.URL(), Start: &subscriptions.StartSpec{Kind: subscriptions.StartBeginning}, Ordered: ptr(true), EventTypes: []string{"thing.*"}})
		e.create(subscriptions.CreateParams{URL: unordered.URL(), Start: &subscriptions.StartSpec{Kind: subscriptions.StartBeginning}, EventTypes: []string{"thing.*"}})
		var live []eventstore.AppendedEvent
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 10 {
				live = append(live, e.appendN("sb-1", "thing.happened", "", 5)...)
				e.appendN("sb-2", "other.thing", "", 5)
				time.Sleep(5 * time.Millisecond)
			}
		})
		wg.Wait()
		want := append(ids(history), ids(live)...)
		waitFor(t, 20*time.Second, "history and live events", func() bool {
			return ordered.distinctOK() == len(want) && unordered.distinctOK() == len(want)
		})
		time.Sleep(100 * time.Millisecond)
		if got := ordered.succeeded(); !slices.Equal(got, want) {
			t.Errorf("ordered route: %d deliveries, not the %d events in log order", len(got), len(want))
		}
		if got := unordered.succeeded(); len(got) != len(want) {
			t.Errorf("unordered route: %d deliveries for %d events (duplicates at the seam?)", len(got), len(want))
		}
	})
}

func TestRateLimit(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		rc := newReceiver(t)
		e.create(subscriptions.CreateParams{URL: rc.URL(), RateLimit: ptr(20.0)})
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		e.appendBatch("rl-1", "thing.happened", 21)
		waitFor(t, 5*time.Second, "deliveries", func() bool { return rc.distinctOK() == 21 })
		if took := time.Since(start); took < 900*time.Millisecond {
			t.Errorf("21 deliveries at 20/s took %s, want about 1s", took)
		}
	})
}

// TestCircuit: a failing endpoint opens the circuit (the route stops sending
// and reading), probes after the cooldown, and closes on the first success.
func TestCircuit(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, func(c *projector.Config) {
			c.CircuitFailures, c.CircuitCooldown = 3, 300*time.Millisecond
		})
		rc := newReceiver(t)
		var mu sync.Mutex
		down := true
		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int {
			mu.Lock()
			defer mu.Unlock()
			if down {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		retry := &subscriptions.RetryPolicy{Schedule: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}}
		sub := e.create(subscriptions.CreateParams{URL: rc.URL(), MaxInFlight: ptr(1), Retry: retry})
		time.Sleep(50 * time.Millisecond)
		evs := e.appendBatch("ci-1", "thing.happened", 100)
		ctx := context.Background()
		waitFor(t, 5*time.Second, "circuit open", func() bool {
			st, _ := e.p.Status(ctx, sub.ID)
			return st.Circuit == projector.CircuitOpen
		})
		time.Sleep(time.Second)
		// 3 failures open it; in a second: probes at +300ms and +900ms (the
		// cooldown doubles after a failed probe).
		if n := len(rc.all()); n > 6 {
			t.Errorf("%d attempts while the circuit was open, want 3 plus a few probes", n)
		}
		st, _ := e.p.Status(ctx, sub.ID)
		if st.FailingSince == nil || st.Lag < 90 {
			t.Errorf("status while open %+v", st)
		}
		mu.Lock()
		down = false
		mu.Unlock()
		waitFor(t, 10*time.Second, "every event after recovery", func() bool { return rc.distinctOK() == len(evs) })
		waitFor(t, 5*time.Second, "closed circuit and no lag", func() bool {
			st, _ := e.p.Status(ctx, sub.ID)
			return st.Circuit == projector.CircuitClosed && st.Lag == 0 && st.FailingSince == nil
		})
	})
}
