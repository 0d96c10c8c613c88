package projector_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/replays"
	"github.com/hooklog/hooklog/subscriptions"
)

// replayHit is one request a replayReceiver got.
type replayHit struct {
	ID     string // webhook-id
	Replay string // webhook-replay, "" for live deliveries
	At     time.Time
}

// replayReceiver records every request with its webhook-replay header and
// answers 200 (after delay, when set).
type replayReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	hits  []replayHit
	delay atomic.Int64 // nanoseconds
}

func newReplayReceiver(t testing.TB) *replayReceiver {
	rc := &replayReceiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := replayHit{ID: r.Header.Get("webhook-id"), Replay: r.Header.Get("webhook-replay"), At: time.Now()}
		if d := time.Duration(rc.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return // abandoned by the projector: not counted
			}
		}
		rc.mu.Lock()
		rc.hits = append(rc.hits, h)
		rc.mu.Unlock()
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *replayReceiver) URL() string { return rc.srv.URL + "/hook" }

// ids returns the webhook-ids of the requests of one replay ("" = live), in
// arrival order.
func (rc *replayReceiver) ids(replay string) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, h := range rc.hits {
		if h.Replay == replay {
			out = append(out, h.ID)
		}
	}
	return out
}

func (rc *replayReceiver) count(replay string) int { return len(rc.ids(replay)) }

func (rc *replayReceiver) replayed() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, h := range rc.hits {
		if h.Replay != "" {
			n++
		}
	}
	return n
}

