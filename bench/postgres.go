package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres"
)

// rawTable is the baseline: a bare table with the store's row shape and no
// secondary index, no function, no locking.
const rawTable = `CREATE TABLE %s.raw_events (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid        NOT NULL,
    stream      text        NOT NULL,
    version     bigint      NOT NULL,
    type        text        NOT NULL,
    tenant      text        NOT NULL DEFAULT '',
    data        jsonb       NOT NULL,
    metadata    jsonb,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
)`

// pgEnv is a pair of throwaway schemas: one for the store, one for the
// baseline table.
type pgEnv struct {
	url         string
	admin       *pgxpool.Pool
	storeSchema string
	rawSchema   string
}

func newPGEnv(ctx context.Context, url string) (*pgEnv, error) {
	admin, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("bench: postgres: %w", err)
	}
	if err := admin.Ping(ctx); err != nil {
		admin.Close()
		return nil, fmt.Errorf("bench: postgres: %w", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	e := &pgEnv{url: url, admin: admin, storeSchema: "hooklog_bench_" + suffix, rawSchema: "hooklog_bench_raw_" + suffix}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+e.rawSchema); err != nil {
		admin.Close()
		return nil, fmt.Errorf("bench: postgres: %w", err)
	}
	return e, nil
}

func (e *pgEnv) close() error {
	ctx := context.Background()
	_, err1 := e.admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+e.storeSchema+" CASCADE")
	_, err2 := e.admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+e.rawSchema+" CASCADE")
	e.admin.Close()
	return errors.Join(err1, err2)
}

// openStore opens the store in a fresh schema (dropping the previous one).
func (e *pgEnv) openStore(ctx context.Context, conns int) (*postgres.Store, error) {
	if _, err := e.admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+e.storeSchema+" CASCADE"); err != nil {
		return nil, err
	}
	s, err := postgres.Open(ctx, postgres.Config{URL: e.url, Schema: e.storeSchema, MaxConns: int32(conns)})
	if err != nil {
		return nil, fmt.Errorf("bench: open postgres store: %w", err)
	}
	return s, nil
}

// rawPool creates a fresh baseline table and a pool of exactly conns
// connections, all established before measuring (as the store's are warmed by
// its own first appends).
func (e *pgEnv) rawPool(ctx context.Context, conns int) (*pgxpool.Pool, error) {
	if _, err := e.admin.Exec(ctx, "DROP TABLE IF EXISTS "+e.rawSchema+".raw_events"); err != nil {
		return nil, err
	}
	if _, err := e.admin.Exec(ctx, fmt.Sprintf(rawTable, e.rawSchema)); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(e.url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(conns)
	cfg.MinConns = int32(conns)
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	held := make([]*pgxpool.Conn, 0, conns)
	for i := 0; i < conns; i++ {
		c, err := p.Acquire(ctx)
		if err != nil {
			p.Close()
			return nil, err
		}
		held = append(held, c)
	}
	for _, c := range held {
		c.Release()
	}
	return p, nil
}

// warm runs a few appends on every connection of the store so that neither
// side pays for connecting inside the measurement.
func warm(ctx context.Context, s eventstore.Store, conns int, data []byte) error {
	errc := make(chan error, conns)
	for w := 0; w < conns; w++ {
		go func() {
			_, err := s.Append(ctx, eventstore.AppendParams{Stream: fmt.Sprintf("bench-warm-%d", w), Events: proposed(1, data)})
			errc <- err
		}()
	}
	var err error
	for w := 0; w < conns; w++ {
		err = errors.Join(err, <-errc)
	}
	return err
}

func postgresAppend(ctx context.Context, o AppendOptions) (results []Result, err error) {
	env, err := newPGEnv(ctx, o.PostgresURL)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, env.close()) }()
	data := payload(o.EventSize)

	// 1. Batches vs one multi-row INSERT of the same rows, same connections.
	fmt.Fprintf(o.Progress, "postgres: batch-%d appends, %d connection(s), vs multi-row INSERT into a bare table...\n", o.Batch, o.BatchWriters)
	r, _, err := pgCompare(ctx, env, o, o.BatchWriters, o.Batch, data)
	if err != nil {
		return results, err
	}
	results = append(results, Result{
		Scenario: fmt.Sprintf("batch-%d, %d connection", o.Batch, o.BatchWriters),
		Driver:   "postgres", Value: r[0], Text: rateText(r[0]),
		Baseline: fmt.Sprintf("one %d-row INSERT of the same rows into a bare table (no secondary index), %d connection", o.Batch, o.BatchWriters), BaselineValue: r[1], Ratio: r[0] / r[1],
		Target: ">= 0.70 of baseline", Met: ptr(r[0]/r[1] >= 0.7),
	})

	// 2. Single-event appends from o.Concurrency connections vs single-row
	// INSERT commits.
	fmt.Fprintf(o.Progress, "postgres: %d connections of single-event appends vs single-row INSERT commits...\n", o.Concurrency)
	r, tx, err := pgCompare(ctx, env, o, o.Concurrency, 1, data)
	if err != nil {
		return results, err
	}
	results = append(results, Result{
		Scenario: fmt.Sprintf("single-event, %d connections", o.Concurrency),
		Driver:   "postgres", Value: r[0], Text: rateText(r[0]),
		Baseline: fmt.Sprintf("single-row INSERT commits into a bare table on %d connections", o.Concurrency), BaselineValue: r[1], Ratio: r[0] / r[1],
		Target: ">= 0.80 of baseline", Met: ptr(r[0]/r[1] >= 0.8),
		Note: fmt.Sprintf("%d concurrent Appends on a pool of %d connections; the store group-commits them (store.postgres.append_groups): %d appends in %d transactions, %.1f per transaction",
			o.Concurrency, o.Concurrency, tx.appends, len(tx.txids), float64(tx.appends)/float64(max(len(tx.txids), 1))),
	})

	// 3. Tail latency, next to its floor: the commit latency of single-row
	// INSERTs into the bare table at the same rate, from as many
	// connections, measured just before.
	fmt.Fprintf(o.Progress, "postgres: single-row INSERT commit latency at %d/s for %s, then tail latency...\n", o.TailRate, o.Duration)
	floor, err := rawCommitLatency(ctx, env, o.TailRate, o.Duration, data)
	if err != nil {
		return results, err
	}
	s, err := env.openStore(ctx, tailAppenders)
	if err != nil {
		return results, err
	}
	// Like the floor's pool, the store's connections are established before
	// measuring: otherwise the first appends each pay for a new backend,
	// and by commit order every event after them waits too.
	if err := warm(ctx, s, tailAppenders, data); err != nil {
		_ = s.Close()
		return results, fmt.Errorf("bench: warm up: %w", err)
	}
	lat, err := tailLatency(ctx, s, o.TailRate, o.Duration, data)
	err = errors.Join(err, s.Close())
	if err != nil {
		return results, err
	}
	lat.floorP50, lat.floorP99 = percentile(floor, 0.50), percentile(floor, 0.99)
	lat.floor = fmt.Sprintf("commit latency of single-row INSERTs into a bare table at the same rate from %d connections, measured just before", tailAppenders)
	results = append(results, lat.result("postgres"))
	return results, nil
}

