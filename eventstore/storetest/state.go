package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// The StateStore cases run for every backend whose store implements
// eventstore.StateStore, and skip otherwise.
func init() {
	cases = append(cases,
		testCase{"StatePutGetDelete", testStatePutGetDelete},
		testCase{"StateOpsInOrder", testStateOpsInOrder},
		testCase{"StateDeletePrefix", testStateDeletePrefix},
		testCase{"StateScan", testStateScan},
		testCase{"StateScanLarge", testStateScanLarge},
		testCase{"StateScanStop", testStateScanStop},
		testCase{"StateValidation", testStateValidation},
		testCase{"StateCommitAtomic", testStateCommitAtomic},
		testCase{"StateCommitAppends", testStateCommitAppends},
		testCase{"StateCommitIdempotent", testStateCommitIdempotent},
		testCase{"StateNewHint", testStateNewHint},
		testCase{"StateConcurrentCommits", testStateConcurrent},
		testCase{"StateReopen", testStateReopen},
		testCase{"StateClosed", testStateClosed},
	)
}

// openState opens a fresh store that implements eventstore.StateStore, or
// skips t.
func openState(t *testing.T, h Harness) (eventstore.Store, eventstore.StateStore, func(t *testing.T) eventstore.StateStore) {
	t.Helper()
	s, reopen := open(t, h)
	ss, ok := s.(eventstore.StateStore)
	if !ok {
		t.Skipf("%T does not implement eventstore.StateStore", s)
	}
	return s, ss, func(t *testing.T) eventstore.StateStore {
		t.Helper()
		return reopen(t).(eventstore.StateStore)
	}
}

func setOp(bucket, key, value string) eventstore.StateOp {
	return eventstore.StateOp{Bucket: bucket, Key: []byte(key), Value: []byte(value)}
}

func delOp(bucket, key string) eventstore.StateOp {
	return eventstore.StateOp{Bucket: bucket, Key: []byte(key), Delete: true}
}

func delPrefixOp(bucket, prefix string) eventstore.StateOp {
	return eventstore.StateOp{Bucket: bucket, Key: []byte(prefix), DeletePrefix: true}
}

func mustCommit(ctx context.Context, t *testing.T, ss eventstore.StateStore, c eventstore.StateCommit) []eventstore.AppendResult {
	t.Helper()
	res, err := ss.CommitState(ctx, c)
	if err != nil {
		t.Fatalf("CommitState: %v", err)
	}
	if len(res) != len(c.Appends) {
		t.Fatalf("CommitState: %d results for %d appends", len(res), len(c.Appends))
	}
	return res
}

// kv is one scanned pair, copied.
type kv struct{ k, v string }

func scanKVs(ctx context.Context, t *testing.T, ss eventstore.StateStore, p eventstore.ScanParams) []kv {
	t.Helper()
	var out []kv
	err := ss.ScanState(ctx, p, func(k, v []byte) error {
		out = append(out, kv{string(k), string(v)})
		return nil
	})
	if err != nil {
		t.Fatalf("ScanState(%+v): %v", p, err)
	}
	return out
}

// bucketKVs is every pair of bucket, in key order.
func bucketKVs(ctx context.Context, t *testing.T, ss eventstore.StateStore, bucket string) []kv {
	t.Helper()
	return scanKVs(ctx, t, ss, eventstore.ScanParams{Bucket: bucket})
}

func assertBucket(ctx context.Context, t *testing.T, ss eventstore.StateStore, bucket string, want []kv, what string) {
	t.Helper()
	got := bucketKVs(ctx, t, ss, bucket)
	if !slices.Equal(got, want) {
		t.Errorf("%s: bucket %q holds\n %q\nwant\n %q", what, bucket, got, want)
	}
}

func assertState(ctx context.Context, t *testing.T, ss eventstore.StateStore, bucket, key, want string) {
	t.Helper()
	v, err := ss.GetState(ctx, bucket, []byte(key))
	if err != nil {
		t.Errorf("GetState(%q, %q): %v, want %q", bucket, key, err, want)
		return
	}
	if string(v) != want {
		t.Errorf("GetState(%q, %q) = %q, want %q", bucket, key, v, want)
	}
}

func assertNoState(ctx context.Context, t *testing.T, ss eventstore.StateStore, bucket, key string) {
	t.Helper()
	if v, err := ss.GetState(ctx, bucket, []byte(key)); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("GetState(%q, %q) = %q, %v; want ErrNotFound", bucket, key, v, err)
	}
}