// waitReplay waits for a replay to reach a status other than running.
func waitReplay(t testing.TB, p *projector.Projector, id string, timeout time.Duration) replays.Replay {
	t.Helper()
	var r replays.Replay
	waitFor(t, timeout, "the replay to finish", func() bool {
		var err error
		r, err = p.Replay(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return !r.Running()
	})
	return r
}

// TestReplayMiddleWindow: three batches of events appended more than a
// second apart; a replay of the middle window delivers exactly the middle
// batch, marked as a replay, to each named subscription whose filters match,
// and nothing to the others. Replays start deliveries in log order; an
// ordered subscription receives them in log order (an unordered one has up
// to half its max_in_flight replay attempts in flight, which may arrive in
// any order, as its live deliveries do).
func TestReplayMiddleWindow(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		ctx := context.Background()
		all, ordered, other, unnamed := newReplayReceiver(t), newReplayReceiver(t), newReplayReceiver(t), newReplayReceiver(t)
		subAll := e.create(subscriptions.CreateParams{URL: all.URL()})
		subOrdered := e.create(subscriptions.CreateParams{URL: ordered.URL(), EventTypes: []string{"thing.*"}, Ordered: ptr(true)})
		subOther := e.create(subscriptions.CreateParams{URL: other.URL(), EventTypes: []string{"other.*"}})
		e.create(subscriptions.CreateParams{URL: unnamed.URL()})

		const n = 40
		batch := func() []eventstore.AppendedEvent {
			var out []eventstore.AppendedEvent
			for range n / 10 {
				out = append(out, e.appendN("mw-1", "thing.happened", "", 10)...)
			}
			return out
		}
		b1 := batch()
		time.Sleep(1100 * time.Millisecond)
		from := time.Now()
		b2 := batch()
		to := time.Now()
		time.Sleep(1100 * time.Millisecond)
		b3 := batch()
		waitFor(t, 20*time.Second, "live deliveries", func() bool {
			return all.count("") == 3*n && ordered.count("") == 3*n && unnamed.count("") == 3*n
		})
		_, _ = b1, b3

		r, err := e.p.CreateReplay(ctx, projector.ReplayParams{Subscriptions: []string{subAll.ID, subOrdered.ID, subOther.ID}, From: from, To: to})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != replays.StatusRunning || r.Total != 2*n || r.TotalEstimated {
			t.Errorf("requested: status %s total %d (estimated %v), want running, %d exact", r.Status, r.Total, r.TotalEstimated, 2*n)
		}
		r = waitReplay(t, e.p, r.ID, 20*time.Second)
		if r.Status != replays.StatusCompleted || r.Delivered != 2*n || r.Failed != 0 || r.Total != 2*n {
			t.Errorf("finished: %+v, want completed with %d delivered", r, 2*n)
		}
		want := ids(b2)
		if got := ordered.ids(r.ID); !slices.Equal(got, want) {
			t.Errorf("ordered subscription: replay delivered %d events, want the %d of the middle batch in log order", len(got), len(want))
		}
		got := all.ids(r.ID)
		if !slices.Equal(sortedCopy(got), sortedCopy(want)) {
			t.Errorf("unordered subscription: replay delivered %d events, want exactly the %d of the middle batch", len(got), len(want))
		}
		if other.replayed() != 0 || unnamed.replayed() != 0 {
			t.Errorf("replayed to a subscription whose filter does not match (%d) or that was not named (%d)", other.replayed(), unnamed.replayed())
		}
		// The attempts log shows the replay.
		atts, err := e.p.Deliveries(ctx, subAll.ID, projector.DeliveriesQuery{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		replayed := 0
		for _, a := range atts {
			if a.ReplayID == r.ID {
				replayed++
			}
		}
		if replayed != n {
			t.Errorf("deliveries list %d attempts with replay_id, want %d", replayed, n)
		}
	})
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// TestReplayCancel: cancelling a replay stops its deliveries within a second.
func TestReplayCancel(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		ctx := context.Background()
		rc := newReplayReceiver(t)
		rc.delay.Store(int64(20 * time.Millisecond))
		from := time.Now()
		e.appendBatch("rc-1", "thing.happened", 2000)
		// Created after the events: the replay is the only traffic (live
		// work would go first).
		sub := e.create(subscriptions.CreateParams{URL: rc.URL(), MaxInFlight: ptr(4)})
		r, err := e.p.CreateReplay(ctx, projector.ReplayParams{Subscriptions: []string{sub.ID}, From: from, To: time.Now().Add(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "some replayed deliveries", func() bool { return rc.count(r.ID) >= 20 })
		// Progress counts recorded attempts, a batch commit behind the
		// receiver (long behind on a loaded machine): cancel once some are.
		waitFor(t, 10*time.Second, "some replayed deliveries recorded", func() bool {
			got, err := e.p.Replay(ctx, r.ID)
			return err == nil && got.Delivered > 0
		})
		cancelled, err := e.p.CancelReplay(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		if cancelled.Status != replays.StatusCancelled {
			t.Fatalf("status %s after cancel", cancelled.Status)
		}
		time.Sleep(1500 * time.Millisecond)
		rc.mu.Lock()
		late := 0
		for _, h := range rc.hits {
			if h.Replay == r.ID && h.At.After(at.Add(time.Second)) {
				late++
			}
		}
		rc.mu.Unlock()
		if late > 0 {
			t.Errorf("%d replayed deliveries started more than a second after the cancel", late)
		}
		got, _ := e.p.Replay(ctx, r.ID)
		if got.Status != replays.StatusCancelled || got.Delivered >= 2000 || got.Delivered == 0 {
			t.Errorf("after cancel: %+v", got)
		}
		if _, err := e.p.CancelReplay(ctx, r.ID); err != nil {
			t.Errorf("cancelling twice: %v", err)
		}
		// Live delivery goes on.
		e.appendN("rc-1", "thing.happened", "", 1)
		waitFor(t, 10*time.Second, "live delivery after the cancel", func() bool { return rc.count("") == 1 })
	})
}

// TestReplayRestart: a projector stopped abruptly in the middle of a replay
// resumes it after a restart and finishes it, every event of the window
// delivered at least once and counted once.
func TestReplayRestart(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		ctx := context.Background()
		rc := newReplayReceiver(t)
		rc.delay.Store(int64(2 * time.Millisecond))
		from := time.Now()
		const n = 3000
		evs := e.appendBatch("rr-1", "thing.happened", n)
		sub := e.create(subscriptions.CreateParams{URL: rc.URL()})
		r, err := e.p.CreateReplay(ctx, projector.ReplayParams{Subscriptions: []string{sub.ID}, From: from, To: time.Now().Add(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "a part of the replay", func() bool { return rc.count(r.ID) >= n/3 })
		e.stop(time.Millisecond) // abandon what is in flight
		mid := rc.count(r.ID)
		if mid >= n {
			t.Fatalf("the replay finished before the stop (%d deliveries)", mid)
		}
		e.start()
		r = waitReplay(t, e.p, r.ID, 30*time.Second)
		if r.Status != replays.StatusCompleted || r.Delivered != n || r.Failed != 0 {
			t.Errorf("after restart: %+v, want completed with %d delivered", r, n)
		}
		got := map[string]bool{}
		for _, id := range rc.ids(r.ID) {
			got[id] = true
		}
		for _, id := range ids(evs) {
			if !got[id] {
				t.Fatalf("event %s of the window was never replayed", id)
			}
		}
		t.Logf("%d events, %d replayed deliveries before the stop, %d in all (%d sent again)", n, mid, rc.count(r.ID), rc.count(r.ID)-n)
		// The finished replay's state is cleaned up.
		waitFor(t, 5*time.Second, "the replay's state to be deleted", func() bool {
			k := 0
			_ = e.state.ScanState(ctx, eventstore.ScanParams{Bucket: "projector.replays"}, func(_, _ []byte) error { k++; return nil })
			return k == 0
		})
	})
}

// TestReplayRequestErrors: unknown subscriptions, another tenant's
// subscription and bad windows are refused and write nothing.
func TestReplayRequestErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, openEmbedded, func(c *projector.Config) { c.Replay.MaxWindow = time.Hour })
	ctx := context.Background()
	rc := newReplayReceiver(t)
	acme := e.create(subscriptions.CreateParams{URL: rc.URL(), Tenant: "acme"})
	now := time.Now()
	tenant := "globex"
	for name, p := range map[string]projector.ReplayParams{
		"unknown":        {Subscriptions: []string{"0190d2a0-0000-7000-8000-000000000000"}, From: now.Add(-time.Minute), To: now},
		"not an id":      {Subscriptions: []string{"nope"}, From: now.Add(-time.Minute), To: now},
		"other tenant":   {Subscriptions: []string{acme.ID}, Tenant: &tenant, From: now.Add(-time.Minute), To: now},
		"none":           {From: now.Add(-time.Minute), To: now},
		"all, none":      {All: true, Tenant: &tenant, From: now.Add(-time.Minute), To: now},
		"to before from": {Subscriptions: []string{acme.ID}, From: now, To: now.Add(-time.Minute)},
		"too long":       {Subscriptions: []string{acme.ID}, From: now.Add(-2 * time.Hour), To: now},
	} {
		if _, err := e.p.CreateReplay(ctx, p); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("%s: %v, want a validation error", name, err)
		}
	}
	if got := e.p.Replays(ctx, nil); len(got) != 0 {
		t.Errorf("refused requests wrote %d replays", len(got))
	}
	acmeName := "acme"
	r, err := e.p.CreateReplay(ctx, projector.ReplayParams{All: true, Tenant: &acmeName, From: now.Add(-time.Minute), To: now})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Subscriptions, []string{acme.ID}) || r.Tenant != "acme" || !r.All {
		t.Errorf("all for acme: %+v", r)
	}
}

