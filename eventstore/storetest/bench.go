package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// BenchEventSize is the approximate size of one benchmark event (id, type,
// stream, data) in bytes.
const BenchEventSize = 500

// benchData is a ~450-byte JSON object: with id, type and stream an event is
// about BenchEventSize bytes.
var benchData = func() json.RawMessage {
	d := map[string]any{
		"order_id": "ord_01HZX3K9Q2W8E7R6T5Y4U3I2O1", "customer_id": "cus_9f8e7d6c5b4a",
		"amount": 129900, "currency": "EUR", "status": "succeeded",
		"items": []map[string]any{{"sku": "SKU-1234", "qty": 2, "price": 49950}, {"sku": "SKU-5678", "qty": 1, "price": 30000}},
	}
	b, _ := json.Marshal(d)
	pad := 450 - len(b) - len(`,"note":""`)
	d["note"] = string(slices.Repeat([]byte("x"), max(pad, 0)))
	b, _ = json.Marshal(d)
	return b
}()

// BenchEvent is the event the benchmarks append (with a fresh id), exported so
// backends can build raw baselines from the same bytes.
func BenchEvent() eventstore.ProposedEvent {
	return eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: "payment.succeeded", Data: benchData}
}

// BenchStream names the stream of benchmark append i (16 streams in turn).
func BenchStream(i int) string { return fmt.Sprintf("order-%d", i%16) }

// Bench runs the shared benchmarks against stores made by open (each a fresh,
// empty store the benchmark owns and closes):
//
//	Batch100      one appender, 100 events of ~500 bytes per append
//	Batch100x4    the same from 4 concurrent appenders (group commit at work)
//	Concurrent32  32 goroutines appending one event each per call
//	Tail1000      1,000 events/s appended one by one; latency from the start
//	              of Append until a Follow reader sees the event (p50, p99)
//
// Each reports events/s; Tail1000 also p50-ms and p99-ms.
func Bench(b *testing.B, open func(b *testing.B) eventstore.Store) {
	b.Run("Batch100", func(b *testing.B) { benchBatch(b, open, 100, 1) })
	b.Run("Batch100x4", func(b *testing.B) { benchBatch(b, open, 100, 4) })
	b.Run("Concurrent32", func(b *testing.B) { benchConcurrent(b, open, 32) })
	b.Run("Tail1000", func(b *testing.B) { benchTail(b, open, 1000) })
}

func benchOpen(b *testing.B, open func(b *testing.B) eventstore.Store) eventstore.Store {
	b.Helper()
	s := open(b)
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func benchBatch(b *testing.B, open func(b *testing.B) eventstore.Store, size, workers int) {
	s := benchOpen(b, open)
	ctx := context.Background()
	batches := make([][]eventstore.ProposedEvent, b.N)
	for i := range batches {
		batches[i] = make([]eventstore.ProposedEvent, size)
		for j := range batches[i] {
			batches[i][j] = BenchEvent()
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(int64(size * BenchEventSize))
	b.ReportAllocs()
	b.ResetTimer()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				if _, err := s.Append(ctx, eventstore.AppendParams{Stream: BenchStream(i), Events: batches[i]}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
}

func benchConcurrent(b *testing.B, open func(b *testing.B) eventstore.Store, workers int) {
	s := benchOpen(b, open)
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(BenchEventSize)
	b.ReportAllocs()
	b.ResetTimer()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				e := BenchEvent()
				if _, err := s.Append(ctx, eventstore.AppendParams{Stream: BenchStream(w), Events: []eventstore.ProposedEvent{e}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func benchTail(b *testing.B, open func(b *testing.B) eventstore.Store, rate int) {
	s := benchOpen(b, open)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	n := b.N
	evs := make([]eventstore.ProposedEvent, n)
	index := make(map[uuid.UUID]int, n)
	for i := range evs {
		evs[i] = BenchEvent()
		index[evs[i].ID] = i
	}
	sent := make([]atomic.Int64, n) // unix nanos at the start of Append
	lat := make([]time.Duration, n)
	var seen atomic.Int64
	allSeen := make(chan struct{})

	readerDone := make(chan error, 1)
	go func() {
		readerDone <- eventstore.Follow(ctx, s, eventstore.FollowParams{}, func(_ context.Context, batch []eventstore.Event) error {
			now := time.Now().UnixNano()
			for _, e := range batch {
				if i, ok := index[e.ID]; ok {
					lat[i] = time.Duration(now - sent[i].Load())
					if seen.Add(1) == int64(n) {
						close(allSeen)
					}
				}
			}
			return nil
		}, nil)
	}()

	interval := time.Second / time.Duration(rate)
	sem := make(chan struct{}, 256) // appends in flight at most
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			sent[i].Store(time.Now().UnixNano())
			if _, err := s.Append(ctx, eventstore.AppendParams{Stream: BenchStream(i), Events: evs[i : i+1]}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	select {
	case <-allSeen:
	case <-time.After(30 * time.Second):
		b.Fatalf("reader saw %d of %d events", seen.Load(), n)
	}
	b.StopTimer()
	elapsed := time.Since(start)
	cancel()
	<-readerDone

	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(n-1))]) / float64(time.Millisecond) }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
}
