package embedded_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/storetest"
)

// BenchmarkStore runs the shared store benchmarks with fsync on (the real
// durability setting). Compare Batch100's events/s with
// BenchmarkRawFileFsyncBatch100 from the same run.
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) eventstore.Store {
		s, err := embedded.Open(embedded.Config{Path: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}

// BenchmarkRawFileFsyncBatch100 is the baseline: the same event bytes (id,
// type, stream, data) appended to a plain file, one fsync per 100-event batch.
func BenchmarkRawFileFsyncBatch100(b *testing.B) {
	const size = 100
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	batches := make([][]byte, b.N)
	for i := range batches {
		stream := storetest.BenchStream(i)
		for range size {
			e := storetest.BenchEvent()
			batches[i] = append(batches[i], e.ID[:]...)
			batches[i] = append(batches[i], e.Type...)
			batches[i] = append(batches[i], stream...)
			batches[i] = append(batches[i], e.Data...)
		}
	}
	b.SetBytes(int64(size * storetest.BenchEventSize))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := f.Write(batches[i]); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkState runs the shared StateStore benchmarks (storetest.BenchState:
// one CommitState of 1 append of a ~2 KB event and 1000 upserts per op) with
// fsync on. Compare with BenchmarkRawBoltCommit1000.
func BenchmarkState(b *testing.B) {
	storetest.BenchState(b, func(b *testing.B) eventstore.Store {
		s, err := embedded.Open(embedded.Config{Path: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}

// flushCommit is the projector's outcome flush as BenchState builds it: one
// append of a ~2 KB event to an internal stream and n upserts of new ~100-byte
// values (keys of 50 subscriptions).
func flushCommit(round, n int) eventstore.StateCommit {
	c := eventstore.StateCommit{
		Appends: []eventstore.AppendParams{{Stream: "hooklog-deliveries", Events: []eventstore.ProposedEvent{
			{ID: uuid.Must(uuid.NewV7()), Type: "delivery.attempts", Data: flushData},
		}}},
		Ops: make([]eventstore.StateOp, n),
	}
	for j := range c.Ops {
		v := bytes.Repeat([]byte("v"), 100)
		copy(v, fmt.Sprint(round))
		c.Ops[j] = eventstore.StateOp{Bucket: "attempts", Key: fmt.Appendf(nil, "sub-%04d/%012d", j%50, round*n+j), Value: v}
	}
	return c
}

var flushData = []byte(`{"attempts":"` + strings.Repeat("x", 2000) + `"}`)

// BenchmarkRawBoltCommit1000 is the baseline for Commit1000: the same bytes
// (a ~2 KB value under an 8-byte sequence key, 1000 ~100-byte values under
// the same keys) put into a bare bbolt file, one fsynced Update per op, with
// no log indexes, checks or committer.
func BenchmarkRawBoltCommit1000(b *testing.B) {
	const n = 1000
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, InitialMmapSize: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	put := func(seq int, c eventstore.StateCommit) error {
		return db.Update(func(tx *bolt.Tx) error {
			events, err := tx.CreateBucketIfNotExists([]byte("events"))
			if err != nil {
				return err
			}
			events.FillPercent = 1
			state, err := tx.CreateBucketIfNotExists([]byte("attempts"))
			if err != nil {
				return err
			}
			if err := events.Put(binary.BigEndian.AppendUint64(nil, uint64(seq)), c.Appends[0].Events[0].Data); err != nil {
				return err
			}
			for _, op := range c.Ops {
				if err := state.Put(op.Key, op.Value); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := put(0, flushCommit(0, n)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for i := range b.N {
		b.StopTimer()
		c := flushCommit(i+1, n)
		b.StartTimer()
		start := time.Now()
		if err := put(i+1, c); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(b.N*n)/elapsed.Seconds(), "ops/s")
}

// BenchmarkStateWithAppends measures how outcome flushes and appends share
// the committer: 4 goroutines append b.N single ~500-byte events (fsync on)
// while one flusher commits 1 append + 1000 upserts, never (none), every
// 10ms (more often than the projector's default OutcomeFlush) or back to back
// (busy). It reports the appends' throughput and latency percentiles, the
// flushes done per second and their mean latency, and appends per write
// transaction.
func BenchmarkStateWithAppends(b *testing.B) {
	for _, fl := range []struct {
		name  string
		every time.Duration // < 0: no flusher
	}{{"none", -1}, {"10ms", 10 * time.Millisecond}, {"busy", 0}} {
		b.Run("flusher="+fl.name, func(b *testing.B) { benchStateWithAppends(b, fl.every) })
	}
}

func benchStateWithAppends(b *testing.B, every time.Duration) {
	const workers, n = 4, 1000
	s, err := embedded.Open(embedded.Config{Path: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.CommitState(ctx, flushCommit(0, n)); err != nil { // warm up
		b.Fatal(err)
	}
	stop := make(chan struct{})
	flusherDone := make(chan struct{})
	var flushes atomic.Int64
	var flushTime atomic.Int64
	commits := make(chan eventstore.StateCommit, 4)
	go func() { // builds the flushes off the flusher's clock
		defer close(commits)
		for i := 1; ; i++ {
			select {
			case commits <- flushCommit(i, n):
			case <-stop:
				return
			}
		}
	}()
	go func() {
		defer close(flusherDone)
		if every < 0 {
			return
		}
		tick := time.NewTicker(max(every, time.Nanosecond))
		defer tick.Stop()
		for c := range commits {
			start := time.Now()
			if _, err := s.CommitState(ctx, c); err != nil {
				b.Error(err)
				return
			}
			flushTime.Add(int64(time.Since(start)))
			flushes.Add(1)
			if every > 0 {
				select {
				case <-tick.C:
				case <-stop:
					return
				}
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	var next atomic.Int64
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
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
				e := storetest.BenchEvent()
				start := time.Now()
				if _, err := s.Append(ctx, eventstore.AppendParams{Stream: storetest.BenchStream(w), Events: []eventstore.ProposedEvent{e}}); err != nil {
					b.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(start))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	elapsed := b.Elapsed()
	f := flushes.Load()
	close(stop)
	<-flusherDone
	for range commits { // let the builder end
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	b.ReportMetric(pct(0.5), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(f)/elapsed.Seconds(), "flushes/s")
	if f > 0 {
		b.ReportMetric(float64(flushTime.Load())/float64(f)/1e3, "flush-µs")
	}
}