// TestReplayFailuresNeverDeadLetter: a replay's failing deliveries follow the
// subscription's retry schedule and are then counted as failed; they never
// reach the route's retry queue or dead letters, and live delivery goes on.
func TestReplayFailuresNeverDeadLetter(t *testing.T) {
	forStores(t, func(t *testing.T, open opener) {
		e := newEnv(t, open, nil)
		ctx := context.Background()
		rc := newReceiver(t)
		from := time.Now()
		good := e.appendN("rf-1", "thing.good", "", 5)
		bad := e.appendN("rf-1", "thing.bad", "", 3)
		to := time.Now()
		badIDs := map[string]bool{}
		for _, id := range ids(bad) {
			badIDs[id] = true
		}
		// Replayed deliveries of the bad events fail; everything else succeeds.
		rc.setAnswer(func(_ http.ResponseWriter, r *http.Request, _ int) int {
			if r.Header.Get("webhook-replay") != "" && badIDs[r.Header.Get("webhook-id")] {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		sub := e.create(subscriptions.CreateParams{URL: rc.URL(), Retry: &subscriptions.RetryPolicy{Schedule: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}, MaxAge: time.Hour}})
		r, err := e.p.CreateReplay(ctx, projector.ReplayParams{Subscriptions: []string{sub.ID}, From: from, To: to})
		if err != nil {
			t.Fatal(err)
		}
		live := e.appendN("rf-2", "thing.live", "", 1)
		r = waitReplay(t, e.p, r.ID, 20*time.Second)
		if r.Status != replays.StatusCompleted || r.Delivered != int64(len(good)) || r.Failed != int64(len(bad)) {
			t.Errorf("replay: %s, %d delivered, %d failed; want completed, %d and %d", r.Status, r.Delivered, r.Failed, len(good), len(bad))
		}
		for _, id := range ids(bad) {
			n := 0
			for _, h := range rc.all() {
				if h.ID == id {
					n++
				}
			}
			if n != 3 {
				t.Errorf("bad event %s: %d attempts, want 3 (the first and the schedule's two retries)", id, n)
			}
		}
		waitFor(t, 10*time.Second, "the live delivery", func() bool { return slices.Contains(rc.succeeded(), live[0].ID.String()) })
		st, err := e.p.Status(ctx, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st.DeadLetters != 0 {
			t.Errorf("%d dead letters from a replay", st.DeadLetters)
		}
		atts, err := e.p.Deliveries(ctx, sub.ID, projector.DeliveriesQuery{Status: projector.StatusDead})
		if err != nil {
			t.Fatal(err)
		}
		if len(atts) != 0 {
			t.Errorf("%d dead attempts listed", len(atts))
		}
	})
}
