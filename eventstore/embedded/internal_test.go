package embedded

import (
	"context"
	"encoding/json"
	"errors"
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
	r := &request{ctx: ctx, p: p, records: make([][]byte, len(p.Events)), answer: make(chan struct{})}
	size := len(p.Events) * (8 + len(p.Stream) + 9)
	for i := range p.Events {
		size += recordSize(p.Stream, &p.Events[i])
	}
	buf := make([]byte, size)
	for i := range p.Events {
		r.records[i], buf = encodeRecord(buf, p.Stream, &p.Events[i])
	}
	r.keys = buf
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
	if err := reqs[0].err; err != nil || reqs[0].res.Events[1].Position.Lo != 2 {
		t.Fatalf("first: %+v %v", reqs[0].res, err)
	}
	if !errors.Is(reqs[1].err, eventstore.ErrWrongVersion) {
		t.Errorf("no_stream after the first: %v, want ErrWrongVersion", reqs[1].err)
	}
	if r := reqs[2]; r.err != nil || !r.res.Duplicate || r.res.Events[0].Position.Lo != 2 || r.res.Events[1].Position.Lo != 1 {
		t.Errorf("retry in the same batch: %+v %v, want Duplicate at 2, 1", r.res, r.err)
	}
	if !errors.Is(reqs[3].err, eventstore.ErrIDConflict) {
		t.Errorf("mixed ids: %v, want ErrIDConflict", reqs[3].err)
	}
	if !errors.Is(reqs[4].err, context.Canceled) {
		t.Errorf("canceled: %v, want context.Canceled", reqs[4].err)
	}
	if r := reqs[5]; r.err != nil || r.res.Events[0].Position.Lo != 3 || r.res.Events[0].Version != 2 {
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
