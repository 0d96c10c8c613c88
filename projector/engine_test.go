package projector_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

func TestFanOut(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		type tc struct {
			params subscriptions.CreateParams
			want   bool
		}
		cases := []tc{
			{subscriptions.CreateParams{}, true},                                // everything
			{subscriptions.CreateParams{EventTypes: []string{"order.*"}}, true}, // type prefix
			{subscriptions.CreateParams{Streams: []string{"order-42"}}, true},   // exact stream
			{subscriptions.CreateParams{Tenant: "acme", EventTypes: []string{"order.created"}}, true},
			{subscriptions.CreateParams{EventTypes: []string{"payment.*"}}, false}, // no match
		}
		rcs := make([]*receiver, len(cases))
		for i, c := range cases {
			rcs[i] = newReceiver(t)
			c.params.URL = rcs[i].URL()
			e.create(c.params)
		}
		time.Sleep(100 * time.Millisecond) // routes reach the head
		ev := e.appendN("order-42", "order.created", "acme", 1)[0]
		for i, c := range cases {
			if !c.want {
				continue
			}
			waitFor(t, 5*time.Second, "delivery", func() bool { return len(rcs[i].all()) > 0 })
		}
		time.Sleep(300 * time.Millisecond) // would a duplicate come?
		for i, c := range cases {
			hits := rcs[i].all()
			if !c.want {
				if len(hits) != 0 {
					t.Errorf("subscription %d (%+v) got %d deliveries, want none", i, c.params, len(hits))
				}
				continue
			}
			if len(hits) != 1 {
				t.Fatalf("subscription %d got %d deliveries, want exactly 1", i, len(hits))
			}
			if hits[0].ID != ev.ID.String() || hits[0].BodyID != ev.ID.String() {
				t.Errorf("subscription %d: webhook-id %s body id %s, want %s", i, hits[0].ID, hits[0].BodyID, ev.ID)
			}
		}
	})
}

func TestIsolation(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		const timeout = time.Second // what a route waiting on the hanging endpoint would see
		e := newEnv(t, open, func(c *projector.Config) { c.Delivery.Timeout = timeout })
		slow, fast := newReceiver(t), newReceiver(t)
		slow.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int {
			<-r.Context().Done() // hang until the client gives up
			return 0
		})
		retry := &subscriptions.RetryPolicy{Schedule: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}}
		sa := e.create(subscriptions.CreateParams{URL: slow.URL(), Retry: retry})
		e.create(subscriptions.CreateParams{URL: fast.URL(), Retry: retry})
		time.Sleep(100 * time.Millisecond)

		// 50 batches of 10 events over about 2.5s, while the slow
		// endpoint times out, retries and trips its circuit.
		appended := map[string]time.Time{}
		start := time.Now()
		for range 50 {
			at := time.Now()
			for _, ev := range e.appendBatch("iso-1", "thing.happened", 10) {
				appended[ev.ID.String()] = at
			}
			time.Sleep(50 * time.Millisecond)
		}
		n := len(appended)
		waitFor(t, 10*time.Second, "fast endpoint to get everything", func() bool { return fast.distinctOK() == n })
		took := time.Since(start)
		hits := fast.all()
		var lat []time.Duration
		for _, h := range hits {
			lat = append(lat, h.At.Sub(appended[h.ID]))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		t.Logf("fast endpoint: %d events in %s, append-to-receipt p50 %s p99 %s; slow endpoint: %d attempts",
			n, took, p50, p99, len(slow.all()))
		if len(hits) != n {
			t.Errorf("fast endpoint got %d requests for %d events (duplicates?)", len(hits), n)
		}
		// A route that waited on the hanging one even once would see the
		// timeout; half of it leaves room for a loaded CI machine under
		// -race (p99 up to 213 ms seen there) and still tells the two apart.
		if p99 > timeout/2 {
			t.Errorf("fast endpoint p99 latency %s while the other endpoint hangs", p99)
		}
		if len(slow.all()) <= 16 {
			t.Errorf("slow endpoint: %d attempts while the fast one was served, want its window's worth (16) timing out, then retries", len(slow.all()))
		}
		// Its first attempts time out a second after they began.
		var st projector.RouteStatus
		var err error
		for deadline := time.Now().Add(timeout + 5*time.Second); ; time.Sleep(10 * time.Millisecond) {
			st, err = e.p.Status(context.Background(), sa.ID)
			if err != nil {
				t.Fatal(err)
			}
			if st.FailingSince != nil || time.Now().After(deadline) {
				break
			}
		}
		if st.FailingSince == nil || st.LastSuccessAt != nil || st.Lag == 0 {
			t.Errorf("slow endpoint status %+v: want failing_since set, no success, a lag", st)
		}
	})
}

