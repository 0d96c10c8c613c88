package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// BenchmarkHTTPAppend measures appends through the HTTP API on loopback and,
// in the same run, the store's own append rate with the same events and the
// same concurrency, each on a fresh store. It reports events/s (HTTP),
// store-events/s and their ratio http/store (target for single events:
// >= 0.7). The embedded store runs with fsync, as in production. One op is
// one request.
//
//	go test ./api -run '^$' -bench BenchmarkHTTPAppend -benchtime 20000x
func BenchmarkHTTPAppend(b *testing.B) {
	backends := []struct {
		name string
		open func(testing.TB) eventstore.Store
	}{
		{"embedded", func(tb testing.TB) eventstore.Store {
			s, err := embedded.Open(embedded.Config{Path: tb.TempDir()}) // fsync on
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"postgres", func(tb testing.TB) eventstore.Store { return pgtest.NewStore(tb) }},
	}
	shapes := []struct {
		name            string
		clients, perReq int
	}{
		{"single-event/32-clients", 32, 1},
		{"100-events/4-clients", 4, 100},
	}
	for _, be := range backends {
		for _, sh := range shapes {
			b.Run(be.name+"/"+sh.name, func(b *testing.B) {
				benchAppend(b, be.open, sh.clients, sh.perReq)
			})
		}
	}
}

// benchData is ~500 bytes of event data, like a typical domain event.
var benchData = json.RawMessage(`{"order_id":"ord_8f14e45fceea167a5a36dedd4bea2543","customer":"cus_45c48cce2e2d7fbdea1afc51c7c6ad26",` +
	`"amount":12999,"currency":"EUR","items":[{"sku":"sku_6512bd43d9caa6e02c990b0a82652dca","qty":2,"price":4999},` +
	`{"sku":"sku_c20ad4d76fe97759aa27a0c99bff6710","qty":1,"price":3001}],"shipping":{"method":"express",` +
	`"address":{"line1":"1 Example Street","city":"Amsterdam","postcode":"1011AB","country":"NL"}},` +
	`"note":"` + strings.Repeat("x", 60) + `"}`)

func benchAppend(b *testing.B, open func(testing.TB) eventstore.Store, clients, perReq int) {
	events := make([]eventstore.ProposedEvent, perReq)
	reqEvents := make([]map[string]any, perReq)
	for i := range events {
		events[i] = eventstore.ProposedEvent{Type: "order.created", Tenant: "acme", Data: benchData}
		reqEvents[i] = map[string]any{"type": "order.created", "tenant": "acme", "data": benchData}
	}
	body, err := json.Marshal(map[string]any{"events": reqEvents})
	if err != nil {
		b.Fatal(err)
	}
	n := b.N

	// Store only, with the same events and concurrency.
	storeRun := func() float64 {
		store := open(b)
		ctx := context.Background()
		return run(b, n, clients, perReq, func(i int) error {
			p := eventstore.AppendParams{Stream: fmt.Sprintf("order-%d", i), Events: append([]eventstore.ProposedEvent(nil), events...)}
			_, err := store.Append(ctx, p)
			return err
		})
	}

	// Through HTTP on loopback, keep-alive connections.
	store := open(b)
	deps, keys := testDeps(b, store)
	s, err := New(Config{Logger: quietLogger(), Registry: prometheus.NewRegistry()}, deps)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: clients * 2, MaxIdleConnsPerHost: clients * 2, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	auth := "Bearer " + keys.producer
	httpRun := func() float64 {
		return run(b, n, clients, perReq, func(i int) error {
			req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/v1/streams/order-%d/events", srv.URL, i), bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", auth)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		})
	}

	b.StopTimer()
	cpu0 := cpuTime()
	before := storeRun()
	cpu1 := cpuTime()
	b.StartTimer()
	b.ResetTimer()
	httpRate := httpRun()
	b.StopTimer()
	cpu2 := cpuTime()
	after := storeRun() // again after, so drift on a shared machine evens out
	storeRate := (before + after) / 2
	total := float64(n * perReq)
	b.ReportMetric(httpRate, "events/s")
	b.ReportMetric(storeRate, "store-events/s")
	b.ReportMetric(httpRate/storeRate, "http/store")
	// CPU (user+system, this process: load generator included) per event,
	// which says more than rates on a busy shared machine.
	b.ReportMetric(float64((cpu2-cpu1).Microseconds())/total, "http-cpu-µs/event")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/total, "store-cpu-µs/event")
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// run performs n operations from `clients` goroutines and returns events/s.
func run(b *testing.B, n, clients, perReq int, op func(i int) error) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	return float64(n*perReq) / elapsed.Seconds()
}
