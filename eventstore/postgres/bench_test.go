package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// Run with
//
//	HOOKLOG_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//	  go test -run XXX -bench . -benchtime 3s ./eventstore/postgres/
//
// Each append benchmark measures the store and its raw baseline in the same
// run, with the same rows and the same number of connections, and reports
// both rates and their ratio.

// payload is a ~500-byte event body.
var payload = func() json.RawMessage {
	b := `{"order":"o-123456","customer":"c-98765","currency":"EUR","note":"` + strings.Repeat("x", 380) + `","amount":12345}`
	return json.RawMessage(b)
}()

func benchEvents(n int) []eventstore.ProposedEvent {
	evs := make([]eventstore.ProposedEvent, n)
	for i := range evs {
		evs[i] = eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: "payment.succeeded", Tenant: "acme", Data: payload}
	}
	return evs
}

func benchStore(b *testing.B, schema string, conns int32) *postgres.Store {
	cfg := pgtest.Config(b, schema)
	cfg.MaxConns = conns
	cfg.PollInterval = 100 * time.Millisecond
	return pgtest.OpenConfig(b, cfg)
}

// bareTable creates a table with the events columns' types and no keys,
// indexes or defaults: the raw baseline.
func bareTable(ctx context.Context, b *testing.B, pool *pgxpool.Pool, schema string) string {
	name := pgx.Identifier{schema, "bare"}.Sanitize()
	if _, err := pool.Exec(ctx, `CREATE TABLE `+name+` (txid bigint, seq bigint, id uuid, stream text, version bigint,
		type text, tenant text, data jsonb, metadata jsonb, recorded_at timestamptz, xmin_at_insert bigint)`); err != nil {
		b.Fatal(err)
	}
	return name
}

// insertSQL is a plain multi-row INSERT of n rows into table.
func insertSQL(table string, n int) string {
	var sb strings.Builder
	sb.WriteString("INSERT INTO " + table + " (id, stream, version, type, tenant, data, metadata, recorded_at) VALUES ")
	for i := range n {
		if i > 0 {
			sb.WriteString(",")
		}
		p := i*7 + 1
		fmt.Fprintf(&sb, "($%d,$%d,$%d,$%d,$%d,$%d,$%d,clock_timestamp())", p, p+1, p+2, p+3, p+4, p+5, p+6)
	}
	return sb.String()
}

func insertArgs(stream string, version int64, evs []eventstore.ProposedEvent) []any {
	args := make([]any, 0, 7*len(evs))
	for i, e := range evs {
		args = append(args, e.ID, stream, version+int64(i), e.Type, e.Tenant, e.Data, e.Metadata)
	}
	return args
}

