package embedded_test

import (
	"os"
	"path/filepath"
	"testing"

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