// testStatePutGetDelete: set, overwrite, empty and binary values, delete,
// buckets as separate namespaces, an empty commit.
func testStatePutGetDelete(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	_, ss, _ := openState(t, h)

	assertNoState(ctx, t, ss, "b1", "missing")
	if res, err := ss.CommitState(ctx, eventstore.StateCommit{}); err != nil || len(res) != 0 {
		t.Errorf("empty CommitState = %v, %v; want no results, nil", res, err)
	}

	binKey := "\x00\xff\x01k"
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{
		setOp("b1", "k1", "v1"),
		setOp("b1", "k2", ""),
		setOp("b1", binKey, "\x00bin\xff"),
		setOp("b2", "k1", "other bucket"),
		delOp("b1", "never-set"), // deleting a missing key is fine
	}})
	assertState(ctx, t, ss, "b1", "k1", "v1")
	assertState(ctx, t, ss, "b1", "k2", "")
	assertState(ctx, t, ss, "b1", binKey, "\x00bin\xff")
	assertState(ctx, t, ss, "b2", "k1", "other bucket")
	assertNoState(ctx, t, ss, "b3", "k1")
	assertNoState(ctx, t, ss, "b1", "k")   // a prefix of stored keys
	assertNoState(ctx, t, ss, "b1", "k11") // an extension of one

	// GetState returns a copy the caller may keep and change.
	v, err := ss.GetState(ctx, "b1", []byte("k1"))
	if err != nil {
		t.Fatalf("GetState: %v", err)
	}
	v[0] = 'X'
	assertState(ctx, t, ss, "b1", "k1", "v1")

	large := strings.Repeat("v", 256<<10)
	maxKey := strings.Repeat("k", eventstore.MaxStateKeyLen)
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{
		setOp("b1", "k1", "v1 again"),
		setOp("b1", "k2", "now set"),
		setOp("b1", "large", large),
		setOp("b1", maxKey, "longest key"),
		delOp("b2", "k1"),
	}})
	assertState(ctx, t, ss, "b1", "k1", "v1 again")
	assertState(ctx, t, ss, "b1", "k2", "now set")
	assertState(ctx, t, ss, "b1", "large", large)
	assertState(ctx, t, ss, "b1", maxKey, "longest key")
	assertNoState(ctx, t, ss, "b2", "k1")
	assertBucket(ctx, t, ss, "b2", nil, "after deleting its only key")

	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{delOp("b1", "k1"), delOp("b1", "large")}})
	assertNoState(ctx, t, ss, "b1", "k1")
	assertBucket(ctx, t, ss, "b1", []kv{{binKey, "\x00bin\xff"}, {"k2", "now set"}, {maxKey, "longest key"}}, "after deletes")
}

// testStateOpsInOrder: the ops of one commit take effect in their order.
func testStateOpsInOrder(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	_, ss, _ := openState(t, h)

	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{
		setOp("o", "old/1", "x"), setOp("o", "old/2", "x"), setOp("o", "keep", "x"),
	}})
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{
		setOp("o", "a", "1"), setOp("o", "a", "2"), // last set wins
		setOp("o", "b", "1"), delOp("o", "b"), // set then delete: gone
		delOp("o", "c"), setOp("o", "c", "1"), // delete then set: set
		setOp("o", "p/1", "1"), delPrefixOp("o", "p/"), // set then prefix delete: gone
		delPrefixOp("o", "q/"), setOp("o", "q/1", "1"), // prefix delete then set: set
		delPrefixOp("o", "old/"), setOp("o", "old/2", "new"), // stored keys too
		setOp("o", "r/1", "1"), delPrefixOp("o", "r/"), setOp("o", "r/2", "2"), delOp("o", "r/2"), setOp("o", "r/2", "3"),
		delOp("o", "keep"), setOp("o", "keep", "again"),
	}})
	assertBucket(ctx, t, ss, "o", []kv{
		{"a", "2"}, {"c", "1"}, {"keep", "again"}, {"old/2", "new"}, {"q/1", "1"}, {"r/2", "3"},
	}, "after one commit of ordered ops")
}

// testStateDeletePrefix: exactly the keys starting with the prefix go,
// including prefixes ending in (or made of) 0xff and the empty prefix.
func testStateDeletePrefix(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	_, ss, _ := openState(t, h)

	keys := []string{
		"a", "aa\xff", "ab", "ab\x00", "ab\x00\x00", "abc", "ab\xff", "ab\xff\xff", "ac", "b",
		"c\xff", "c\xff\x00", "c\xff\xff", "d",
		"\xff", "\xff\x00", "\xff\xff", "\xff\xff\xff",
	}
	var ops []eventstore.StateOp
	for _, k := range keys {
		ops = append(ops, setOp("dp", k, "v"), setOp("dp-neighbour", k, "v"))
	}
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: ops})

	left := func(gone ...string) []kv {
		var out []kv
		for _, k := range keys {
			if !slices.Contains(gone, k) {
				out = append(out, kv{k, "v"})
			}
		}
		slices.SortFunc(out, func(a, b kv) int { return strings.Compare(a.k, b.k) })
		return out
	}
	steps := []struct {
		prefix string
		gone   []string
	}{
		{"ab", []string{"ab", "ab\x00", "ab\x00\x00", "abc", "ab\xff", "ab\xff\xff"}},
		{"c\xff", []string{"c\xff", "c\xff\x00", "c\xff\xff"}},
		{"\xff\xff", []string{"\xff\xff", "\xff\xff\xff"}},
		{"zz", nil}, // matches nothing
		{"\xff", []string{"\xff", "\xff\x00"}},
	}
	var gone []string
	for _, st := range steps {
		mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{delPrefixOp("dp", st.prefix)}})
		gone = append(gone, st.gone...)
		assertBucket(ctx, t, ss, "dp", left(gone...), fmt.Sprintf("after DeletePrefix(%q)", st.prefix))
	}
	assertBucket(ctx, t, ss, "dp-neighbour", left(), "another bucket")

	// The empty prefix empties the bucket, and only it.
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{delPrefixOp("dp", "")}})
	assertBucket(ctx, t, ss, "dp", nil, "after DeletePrefix of the empty prefix")
	assertBucket(ctx, t, ss, "dp-neighbour", left(), "another bucket")
}

