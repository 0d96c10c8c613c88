package subscriptions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

func ptr[T any](v T) *T { return &v }

const hookURL = "http://127.0.0.1:9/hooks"

func TestLifecycleRoundTrip(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, _ := b.open(t)
		clock := newTestClock()
		svc := startService(t, store, Config{AllowPrivateNetworks: true, Now: clock.Now, RotationGrace: time.Hour})

		// Some traffic before: "now" must start after it.
		if _, err := store.Append(ctx, eventstore.AppendParams{Stream: "order-1", Events: []eventstore.ProposedEvent{{Type: "order.created", Data: json.RawMessage(`{}`)}}}); err != nil {
			t.Fatal(err)
		}
		before := head(t, store)
		sub, err := svc.Create(ctx, CreateParams{
			URL: hookURL, Description: "fulfillment", EventTypes: []string{"payment.*"}, Streams: []string{"order-*"},
			Tenant: "acme", Ordered: ptr(true), MaxInFlight: ptr(4), RateLimit: ptr(2.5), Headers: map[string]string{"X-Team": "ops"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eventstoreUUID(sub.ID); err != nil {
			t.Fatalf("id %q: %v", sub.ID, err)
		}
		if sub.State != StateActive || sub.URL != hookURL || sub.Tenant != "acme" || !sub.Ordered || sub.MaxInFlight != 4 ||
			sub.RateLimit != 2.5 || sub.Headers["X-Team"] != "ops" || sub.Start.Kind != StartNow || sub.StartPosition != before {
			t.Fatalf("created: %+v", sub)
		}
		if !reflect.DeepEqual(sub.Retry, DefaultRetryPolicy()) {
			t.Fatalf("retry = %+v", sub.Retry)
		}
		if len(sub.Secrets) != 1 || !strings.HasPrefix(sub.Secrets[0].Value, "whsec_") || len(sub.Secrets[0].Value) != len("whsec_")+44 {
			t.Fatalf("secrets = %+v", sub.Secrets)
		}
		got, err := svc.Get(ctx, sub.ID)
		if err != nil || !reflect.DeepEqual(got, sub) {
			t.Fatalf("Get = %+v, %v; want %+v", got, err, sub)
		}
		if _, err := svc.Get(ctx, strings.ToUpper(sub.ID)); err != nil {
			t.Fatalf("upper-case id: %v", err)
		}

		// Update: only changes are recorded; a no-op writes nothing.
		upd, err := svc.Update(ctx, sub.ID, UpdateParams{Description: ptr("billing"), EventTypes: &[]string{}, MaxInFlight: ptr(4),
			Retry: &RetryPolicy{Schedule: []time.Duration{time.Second, time.Minute}}})
		if err != nil {
			t.Fatal(err)
		}
		if upd.Description != "billing" || len(upd.EventTypes) != 0 || upd.Retry.MaxAge != 72*time.Hour || len(upd.Retry.Schedule) != 2 || !upd.UpdatedAt.After(sub.UpdatedAt) {
			t.Fatalf("updated: %+v", upd)
		}
		h := head(t, store)
		if again, err := svc.Update(ctx, sub.ID, UpdateParams{Description: ptr("billing"), MaxInFlight: ptr(4)}); err != nil || !reflect.DeepEqual(again, upd) {
			t.Fatalf("no-op update: %+v, %v", again, err)
		}
		if head(t, store) != h {
			t.Fatal("no-op update wrote")
		}

		// Pause, resume, disable, resume.
		p, err := svc.Pause(ctx, sub.ID)
		if err != nil || p.State != StatePaused {
			t.Fatalf("pause: %+v, %v", p, err)
		}
		h = head(t, store)
		if _, err := svc.Pause(ctx, sub.ID); err != nil || head(t, store) != h {
			t.Fatalf("second pause: %v (wrote: %v)", err, head(t, store) != h)
		}
		r, err := svc.Resume(ctx, sub.ID)
		if err != nil || r.State != StateActive {
			t.Fatalf("resume: %+v, %v", r, err)
		}
		if err := svc.Disable(ctx, sub.ID, "endpoint answered 410 Gone"); err != nil {
			t.Fatal(err)
		}
		d, _ := svc.Get(ctx, sub.ID)
		if d.State != StateDisabled || d.DisabledReason != "endpoint answered 410 Gone" {
			t.Fatalf("disabled: %+v", d)
		}
		if r, err := svc.Resume(ctx, sub.ID); err != nil || r.State != StateActive || r.DisabledReason != "" {
			t.Fatalf("resume disabled: %+v, %v", r, err)
		}

		// Rotation: new secret first, old kept for the grace period.
		old := sub.Secrets[0].Value
		rot, err := svc.RotateSecret(ctx, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(rot.Secrets) != 2 || rot.Secrets[1].Value != old || rot.Secrets[0].Value == old || rot.Secrets[0].ExpiresAt != nil || rot.Secrets[1].ExpiresAt == nil {
			t.Fatalf("rotated secrets: %+v", rot.Secrets)
		}
		now := clock.Now()
		if got := rot.ActiveSecrets(now); len(got) != 2 || got[0] != rot.Secrets[0].Value || got[1] != old {
			t.Fatalf("ActiveSecrets = %v", got)
		}
		if got := rot.ActiveSecrets(now.Add(time.Hour + time.Second)); len(got) != 1 || got[0] != rot.Secrets[0].Value {
			t.Fatalf("ActiveSecrets after grace = %v", got)
		}
		clock.Advance(2 * time.Hour)
		rot2, err := svc.RotateSecret(ctx, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(rot2.Secrets) != 2 || rot2.Secrets[1].Value != rot.Secrets[0].Value {
			t.Fatalf("second rotation should drop the expired secret: %+v", rot2.Secrets)
		}

		// A second subscription; List is ordered by creation and filters by tenant.
		other, err := svc.Create(ctx, CreateParams{URL: hookURL, Start: &StartSpec{Kind: StartBeginning}})
		if err != nil {
			t.Fatal(err)
		}
		if other.StartPosition != eventstore.Start || other.Tenant != "" || other.MaxInFlight != DefaultMaxInFlight {
			t.Fatalf("other: %+v", other)
		}
		if l := svc.List(ctx, nil); len(l) != 2 || l[0].ID != sub.ID || l[1].ID != other.ID {
			t.Fatalf("List(nil) = %v", ids(l))
		}
		if l := svc.List(ctx, ptr("acme")); len(l) != 1 || l[0].ID != sub.ID {
			t.Fatalf("List(acme) = %v", ids(l))
		}
		if l := svc.List(ctx, ptr("")); len(l) != 1 || l[0].ID != other.ID {
			t.Fatalf(`List("") = %v`, ids(l))
		}

		// Delete.
		if err := svc.Delete(ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		for name, call := range map[string]func() error{
			"get":           func() error { _, err := svc.Get(ctx, sub.ID); return err },
			"update":        func() error { _, err := svc.Update(ctx, sub.ID, UpdateParams{Description: ptr("x")}); return err },
			"pause":         func() error { _, err := svc.Pause(ctx, sub.ID); return err },
			"rotate":        func() error { _, err := svc.RotateSecret(ctx, sub.ID); return err },
			"delete":        func() error { return svc.Delete(ctx, sub.ID) },
			"bad id":        func() error { _, err := svc.Get(ctx, "not-a-uuid"); return err },
			"bad id delete": func() error { return svc.Delete(ctx, "../x") },
		} {
			if err := call(); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s after delete: %v, want ErrNotFound", name, err)
			}
		}
		if l := svc.List(ctx, nil); len(l) != 1 {
			t.Fatalf("List after delete = %v", ids(l))
		}

		// Every event is internal, without a tenant, in one stream.
		evs, err := store.ReadStream(ctx, eventstore.ReadStreamParams{Stream: Stream})
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, e := range evs {
			if e.Tenant != "" {
				t.Errorf("event %s has tenant %q", e.Type, e.Tenant)
			}
			types = append(types, e.Type)
		}
		want := []string{TypeCreated, TypeUpdated, TypePaused, TypeResumed, TypeDisabled, TypeResumed, TypeSecretRotated, TypeSecretRotated, TypeCreated, TypeDeleted}
		if !reflect.DeepEqual(types, want) {
			t.Fatalf("stream types = %v\nwant %v", types, want)
		}
	})
}

func eventstoreUUID(id string) (string, error) {
	if canonicalID(id) != id {
		return "", fmt.Errorf("not a canonical UUID")
	}
	return id, nil
}

func ids(l []Subscription) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = s.ID
	}
	return out
}

func TestStartPositions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, _ := b.open(t)
		svc := startService(t, store, Config{AllowPrivateNetworks: true})
		var positions []eventstore.Position
		for i := range 3 {
			res, err := store.Append(ctx, eventstore.AppendParams{Stream: "s-1", Events: []eventstore.ProposedEvent{{Type: "a.b", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}}})
			if err != nil {
				t.Fatal(err)
			}
			positions = append(positions, res.Events[0].Position)
		}
		sub, err := svc.Create(ctx, CreateParams{URL: hookURL, Start: &StartSpec{Kind: StartAfter, After: positions[0]}})
		if err != nil || sub.StartPosition != positions[0] {
			t.Fatalf("after: %+v, %v", sub.StartPosition, err)
		}
		// A time before every event starts at (or before) the first one.
		sub, err = svc.Create(ctx, CreateParams{URL: hookURL, Start: &StartSpec{Kind: StartTime, Time: time.Now().Add(-time.Hour)}})
		if err != nil {
			t.Fatal(err)
		}
		if positions[0].Compare(sub.StartPosition) <= 0 {
			t.Fatalf("time start %v is not before the first event %v", sub.StartPosition, positions[0])
		}
		// A time after every event starts at the head (PostgreSQL's settled
		// head may trail the last commit briefly, so compare with heads).
		h1 := head(t, store)
		sub, err = svc.Create(ctx, CreateParams{URL: hookURL, Start: &StartSpec{Kind: StartTime, Time: time.Now().Add(time.Hour)}})
		if err != nil {
			t.Fatal(err)
		}
		if h2 := head(t, store); sub.StartPosition.Less(h1) || h2.Less(sub.StartPosition) {
			t.Fatalf("future time start %v is not between the heads %v and %v", sub.StartPosition, h1, h2)
		}
		beyond := head(t, store)
		beyond.Hi += 1 << 40
		_, err = svc.Create(ctx, CreateParams{URL: hookURL, Start: &StartSpec{Kind: StartAfter, After: beyond}})
		assertFields(t, err, "start")
	})
}

