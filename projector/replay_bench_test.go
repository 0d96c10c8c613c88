package projector_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/replays"
	"github.com/hooklog/hooklog/subscriptions"
)

// Replay figures of issue 5.
//
//	go test -run '^$' -bench 'BenchmarkReplay' -benchtime 1x ./projector/
//
// BenchmarkReplayThroughput: a 100,000-event window replayed to one
// subscription (default max_in_flight 16: 8 replay attempts at once) whose
// endpoint answers 200 at once, in events/s and as a ratio to the fan-out
// raw baseline measured in the same run (plain net/http POSTs of the same
// bodies, 160 at once, as BenchmarkFanout's). Target: ratio >= 0.5.
//
// BenchmarkReplayFirstDelivery: the time from the replay request to the
// first replayed delivery for a window that starts after 1,000,000 events
// (target < 100ms: the window's start is a PositionAt lookup, not a scan),
// and the peak resident memory of the process during that replay (target <
// 256 MB).

func benchStore(b testing.TB) (eventstore.Store, eventstore.StateStore) {
	s, err := embedded.Open(embedded.Config{Path: b.TempDir()}) // fsync on
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s, stateOf(b, s)
}

type benchRig struct {
	store eventstore.Store
	state eventstore.StateStore
	subs  *subscriptions.Service
	p     *projector.Projector
}