// scanModel is ScanState over sorted keys, as the interface describes it.
func scanModel(keys []string, p eventstore.ScanParams) []string {
	var out []string
	for _, k := range keys {
		if !strings.HasPrefix(k, string(p.Prefix)) {
			continue
		}
		if len(p.After) > 0 && (!p.Reverse && k <= string(p.After) || p.Reverse && k >= string(p.After)) {
			continue
		}
		out = append(out, k)
	}
	if p.Reverse {
		slices.Reverse(out)
	}
	if p.Limit > 0 && len(out) > p.Limit {
		out = out[:p.Limit]
	}
	return out
}

// testStateScan compares ScanState with the model over prefixes, cursors
// (present or not, inside the prefix or outside), limits and both directions,
// on keys made of 0x00, 0x01, 'a', 0xfe and 0xff.
func testStateScan(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	_, ss, _ := openState(t, h)

	alphabet := []byte{0x00, 0x01, 'a', 0xfe, 0xff}
	var keys []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		for _, c := range alphabet {
			k := prefix + string([]byte{c})
			keys = append(keys, k)
			if depth > 1 {
				gen(k, depth-1)
			}
		}
	}
	gen("", 3)
	slices.Sort(keys)
	var ops []eventstore.StateOp
	for _, k := range keys {
		ops = append(ops, setOp("scan", k, "v:"+k))
	}
	// Neighbouring buckets that a scan must not reach into.
	ops = append(ops, setOp("sca", "a", "x"), setOp("scan2", "a", "x"), setOp("scam", "\xff", "x"))
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: ops})

	prefixes := []string{"", "a", "\x00", "\xff", "\xff\xff", "a\xff", "\x01\x00", "b", "a\xfe\xff"}
	afters := []string{"", "a", "a\x00", "a\xff\xff", "\x00", "\xff", "\xff\xff\xff", "\xfe\xff\xff\xff", "b", "\x01\x00"}
	limits := []int{0, 1, 7}
	for _, prefix := range prefixes {
		for _, after := range afters {
			for _, limit := range limits {
				for _, reverse := range []bool{false, true} {
					p := eventstore.ScanParams{Bucket: "scan", Limit: limit, Reverse: reverse}
					if prefix != "" {
						p.Prefix = []byte(prefix)
					}
					if after != "" {
						p.After = []byte(after)
					}
					want := scanModel(keys, p)
					got := scanKVs(ctx, t, ss, p)
					gotKeys := make([]string, len(got))
					for i, g := range got {
						gotKeys[i] = g.k
						if g.v != "v:"+g.k {
							t.Errorf("ScanState(prefix %q, after %q): key %q has value %q", prefix, after, g.k, g.v)
						}
					}
					if !slices.Equal(gotKeys, want) {
						t.Fatalf("ScanState(prefix %q, after %q, limit %d, reverse %v):\n got %q\nwant %q",
							prefix, after, limit, reverse, gotKeys, want)
					}
				}
			}
		}
	}

	for _, b := range []string{"no-such-bucket", "sc"} {
		if got := scanKVs(ctx, t, ss, eventstore.ScanParams{Bucket: b}); len(got) != 0 {
			t.Errorf("ScanState of bucket %q: %q, want nothing", b, got)
		}
	}
}

