package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hooklog/hooklog/eventstore/postgres"
)

// EnvURL names the environment variable holding the test database URL.
const EnvURL = "HOOKLOG_TEST_POSTGRES_URL"

var (
	probeOnce sync.Once
	probeErr  error
	// horizonConn keeps the session that holds the horizon lock (see
	// HoldsTransactions) open until the process exits.
	horizonConn *pgx.Conn
)

// HoldsTransactions marks a test binary whose tests keep PostgreSQL write
// transactions open on purpose (the commit-order cases of the eventstore
// conformance suite). Set it in TestMain, before any test runs.
//
// The store's readers see only rows below the cluster-wide xmin horizon, so
// such a transaction holds back what every PostgreSQL-backed test running at
// the same time can read, in any schema: `go test ./...` runs several
// packages' test binaries at once, and a projector test timing its deliveries
// would see a stall of the held transaction's length. So the first URL call of
// each test binary takes a session-level advisory lock on the test database
// for the rest of the process: exclusive in a binary that holds
// transactions, shared in the others. Binaries that only read and write
// briefly still run side by side; one that holds transactions runs alone.
var HoldsTransactions bool

// horizonLock is the advisory lock key ("hooklog" in ASCII).
const horizonLock = 0x686f6f6b6c6f67

// URL returns the test database URL. Without one (or when the database does
// not answer) it skips t, or fails it when CI=true.
func URL(t testing.TB) string {
	t.Helper()
	url := os.Getenv(EnvURL)
	stop := t.Skipf
	if os.Getenv("CI") == "true" {
		stop = t.Fatalf
	}
	if url == "" {
		stop("PostgreSQL tests need a database: set %s (e.g. %s=postgres://postgres@127.0.0.1:5432/test)", EnvURL, EnvURL)
		return ""
	}
	probeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			err = conn.Ping(ctx)
		}
		if err != nil {
			if conn != nil {
				_ = conn.Close(ctx)
			}
			probeErr = err
			return
		}
		// The connection stays open, holding the lock (it may wait for
		// other test binaries to finish: no deadline).
		lock := "SELECT pg_advisory_lock_shared($1)"
		if HoldsTransactions {
			lock = "SELECT pg_advisory_lock($1)"
		}
		if _, err := conn.Exec(context.Background(), lock, int64(horizonLock)); err != nil {
			_ = conn.Close(ctx)
			probeErr = err
			return
		}
		horizonConn = conn
	})
	if probeErr != nil {
		stop("PostgreSQL at %s=%s is unreachable: %v", EnvURL, url, probeErr)
		return ""
	}
	return url
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// Schema returns a fresh schema name for t, unique across runs, and drops the
// schema (if it was created) when t ends, after the cleanups registered later,
// such as closing stores.
func Schema(t testing.TB) string {
	t.Helper()
	url := URL(t)
	name := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:]) + "_" + strings.Trim(name, "_")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// Config is the store configuration Open uses for schema: the test URL, a
// pool of 8 connections and a 20ms poll.
func Config(t testing.TB, schema string) postgres.Config {
	t.Helper()
	return postgres.Config{URL: URL(t), Schema: schema, MaxConns: 8, PollInterval: 20 * time.Millisecond}
}

// Open opens a store on schema (creating it if needed) and closes it when t
// ends.
func Open(t testing.TB, schema string) *postgres.Store {
	t.Helper()
	return OpenConfig(t, Config(t, schema))
}

// OpenConfig opens a store with cfg and closes it when t ends.
func OpenConfig(t testing.TB, cfg postgres.Config) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("pgtest: open store in schema %s: %v", cfg.Schema, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// NewStore returns a store in a fresh schema, closed and dropped when t ends.
func NewStore(t testing.TB) *postgres.Store {
	t.Helper()
	return Open(t, Schema(t))
}