// rawCommitLatency inserts single rows into a fresh bare table at rate/s for
// d, paced like tailLatency's appends, and returns each INSERT's latency
// (autocommit: call start -> committed), sorted.
func rawCommitLatency(ctx context.Context, env *pgEnv, rate int, d time.Duration, data []byte) ([]time.Duration, error) {
	raw, err := env.rawPool(ctx, tailAppenders)
	if err != nil {
		return nil, fmt.Errorf("bench: baseline table: %w", err)
	}
	defer raw.Close()
	insert := fmt.Sprintf("INSERT INTO %s.raw_events (id, stream, version, type, tenant, data) VALUES ($1, $2, $3, $4, $5, $6)", env.rawSchema)
	total := max(int(float64(rate)*d.Seconds()), 1)
	var version atomic.Int64
	durs, _, err := paced(ctx, rate, total, func(w int, _ time.Time) error {
		id, _ := uuid.NewV7()
		_, err := raw.Exec(ctx, insert, id, fmt.Sprintf("bench-tail-%d", w), version.Add(1), "order.paid", "", string(data))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: baseline commit latency: %w", err)
	}
	sortDurations(durs)
	return durs, nil
}

// txCount counts the store's appends and the transactions they committed in
// (an event's position holds its transaction id).
type txCount struct {
	mu      sync.Mutex
	txids   map[uint64]struct{}
	appends int
}

func (c *txCount) add(res eventstore.AppendResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.txids == nil {
		c.txids = map[uint64]struct{}{}
	}
	c.appends++
	c.txids[res.Events[0].Position.Hi] = struct{}{}
}

// pgCompare measures appends of `batch` events from `conns` writers against a
// fresh store, and the same rows inserted into a bare table. It returns
// {store, baseline} in events/s, and the store's appends and transactions.
func pgCompare(ctx context.Context, env *pgEnv, o AppendOptions, conns, batch int, data []byte) ([2]float64, *txCount, error) {
	s, err := env.openStore(ctx, conns)
	if err != nil {
		return [2]float64{}, nil, err
	}
	defer s.Close()
	if err := warm(ctx, s, conns, data); err != nil {
		return [2]float64{}, nil, fmt.Errorf("bench: warm up: %w", err)
	}
	raw, err := env.rawPool(ctx, conns)
	if err != nil {
		return [2]float64{}, nil, fmt.Errorf("bench: baseline table: %w", err)
	}
	defer raw.Close()

	var sb strings.Builder
	fmt.Fprintf(&sb, "INSERT INTO %s.raw_events (id, stream, version, type, tenant, data) VALUES ", env.rawSchema)
	for i := 0; i < batch; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		n := i * 6
		fmt.Fprintf(&sb, "($%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6)
	}
	insert := sb.String()
	var version atomic.Int64
	tx := &txCount{}

	store, base, err := compare(ctx, o.Duration, conns,
		func(ctx context.Context, w int) (int, error) {
			res, err := s.Append(ctx, eventstore.AppendParams{Stream: fmt.Sprintf("bench-w-%d", w), Events: proposed(batch, data)})
			if err == nil {
				tx.add(res)
			}
			return batch, err
		},
		func(ctx context.Context, w int) (int, error) {
			args := make([]any, 0, batch*6)
			stream := fmt.Sprintf("bench-w-%d", w)
			for i := 0; i < batch; i++ {
				id, _ := uuid.NewV7()
				args = append(args, id, stream, version.Add(1), "order.paid", "", string(data))
			}
			_, err := raw.Exec(ctx, insert, args...)
			return batch, err
		})
	if err != nil {
		return [2]float64{}, nil, err
	}
	return [2]float64{store, base}, tx, nil
}