func newBenchRig(b *testing.B, open opener) *benchRig {
	store, state := open(b)
	subs, err := subscriptions.New(store, subscriptions.Config{AllowPrivateNetworks: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := subs.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(subs.Stop)
	return &benchRig{store: store, state: state, subs: subs}
}

func (rg *benchRig) start(b *testing.B) {
	p, err := projector.New(projector.Config{Delivery: projector.DelivererConfig{AllowPrivateNetworks: true}}, projector.Deps{Store: rg.store, State: rg.state, Subs: rg.subs})
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	rg.p = p
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
}

// waitDone waits for a replay to end and fails unless it completed.
func waitDone(b *testing.B, p *projector.Projector, id string) replays.Replay {
	for {
		r, err := p.Replay(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		if !r.Running() {
			if r.Status != replays.StatusCompleted {
				b.Fatalf("replay %s", r.Status)
			}
			return r
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func BenchmarkReplayThroughput(b *testing.B) {
	const n = 100000
	var replayed, live atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("webhook-replay") != "" {
			replayed.Add(1)
		} else {
			live.Add(1)
		}
	}))
	b.Cleanup(srv.Close)
	for _, mif := range []int{subscriptions.DefaultMaxInFlight, benchSubs * benchWindow} {
		b.Run(fmt.Sprintf("max_in_flight=%d", mif), func(b *testing.B) {
			var sumReplay, sumRaw, cpuReplay, cpuRaw float64
			for range b.N {
				b.StopTimer()
				rg := newBenchRig(b, benchStore)
				from := time.Now()
				appendEvents(b, rg.store, n)
				to := time.Now()
				time.Sleep(windowEndSlackForBench) // the window's end is known at once
				sub, err := rg.subs.Create(context.Background(), subscriptions.CreateParams{URL: srv.URL + "/hook", MaxInFlight: ptr(mif)})
				if err != nil {
					b.Fatal(err)
				}
				rg.start(b)

				// The raw baseline: the same bodies, plain POSTs, 160 at once.
				var bodies [][]byte
				after := eventstore.Start
				for len(bodies) < n {
					res, err := rg.store.ReadAll(context.Background(), eventstore.ReadParams{After: after, Limit: eventstore.MaxReadLimit, Filter: eventstore.Filter{NoInternal: true}})
					if err != nil {
						b.Fatal(err)
					}
					for _, e := range res.Events {
						body, _ := projector.Body(e)
						bodies = append(bodies, body)
					}
					after = res.Next
				}
				b.StartTimer()
				c0 := cpuTime()
				raw := rawPosts(b, srv.URL+"/hook", bodies, 1, benchSubs*benchWindow)
				cpuRaw += float64((cpuTime() - c0).Microseconds()) / n
				replayed.Store(0)
				start, c0 := time.Now(), cpuTime()
				r, err := rg.p.CreateReplay(context.Background(), projector.ReplayParams{Subscriptions: []string{sub.ID}, From: from, To: to})
				if err != nil {
					b.Fatal(err)
				}
				r = waitDone(b, rg.p, r.ID)
				took := time.Since(start)
				cpuReplay += float64((cpuTime() - c0).Microseconds()) / n
				b.StopTimer()
				if r.Delivered != n || replayed.Load() < n {
					b.Fatalf("replay delivered %d (receiver %d), want %d", r.Delivered, replayed.Load(), n)
				}
				sumReplay += float64(n) / took.Seconds()
				sumRaw += raw
			}
			b.ReportMetric(sumReplay/float64(b.N), "events/s")
			b.ReportMetric(sumRaw/float64(b.N), "raw-posts/s")
			b.ReportMetric(sumReplay/sumRaw, "ratio")
			// CPU per delivery (process user+system, receiver included) tells
			// the cost apart from other load on a shared machine.
			b.ReportMetric(cpuReplay/float64(b.N), "cpu-us/delivery")
			b.ReportMetric(cpuRaw/float64(b.N), "cpu-us/raw-post")
		})
	}
}

// windowEndSlackForBench is the projector's windowEndSlack: a replay's end
// is known once the clock has passed to + 1s.
const windowEndSlackForBench = 1100 * time.Millisecond

func BenchmarkReplayFirstDelivery(b *testing.B) {
	b.Run("embedded", func(b *testing.B) { benchFirstDelivery(b, benchStore) })
	b.Run("postgres", func(b *testing.B) { benchFirstDelivery(b, openPostgres) })
}

func benchFirstDelivery(b *testing.B, open opener) {
	const before, window = 1000000, 20000
	var first atomic.Int64 // unix ns of the first replayed delivery
	var replayed atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("webhook-replay") != "" {
			first.CompareAndSwap(0, time.Now().UnixNano())
			replayed.Add(1)
		}
	}))
	b.Cleanup(srv.Close)
	var sumFirst time.Duration
	var peak int64
	for range b.N {
		b.StopTimer()
		rg := newBenchRig(b, open)
		appendEvents(b, rg.store, before)
		time.Sleep(10 * time.Millisecond)
		from := time.Now()
		appendEvents(b, rg.store, window)
		to := time.Now()
		sub, err := rg.subs.Create(context.Background(), subscriptions.CreateParams{URL: srv.URL + "/hook"})
		if err != nil {
			b.Fatal(err)
		}
		rg.start(b)
		time.Sleep(100 * time.Millisecond) // routes up
		debug.FreeOSMemory()               // the appends' garbage is not the replay's
		resetPeakRSS()
		stopSampling := sampleRSS(&peak)
		first.Store(0)
		replayed.Store(0)
		b.StartTimer()
		start := time.Now()
		r, err := rg.p.CreateReplay(context.Background(), projector.ReplayParams{Subscriptions: []string{sub.ID}, From: from, To: to})
		if err != nil {
			b.Fatal(err)
		}
		for first.Load() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		sumFirst += time.Unix(0, first.Load()).Sub(start)
		b.StopTimer()
		r = waitDone(b, rg.p, r.ID)
		stopSampling()
		if r.Delivered != window || r.Total != window {
			b.Fatalf("replay delivered %d of total %d, want %d", r.Delivered, r.Total, window)
		}
		peak = max(peak, peakRSS())
	}
	b.ReportMetric(float64(sumFirst.Microseconds())/1000/float64(b.N), "ms-to-first")
	b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MB")
}

// resetPeakRSS resets the kernel's peak resident set size of the process
// (VmHWM), where Linux allows it.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is VmHWM in bytes (0 where /proc is missing).
func peakRSS() int64 { return procStatus("VmHWM:") }

func procStatus(field string) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sampleRSS records the largest VmRSS seen every 5ms into peak until stopped.
func sampleRSS(peak *int64) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			*peak = max(*peak, procStatus("VmRSS:"))
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}