// testStateScanLarge: scans over more keys than a backend may fetch at once,
// with varied value sizes, in both directions, with limits and cursors.
func testStateScanLarge(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	_, ss, _ := openState(t, h)

	const n = 3000
	keys := make([]string, n)
	vals := map[string]string{}
	var ops []eventstore.StateOp
	for i := range n {
		keys[i] = fmt.Sprintf("k%05d", i)
		vals[keys[i]] = strings.Repeat(string(rune('a'+i%26)), i%300)
		ops = append(ops, setOp("big", keys[i], vals[keys[i]]))
	}
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: ops})

	check := func(p eventstore.ScanParams, want []string) {
		t.Helper()
		got := scanKVs(ctx, t, ss, p)
		if len(got) != len(want) {
			t.Fatalf("ScanState(prefix %q after %q limit %d reverse %v): %d keys, want %d",
				p.Prefix, p.After, p.Limit, p.Reverse, len(got), len(want))
		}
		for i := range got {
			if got[i].k != want[i] || got[i].v != vals[want[i]] {
				t.Fatalf("ScanState(prefix %q after %q limit %d reverse %v): [%d] = %q (%d-byte value), want %q",
					p.Prefix, p.After, p.Limit, p.Reverse, i, got[i].k, len(got[i].v), want[i])
			}
		}
	}
	rev := slices.Clone(keys)
	slices.Reverse(rev)
	check(eventstore.ScanParams{Bucket: "big"}, keys)
	check(eventstore.ScanParams{Bucket: "big", Reverse: true}, rev)
	check(eventstore.ScanParams{Bucket: "big", Limit: 2500}, keys[:2500])
	check(eventstore.ScanParams{Bucket: "big", Limit: 2500, After: []byte("k00100")}, keys[101:2601])
	check(eventstore.ScanParams{Bucket: "big", Reverse: true, After: []byte("k02000")}, rev[n-2000:])
	check(eventstore.ScanParams{Bucket: "big", Prefix: []byte("k01")}, keys[1000:2000])
	check(eventstore.ScanParams{Bucket: "big", Prefix: []byte("k01"), Reverse: true, Limit: 999}, rev[1000:1999])
}

// testStateScanStop: ErrStopScan ends a scan without error, other errors of
// fn are returned, and fn's slices may be reused by the store after the call.
func testStateScanStop(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	_, ss, _ := openState(t, h)

	var ops []eventstore.StateOp
	for i := range 2000 {
		ops = append(ops, setOp("stop", fmt.Sprintf("k%04d", i), fmt.Sprintf("v%d", i)))
	}
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: ops})

	for _, stopAt := range []int{1, 10, 1500} {
		for _, reverse := range []bool{false, true} {
			calls := 0
			err := ss.ScanState(ctx, eventstore.ScanParams{Bucket: "stop", Reverse: reverse}, func(k, v []byte) error {
				calls++
				if calls == stopAt {
					return eventstore.ErrStopScan
				}
				return nil
			})
			if err != nil || calls != stopAt {
				t.Errorf("stop at %d (reverse %v): ScanState = %v after %d calls; want nil after %d", stopAt, reverse, err, calls, stopAt)
			}
		}
	}

	boom := errors.New("boom")
	calls := 0
	err := ss.ScanState(ctx, eventstore.ScanParams{Bucket: "stop"}, func(k, v []byte) error {
		calls++
		if calls == 3 {
			return fmt.Errorf("wrapped: %w", boom)
		}
		return nil
	})
	if !errors.Is(err, boom) || calls != 3 {
		t.Errorf("fn error: ScanState = %v after %d calls; want fn's error after 3", err, calls)
	}

	// A cancelled context ends the scan with an error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := ss.ScanState(cctx, eventstore.ScanParams{Bucket: "stop"}, func(k, v []byte) error { return nil }); err == nil {
		t.Errorf("ScanState with a cancelled context: nil error")
	}
}

// testStateValidation: bad ops or appends are rejected with ErrInvalid before
// anything of the commit is written.
func testStateValidation(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, ss, _ := openState(t, h)
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{setOp("val", "existing", "old")}})
	head := mustHead(ctx, t, s)

	good := eventstore.AppendParams{Stream: "val-1", Events: []eventstore.ProposedEvent{ev("val.event", "")}}
	bad := []struct {
		name    string
		appends []eventstore.AppendParams
		op      eventstore.StateOp
	}{
		{"empty bucket", nil, setOp("", "k", "v")},
		{"bucket with NUL", nil, setOp("a\x00b", "k", "v")},
		{"bucket not UTF-8", nil, setOp("a\xffb", "k", "v")},
		{"bucket too long", nil, setOp(strings.Repeat("b", eventstore.MaxStateBucketLen+1), "k", "v")},
		{"empty key", nil, setOp("val", "", "v")},
		{"empty key to delete", nil, delOp("val", "")},
		{"key too long", nil, setOp("val", strings.Repeat("k", eventstore.MaxStateKeyLen+1), "v")},
		{"nil value", nil, eventstore.StateOp{Bucket: "val", Key: []byte("k")}},
		{"delete with a value", nil, eventstore.StateOp{Bucket: "val", Key: []byte("k"), Value: []byte("v"), Delete: true}},
		{"delete and delete prefix", nil, eventstore.StateOp{Bucket: "val", Key: []byte("k"), Delete: true, DeletePrefix: true}},
		{"new on a delete", nil, eventstore.StateOp{Bucket: "val", Key: []byte("k"), Delete: true, New: true}},
		{"bad op beside a good append", []eventstore.AppendParams{good}, setOp("", "k", "v")},
		{"bad append beside good ops", []eventstore.AppendParams{good, {Stream: "bad stream!", Events: []eventstore.ProposedEvent{ev("val.event", "")}}}, setOp("val", "k", "v")},
		{"append without events", []eventstore.AppendParams{{Stream: "val-2"}}, setOp("val", "k", "v")},
	}
	for _, b := range bad {
		c := eventstore.StateCommit{
			Appends: b.appends,
			Ops:     []eventstore.StateOp{setOp("val", "existing", "new"), setOp("val", "fresh", "v"), b.op},
		}
		_, err := ss.CommitState(ctx, c)
		var ve *eventstore.ValidationError
		if !errors.Is(err, eventstore.ErrInvalid) || !errors.As(err, &ve) {
			t.Errorf("%s: CommitState = %v, want a *ValidationError (ErrInvalid)", b.name, err)
		}
	}
	assertBucket(ctx, t, ss, "val", []kv{{"existing", "old"}}, "after rejected commits")
	assertHead(ctx, t, s, head, "rejected commits")
	assertNotFound(ctx, t, s, good.Events[0].ID, "rejected commits")
	if good.Events[0].ID == uuid.Nil {
		t.Errorf("the caller's events were changed")
	}
}

