package esdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/esdb"
	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/eventstore/storetest"
)

// openBench opens a store on a fresh in-process server with side state in a
// fresh schema.
func openBench(b *testing.B) eventstore.Store {
	srv := esdbtest.Start(b)
	schema := pgtest.Schema(b)
	pg := pgtest.Open(b, schema)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := esdb.Open(ctx, esdb.Config{URL: srv.URL(), Postgres: pg, Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkStore runs the shared append benchmarks (Batch100, Batch100x4,
// Concurrent32, Tail1000) against esdb on the in-process esdbtest server:
// the figures measure the backend and client over loopback gRPC plus the
// PostgreSQL id index, not a real KurrentDB's disk.
func BenchmarkStore(b *testing.B) { storetest.Bench(b, openBench) }

// BenchmarkState is the shared CommitState benchmark on the same setup.
func BenchmarkState(b *testing.B) { storetest.BenchState(b, openBench) }
