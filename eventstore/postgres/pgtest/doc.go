// Package pgtest gives tests a real PostgreSQL store of their own.
//
// Tests read the database URL from HOOKLOG_TEST_POSTGRES_URL, e.g.
//
//	HOOKLOG_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test go test ./...
//
// Without it they skip, saying how to enable them; under CI=true a missing or
// unreachable database fails the test instead. Each store lives in a fresh,
// uniquely named schema that is dropped when the test ends, so tests may run
// in parallel against one database; a test binary that holds write
// transactions open on purpose runs apart from the others (see
// HoldsTransactions).
package pgtest