// testStateCommitAtomic: a commit whose append fails its version or id check
// writes neither its events nor its ops, whichever append fails.
func testStateCommitAtomic(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, ss, _ := openState(t, h)

	first := mustAppend(ctx, t, s, "atomic", eventstore.NoStream, ev("atomic.first", ""))
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{setOp("at", "existing", "old"), setOp("at", "p/1", "old")}})
	head := mustHead(ctx, t, s)
	ops := func() []eventstore.StateOp {
		return []eventstore.StateOp{
			setOp("at", "existing", "new"), setOp("at", "fresh", "v"), delPrefixOp("at", "p/"), delOp("at", "existing"),
		}
	}
	unchanged := func(what string, ids ...uuid.UUID) {
		t.Helper()
		assertBucket(ctx, t, ss, "at", []kv{{"existing", "old"}, {"p/1", "old"}}, what)
		assertHead(ctx, t, s, head, what)
		for _, id := range ids {
			assertNotFound(ctx, t, s, id, what)
		}
	}

	// Wrong expected version.
	e1 := ev("atomic.second", "")
	_, err := ss.CommitState(ctx, eventstore.StateCommit{
		Appends: []eventstore.AppendParams{{Stream: "atomic", Expected: eventstore.Exact(5), Events: []eventstore.ProposedEvent{e1}}},
		Ops:     ops(),
	})
	var wv *eventstore.WrongVersionError
	if !errors.Is(err, eventstore.ErrWrongVersion) || !errors.As(err, &wv) {
		t.Fatalf("wrong version: CommitState = %v, want a *WrongVersionError", err)
	}
	if wv.Stream != "atomic" || wv.Actual != 0 || !wv.Expected.Equal(eventstore.Exact(5)) {
		t.Errorf("wrong version: %+v, want stream atomic, expected 5, actual 0", wv)
	}
	unchanged("wrong version", e1.ID)

	// The second of two appends fails: the first is not written either.
	e2, e3 := ev("atomic.other", ""), ev("atomic.third", "")
	_, err = ss.CommitState(ctx, eventstore.StateCommit{
		Appends: []eventstore.AppendParams{
			{Stream: "atomic-other", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{e2}},
			{Stream: "atomic", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{e3}},
		},
		Ops: ops(),
	})
	if !errors.As(err, &wv) || wv.Stream != "atomic" || wv.Actual != 0 {
		t.Fatalf("second append with a wrong version: CommitState = %v, want a *WrongVersionError for stream atomic", err)
	}
	unchanged("second append with a wrong version", e2.ID, e3.ID)

	// An id already used by another stream.
	e4 := ev("atomic.fourth", "")
	reused := ev("atomic.reused", "")
	reused.ID = first.Events[0].ID
	_, err = ss.CommitState(ctx, eventstore.StateCommit{
		Appends: []eventstore.AppendParams{
			{Stream: "atomic-more", Events: []eventstore.ProposedEvent{e4}},
			{Stream: "atomic-elsewhere", Events: []eventstore.ProposedEvent{reused}},
		},
		Ops: ops(),
	})
	if !errors.Is(err, eventstore.ErrIDConflict) {
		t.Fatalf("id conflict: CommitState = %v, want ErrIDConflict", err)
	}
	unchanged("id conflict", e4.ID)

	// A cancelled context writes nothing either.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	e5 := ev("atomic.fifth", "")
	if _, err := ss.CommitState(cctx, eventstore.StateCommit{
		Appends: []eventstore.AppendParams{{Stream: "atomic", Events: []eventstore.ProposedEvent{e5}}},
		Ops:     ops(),
	}); err == nil {
		t.Fatalf("CommitState with a cancelled context: nil error")
	}
	unchanged("cancelled context", e5.ID)
}