// assertFields checks err is a *eventstore.ValidationError naming exactly fields.
func assertFields(t *testing.T, err error, fields ...string) {
	t.Helper()
	var v *eventstore.ValidationError
	if !errors.As(err, &v) || !errors.Is(err, eventstore.ErrInvalid) {
		t.Fatalf("err = %v, want a ValidationError for %v", err, fields)
	}
	got := make([]string, 0, len(v.Fields))
	for f := range v.Fields {
		got = append(got, f)
	}
	for _, f := range fields {
		if _, ok := v.Fields[f]; !ok {
			t.Fatalf("fields = %v, want %v", v.Fields, fields)
		}
	}
	if len(got) != len(fields) {
		t.Fatalf("fields = %v, want %v", v.Fields, fields)
	}
}

func TestValidationWritesNothing(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, _ := b.open(t)
		svc := startService(t, store, Config{Resolver: testResolver(t, testRecords)})
		good := func() CreateParams { return CreateParams{URL: "https://public.test/hooks"} }
		long := strings.Repeat("é", MaxDescriptionLen+1)
		cases := []struct {
			name   string
			edit   func(p *CreateParams)
			fields []string
		}{
			{"no url", func(p *CreateParams) { p.URL = "" }, []string{"url"}},
			{"relative url", func(p *CreateParams) { p.URL = "/hooks" }, []string{"url"}},
			{"loopback url", func(p *CreateParams) { p.URL = "http://2130706433/" }, []string{"url"}},
			{"private name", func(p *CreateParams) { p.URL = "https://internal.test/" }, []string{"url"}},
			{"userinfo", func(p *CreateParams) { p.URL = "https://a:b@public.test/" }, []string{"url"}},
			{"description", func(p *CreateParams) { p.Description = long }, []string{"description"}},
			{"event type", func(p *CreateParams) { p.EventTypes = []string{"payment.*", "a*b"} }, []string{"event_types[1]"}},
			{"empty stream", func(p *CreateParams) { p.Streams = []string{""} }, []string{"streams[0]"}},
			{"tenant", func(p *CreateParams) { p.Tenant = "-bad" }, []string{"tenant"}},
			{"start kind", func(p *CreateParams) { p.Start = &StartSpec{Kind: "later"} }, []string{"start"}},
			{"start time", func(p *CreateParams) { p.Start = &StartSpec{Kind: StartTime} }, []string{"start"}},
			{"retry step", func(p *CreateParams) {
				p.Retry = &RetryPolicy{Schedule: []time.Duration{time.Second, -time.Second}}
			}, []string{"retry.schedule[1]"}},
			{"retry empty", func(p *CreateParams) { p.Retry = &RetryPolicy{Schedule: []time.Duration{}} }, []string{"retry.schedule"}},
			{"retry long", func(p *CreateParams) { p.Retry = &RetryPolicy{Schedule: make21()} }, []string{"retry.schedule"}},
			{"max age", func(p *CreateParams) { p.Retry = &RetryPolicy{MaxAge: -time.Hour} }, []string{"retry.max_age"}},
			{"max in flight 0", func(p *CreateParams) { p.MaxInFlight = ptr(0) }, []string{"max_in_flight"}},
			{"max in flight 1001", func(p *CreateParams) { p.MaxInFlight = ptr(1001) }, []string{"max_in_flight"}},
			{"rate limit", func(p *CreateParams) { p.RateLimit = ptr(-1.0) }, []string{"rate_limit"}},
			{"header name", func(p *CreateParams) { p.Headers = map[string]string{"X Foo": "1"} }, []string{"headers.X Foo"}},
			{"header crlf", func(p *CreateParams) { p.Headers = map[string]string{"X-Foo": "a\r\nX-Evil: 1"} }, []string{"headers.X-Foo"}},
			{"header reserved", func(p *CreateParams) {
				p.Headers = map[string]string{"Content-Type": "text/plain", "webhook-id": "x", "Host": "a"}
			}, []string{"headers.Content-Type", "headers.webhook-id", "headers.Host"}},
			{"header dup", func(p *CreateParams) { p.Headers = map[string]string{"X-A": "1", "x-a": "2"} }, nil},
			{"several", func(p *CreateParams) { p.URL = "ftp://x/"; p.MaxInFlight = ptr(-1); p.Tenant = "a b" }, []string{"url", "max_in_flight", "tenant"}},
		}
		before := head(t, store)
		for _, c := range cases {
			p := good()
			c.edit(&p)
			_, err := svc.Create(ctx, p)
			if c.fields == nil { // one of the two header names, whichever is seen second
				if !errors.Is(err, eventstore.ErrInvalid) {
					t.Errorf("%s: %v", c.name, err)
				}
				continue
			}
			t.Run(c.name, func(t *testing.T) { assertFields(t, err, c.fields...) })
		}
		if head(t, store) != before || len(svc.List(ctx, nil)) != 0 {
			t.Fatal("a rejected create wrote to the log")
		}

		sub, err := svc.Create(ctx, CreateParams{URL: "https://public.test/hooks", Headers: map[string]string{"Authorization": "Bearer t"}})
		if err != nil {
			t.Fatal(err)
		}
		before = head(t, store)
		_, err = svc.Update(ctx, sub.ID, UpdateParams{URL: ptr("http://[::ffff:10.0.0.1]/"), MaxInFlight: ptr(0)})
		assertFields(t, err, "url", "max_in_flight")
		_, err = svc.Update(ctx, sub.ID, UpdateParams{Headers: &map[string]string{"Webhook-Signature": "x"}})
		assertFields(t, err, "headers.Webhook-Signature")
		if head(t, store) != before {
			t.Fatal("a rejected update wrote to the log")
		}
		got, _ := svc.Get(ctx, sub.ID)
		if !reflect.DeepEqual(got, sub) {
			t.Fatal("a rejected update changed the subscription")
		}
	})
}

