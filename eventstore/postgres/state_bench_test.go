package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/eventstore/storetest"
)

// BenchmarkState runs the shared StateStore benchmarks (storetest.BenchState).
func BenchmarkState(b *testing.B) {
	storetest.BenchState(b, func(b *testing.B) eventstore.Store { return benchStore(b, pgtest.Schema(b), 4) })
}

// BenchmarkCommitState1000: the projector's outcome flush, one CommitState
// with 1 append of one ~2 KB event and 1000 upserts of new ~100-byte values
// (50 subscriptions' keys), one committer; vs the raw baseline: the same rows
// as a plain INSERT into a bare events table and an INSERT ... ON CONFLICT
// into a bare (bucket, key) table, pipelined in one implicit transaction. One
// op = one commit on each side; ops/s counts state ops.
func BenchmarkCommitState1000(b *testing.B) {
	const ops = 1000
	ctx := context.Background()
	schema := pgtest.Schema(b)
	s := benchStore(b, schema, 4)
	events := bareTable(ctx, b, s.Pool(), schema)
	state := pgx.Identifier{schema, "bare_state"}.Sanitize()
	if _, err := s.Pool().Exec(ctx, `CREATE TABLE `+state+` (bucket text, key bytea, value bytea, PRIMARY KEY (bucket, key))`); err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"attempts":"` + strings.Repeat("x", 2000) + `"}`)
	value := []byte(strings.Repeat("v", 100))
	keys := func(i int) [][]byte {
		out := make([][]byte, ops)
		for j := range out {
			out[j] = fmt.Appendf(nil, "sub-%04d/%012d", j%50, i*ops+j)
		}
		return out
	}
	commit := func(i int) eventstore.StateCommit {
		c := eventstore.StateCommit{
			Appends: []eventstore.AppendParams{{Stream: "hooklog-deliveries", Events: []eventstore.ProposedEvent{
				{ID: uuid.Must(uuid.NewV7()), Type: "delivery.attempts", Data: data},
			}}},
		}
		for _, k := range keys(i) {
			c.Ops = append(c.Ops, eventstore.StateOp{Bucket: "attempts", Key: k, Value: value})
		}
		return c
	}
	baseline := func(i int, ks [][]byte) error {
		buckets, values := make([]string, ops), make([][]byte, ops)
		for j := range ks {
			buckets[j], values[j] = "attempts", value
		}
		e := eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: "delivery.attempts", Data: data}
		batch := &pgx.Batch{}
		batch.Queue(insertSQL(events, 1), insertArgs("hooklog-deliveries", int64(i), []eventstore.ProposedEvent{e})...)
		batch.Queue(`INSERT INTO `+state+` AS s (bucket, key, value) SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])
			ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value`, buckets, ks, values)
		return s.Pool().SendBatch(ctx, batch).Close()
	}
	if _, err := s.CommitState(ctx, commit(0)); err != nil { // warm up
		b.Fatal(err)
	}
	if err := baseline(0, keys(0)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var storeTime, baseTime time.Duration
	for i := range b.N {
		c := commit(i + 1)
		start := time.Now()
		if _, err := s.CommitState(ctx, c); err != nil {
			b.Fatal(err)
		}
		storeTime += time.Since(start)
	}
	for i := range b.N {
		ks := keys(i + 1)
		start := time.Now()
		if err := baseline(i+1, ks); err != nil {
			b.Fatal(err)
		}
		baseTime += time.Since(start)
	}
	b.StopTimer()
	sr, br := float64(b.N*ops)/storeTime.Seconds(), float64(b.N*ops)/baseTime.Seconds()
	b.ReportMetric(float64(b.N)/storeTime.Seconds(), "commits/s")
	b.ReportMetric(sr, "ops/s")
	b.ReportMetric(br, "baseline-ops/s")
	b.ReportMetric(sr/br, "ratio")
	b.ReportMetric(float64(storeTime.Microseconds())/float64(b.N)/1000, "ms/commit")
}