// testStateCommitAppends: the appends of a commit land in the log like
// Append's, in order, readable by ReadAll and ReadStream, and wake waiters.
func testStateCommitAppends(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, ss, _ := openState(t, h)
	head := mustHead(ctx, t, s)

	// A waiter at the head wakes on a commit's append.
	woke := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		woke <- s.Wait(wctx, head)
	}()
	time.Sleep(50 * time.Millisecond)

	a := []eventstore.ProposedEvent{ev("commit.a1", `{"n":1}`), ev("commit.a2", `{"n":2}`)}
	b := []eventstore.ProposedEvent{ev("commit.b1", `{"n":3}`)}
	a3 := []eventstore.ProposedEvent{evTenant("commit.a3", "acme")}
	start := time.Now()
	res := mustCommit(ctx, t, ss, eventstore.StateCommit{
		Appends: []eventstore.AppendParams{
			{Stream: "commit-a", Expected: eventstore.NoStream, Events: a},
			{Stream: "commit-b", Expected: eventstore.Any, Events: b},
			{Stream: "commit-a", Expected: eventstore.Exact(1), Events: a3}, // sees the first append
		},
		Ops: []eventstore.StateOp{setOp("ca", "cursor", "1")},
	})
	select {
	case err := <-woke:
		if err != nil {
			t.Errorf("Wait across CommitState: %v", err)
		} else if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Wait woke %s after the commit", d)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Wait did not wake within 5s of a CommitState append")
	}

	wantIDs := append(append(proposedIDs(a), proposedIDs(b)...), proposedIDs(a3)...)
	var gotIDs []uuid.UUID
	var last eventstore.Position
	versions := map[string][]int64{}
	streams := []string{"commit-a", "commit-b", "commit-a"}
	for i, r := range res {
		if r.Duplicate {
			t.Errorf("results[%d]: Duplicate on a first commit", i)
		}
		for _, e := range r.Events {
			if !last.Less(e.Position) {
				t.Errorf("results[%d]: position %s does not follow %s", i, e.Position, last)
			}
			last = e.Position
			gotIDs = append(gotIDs, e.ID)
			versions[streams[i]] = append(versions[streams[i]], e.Version)
		}
	}
	if !sameIDs(gotIDs, wantIDs) {
		t.Errorf("result ids %v, want %v", gotIDs, wantIDs)
	}
	if !slices.Equal(versions["commit-a"], []int64{0, 1, 2}) || !slices.Equal(versions["commit-b"], []int64{0}) {
		t.Errorf("versions %v, want commit-a 0,1,2 and commit-b 0", versions)
	}

	evs, _ := readAll(ctx, t, s, head, eventstore.Filter{})
	if !sameIDs(ids(evs), wantIDs) {
		t.Fatalf("ReadAll after the commit: %v, want %v", ids(evs), wantIDs)
	}
	pos := map[uuid.UUID]eventstore.AppendedEvent{}
	for _, r := range res {
		for _, e := range r.Events {
			pos[e.ID] = e
		}
	}
	for _, e := range evs {
		if p := pos[e.ID]; p.Position != e.Position || p.Version != e.Version {
			t.Errorf("event %s read at %s v%d, committed at %s v%d", e.ID, e.Position, e.Version, p.Position, p.Version)
		}
	}
	if evs[3].Tenant != "acme" || !jsonEqual(evs[0].Data, a[0].Data) {
		t.Errorf("event fields did not round-trip: %s, %s", fmtEvent(evs[0]), fmtEvent(evs[3]))
	}
	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "commit-a"})
	if err != nil || len(stream) != 3 {
		t.Fatalf("ReadStream(commit-a) = %d events, %v; want 3", len(stream), err)
	}
	assertState(ctx, t, ss, "ca", "cursor", "1")

	// A plain Append after the commit sees the version it left.
	if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "commit-a", Expected: eventstore.Exact(2), Events: []eventstore.ProposedEvent{ev("commit.a4", "")}}); err != nil {
		t.Errorf("Append after CommitState with expected version 2: %v", err)
	}
}