// parallel runs op(worker, i) for i in [0, n) on workers goroutines and
// returns the elapsed time.
func parallel(b *testing.B, workers, n int, op func(worker, i int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				if err := op(w, i); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func report(b *testing.B, events int, store, base time.Duration) {
	sr := float64(events) / store.Seconds()
	br := float64(events) / base.Seconds()
	b.ReportMetric(sr, "events/s")
	b.ReportMetric(br, "baseline-events/s")
	b.ReportMetric(sr/br, "ratio")
}

// BenchmarkAppendBatch100: batches of 100 ~500-byte events from 4
// connections, vs a plain 100-row INSERT into a bare table from 4 connections.
// Target ratio >= 0.7. One op = one batch on each side.
func BenchmarkAppendBatch100(b *testing.B) {
	const conns, batch = 4, 100
	ctx := context.Background()
	schema := pgtest.Schema(b)
	s := benchStore(b, schema, conns)
	table := bareTable(ctx, b, s.Pool(), schema)
	sql := insertSQL(table, batch)
	batches := make([][]eventstore.ProposedEvent, conns)
	for w := range batches {
		batches[w] = benchEvents(batch)
	}
	b.ResetTimer()
	storeTime := parallel(b, conns, b.N, func(w, i int) error {
		_, err := s.Append(ctx, eventstore.AppendParams{Stream: "bench-" + strconv.Itoa(w), Events: benchEvents(batch)})
		return err
	})
	baseTime := parallel(b, conns, b.N, func(w, i int) error {
		_, err := s.Pool().Exec(ctx, sql, insertArgs("bench-"+strconv.Itoa(w), int64(i*batch), benchEvents(batch))...)
		return err
	})
	b.StopTimer()
	report(b, b.N*batch, storeTime, baseTime)
}

// BenchmarkAppendSingle32: single-event appends from 32 goroutines on 32
// connections (one stream each), vs single-row INSERT commits from 32
// connections. Target ratio >= 0.8. One op = one event on each side.
func BenchmarkAppendSingle32(b *testing.B) {
	const conns = 32
	ctx := context.Background()
	schema := pgtest.Schema(b)
	s := benchStore(b, schema, conns)
	table := bareTable(ctx, b, s.Pool(), schema)
	sql := insertSQL(table, 1)
	b.ResetTimer()
	storeTime := parallel(b, conns, b.N, func(w, i int) error {
		_, err := s.Append(ctx, eventstore.AppendParams{Stream: "bench-" + strconv.Itoa(w), Events: benchEvents(1)})
		return err
	})
	baseTime := parallel(b, conns, b.N, func(w, i int) error {
		_, err := s.Pool().Exec(ctx, sql, insertArgs("bench-"+strconv.Itoa(w), int64(i), benchEvents(1))...)
		return err
	})
	b.StopTimer()
	report(b, b.N, storeTime, baseTime)
}

// BenchmarkTailLatency: one event appended every millisecond (1000 events/s);
// a reader tails with eventstore.Follow and records append start → delivery.
// "same-store" reads through the appending Store (woken by its own commit);
// "other-store" reads through a second Store on the schema, as another
// process would (woken by NOTIFY). Target p99 < 10ms. One op = one event.
func BenchmarkTailLatency(b *testing.B) {
	for _, other := range []bool{false, true} {
		name := "same-store"
		if other {
			name = "other-store"
		}
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			schema := pgtest.Schema(b)
			writer := benchStore(b, schema, 16)
			reader := writer
			if other {
				reader = benchStore(b, schema, 4)
			}
			head, err := reader.Head(ctx)
			if err != nil {
				b.Fatal(err)
			}
			var mu sync.Mutex
			sent := map[uuid.UUID]time.Time{}
			acked := map[uuid.UUID]time.Time{}
			lat := make([]time.Duration, 0, b.N)
			var ackLat, ackToSeen []time.Duration
			done := make(chan struct{})
			followErr := make(chan error, 1)
			go func() {
				followErr <- eventstore.Follow(ctx, reader, eventstore.FollowParams{After: head}, func(_ context.Context, evs []eventstore.Event) error {
					now := time.Now()
					mu.Lock()
					defer mu.Unlock()
					for _, e := range evs {
						lat = append(lat, now.Sub(sent[e.ID]))
						if a, ok := acked[e.ID]; ok {
							ackToSeen = append(ackToSeen, now.Sub(a))
						}
					}
					if len(lat) == b.N {
						close(done)
					}
					return nil
				}, nil)
			}()
			b.ResetTimer()
			start := time.Now()
			var appenders sync.WaitGroup
			for i := range b.N {
				// Paced by the clock, not by the previous append's return:
				// each append runs in its own goroutine.
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Millisecond)))
				e := benchEvents(1)
				mu.Lock()
				sent[e[0].ID] = time.Now()
				mu.Unlock()
				appenders.Add(1)
				go func() {
					defer appenders.Done()
					if _, err := writer.Append(ctx, eventstore.AppendParams{Stream: "tail-" + strconv.Itoa(i%8), Events: e}); err != nil {
						b.Error(err)
					}
					now := time.Now()
					mu.Lock()
					acked[e[0].ID] = now
					ackLat = append(ackLat, now.Sub(sent[e[0].ID]))
					mu.Unlock()
				}()
			}
			appenders.Wait()
			select {
			case <-done:
			case err := <-followErr:
				b.Fatalf("Follow: %v", err)
			case <-time.After(30 * time.Second):
				b.Fatalf("reader saw %d of %d events", len(lat), b.N)
			}
			b.StopTimer()
			cancel()
			<-followErr
			q := func(d []time.Duration, p float64) float64 {
				if len(d) == 0 {
					return 0
				}
				slices.Sort(d)
				return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(q(lat, 0.50), "p50-ms")
			b.ReportMetric(q(lat, 0.99), "p99-ms")
			// The parts: the append itself (start to acknowledgement), and
			// acknowledgement to the reader's delivery (when it came after).
			mu.Lock()
			b.ReportMetric(q(ackLat, 0.99), "append-p99-ms")
			b.ReportMetric(q(ackToSeen, 0.50), "ack-to-read-p50-ms")
			b.ReportMetric(q(ackToSeen, 0.99), "ack-to-read-p99-ms")
			mu.Unlock()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}