func TestRetryThenSuccess(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		rc := newReceiver(t)
		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int {
			if n <= 2 {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		sub := e.create(subscriptions.CreateParams{URL: rc.URL(), Retry: &subscriptions.RetryPolicy{Schedule: []time.Duration{20 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}}})
		time.Sleep(50 * time.Millisecond)
		ev := e.appendN("r-1", "thing.happened", "", 1)[0]
		waitFor(t, 5*time.Second, "success", func() bool { return rc.distinctOK() == 1 })
		hits := rc.all()
		if len(hits) != 3 {
			t.Fatalf("got %d requests, want 3 (two failures, one success)", len(hits))
		}
		for _, h := range hits {
			if h.ID != ev.ID.String() {
				t.Errorf("webhook-id %s, want %s on every attempt", h.ID, ev.ID)
			}
		}
		ctx := context.Background()
		waitFor(t, 5*time.Second, "attempts recorded", func() bool {
			as, err := e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{})
			return err == nil && len(as) == 3
		})
		as, _ := e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{})
		wantStatus := []string{projector.StatusSucceeded, projector.StatusFailed, projector.StatusFailed}
		for i, a := range as {
			if a.Attempt != 3-i || a.Status != wantStatus[i] || a.EventID != ev.ID.String() {
				t.Errorf("attempt %d: %+v, want attempt %d status %s (newest first)", i, a, 3-i, wantStatus[i])
			}
		}
		if as[1].StatusCode != 500 || as[1].NextAttemptAt == nil || as[1].Error == "" {
			t.Errorf("failed attempt %+v: want status_code 500, an error and next_attempt_at", as[1])
		}
		failed, _ := e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{Status: projector.StatusFailed, Limit: 1})
		if len(failed) != 1 || failed[0].Attempt != 2 {
			t.Errorf("status=failed limit=1: %+v, want attempt 2", failed)
		}
		byEvent, _ := e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{EventID: ev.ID.String(), Status: projector.StatusSucceeded})
		if len(byEvent) != 1 || byEvent[0].Attempt != 3 {
			t.Errorf("event_id + status=succeeded: %+v, want attempt 3", byEvent)
		}
		waitFor(t, 5*time.Second, "cursor past the event", func() bool {
			st, err := e.p.Status(ctx, sub.ID)
			return err == nil && !st.Cursor.Less(ev.Position) && st.Lag == 0
		})
		st, _ := e.p.Status(ctx, sub.ID)
		if st.State != "active" || st.LastSuccessAt == nil || st.FailingSince != nil || st.Circuit != projector.CircuitClosed || st.DeadLetters != 0 {
			t.Errorf("status %+v", st)
		}
		if _, err := e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{Status: "nope"}); err == nil {
			t.Error("status=nope: want an error")
		}
		if _, err := e.p.Status(ctx, "3f1c7c1e-0000-4000-8000-000000000000"); !errors.Is(err, subscriptions.ErrNotFound) {
			t.Errorf("unknown subscription: %v, want ErrNotFound", err)
		}
	})
}

func TestDeadLetterAndRedrive(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		rc := newReceiver(t)
		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusBadGateway })
		sub := e.create(subscriptions.CreateParams{URL: rc.URL(), Retry: &subscriptions.RetryPolicy{Schedule: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}}})
		time.Sleep(50 * time.Millisecond)
		evs := e.appendN("d-1", "thing.happened", "", 2)
		ctx := context.Background()
		waitFor(t, 5*time.Second, "two dead letters", func() bool {
			st, err := e.p.Status(ctx, sub.ID)
			return err == nil && st.DeadLetters == 2
		})
		if got := len(rc.all()); got != 6 {
			t.Errorf("%d requests, want 3 attempts for each of 2 events", got)
		}
		dead, _ := e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{Status: projector.StatusDead})
		if len(dead) != 2 || dead[0].Attempt != 3 {
			t.Fatalf("dead attempts %+v", dead)
		}
		waitFor(t, 5*time.Second, "cursor past the dead letters", func() bool {
			st, _ := e.p.Status(ctx, sub.ID)
			return !st.Cursor.Less(evs[1].Position) && st.Lag == 0
		})

		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusNoContent })
		n, err := e.p.Redrive(ctx, sub.ID)
		if err != nil || n != 2 {
			t.Fatalf("Redrive = %d, %v; want 2", n, err)
		}
		waitFor(t, 5*time.Second, "redriven deliveries", func() bool { return rc.distinctOK() == 2 })
		waitFor(t, 5*time.Second, "no dead letters", func() bool {
			st, _ := e.p.Status(ctx, sub.ID)
			return st.DeadLetters == 0
		})
		var as []projector.Attempt
		waitFor(t, 5*time.Second, "the redriven attempt recorded", func() bool {
			as, _ = e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{EventID: evs[0].ID.String()})
			return len(as) == 4
		})
		if len(as) != 4 || as[0].Status != projector.StatusSucceeded || as[0].Attempt != 4 {
			t.Errorf("attempts of the first event after redrive: %+v", as)
		}
		if n, err := e.p.Redrive(ctx, sub.ID); err != nil || n != 0 {
			t.Errorf("second Redrive = %d, %v; want 0", n, err)
		}
	})
}