func make21() []time.Duration {
	out := make([]time.Duration, MaxRetrySchedule+1)
	for i := range out {
		out[i] = time.Second
	}
	return out
}

// TestRebuildAfterRestart: the read model is derived from the log only. A new
// Service on a reopened store folds exactly the state the first one had.
func TestRebuildAfterRestart(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, reopen := b.open(t)
		clock := newTestClock()
		svc := startService(t, store, Config{AllowPrivateNetworks: true, Now: clock.Now})
		var created []Subscription
		for i := range 5 {
			sub, err := svc.Create(ctx, CreateParams{URL: fmt.Sprintf("http://127.0.0.1:%d/h", 9000+i), Tenant: []string{"", "acme", "globex"}[i%3],
				EventTypes: []string{"order.*"}, Headers: map[string]string{"X-N": fmt.Sprint(i)}})
			if err != nil {
				t.Fatal(err)
			}
			created = append(created, sub)
		}
		mustDo(t, func() error { _, err := svc.Pause(ctx, created[1].ID); return err })
		mustDo(t, func() error { _, err := svc.RotateSecret(ctx, created[2].ID); return err })
		mustDo(t, func() error { return svc.Disable(ctx, created[3].ID, "410") })
		mustDo(t, func() error { return svc.Delete(ctx, created[4].ID) })
		mustDo(t, func() error {
			_, err := svc.Update(ctx, created[0].ID, UpdateParams{Streams: &[]string{"order-*"}, RateLimit: ptr(10.0), Headers: &map[string]string{}})
			return err
		})
		want := svc.List(ctx, nil)
		if len(want) != 4 {
			t.Fatalf("List = %d", len(want))
		}

		// Fold twice on the same store: same state.
		again := startService(t, store, Config{AllowPrivateNetworks: true})
		if got := again.List(ctx, nil); !reflect.DeepEqual(got, want) {
			t.Fatalf("second fold differs:\n got %+v\nwant %+v", got, want)
		}
		again.Stop()
		svc.Stop()

		// Reopen the store (the embedded one must be closed first) and fold.
		if err := store.Close(); err != nil {
			t.Fatal(err)
		}
		store2 := reopen(t)
		rebuilt := startService(t, store2, Config{AllowPrivateNetworks: true})
		if got := rebuilt.List(ctx, nil); !reflect.DeepEqual(got, want) {
			t.Fatalf("rebuilt state differs:\n got %+v\nwant %+v", got, want)
		}
		// And it keeps working: commands continue the same stream.
		if _, err := rebuilt.Resume(ctx, created[1].ID); err != nil {
			t.Fatal(err)
		}
	})
}

