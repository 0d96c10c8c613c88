package esdb_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/esdb"
	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/eventstore/storetest"
)

// A call the client strands (see link in conn.go) stays blocked in
// getConnectionHandle for good; the store gives up on it by design.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/EventStore/EventStore-Client-Go/v4/esdb.(*grpcClient).getConnectionHandle"))
}

// EnvURL names the variable holding a real server's connection string.
const EnvURL = "HOOKLOG_TEST_ESDB_URL"

// opener opens stores on url with side state in a fresh schema of t.
func opener(t *testing.T, url, prefix string) func(t *testing.T) eventstore.Store {
	t.Helper()
	schema := pgtest.Schema(t)
	pg := pgtest.Open(t, schema)
	return func(t *testing.T) eventstore.Store {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := esdb.Open(ctx, esdb.Config{URL: url, Postgres: pg, Schema: schema, StreamPrefix: prefix,
			TimeIndexInterval: 10 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
		if err != nil {
			t.Fatalf("esdb.Open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}

// TestConformance runs the whole suite against the in-process server, one
// server and one PostgreSQL schema per case.
func TestConformance(t *testing.T) {
	pgtest.URL(t)
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store) {
			srv := esdbtest.Start(t)
			open := opener(t, srv.URL(), "")
			return open(t), open
		},
	})
}

// TestConformanceRealServer runs the suite against the server named by
// HOOKLOG_TEST_ESDB_URL. Each case gets a stream prefix of its own, so the
// cases share the server without seeing each other's events.
func TestConformanceRealServer(t *testing.T) {
	url := os.Getenv(EnvURL)
	if url == "" {
		t.Skipf("set %s to run the suite against a real KurrentDB, e.g. %s=esdb://127.0.0.1:2113?tls=false "+
			"with: docker run --rm -p 2113:2113 docker.kurrent.io/kurrent-latest/kurrentdb:latest --insecure --run-projections=None", EnvURL, EnvURL)
	}
	pgtest.URL(t)
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store) {
			var b [4]byte
			_, _ = rand.Read(b[:])
			open := opener(t, url, "t"+hex.EncodeToString(b[:])+"-")
			return open(t), open
		},
	})
}