// testStateCommitIdempotent: appends in CommitState are idempotent by event id
// like Append: a retry is answered with the original positions and writes no
// events; its ops are applied (they are derived state, written as given).
func testStateCommitIdempotent(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, ss, _ := openState(t, h)

	evs := []eventstore.ProposedEvent{ev("idem.one", ""), ev("idem.two", "")}
	c := eventstore.StateCommit{
		Appends: []eventstore.AppendParams{{Stream: "idem", Expected: eventstore.NoStream, Events: evs}},
		Ops:     []eventstore.StateOp{setOp("idem", "k", "first")},
	}
	first := mustCommit(ctx, t, ss, c)
	head := mustHead(ctx, t, s)

	c.Ops = []eventstore.StateOp{setOp("idem", "k", "retry")}
	again := mustCommit(ctx, t, ss, c)
	if !again[0].Duplicate || !slices.Equal(again[0].Events, first[0].Events) {
		t.Errorf("retried commit: %+v, want Duplicate with the original %+v", again[0], first[0])
	}
	assertHead(ctx, t, s, head, "retried commit")
	assertState(ctx, t, ss, "idem", "k", "retry")

	// Append and CommitState share the idempotency of ids.
	dup, err := s.Append(ctx, eventstore.AppendParams{Stream: "idem", Events: evs})
	if err != nil || !dup.Duplicate || !slices.Equal(dup.Events, first[0].Events) {
		t.Errorf("Append of committed ids = %+v, %v; want Duplicate with the original positions", dup, err)
	}
	e := ev("idem.three", "")
	r := mustAppend(ctx, t, s, "idem-2", eventstore.Any, e)
	res, err := ss.CommitState(ctx, eventstore.StateCommit{Appends: []eventstore.AppendParams{{Stream: "idem-2", Events: []eventstore.ProposedEvent{e}}}})
	if err != nil || !res[0].Duplicate || !slices.Equal(res[0].Events, r.Events) {
		t.Errorf("CommitState of appended ids = %+v, %v; want Duplicate with the original positions", res, err)
	}
	// Some ids known, some not: a conflict, as for Append.
	if _, err := ss.CommitState(ctx, eventstore.StateCommit{Appends: []eventstore.AppendParams{{Stream: "idem", Events: []eventstore.ProposedEvent{evs[0], ev("idem.new", "")}}}}); !errors.Is(err, eventstore.ErrIDConflict) {
		t.Errorf("CommitState with some known ids: %v, want ErrIDConflict", err)
	}
}

// testStateNewHint: sets hinted New land like any set, also when the hint is
// wrong (the key exists): then the whole commit still applies once.
func testStateNewHint(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, ss, _ := openState(t, h)
	newOp := func(key, value string) eventstore.StateOp {
		op := setOp("hint", key, value)
		op.New = true
		return op
	}
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{
		newOp("a", "1"), newOp("b", ""), setOp("hint", "c", "1"), delOp("hint", "missing"),
	}})
	assertBucket(ctx, t, ss, "hint", []kv{{"a", "1"}, {"b", ""}, {"c", "1"}}, "after new keys")

	head := mustHead(ctx, t, s)
	res := mustCommit(ctx, t, ss, eventstore.StateCommit{
		Appends: []eventstore.AppendParams{{Stream: "hint", Events: []eventstore.ProposedEvent{ev("hint.one", "")}}},
		Ops: []eventstore.StateOp{
			newOp("a", "2"), // exists: the hint is wrong
			newOp("d", "1"), setOp("hint", "c", "2"), delOp("hint", "b"),
			delPrefixOp("hint", "p/"), newOp("p/1", "1"), // gone before it is set
		},
	})
	if len(res) != 1 || res[0].Duplicate || len(res[0].Events) != 1 {
		t.Fatalf("commit with a wrong hint: %+v, want one appended event", res)
	}
	assertBucket(ctx, t, ss, "hint", []kv{{"a", "2"}, {"c", "2"}, {"d", "1"}, {"p/1", "1"}}, "after a wrong hint")
	evs, _ := readAll(ctx, t, s, head, eventstore.Filter{})
	if n := len(evs); n != 1 {
		t.Errorf("commit with a wrong hint appended %d events, want 1", n)
	}
}

// testStateConcurrent: concurrent commits appending to one stream and
// writing overlapping keys in different orders all succeed (a backend retries
// the races it detects), versions stay dense, every commit's own keys land.
func testStateConcurrent(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, ss, _ := openState(t, h)

	const workers, commits, shared = 6, 15, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*commits)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range commits {
				var ops []eventstore.StateOp
				for _, j := range rng.Perm(shared) {
					ops = append(ops, setOp("conc", fmt.Sprintf("shared/%02d", j), fmt.Sprintf("w%d-%d", w, i)))
				}
				ops = append(ops, setOp("conc", fmt.Sprintf("own/%d/%02d", w, i), "v"))
				if i > 0 {
					prev := fmt.Sprintf("own/%d/%02d", w, i-1)
					ops = append(ops, delPrefixOp("conc", prev), setOp("conc", prev, "done"))
				}
				_, err := ss.CommitState(ctx, eventstore.StateCommit{
					Appends: []eventstore.AppendParams{{Stream: "conc", Events: []eventstore.ProposedEvent{ev("conc.event", "")}}},
					Ops:     ops,
				})
				if err != nil {
					errs <- fmt.Errorf("worker %d commit %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	stream, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "conc", Limit: 1000})
	if err != nil || len(stream) != workers*commits {
		t.Fatalf("ReadStream = %d events, %v; want %d", len(stream), err, workers*commits)
	}
	for i, e := range stream {
		if e.Version != int64(i) {
			t.Fatalf("stream version %d at index %d", e.Version, i)
		}
	}
	got := bucketKVs(ctx, t, ss, "conc")
	if len(got) != shared+workers*commits {
		t.Errorf("%d keys, want %d", len(got), shared+workers*commits)
	}
	for _, p := range got {
		if strings.HasPrefix(p.k, "own/") {
			var w, i int
			_, _ = fmt.Sscanf(p.k, "own/%d/%d", &w, &i)
			want := "done"
			if i == commits-1 {
				want = "v"
			}
			if p.v != want {
				t.Errorf("%s = %q, want %q", p.k, p.v, want)
			}
		}
	}
}

// testStateReopen: committed state survives closing and reopening the store.
func testStateReopen(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, ss, reopen := openState(t, h)

	e := ev("reopen.state", "")
	mustCommit(ctx, t, ss, eventstore.StateCommit{
		Appends: []eventstore.AppendParams{{Stream: "reopen-state", Events: []eventstore.ProposedEvent{e}}},
		Ops: []eventstore.StateOp{
			setOp("r", "a", "1"), setOp("r", "b", ""), setOp("r", "c\xff", "\x00"), setOp("r2", "a", "2"),
		},
	})
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{delOp("r", "b")}})
	want := bucketKVs(ctx, t, ss, "r")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	ss2 := reopen(t)
	assertBucket(ctx, t, ss2, "r", want, "after reopen")
	assertState(ctx, t, ss2, "r2", "a", "2")
	if _, err := ss2.(eventstore.Store).Event(ctx, e.ID); err != nil {
		t.Errorf("the commit's event after reopen: %v", err)
	}
	mustCommit(ctx, t, ss2, eventstore.StateCommit{Ops: []eventstore.StateOp{setOp("r", "d", "4")}})
	assertState(ctx, t, ss2, "r", "d", "4")
}