func mustDo(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

// TestTwoServices: two Services on one log (for PostgreSQL two separate store
// handles, as two processes would have) see each other's changes within a
// second, and concurrent commands on the same subscription both land.
func TestTwoServices(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		storeA, reopen := b.open(t)
		storeB := storeA
		if b.shared {
			storeB = reopen(t)
		}
		a := startService(t, storeA, Config{AllowPrivateNetworks: true})
		bs := startService(t, storeB, Config{AllowPrivateNetworks: true})

		sub, err := a.Create(ctx, CreateParams{URL: hookURL})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		eventually(t, time.Second, "B sees A's create", func() bool { _, err := bs.Get(ctx, sub.ID); return err == nil })
		t.Logf("B saw the create after %v", time.Since(start).Round(time.Millisecond))

		watch, stop := a.Watch()
		defer stop()
		if _, err := bs.Pause(ctx, sub.ID); err != nil {
			t.Fatal(err)
		}
		select {
		case <-watch:
		case <-time.After(time.Second):
			t.Fatal("A's watch did not fire within 1s of B's pause")
		}
		eventually(t, time.Second, "A sees B's pause", func() bool { s, _ := a.Get(ctx, sub.ID); return s.State == StatePaused })

		// Concurrent updates from both: each retries on ErrWrongVersion.
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 10 {
			for _, svc := range []*Service{a, bs} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := svc.Update(ctx, sub.ID, UpdateParams{Description: ptr(fmt.Sprintf("%p-%d", svc, i))})
					errs <- err
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent update: %v", err)
			}
		}
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := bs.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a.List(ctx, nil), bs.List(ctx, nil)) {
			t.Fatal("A and B disagree after Sync")
		}
		evs, err := storeA.ReadStream(ctx, eventstore.ReadStreamParams{Stream: Stream, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2+20 {
			t.Fatalf("stream has %d events, want 22", len(evs))
		}
	})
}

