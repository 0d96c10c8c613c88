package projector

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// TestAttemptsIndex writes attempts of two subscriptions in flushes whose
// attempts overlap in time (as long attempts land in later flushes), plus
// entries in the forms written before groups and records, and checks every
// listing against the attempts sorted newest first, then retention.
func TestAttemptsIndex(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		open func(t *testing.T) eventstore.StateStore
	}{
		{"embedded", func(t *testing.T) eventstore.StateStore {
			s, err := embedded.Open(embedded.Config{Path: t.TempDir(), NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"postgres", func(t *testing.T) eventstore.StateStore { return pgtest.NewStore(t) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testAttemptsIndex(t, c.open(t))
		})
	}
}

func testAttemptsIndex(t *testing.T, state eventstore.StateStore) {
	ctx := context.Background()
	p := &Projector{state: state, cfg: Config{Logger: slog.Default()}}
	b := newBatcher(state, Config{OutcomeBatch: 1000})
	rng := rand.New(rand.NewPCG(1, 2))
	s1, s2 := uuid.New(), uuid.New()
	subs := [][]byte{s1[:], s2[:]}
	events := make([]uuid.UUID, 30)
	for i := range events {
		events[i] = uuid.New()
	}
	base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	all := map[string][]Attempt{}
	statuses := []string{StatusSucceeded, StatusSucceeded, StatusFailed, StatusDead}
	for flush := range 12 {
		var items []batchItem
		for range 1 + rng.IntN(40) {
			sub := subs[rng.IntN(2)]
			// Attempts start up to 3 flushes before theirs.
			at := base.Add(time.Duration(flush*100-rng.IntN(300)) * time.Millisecond)
			if rng.IntN(5) == 0 {
				at = base.Add(time.Duration(flush*100) * time.Millisecond) // equal times: ordered by id
			}
			a := &Attempt{ID: uuid.Must(uuid.NewV7()).String(), EventID: events[rng.IntN(len(events))].String(),
				Attempt: 1 + rng.IntN(3), Status: statuses[rng.IntN(len(statuses))], StatusCode: 200, At: at}
			items = append(items, batchItem{sub: sub, attempt: a})
			all[string(sub)] = append(all[string(sub)], *a)
		}
		if _, err := state.CommitState(ctx, b.build(items, nil, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Entries written before groups: a JSON value and a record, each under its
	// attempt's own key, with empty index values.
	for i, legacy := range []func(a *Attempt) []byte{
		func(a *Attempt) []byte { v, _ := json.Marshal(a); return v },
		func(a *Attempt) []byte { return appendAttemptRecord(nil, a) },
	} {
		a := Attempt{ID: uuid.Must(uuid.NewV7()).String(), EventID: events[i].String(), Attempt: 2, Status: StatusFailed,
			StatusCode: 500, Error: "HTTP 500", At: base.Add(time.Duration(150+i*500) * time.Millisecond)}
		main, byEvent, byStatus := attemptKeys(s1[:], &a)
		_, err := state.CommitState(ctx, eventstore.StateCommit{Ops: []eventstore.StateOp{
			{Bucket: bucketAttempts, Key: main, Value: legacy(&a)},
			{Bucket: bucketAttemptsByEvent, Key: byEvent, Value: []byte{}},
			{Bucket: bucketAttemptsByStatus, Key: byStatus, Value: []byte{}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		all[string(s1[:])] = append(all[string(s1[:])], a)
	}
	newestFirst := func(as []Attempt) []Attempt {
		out := slices.Clone(as)
		slices.SortFunc(out, func(a, b Attempt) int {
			if attemptAfter(&a, &b) {
				return -1
			}
			return 1
		})
		return out
	}
	check := func(what string, sub []byte, status, event string, limit int, want []Attempt) {
		t.Helper()
		got, err := p.listAttempts(ctx, sub, status, event, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) > limit {
			want = want[:limit]
		}
		ids := func(as []Attempt) []string {
			var out []string
			for _, a := range as {
				out = append(out, a.ID)
			}
			return out
		}
		if !slices.Equal(ids(got), ids(want)) {
			t.Errorf("%s: got %d attempts %v\nwant %d %v", what, len(got), ids(got), len(want), ids(want))
		}
	}
	filter := func(as []Attempt, keep func(Attempt) bool) []Attempt {
		var out []Attempt
		for _, a := range as {
			if keep(a) {
				out = append(out, a)
			}
		}
		return out
	}
	for _, sub := range subs {
		want := newestFirst(all[string(sub)])
		for _, limit := range []int{1, 7, 1000} {
			check("all", sub, "", "", limit, want)
			for _, st := range []string{StatusSucceeded, StatusFailed, StatusDead} {
				check(st, sub, st, "", limit, filter(want, func(a Attempt) bool { return a.Status == st }))
			}
			for _, ev := range events[:3] {
				check("event", sub, "", ev.String(), limit, filter(want, func(a Attempt) bool { return a.EventID == ev.String() }))
				check("event, failed", sub, StatusFailed, ev.String(), limit,
					filter(want, func(a Attempt) bool { return a.EventID == ev.String() && a.Status == StatusFailed }))
			}
		}
	}

	// Retention: a group goes once its latest attempt is before the cutoff,
	// with the index entries of all its attempts.
	cutoff := base.Add(500 * time.Millisecond)
	for _, sub := range subs {
		if err := p.pruneAttempts(ctx, sub, cutoff); err != nil {
			t.Fatal(err)
		}
		left, err := p.listAttempts(ctx, sub, "", "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		kept := map[string]bool{}
		for _, a := range left {
			kept[a.ID] = true
		}
		for _, a := range all[string(sub)] {
			if !a.At.Before(cutoff) && !kept[a.ID] {
				t.Errorf("attempt at %s (cutoff %s) was pruned", a.At, cutoff)
			}
		}
		if len(left) == len(all[string(sub)]) {
			t.Errorf("nothing pruned")
		}
		for _, bucket := range []string{bucketAttemptsByEvent, bucketAttemptsByStatus} {
			err := state.ScanState(ctx, eventstore.ScanParams{Bucket: bucket, Prefix: sub}, func(k, _ []byte) error {
				if id := uuid.UUID(k[len(k)-16:]).String(); !kept[id] {
					t.Errorf("%s: entry %x of a pruned attempt", bucket, k)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		check("after pruning", sub, "", "", 1000, newestFirst(filter(all[string(sub)], func(a Attempt) bool { return kept[a.ID] })))
	}
}
