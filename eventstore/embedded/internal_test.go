package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Config{Path: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func proposed(typ string) eventstore.ProposedEvent {
	return eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: typ, Data: json.RawMessage(`{"k":"v"}`)}
}

// newRequest builds what Append hands to the committer.
func newRequest(t *testing.T, ctx context.Context, p eventstore.AppendParams) *request {
	t.Helper()
	p.Events = slices.Clone(p.Events)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	r := &request{ctx: ctx, answer: make(chan struct{})}
	r.one[0] = encodeAppend(p)
	r.appends, r.res = r.one[:], r.oneRes[:0]
	return r
}

// TestGroupCommitRequestsAreIndependent drives one group commit by hand: each
// request is checked on its own against the state left by the requests
// before it in the same transaction, and a failing one writes nothing.
func TestGroupCommitRequestsAreIndependent(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	a1, a2 := proposed("order.created"), proposed("order.paid")
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	reqs := []*request{
		newRequest(t, ctx, eventstore.AppendParams{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{a1, a2}}),
		newRequest(t, ctx, eventstore.AppendParams{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{proposed("order.x")}}), // a exists now
		newRequest(t, ctx, eventstore.AppendParams{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{a2, a1}}),              // retry of the first
		newRequest(t, ctx, eventstore.AppendParams{Stream: "a", Events: []eventstore.ProposedEvent{a1, proposed("order.y")}}),                            // mixed
		newRequest(t, canceled, eventstore.AppendParams{Stream: "b", Events: []eventstore.ProposedEvent{proposed("order.z")}}),                           // gave up
		newRequest(t, ctx, eventstore.AppendParams{Stream: "a", Expected: eventstore.Exact(1), Events: []eventstore.ProposedEvent{proposed("order.shipped")}}),
	}
	s.commit(reqs)
	for i, r := range reqs {
		select {
		case <-r.answer:
		default:
			t.Fatalf("request %d not answered", i)
		}
	}
	if s.commits.Load() != 1 {
		t.Errorf("%d commits, want 1", s.commits.Load())
	}
	if err := reqs[0].err; err != nil || reqs[0].res[0].Events[1].Position.Lo != 2 {
		t.Fatalf("first: %+v %v", reqs[0].res, err)
	}
	if !errors.Is(reqs[1].err, eventstore.ErrWrongVersion) {
		t.Errorf("no_stream after the first: %v, want ErrWrongVersion", reqs[1].err)
	}
	if r := reqs[2]; r.err != nil || !r.res[0].Duplicate || r.res[0].Events[0].Position.Lo != 2 || r.res[0].Events[1].Position.Lo != 1 {
		t.Errorf("retry in the same batch: %+v %v, want Duplicate at 2, 1", r.res, r.err)
	}
	if !errors.Is(reqs[3].err, eventstore.ErrIDConflict) {
		t.Errorf("mixed ids: %v, want ErrIDConflict", reqs[3].err)
	}
	if !errors.Is(reqs[4].err, context.Canceled) {
		t.Errorf("canceled: %v, want context.Canceled", reqs[4].err)
	}
	if r := reqs[5]; r.err != nil || r.res[0].Events[0].Position.Lo != 3 || r.res[0].Events[0].Version != 2 {
		t.Errorf("exact 1 after the first: %+v %v, want position 3 version 2", r.res, r.err)
	}
	head, _ := s.Head(ctx)
	if head.Lo != 3 {
		t.Errorf("head %s, want 3", head)
	}
	evs, err := s.ReadStream(ctx, eventstore.ReadStreamParams{Stream: "b"})
	if err != nil || len(evs) != 0 {
		t.Errorf("stream b: %d events, %v; the canceled request must write nothing", len(evs), err)
	}
	// The committer goroutine carries on from the state commit left.
	res, err := s.Append(ctx, eventstore.AppendParams{Stream: "a", Expected: eventstore.Exact(2), Events: []eventstore.ProposedEvent{proposed("order.closed")}})
	if err != nil || res.Events[0].Position.Lo != 4 {
		t.Errorf("append after: %+v %v", res, err)
	}
}

