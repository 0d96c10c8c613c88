package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func event(typ string) eventstore.ProposedEvent {
	return eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: typ, Data: json.RawMessage(`{"k":"v"}`)}
}

func appendOne(ctx context.Context, t *testing.T, s eventstore.Store, stream string) eventstore.AppendedEvent {
	t.Helper()
	res, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Events: []eventstore.ProposedEvent{event("test.event")}})
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res.Events[0]
}

func readEverything(ctx context.Context, t *testing.T, s eventstore.Store, after eventstore.Position, f eventstore.Filter) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	for {
		res, err := s.ReadAll(ctx, eventstore.ReadParams{After: after, Filter: f, Limit: 1000})
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		out = append(out, res.Events...)
		if res.Next == after {
			return out
		}
		after = res.Next
	}
}

// The deterministic commit-order case, written against pgx directly: tx A
// appends and stays open, B appends and commits. A reader must not pass A's
// row; once A commits it sees A then B, each once.
func TestCommitOrderHeldTransaction(t *testing.T) {
	ctx := ctxFor(t)
	s := pgtest.NewStore(t)

	txA, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(context.Background())
	resA, err := s.AppendTx(ctx, txA, eventstore.AppendParams{Stream: "a", Events: []eventstore.ProposedEvent{event("test.a")}})
	if err != nil {
		t.Fatalf("AppendTx: %v", err)
	}
	b := appendOne(ctx, t, s, "b")
	if !resA.Events[0].Position.Less(b.Position) {
		t.Fatalf("A (open first) at %s should sort before B at %s", resA.Events[0].Position, b.Position)
	}

	if evs := readEverything(ctx, t, s, eventstore.Start, eventstore.Filter{}); len(evs) != 0 {
		t.Fatalf("with A open the reader got %d events; it must not pass A's position", len(evs))
	}
	if h, err := s.Head(ctx); err != nil || !h.Less(resA.Events[0].Position) {
		t.Fatalf("Head with A open = %s, %v; want before A %s", h, err, resA.Events[0].Position)
	}
	// Stream reads are not held back: B's stream is committed.
	if evs, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "b"}); err != nil || len(evs) != 1 {
		t.Fatalf("ReadStream(b) with A open: %d events, %v", len(evs), err)
	}

	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	evs := readEverything(ctx, t, s, eventstore.Start, eventstore.Filter{})
	if len(evs) != 2 || evs[0].ID != resA.Events[0].ID || evs[1].ID != b.ID {
		t.Fatalf("after A commits: %v, want A then B", evs)
	}
	if evs[0].Position != resA.Events[0].Position {
		t.Errorf("A read at %s, AppendTx said %s", evs[0].Position, resA.Events[0].Position)
	}
}

// Rolled-back AppendTx writes nothing and does not block the stream.
func TestAppendTxRollback(t *testing.T) {
	ctx := ctxFor(t)
	s := pgtest.NewStore(t)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := event("test.rolled_back")
	if _, err := s.AppendTx(ctx, tx, eventstore.AppendParams{Stream: "x", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{e}}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Event(ctx, e.ID); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("Event after rollback: %v, want ErrNotFound", err)
	}
	res, err := s.Append(ctx, eventstore.AppendParams{Stream: "x", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{event("test.again")}})
	if err != nil || res.Events[0].Version != 0 {
		t.Fatalf("append after rollback: %+v, %v; want version 0", res, err)
	}
}

// AppendTx answers wrong versions and duplicates without aborting the
// caller's transaction, which can go on and commit its own writes.
func TestAppendTxKeepsTransactionUsable(t *testing.T) {
	ctx := ctxFor(t)
	s := pgtest.NewStore(t)
	first := event("test.first")
	if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "o", Events: []eventstore.ProposedEvent{first}}); err != nil {
		t.Fatal(err)
	}
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	_, err = s.AppendTx(ctx, tx, eventstore.AppendParams{Stream: "o", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{event("test.x")}})
	var wv *eventstore.WrongVersionError
	if !errors.As(err, &wv) || wv.Actual != 0 {
		t.Fatalf("AppendTx wrong version: %v, want *WrongVersionError with Actual 0", err)
	}
	res, err := s.AppendTx(ctx, tx, eventstore.AppendParams{Stream: "o", Events: []eventstore.ProposedEvent{first}})
	if err != nil || !res.Duplicate {
		t.Fatalf("AppendTx duplicate: %+v, %v", res, err)
	}
	res, err = s.AppendTx(ctx, tx, eventstore.AppendParams{Stream: "o", Expected: eventstore.Exact(0), Events: []eventstore.ProposedEvent{event("test.second")}})
	if err != nil || res.Events[0].Version != 1 {
		t.Fatalf("AppendTx after the refusals: %+v, %v", res, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	// Committed by the caller: visible at the next poll, and Wait notices.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Wait(wctx, eventstore.Position{Hi: res.Events[0].Position.Hi, Lo: res.Events[0].Position.Lo - 1}); err != nil {
		t.Fatalf("Wait for the AppendTx event: %v", err)
	}
}