// countingStore counts the reads a Service makes, to check that folding reads
// only the subscription stream, never the whole log.
type countingStore struct {
	eventstore.Store
	mu             sync.Mutex
	readAll        int
	streamEvents   int
	streamsTouched map[string]bool
}

func (c *countingStore) ReadAll(ctx context.Context, p eventstore.ReadParams) (eventstore.ReadResult, error) {
	c.mu.Lock()
	c.readAll++
	c.mu.Unlock()
	return c.Store.ReadAll(ctx, p)
}

func (c *countingStore) ReadStream(ctx context.Context, p eventstore.ReadStreamParams) ([]eventstore.Event, error) {
	evs, err := c.Store.ReadStream(ctx, p)
	c.mu.Lock()
	c.streamEvents += len(evs)
	c.streamsTouched[p.Stream] = true
	c.mu.Unlock()
	return evs, err
}

// TestStartIsOrderOfSubscriptions: a restart reads the subscription stream,
// not the log: with 3000 other events in the log it reads 3 events.
func TestStartIsOrderOfSubscriptions(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store, _ := b.open(t)
		svc := startService(t, store, Config{AllowPrivateNetworks: true})
		for range 3 {
			if _, err := svc.Create(ctx, CreateParams{URL: hookURL}); err != nil {
				t.Fatal(err)
			}
		}
		svc.Stop()
		for i := range 3 {
			evs := make([]eventstore.ProposedEvent, 1000)
			for j := range evs {
				evs[j] = eventstore.ProposedEvent{Type: "order.created", Data: json.RawMessage(`{}`)}
			}
			if _, err := store.Append(ctx, eventstore.AppendParams{Stream: fmt.Sprintf("order-%d", i), Events: evs}); err != nil {
				t.Fatal(err)
			}
		}
		cs := &countingStore{Store: store, streamsTouched: map[string]bool{}}
		s2 := startService(t, cs, Config{AllowPrivateNetworks: true})
		if n := len(s2.List(ctx, nil)); n != 3 {
			t.Fatalf("List = %d", n)
		}
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if cs.readAll != 0 || cs.streamEvents != 3 || len(cs.streamsTouched) != 1 || !cs.streamsTouched[Stream] {
			t.Fatalf("start read: ReadAll %d calls, %d stream events, streams %v", cs.readAll, cs.streamEvents, cs.streamsTouched)
		}
	})
}

func TestCommandsNeedStart(t *testing.T) {
	t.Parallel()
	store, _ := backends[0].open(t)
	svc, err := New(store, Config{AllowPrivateNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(context.Background(), CreateParams{URL: hookURL}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Create before Start: %v", err)
	}
	svc.Stop()
	svc.Stop()
	if err := svc.Start(context.Background()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	store, _ := backends[0].open(t)
	if _, err := New(store, Config{RotationGrace: -1}); err == nil || !strings.Contains(err.Error(), "RotationGrace") {
		t.Fatalf("negative grace: %v", err)
	}
	if _, err := New(store, Config{DefaultRetry: RetryPolicy{Schedule: []time.Duration{0}}}); err == nil || !strings.Contains(err.Error(), "DefaultRetry") {
		t.Fatalf("bad retry: %v", err)
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Fatal("nil store accepted")
	}
}