// testStateClosed: every StateStore method returns ErrClosed after Close.
func testStateClosed(t *testing.T, h Harness) {
	t.Parallel()
	ctx := testCtx(t)
	s, ss, _ := openState(t, h)
	mustCommit(ctx, t, ss, eventstore.StateCommit{Ops: []eventstore.StateOp{setOp("cl", "k", "v")}})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := ss.CommitState(ctx, eventstore.StateCommit{Ops: []eventstore.StateOp{setOp("cl", "k", "v2")}}); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("CommitState after Close: %v, want ErrClosed", err)
	}
	if _, err := ss.GetState(ctx, "cl", []byte("k")); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("GetState after Close: %v, want ErrClosed", err)
	}
	called := false
	err := ss.ScanState(ctx, eventstore.ScanParams{Bucket: "cl"}, func(k, v []byte) error { called = true; return nil })
	if !errors.Is(err, eventstore.ErrClosed) || called {
		t.Errorf("ScanState after Close: %v (fn called: %v), want ErrClosed", err, called)
	}
}

// BenchState runs the StateStore benchmark against stores made by open (each
// a fresh, empty store the benchmark owns and closes; skipped when it is not
// a StateStore):
//
//	Commit1000          one CommitState per op: 1 append of one ~2 KB event
//	                    plus 1000 upserts of new keys (~100-byte values),
//	                    the projector's outcome flush
//	Commit1000Overwrite the same, the upserts overwriting the previous
//	                    commit's keys with new values
//
// Each reports commits/s and ops/s (state ops per second).
func BenchState(b *testing.B, open func(b *testing.B) eventstore.Store) {
	b.Run("Commit1000", func(b *testing.B) { benchCommitState(b, open, 1000, false) })
	b.Run("Commit1000Overwrite", func(b *testing.B) { benchCommitState(b, open, 1000, true) })
}

// benchStateData is a ~2 KB JSON object.
var benchStateData = []byte(`{"attempts":"` + strings.Repeat("x", 2000) + `"}`)

func benchCommitState(b *testing.B, open func(b *testing.B) eventstore.Store, ops int, overwrite bool) {
	s := benchOpen(b, open)
	ss, ok := s.(eventstore.StateStore)
	if !ok {
		b.Skipf("%T does not implement eventstore.StateStore", s)
	}
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 100)
	commit := func(i int) eventstore.StateCommit {
		c := eventstore.StateCommit{
			Appends: []eventstore.AppendParams{{Stream: "hooklog-bench-state", Events: []eventstore.ProposedEvent{
				{ID: uuid.Must(uuid.NewV7()), Type: "delivery.attempts", Data: benchStateData},
			}}},
			Ops: make([]eventstore.StateOp, ops),
		}
		round := i
		if overwrite {
			round = 0
		}
		for j := range c.Ops {
			v := slices.Clone(value)
			copy(v, fmt.Sprintf("%d", i))
			c.Ops[j] = eventstore.StateOp{Bucket: "bench", Key: fmt.Appendf(nil, "sub-%04d/%012d", j%50, round*ops+j), Value: v}
		}
		return c
	}
	if _, err := ss.CommitState(ctx, commit(0)); err != nil { // warm up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for i := range b.N {
		b.StopTimer()
		c := commit(i + 1)
		b.StartTimer()
		start := time.Now()
		if _, err := ss.CommitState(ctx, c); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(b.N*ops)/elapsed.Seconds(), "ops/s")
}