// TestRecordedAtNeverGoesBack: a clock behind the last recorded_at (a step
// back, a restored backup) does not make recorded_at decrease.
func TestRecordedAtNeverGoesBack(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	future := time.Now().Add(time.Hour).UnixNano()
	s.lastRecorded = future // set before any append hands state to the committer
	r, err := s.Append(ctx, eventstore.AppendParams{Stream: "a", Events: []eventstore.ProposedEvent{proposed("clock.one")}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Event(ctx, r.Events[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.RecordedAt.UnixNano() != future {
		t.Errorf("recorded_at %s, want the later previous time %s", e.RecordedAt, time.Unix(0, future).UTC())
	}
	if p, _ := s.PositionAt(ctx, time.Now()); p != eventstore.Start {
		t.Errorf("PositionAt(now) = %s, want Start (the only event is recorded an hour ahead)", p)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	e := eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: "a.b", Tenant: "t", Data: json.RawMessage(`{"x":1}`), Metadata: json.RawMessage(`{"m":2}`)}
	long := eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: "a." + string(slices.Repeat([]byte("b"), 190)), Data: json.RawMessage(`{}`)}
	for _, c := range []struct {
		stream string
		e      eventstore.ProposedEvent
	}{{"s-1", e}, {string(slices.Repeat([]byte("s"), 200)), long}} {
		buf := make([]byte, recordSize(c.stream, &c.e)+3)
		rec, rest := encodeRecord(buf, c.stream, &c.e)
		if len(rest) != 3 {
			t.Fatalf("rest %d, want 3", len(rest))
		}
		setRecordFields(rec, 1234567890123, 7)
		got, err := decodeEvent(42, rec)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != c.e.ID || got.Stream != c.stream || got.Type != c.e.Type || got.Tenant != c.e.Tenant ||
			string(got.Data) != string(c.e.Data) || string(got.Metadata) != string(c.e.Metadata) ||
			got.Version != 7 || got.Position.Lo != 42 || got.RecordedAt.UnixNano() != 1234567890123 || got.RecordedAt.Location() != time.UTC {
			t.Errorf("round trip: got %+v from %+v", got, c.e)
		}
		for n := range rec {
			if _, err := decodeEvent(1, rec[:n]); err == nil && n < offVar+3 {
				t.Errorf("truncated record of %d bytes decoded", n)
			}
		}
	}
}

// TestGroupCommitSharesFsync: concurrent appenders share write transactions
// (and so fsyncs).
func TestGroupCommitSharesFsync(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	const writers, each = 32, 10
	errs := make(chan error, writers)
	for range writers {
		go func() {
			for range each {
				if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "g", Events: []eventstore.ProposedEvent{proposed("group.commit")}}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	head, _ := s.Head(ctx)
	n := s.commits.Load()
	t.Logf("%d appends in %d commits", writers*each, n)
	if head.Lo != writers*each {
		t.Errorf("head %d, want %d", head.Lo, writers*each)
	}
	if n > writers*each/2 {
		t.Errorf("%d commits for %d concurrent appends: appends are not sharing commits", n, writers*each)
	}
}

// FuzzDecodeRecord: no input makes the decoder panic, and every record it
// accepts re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	e := eventstore.ProposedEvent{ID: uuid.Must(uuid.NewV7()), Type: "a.b", Tenant: "t", Data: json.RawMessage(`{"x":1}`), Metadata: json.RawMessage(`{"m":2}`)}
	buf := make([]byte, recordSize("s-1", &e))
	rec, _ := encodeRecord(buf, "s-1", &e)
	f.Add(rec)
	f.Add(rec[:offVar+2])
	f.Add([]byte{recordFormat})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeEvent(1, b)
		if err != nil {
			return
		}
		p := eventstore.ProposedEvent{ID: got.ID, Type: got.Type, Tenant: got.Tenant, Data: got.Data, Metadata: got.Metadata}
		out, _ := encodeRecord(make([]byte, recordSize(got.Stream, &p)), got.Stream, &p)
		setRecordFields(out, got.RecordedAt.UnixNano(), got.Version)
		if string(out) != string(b) {
			// Varints have more than one spelling; only the decoded event must agree.
			again, err := decodeEvent(1, out)
			if err != nil || again.ID != got.ID || again.Stream != got.Stream || string(again.Data) != string(got.Data) || string(again.Metadata) != string(got.Metadata) {
				t.Fatalf("re-encoding %x gave %x (%v)", b, out, err)
			}
		}
	})
}

// newStateRequest builds what CommitState hands to the committer.
func newStateRequest(t *testing.T, ctx context.Context, c eventstore.StateCommit) *request {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	r := &request{ctx: ctx, ops: c.Ops, state: true, answer: make(chan struct{})}
	for _, p := range c.Appends {
		r.appends = append(r.appends, encodeAppend(p))
	}
	return r
}

// TestGroupCommitUndoesAPartlyWrittenCommit: a CommitState whose second
// append fails after its first was written, in one group commit with other
// requests, leaves no trace (neither its first append nor its ops), and the
// requests after it get the positions they would have had without it. The
// batch still commits once.
func TestGroupCommitUndoesAPartlyWrittenCommit(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	before, partial, after := proposed("undo.before"), proposed("undo.partial"), proposed("undo.after")
	op := func(k, v string) eventstore.StateOp {
		return eventstore.StateOp{Bucket: "undo", Key: []byte(k), Value: []byte(v)}
	}
	reqs := []*request{
		newStateRequest(t, ctx, eventstore.StateCommit{
			Appends: []eventstore.AppendParams{{Stream: "x", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{before}}},
			Ops:     []eventstore.StateOp{op("a", "1")},
		}),
		newStateRequest(t, ctx, eventstore.StateCommit{
			Appends: []eventstore.AppendParams{
				{Stream: "y", Events: []eventstore.ProposedEvent{partial}},                                             // written...
				{Stream: "x", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{proposed("undo.bad")}}, // ...then this fails
			},
			Ops: []eventstore.StateOp{op("a", "undone"), op("b", "undone")},
		}),
		newRequest(t, ctx, eventstore.AppendParams{Stream: "y", Expected: eventstore.NoStream, Events: []eventstore.ProposedEvent{after}}),
		newStateRequest(t, ctx, eventstore.StateCommit{Ops: []eventstore.StateOp{op("c", "3")}}),
	}
	s.commit(reqs)
	for i, r := range reqs {
		select {
		case <-r.answer:
		default:
			t.Fatalf("request %d not answered", i)
		}
	}
	if n := s.commits.Load(); n != 1 {
		t.Errorf("%d commits, want 1", n)
	}
	if r := reqs[0]; r.err != nil || r.res[0].Events[0].Position.Lo != 1 {
		t.Errorf("first commit: %+v %v, want position 1", r.res, r.err)
	}
	var wv *eventstore.WrongVersionError
	if r := reqs[1]; !errors.As(r.err, &wv) || wv.Stream != "x" || r.res != nil {
		t.Errorf("partly written commit: %+v %v, want a WrongVersionError for x and no results", r.res, r.err)
	}
	// y did not exist without the undone commit: no_stream holds, position 2.
	if r := reqs[2]; r.err != nil || r.res[0].Events[0].Position.Lo != 2 || r.res[0].Events[0].Version != 0 {
		t.Errorf("append after: %+v %v, want position 2 version 0", r.res, r.err)
	}
	if r := reqs[3]; r.err != nil || len(r.res) != 0 {
		t.Errorf("ops-only commit: %+v %v", r.res, r.err)
	}
	if _, err := s.Event(ctx, partial.ID); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("the undone commit's first event: %v, want ErrNotFound", err)
	}
	for k, want := range map[string]string{"a": "1", "c": "3"} {
		if v, err := s.GetState(ctx, "undo", []byte(k)); err != nil || string(v) != want {
			t.Errorf("GetState(%s) = %q, %v; want %q", k, v, err, want)
		}
	}
	if _, err := s.GetState(ctx, "undo", []byte("b")); !errors.Is(err, eventstore.ErrNotFound) {
		t.Errorf("GetState(b) = %v, want ErrNotFound: the undone commit's op", err)
	}
	if head, _ := s.Head(ctx); head.Lo != 2 {
		t.Errorf("head %s, want 2", head)
	}
	// The committer carries on from the state the commit left.
	res, err := s.CommitState(ctx, eventstore.StateCommit{Appends: []eventstore.AppendParams{{Stream: "y", Expected: eventstore.Exact(0), Events: []eventstore.ProposedEvent{proposed("undo.next")}}}})
	if err != nil || res[0].Events[0].Position.Lo != 3 {
		t.Errorf("commit after: %+v %v, want position 3", res, err)
	}
}

// TestStateCommitsShareFsync: concurrent CommitStates and Appends share
// write transactions.
func TestStateCommitsShareFsync(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	const writers, each = 16, 10
	errs := make(chan error, 2*writers)
	for w := range writers {
		go func() {
			for i := range each {
				_, err := s.CommitState(ctx, eventstore.StateCommit{
					Appends: []eventstore.AppendParams{{Stream: "hooklog-share", Events: []eventstore.ProposedEvent{proposed("share.state")}}},
					Ops:     []eventstore.StateOp{{Bucket: "share", Key: fmt.Appendf(nil, "%02d/%02d", w, i), Value: []byte("v")}},
				})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
		go func() {
			for range each {
				if _, err := s.Append(ctx, eventstore.AppendParams{Stream: "share", Events: []eventstore.ProposedEvent{proposed("share.append")}}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 * writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	n := s.commits.Load()
	t.Logf("%d commits and appends in %d transactions", 2*writers*each, n)
	if head, _ := s.Head(ctx); head.Lo != 2*writers*each {
		t.Errorf("head %d, want %d", head.Lo, 2*writers*each)
	}
	if n > writers*each {
		t.Errorf("%d transactions for %d concurrent requests: they are not sharing commits", n, 2*writers*each)
	}
	keys := 0
	if err := s.ScanState(ctx, eventstore.ScanParams{Bucket: "share"}, func(k, v []byte) error { keys++; return nil }); err != nil || keys != writers*each {
		t.Errorf("ScanState: %d keys, %v; want %d", keys, err, writers*each)
	}
}
