package projector_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

// Fan-out benchmark figures of issue 4: 20,000 events to 10 subscriptions
// whose endpoint answers 200 at once, against a raw baseline measured in the
// same run (plain net/http POSTs of the same bodies to the same receiver at
// the same total concurrency: 10 subscriptions x max_in_flight 16).
//
//	go test -run '^$' -bench BenchmarkFanout -benchtime 1x ./projector/
const (
	benchEvents = 20000
	benchSubs   = 10
	benchWindow = subscriptions.DefaultMaxInFlight
)

func BenchmarkFanout(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		benchFanout(b, func(t testing.TB) (eventstore.Store, eventstore.StateStore) {
			s, err := embedded.Open(embedded.Config{Path: t.TempDir()}) // fsync on: durability is part of the cost
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s, stateOf(t, s)
		})
	})
	b.Run("postgres", func(b *testing.B) { benchFanout(b, openPostgres) })
}

func benchFanout(b *testing.B, open opener) {
	var count atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		count.Add(1)
	}))
	b.Cleanup(srv.Close)
	var sumProj, sumRaw, cpuProj, cpuRaw float64
	for range b.N {
		r := fanoutOnce(b, open, srv.URL, &count)
		sumProj += r.proj
		sumRaw += r.raw
		cpuProj += r.cpuProj
		cpuRaw += r.cpuRaw
	}
	b.ReportMetric(sumProj/float64(b.N), "deliveries/s")
	b.ReportMetric(sumRaw/float64(b.N), "raw-posts/s")
	b.ReportMetric(sumProj/sumRaw, "ratio")
	// CPU per delivery (process user+system time, receiver included) tells
	// the cost apart from other load on a shared machine.
	b.ReportMetric(cpuProj/float64(b.N), "cpu-us/delivery")
	b.ReportMetric(cpuRaw/float64(b.N), "cpu-us/raw-post")
}