// Sixteen writers on one stream: versions are dense and follow log order.
func TestConcurrentAppendsOneStream(t *testing.T) {
	ctx := ctxFor(t)
	s := pgtest.NewStore(t)
	const writers, each = 16, 15
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "hot", Events: []eventstore.ProposedEvent{event("test.a"), event("test.b")}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
	evs := readEverything(ctx, t, s, eventstore.Start, eventstore.Filter{})
	if len(evs) != writers*each*2 {
		t.Fatalf("read %d events, want %d", len(evs), writers*each*2)
	}
	for i, e := range evs {
		if e.Version != int64(i) {
			t.Fatalf("event %d in log order has version %d: versions must follow log order", i, e.Version)
		}
	}
}

// The same id appended at once to one stream gives one append and one
// duplicate; to two streams, one append and one ErrIDConflict.
func TestSameIDRaces(t *testing.T) {
	ctx := ctxFor(t)
	s := pgtest.NewStore(t)
	for round := range 10 {
		for _, sameStream := range []bool{true, false} {
			e := event("test.race")
			results := make([]error, 2)
			dups := make([]bool, 2)
			var wg sync.WaitGroup
			for i := range 2 {
				stream := fmt.Sprintf("r%d-%v", round, sameStream)
				if !sameStream {
					stream += fmt.Sprint(i)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Events: []eventstore.ProposedEvent{e}})
					results[i], dups[i] = err, res.Duplicate
				}()
			}
			wg.Wait()
			if sameStream {
				if results[0] != nil || results[1] != nil || dups[0] == dups[1] {
					t.Fatalf("same stream: errs %v, duplicates %v; want one append and one duplicate", results, dups)
				}
				continue
			}
			ok, conflict := 0, 0
			for _, err := range results {
				switch {
				case err == nil:
					ok++
				case errors.Is(err, eventstore.ErrIDConflict):
					conflict++
				default:
					t.Fatalf("two streams: unexpected error %v", err)
				}
			}
			if ok != 1 || conflict != 1 {
				t.Fatalf("two streams: errs %v; want one success and one ErrIDConflict", results)
			}
		}
	}
}

// Prefix filters escape LIKE's metacharacters.
func TestFilterPrefixIsLiteral(t *testing.T) {
	ctx := ctxFor(t)
	s := pgtest.NewStore(t)
	for _, stream := range []string{"a_b-1", "axb-1", "a.b-1"} {
		appendOne(ctx, t, s, stream)
	}
	for _, c := range []struct {
		pattern string
		want    []string
	}{
		{"a_b*", []string{"a_b-1"}},
		{"a.b*", []string{"a.b-1"}},
		{"a*", []string{"a_b-1", "axb-1", "a.b-1"}},
		{"*", []string{"a_b-1", "axb-1", "a.b-1"}},
		{"axb-1", []string{"axb-1"}},
	} {
		evs := readEverything(ctx, t, s, eventstore.Start, eventstore.Filter{Streams: []string{c.pattern}})
		var got []string
		for _, e := range evs {
			got = append(got, e.Stream)
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("streams %q: got %v, want %v", c.pattern, got, c.want)
		}
	}
}

