package replays_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/replays"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// forStores runs fn on a fresh embedded store and a fresh PostgreSQL schema.
func forStores(t *testing.T, fn func(t *testing.T, store eventstore.Store)) {
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		s, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		fn(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, pgtest.NewStore(t))
	})
}

func newService(t *testing.T, store eventstore.Store, cfg replays.Config) *replays.Service {
	t.Helper()
	s, err := replays.New(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

var (
	t0  = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	sub = uuid.Must(uuid.NewV7()).String()
)

func request(t *testing.T, s *replays.Service, mod func(*replays.RequestParams)) replays.Replay {
	t.Helper()
	p := replays.RequestParams{Subscriptions: []string{sub}, From: t0, To: t0.Add(time.Hour), Total: 10, StartPosition: eventstore.Position{Lo: 7}}
	if mod != nil {
		mod(&p)
	}
	r, err := s.Request(context.Background(), p)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	return r
}

func TestRequestValidates(t *testing.T) {
	t.Parallel()
	store, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s := newService(t, store, replays.Config{MaxWindow: 48 * time.Hour})
	for name, c := range map[string]struct {
		p     replays.RequestParams
		field string
	}{
		"to before from":   {replays.RequestParams{Subscriptions: []string{sub}, From: t0, To: t0.Add(-time.Second)}, "to"},
		"to equals from":   {replays.RequestParams{Subscriptions: []string{sub}, From: t0, To: t0}, "to"},
		"window too long":  {replays.RequestParams{Subscriptions: []string{sub}, From: t0, To: t0.Add(49 * time.Hour)}, "to"},
		"no from":          {replays.RequestParams{Subscriptions: []string{sub}, To: t0}, "from"},
		"no subscriptions": {replays.RequestParams{From: t0, To: t0.Add(time.Hour)}, "subscriptions"},
		"bad type":         {replays.RequestParams{Subscriptions: []string{sub}, From: t0, To: t0.Add(time.Hour), EventTypes: []string{"a*b"}}, "event_types[0]"},
	} {
		_, err := s.Request(context.Background(), c.p)
		var ve *eventstore.ValidationError
		if !errors.As(err, &ve) || ve.Fields[c.field] == "" {
			t.Errorf("%s: got %v, want a validation error on %q", name, err, c.field)
		}
	}
	if n := len(s.List(context.Background(), nil)); n != 0 {
		t.Errorf("rejected requests wrote %d replays", n)
	}
	// Exactly the maximum is fine.
	request(t, s, func(p *replays.RequestParams) { p.To = p.From.Add(48 * time.Hour) })
}

func TestLifecycleAndRebuild(t *testing.T) {
	forStores(t, func(t *testing.T, store eventstore.Store) {
		ctx := context.Background()
		s := newService(t, store, replays.Config{})
		r := request(t, s, func(p *replays.RequestParams) {
			p.Tenant, p.EventTypes, p.TotalEstimated = "acme", []string{"order.*"}, true
		})
		if r.Status != replays.StatusRunning || r.Total != 10 || !r.TotalEstimated || r.StartPosition.Lo != 7 || r.Tenant != "acme" {
			t.Fatalf("requested: %+v", r)
		}
		parts := []replays.Part{{SubscriptionID: sub, Cursor: eventstore.Position{Lo: 9}, Delivered: 3, Failed: 1}}
		if r, _ = s.Progress(ctx, r.ID, parts); r.Delivered != 3 || r.Failed != 1 || r.Status != replays.StatusRunning {
			t.Fatalf("progressed: %+v", r)
		}
		// Progress that changes nothing writes nothing.
		v := versionOf(t, store)
		if _, err := s.Progress(ctx, r.ID, parts); err != nil {
			t.Fatal(err)
		}
		if versionOf(t, store) != v {
			t.Error("an unchanged progress was written")
		}
		parts[0].Delivered, parts[0].Done = 11, true
		if r, _ = s.Complete(ctx, r.ID, parts); r.Status != replays.StatusCompleted || r.Delivered != 11 || r.Total != 12 || r.TotalEstimated || r.FinishedAt.IsZero() {
			t.Fatalf("completed: %+v", r)
		}
		// Finished: no more changes.
		if _, err := s.Cancel(ctx, r.ID, nil); !errors.Is(err, replays.ErrFinished) {
			t.Errorf("cancel a completed replay: %v, want ErrFinished", err)
		}
		if got, _ := s.Progress(ctx, r.ID, nil); got.Delivered != 11 {
			t.Errorf("progress after completion changed it: %+v", got)
		}

		c := request(t, s, nil)
		if c, _ = s.Cancel(ctx, c.ID, []replays.Part{{SubscriptionID: sub, Delivered: 2}}); c.Status != replays.StatusCancelled || c.Delivered != 2 {
			t.Fatalf("cancelled: %+v", c)
		}
		if again, err := s.Cancel(ctx, c.ID, nil); err != nil || again.Status != replays.StatusCancelled {
			t.Errorf("cancelling twice: %+v, %v", again, err)
		}
		f := request(t, s, nil)
		if f, _ = s.Fail(ctx, f.ID, "boom"); f.Status != replays.StatusFailed || f.Error != "boom" {
			t.Fatalf("failed: %+v", f)
		}
		if _, err := s.Get(ctx, uuid.NewString()); !errors.Is(err, replays.ErrNotFound) || !errors.Is(err, eventstore.ErrNotFound) {
			t.Errorf("unknown id: %v", err)
		}
		if _, err := s.Get(ctx, "nope"); !errors.Is(err, replays.ErrNotFound) {
			t.Errorf("malformed id: %v", err)
		}

		// The log is the truth: a new service folds the same model.
		s2 := newService(t, store, replays.Config{})
		for _, want := range s.List(ctx, nil) {
			got, err := s2.Get(ctx, want.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != want.Status || got.Delivered != want.Delivered || got.Total != want.Total || got.TotalEstimated != want.TotalEstimated ||
				!got.CreatedAt.Equal(want.CreatedAt) || !got.From.Equal(want.From) || got.Error != want.Error {
				t.Errorf("rebuilt %+v, want %+v", got, want)
			}
		}
		list := s2.List(ctx, nil)
		if len(list) != 3 || list[0].ID != f.ID {
			t.Errorf("list: %d replays, first %s; want 3, newest (%s) first", len(list), list[0].ID, f.ID)
		}
		acme := "acme"
		if got := s2.List(ctx, &acme); len(got) != 1 || got[0].ID != r.ID {
			t.Errorf("tenant list: %v", got)
		}
		if got := s2.Running(); len(got) != 0 {
			t.Errorf("running: %v", got)
		}
	})
}

func versionOf(t *testing.T, store eventstore.Store) int {
	t.Helper()
	evs, err := store.ReadStream(context.Background(), eventstore.ReadStreamParams{Stream: replays.Stream, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}