type fanoutResult struct{ proj, raw, cpuProj, cpuRaw float64 }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fanoutOnce measures the projector and the raw baseline once.
func fanoutOnce(b *testing.B, open opener, url string, count *atomic.Int64) (r fanoutResult) {
	b.StopTimer()
	store, state := open(b)
	ctx := context.Background()
	subs, err := subscriptions.New(store, subscriptions.Config{AllowPrivateNetworks: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := subs.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer subs.Stop()
	for range benchSubs {
		if _, err := subs.Create(ctx, subscriptions.CreateParams{URL: url + "/hook"}); err != nil {
			b.Fatal(err)
		}
	}
	// The bodies of the raw baseline: the same events, encoded as delivered.
	var evs []eventstore.Event
	after := eventstore.Start

	// Raw baseline first, on events appended to a scratch store of the
	// same kind (so the projector's store starts out the same).
	scratch, _ := open(b)
	appendEvents(b, scratch, benchEvents)
	for len(evs) < benchEvents {
		res, err := scratch.ReadAll(ctx, eventstore.ReadParams{After: after, Limit: eventstore.MaxReadLimit})
		if err != nil {
			b.Fatal(err)
		}
		evs = append(evs, res.Events...)
		after = res.Next
	}
	bodies := make([][]byte, len(evs))
	for i, e := range evs {
		if bodies[i], err = projector.Body(e); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
	c0 := cpuTime()
	pprof.Do(ctx, pprof.Labels("phase", "raw"), func(context.Context) {
		r.raw = rawPosts(b, url+"/hook", bodies, benchSubs, benchSubs*benchWindow)
	})
	r.cpuRaw = float64((cpuTime() - c0).Microseconds()) / float64(benchEvents*benchSubs)
	b.StopTimer()

	p, err := projector.New(projector.Config{Delivery: projector.DelivererConfig{AllowPrivateNetworks: true}}, projector.Deps{Store: store, State: state, Subs: subs})
	if err != nil {
		b.Fatal(err)
	}
	pprof.Do(ctx, pprof.Labels("phase", "projector"), func(ctx context.Context) { err = p.Start(ctx) })
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
	}()
	count.Store(0)
	want := int64(benchEvents * benchSubs)
	b.StartTimer()
	start, c0 := time.Now(), cpuTime()
	appendEvents(b, store, benchEvents)
	for count.Load() < want {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("only %d of %d deliveries after 5 minutes", count.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	r.cpuProj = float64((cpuTime() - c0).Microseconds()) / float64(want)
	b.StopTimer()
	r.proj = float64(want) / took.Seconds()
	return r
}

func appendEvents(b testing.TB, s eventstore.Store, n int) {
	for n > 0 {
		k := min(n, eventstore.MaxEventsPerAppend)
		evs := make([]eventstore.ProposedEvent, k)
		for i := range evs {
			evs[i] = eventstore.ProposedEvent{Type: "order.created", Data: []byte(`{"order":"o-123","amount":4200,"currency":"EUR"}`)}
		}
		if _, err := s.Append(context.Background(), eventstore.AppendParams{Stream: "bench-1", Events: evs}); err != nil {
			b.Fatal(err)
		}
		n -= k
	}
}

// rawPosts sends each body copies times with `workers` concurrent plain
// net/http clients and returns POSTs per second.
func rawPosts(b testing.TB, url string, bodies [][]byte, copies, workers int) float64 {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var next atomic.Int64
	total := int64(len(bodies) * copies)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bodies[i%int64(len(bodies))]))
				req.Header.Set("content-type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds()
}

// BenchmarkLatency: append-to-receipt latency at 500 events/s to 10
// subscriptions (issue 4's target: p99 under 20ms).
//
//	go test -run '^$' -bench BenchmarkLatency -benchtime 1x ./projector/
func BenchmarkLatency(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		benchLatency(b, func(t testing.TB) (eventstore.Store, eventstore.StateStore) {
			s, err := embedded.Open(embedded.Config{Path: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s, stateOf(t, s)
		})
	})
	b.Run("postgres", func(b *testing.B) { benchLatency(b, openPostgres) })
}

func benchLatency(b *testing.B, open opener) {
	const (
		rate     = 500
		duration = 4 * time.Second
	)
	var mu sync.Mutex
	appended := map[string]time.Time{}
	var lat []time.Duration
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		now := time.Now()
		mu.Lock()
		if at, ok := appended[r.Header.Get("webhook-id")]; ok {
			lat = append(lat, now.Sub(at))
		}
		mu.Unlock()
	}))
	b.Cleanup(srv.Close)
	store, state := open(b)
	ctx := context.Background()
	subs, err := subscriptions.New(store, subscriptions.Config{AllowPrivateNetworks: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := subs.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer subs.Stop()
	for range benchSubs {
		if _, err := subs.Create(ctx, subscriptions.CreateParams{URL: srv.URL + "/hook"}); err != nil {
			b.Fatal(err)
		}
	}
	p, err := projector.New(projector.Config{Delivery: projector.DelivererConfig{AllowPrivateNetworks: true}}, projector.Deps{Store: store, State: state, Subs: subs})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = p.Stop(ctx) }()
	b.ResetTimer()
	for range b.N {
		tick := time.NewTicker(time.Second / rate)
		n := int(duration.Seconds() * rate)
		for range n {
			<-tick.C
			id := uuid.New()
			mu.Lock()
			appended[id.String()] = time.Now()
			mu.Unlock()
			if _, err := store.Append(ctx, eventstore.AppendParams{Stream: "lat-1", Events: []eventstore.ProposedEvent{{ID: id, Type: "order.created", Data: []byte(`{"n":1}`)}}}); err != nil {
				b.Fatal(err)
			}
		}
		tick.Stop()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			done := len(lat) >= len(appended)*benchSubs
			mu.Unlock()
			if done || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	if len(lat) == 0 {
		b.Fatal("no deliveries")
	}
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(lat)), "deliveries")
}