// A Store alone on its schema sends no NOTIFY (each is a write transaction
// and wakes every listener); once another Store listens, its appends notify
// again, within about a second.
func TestNotifyOnlyWithPeers(t *testing.T) {
	ctx := ctxFor(t)
	schema := pgtest.Schema(t)
	alone := pgtest.Open(t, schema)

	// A plain LISTEN connection: it hears every NOTIFY, but holds no
	// listen lock, so it is not a peer.
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{"hooklog_events_" + schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	heard := func(within time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		_, err := conn.WaitForNotification(wctx)
		if err != nil && wctx.Err() == nil {
			t.Fatal(err)
		}
		return err == nil
	}
	// The Store's own listener may still be connecting (it then notifies,
	// not knowing): wait until it holds its lock.
	waitLocks := func(n int) {
		t.Helper()
		check, err := pgx.Connect(ctx, pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer check.Close(context.Background())
		for deadline := time.Now().Add(5 * time.Second); ; {
			var got int
			if err := check.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
				AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)`, "hooklog.listen.hooklog_events_"+schema).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d listen locks held, want %d", got, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLocks(1)
	time.Sleep(1100 * time.Millisecond) // past any check made before the lock was held
	for range 5 {
		appendOne(ctx, t, alone, "alone")
	}
	if heard(500 * time.Millisecond) {
		t.Fatal("a Store alone on its schema sent a NOTIFY")
	}

	pgtest.Open(t, schema) // another process's Store, listening
	waitLocks(2)
	start := time.Now()
	appendOne(ctx, t, alone, "with-peer")
	if !heard(3 * time.Second) {
		t.Fatal("no NOTIFY with another Store listening")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the NOTIFY came %s after the append, want within about a second", d)
	}
}

// Waiters in one process are woken by another process's append through
// LISTEN/NOTIFY, also after the listening connection was killed.
func TestNotifyWakesOtherStores(t *testing.T) {
	ctx := ctxFor(t)
	schema := pgtest.Schema(t)
	writer := pgtest.Open(t, schema)
	cfg := pgtest.Config(t, schema)
	cfg.PollInterval = time.Hour // only a notification can wake it
	reader := pgtest.OpenConfig(t, cfg)

	waitFor := func(what string) {
		t.Helper()
		head, err := reader.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		woke := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			woke <- reader.Wait(wctx, head)
		}()
		time.Sleep(20 * time.Millisecond)
		appendOne(ctx, t, writer, "n")
		if err := <-woke; err != nil {
			t.Fatalf("%s: Wait: %v, want a wake-up by notification", what, err)
		}
	}
	waitFor("first")

	// Kill the reader's LISTEN connection; it reconnects with backoff.
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	channel := pgx.Identifier{"hooklog_events_" + schema}.Sanitize()
	listening := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var n int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN ' || $1`, channel).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 2 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of 2 listening connections (writer and reader)", what, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The writer's listener starts in the background: a loaded machine
	// may not have sent its LISTEN yet.
	listening("before the kill")
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query = 'LISTEN ' || $1`, channel).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 2 {
		t.Fatalf("terminated %d listening connections, want 2 (writer and reader)", killed)
	}
	listening("listeners did not reconnect")
	waitFor("after reconnect")
}

// Concurrent Opens of one new schema all succeed and migrate it once.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	ctx := ctxFor(t)
	schema := pgtest.Schema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(ctx, pgtest.Config(t, schema))
			if err != nil {
				errs <- err
				return
			}
			errs <- s.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open: %v", err)
		}
	}
	s := pgtest.Open(t, schema)
	var n int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if want := migrationFiles(t); n != want {
		t.Fatalf("schema_migrations has %d rows, want %d (one per migration)", n, want)
	}
}

// migrationFiles counts the embedded migrations.
func migrationFiles(t *testing.T) int {
	t.Helper()
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations/*.sql: %d files, %v", len(files), err)
	}
	return len(files)
}

// A schema migrated by an older binary (only 0001: no state table) is brought
// up to date by Open, keeping its events.
func TestOpenUpgradesSchema(t *testing.T) {
	ctx := ctxFor(t)
	schema := pgtest.Schema(t)
	s := pgtest.Open(t, schema)
	e := appendOne(ctx, t, s, "upgrade")
	q := pgx.Identifier{schema}.Sanitize()
	if _, err := s.Pool().Exec(ctx, `DROP TABLE `+q+`.state; DROP FUNCTION `+q+`.append_events_strict;
		DELETE FROM `+q+`.schema_migrations WHERE version > 1`); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	s2 := pgtest.Open(t, schema)
	if _, err := s2.Event(ctx, e.ID); err != nil {
		t.Fatalf("event after the upgrade: %v", err)
	}
	if _, err := s2.CommitState(ctx, eventstore.StateCommit{
		Appends: []eventstore.AppendParams{{Stream: "upgrade", Events: []eventstore.ProposedEvent{event("test.after")}}},
		Ops:     []eventstore.StateOp{{Bucket: "b", Key: []byte("k"), Value: []byte("v")}},
	}); err != nil {
		t.Fatalf("CommitState after the upgrade: %v", err)
	}
	var n int
	if err := s2.Pool().QueryRow(ctx, `SELECT count(*) FROM `+q+`.schema_migrations`).Scan(&n); err != nil || n != migrationFiles(t) {
		t.Fatalf("schema_migrations has %d rows (%v), want %d", n, err, migrationFiles(t))
	}
}

func TestConfigValidation(t *testing.T) {
	ctx := ctxFor(t)
	for _, c := range []struct {
		cfg   postgres.Config
		field string
	}{
		{postgres.Config{}, "Config.URL"},
		{postgres.Config{URL: "postgres://127.0.0.1/x", Schema: "Bad-Name"}, "Config.Schema"},
		{postgres.Config{URL: "postgres://127.0.0.1/x", MaxConns: -1}, "Config.MaxConns"},
		{postgres.Config{URL: "postgres://127.0.0.1/x", PollInterval: -time.Second}, "Config.PollInterval"},
		{postgres.Config{URL: "postgres://u:p@h:port/x"}, "Config.URL"},
	} {
		_, err := postgres.Open(ctx, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("Open(%+v) = %v, want an error naming %s", c.cfg, err, c.field)
		}
	}
}

// Close stops the watcher and the listener: no goroutine outlives it, and
// every call afterwards returns ErrClosed.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	ctx := ctxFor(t)
	schema := pgtest.Schema(t)
	ignore := goleak.IgnoreCurrent()
	s, err := postgres.Open(ctx, pgtest.Config(t, schema))
	if err != nil {
		t.Fatal(err)
	}
	appendOne(ctx, t, s, "g")
	waitErr := make(chan error, 1)
	go func() { waitErr <- s.Wait(ctx, eventstore.Position{Hi: 1 << 62}) }()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Wait during Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "g", Events: []eventstore.ProposedEvent{event("test.late")}}); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Ping after Close: %v, want ErrClosed", err)
	}
	goleak.VerifyNone(t, ignore)
}
