package postgres_test

import (
	"flag"
	"os"
	"testing"

	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// TestMain runs this package's tests one at a time. The store's readers only
// see rows below the cluster-wide xmin horizon, so a test that holds a write
// transaction open on purpose (the commit-order cases) would hold back what
// every other test running at the same time can read, in any schema, and the
// conformance suite checks read-your-writes right after an append. For the
// same reason it runs apart from other packages' PostgreSQL tests
// (pgtest.HoldsTransactions).
func TestMain(m *testing.M) {
	pgtest.HoldsTransactions = true
	flag.Parse()
	if f := flag.Lookup("test.parallel"); f != nil && f.Value.String() != "1" {
		_ = f.Value.Set("1")
	}
	os.Exit(m.Run())
}
