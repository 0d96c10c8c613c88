package postgres_test

import (
	"errors"
	"testing"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// Append remembers each stream's last version and writes the next ones
// without looking the stream up. Another Store appending to the stream makes
// that memory stale; the append must then still get the right version (or
// the right WrongVersionError), for single events and batches, and a retry
// with the same ids must still be a duplicate.
func TestRememberedVersionGoesStale(t *testing.T) {
	ctx := ctxFor(t)
	schema := pgtest.Schema(t)
	a := pgtest.Open(t, schema)
	b := pgtest.Open(t, schema)

	appendTo := func(s eventstore.Store, exp eventstore.ExpectedVersion, evs ...eventstore.ProposedEvent) (eventstore.AppendResult, error) {
		return s.Append(ctx, eventstore.AppendParams{Stream: "rv", Expected: exp, Events: evs})
	}
	wantVersions := func(what string, res eventstore.AppendResult, err error, from int64) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i, e := range res.Events {
			if e.Version != from+int64(i) {
				t.Fatalf("%s: event %d has version %d, want %d", what, i, e.Version, from+int64(i))
			}
		}
	}

	res, err := appendTo(a, eventstore.NoStream, event("t.0"))
	wantVersions("a first", res, err, 0)
	res, err = appendTo(a, eventstore.Any, event("t.1"))
	wantVersions("a remembered", res, err, 1)
	res, err = appendTo(b, eventstore.Any, event("t.2"), event("t.3"))
	wantVersions("b", res, err, 2)

	// a remembers 1; the stream is at 3.
	res, err = appendTo(a, eventstore.Any, event("t.4"))
	wantVersions("a stale, any", res, err, 4)
	res, err = appendTo(b, eventstore.Exact(4), event("t.5"), event("t.6"))
	wantVersions("b exact", res, err, 5)
	// a remembers 4; the stream is at 6.
	var wv *eventstore.WrongVersionError
	if _, err := appendTo(a, eventstore.Exact(4), event("t.x")); !errors.As(err, &wv) || wv.Actual != 6 {
		t.Fatalf("a stale, exact 4: %v, want a WrongVersionError with actual 6", err)
	}
	batch := []eventstore.ProposedEvent{event("t.7"), event("t.8"), event("t.9")}
	res, err = appendTo(a, eventstore.Exact(6), batch...)
	wantVersions("a exact batch", res, err, 7)
	for i, e := range res.Events {
		if e.ID != batch[i].ID {
			t.Fatalf("a exact batch: event %d has id %s, want %s", i, e.ID, batch[i].ID)
		}
	}
	// The same ids again, from the Store that remembers 9: a duplicate.
	dup, err := appendTo(a, eventstore.Any, batch...)
	if err != nil || !dup.Duplicate || dup.Events[0].Position != res.Events[0].Position {
		t.Fatalf("retry: %+v, %v; want the original positions as a duplicate", dup, err)
	}
	// b remembers 6; its batch must land after a's.
	res, err = appendTo(b, eventstore.Any, event("t.10"), event("t.11"))
	wantVersions("b stale batch", res, err, 10)

	all := readEverything(ctx, t, a, eventstore.Start, eventstore.Filter{})
	if len(all) != 12 {
		t.Fatalf("%d events in the log, want 12", len(all))
	}
	for i, e := range all {
		if e.Version != int64(i) {
			t.Fatalf("log event %d has version %d; log order and versions disagree", i, e.Version)
		}
	}
}