func TestGoneDisables(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		rc := newReceiver(t)
		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusGone })
		sub := e.create(subscriptions.CreateParams{URL: rc.URL(), MaxInFlight: ptr(1)})
		time.Sleep(50 * time.Millisecond)
		e.appendN("g-1", "thing.happened", "", 3)
		ctx := context.Background()
		waitFor(t, 5*time.Second, "subscription disabled", func() bool {
			s, err := e.subs.Get(ctx, sub.ID)
			return err == nil && s.State == subscriptions.StateDisabled
		})
		time.Sleep(300 * time.Millisecond)
		if got := len(rc.all()); got != 1 {
			t.Errorf("%d requests after a 410, want 1", got)
		}
		s, _ := e.subs.Get(ctx, sub.ID)
		if s.DisabledReason == "" {
			t.Error("no disabled reason")
		}
		st, err := e.p.Status(ctx, sub.ID)
		if err != nil || st.State != subscriptions.StateDisabled || st.Lag != 3 {
			t.Errorf("status %+v %v: want disabled with lag 3 (the 410 event is not settled)", st, err)
		}
		// Resuming delivers from the cursor: the event that got 410 first.
		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int { return http.StatusOK })
		if _, err := e.subs.Resume(ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "delivery after resume", func() bool { return rc.distinctOK() == 3 })
	})
}

func TestRetryAfter(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		rc := newReceiver(t)
		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int {
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		})
		e.create(subscriptions.CreateParams{URL: rc.URL(), Retry: &subscriptions.RetryPolicy{Schedule: []time.Duration{10 * time.Millisecond}}})
		time.Sleep(50 * time.Millisecond)
		e.appendN("ra-1", "thing.happened", "", 1)
		waitFor(t, 5*time.Second, "success", func() bool { return rc.distinctOK() == 1 })
		hits := rc.all()
		if len(hits) != 2 {
			t.Fatalf("%d requests, want 2", len(hits))
		}
		if gap := hits[1].At.Sub(hits[0].At); gap < time.Second {
			t.Errorf("second attempt %s after a Retry-After: 1, want at least 1s", gap)
		}
	})
}

func TestOrderedNeverReorders(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, func(c *projector.Config) { c.CircuitFailures = 1000 })
		rc := newReceiver(t)
		calls := 0
		rc.setAnswer(func(w http.ResponseWriter, r *http.Request, n int) int {
			calls++ // one at a time: the route is ordered
			if calls%3 == 0 || n == 1 && calls%5 == 0 {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		e.create(subscriptions.CreateParams{URL: rc.URL(), Ordered: ptr(true), Retry: &subscriptions.RetryPolicy{Schedule: []time.Duration{5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}}})
		time.Sleep(50 * time.Millisecond)
		evs := e.appendN("o-1", "thing.happened", "", 40)
		want := ids(evs)
		waitFor(t, 10*time.Second, "all delivered", func() bool { return rc.distinctOK() == len(want) })
		// Every request, failed or not, is for the next undelivered event:
		// the sequence of ids is the log order with repeats for retries.
		var seq []string
		for _, h := range rc.all() {
			if len(seq) == 0 || seq[len(seq)-1] != h.ID {
				seq = append(seq, h.ID)
			}
		}
		if !slices.Equal(seq, want) {
			t.Errorf("request order differs from log order:\n got %v\nwant %v", seq, want)
		}
	})
}
