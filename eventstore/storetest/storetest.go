package storetest

import (
	"context"
	"testing"

	"github.com/hooklog/hooklog/eventstore"
)

// Harness tells the suite how to make and reopen stores of one backend.
type Harness struct {
	// Open returns a fresh, empty store owned by t (its data is removed by
	// t.Cleanup). The returned reopen closes nothing: it opens another handle on
	// the same data, after the caller has closed the first (persistence tests).
	// The suite closes every store it gets (Close is idempotent) in t.Cleanup.
	Open func(t *testing.T) (s eventstore.Store, reopen func(t *testing.T) eventstore.Store)

	// BeginHeld, when the backend has concurrent write transactions, appends p
	// inside a transaction that stays open until commit (or rollback) is called.
	// The suite uses it for the commit-order cases. Nil for backends whose writes
	// are serialized (the embedded store): those cases then check the serialized
	// behaviour instead.
	BeginHeld func(ctx context.Context, t *testing.T, s eventstore.Store, p eventstore.AppendParams) (res eventstore.AppendResult, commit func() error, rollback func() error, err error)

	// ExactPositionAt says PositionAt(t) is exact: reading after it starts with
	// the first event whose RecordedAt >= t (the embedded store). Without it the
	// suite only checks that no such event is skipped.
	ExactPositionAt bool
}

// Run runs every conformance test against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.run(t, h)
		})
	}
}

type testCase struct {
	name string
	run  func(t *testing.T, h Harness)
}

// cases is filled in by the files of this package (see cases.go).
var cases []testCase
