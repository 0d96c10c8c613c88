package esdbtest_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func client(t *testing.T, url string) *esdb.Client {
	t.Helper()
	cfg, err := esdb.ParseConnectionString(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func event(typ string) esdb.EventData {
	return esdb.EventData{EventID: uuid.New(), EventType: typ, ContentType: esdb.ContentTypeJson, Data: []byte(`{}`)}
}

func readAll(t *testing.T, ctx context.Context, c *esdb.Client, opts esdb.ReadAllOptions, n uint64) []*esdb.ResolvedEvent {
	t.Helper()
	rs, err := c.ReadAll(ctx, opts, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []*esdb.ResolvedEvent
	for {
		e, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
}

// TestClientRoundTrip drives the server with the real client: appends with
// every kind of expected revision, idempotent retries, reads of $all and of
// a stream both ways, a filtered subscription, and a restart on the same port.
func TestClientRoundTrip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := esdbtest.Start(t)
	c := client(t, srv.URL())

	a, b := event("order.created"), event("order.paid")
	w, err := c.AppendToStream(ctx, "order-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, a, b)
	if err != nil || w.NextExpectedVersion != 1 {
		t.Fatalf("append: %+v, %v", w, err)
	}
	// The same events at the same expected revision: idempotent, nothing written.
	if w2, err := c.AppendToStream(ctx, "order-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, a, b); err != nil || w2.NextExpectedVersion != 1 {
		t.Fatalf("idempotent retry: %+v, %v", w2, err)
	}
	_, err = c.AppendToStream(ctx, "order-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, event("order.x"))
	var ee *esdb.Error
	if !errors.As(err, &ee) || ee.Code() != esdb.ErrorCodeWrongExpectedVersion {
		t.Fatalf("no_stream on an existing stream: %v, want wrong expected version", err)
	}
	if _, err := c.AppendToStream(ctx, "order-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Revision(1)}, event("order.shipped")); err != nil {
		t.Fatalf("exact 1: %v", err)
	}
	if _, err := c.AppendToStream(ctx, "other-1", esdb.AppendToStreamOptions{ExpectedRevision: esdb.StreamExists{}}, event("other.x")); err == nil {
		t.Fatalf("exists on a missing stream: nil error")
	}
	if _, err := c.AppendToStream(ctx, "other-1", esdb.AppendToStreamOptions{}, event("other.x")); err != nil {
		t.Fatalf("any: %v", err)
	}
	if srv.Len() != 4 {
		t.Fatalf("log holds %d events, want 4", srv.Len())
	}

	all := readAll(t, ctx, c, esdb.ReadAllOptions{}, 100)
	if len(all) != 4 || all[0].Event.EventID != a.EventID || all[3].Event.StreamID != "other-1" {
		t.Fatalf("read $all: %d events", len(all))
	}
	for i := 1; i < len(all); i++ {
		p, q := all[i-1].Event.Position, all[i].Event.Position
		if !(p.Commit < q.Commit || p.Commit == q.Commit && p.Prepare < q.Prepare) {
			t.Fatalf("positions not increasing: %+v then %+v", p, q)
		}
	}
	if all[0].Event.CreatedDate.IsZero() || time.Since(all[0].Event.CreatedDate) > time.Minute {
		t.Fatalf("created %s", all[0].Event.CreatedDate)
	}
	from := readAll(t, ctx, c, esdb.ReadAllOptions{From: all[1].Event.Position}, 100)
	if len(from) != 3 || from[0].Event.EventID != b.EventID {
		t.Fatalf("read $all from a position (inclusive): %d events", len(from))
	}
	back := readAll(t, ctx, c, esdb.ReadAllOptions{Direction: esdb.Backwards, From: esdb.End{}}, 1)
	if len(back) != 1 || back[0].Event.StreamID != "other-1" {
		t.Fatalf("read $all backwards: %v", back)
	}
	rs, err := c.ReadStream(ctx, "no-such", esdb.ReadStreamOptions{}, 10)
	if err == nil {
		_, err = rs.Recv()
		rs.Close()
	}
	if !errors.As(err, &ee) || ee.Code() != esdb.ErrorCodeResourceNotFound {
		t.Fatalf("read of a missing stream: %v, want resource not found", err)
	}

	// A filtered subscription from the start: the matching events, then
	// caught-up, then a live one; checkpoints every 2 records scanned.
	sub, err := c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{From: esdb.Start{},
		Filter: &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: []string{"order-"}}, MaxSearchWindow: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var got []uuid.UUID
	checkpoints, caughtUp := 0, false
	for len(got) < 4 {
		if len(got) == 3 && caughtUp {
			if _, err := c.AppendToStream(ctx, "order-2", esdb.AppendToStreamOptions{}, event("order.live")); err != nil {
				t.Fatal(err)
			}
			caughtUp = false
		}
		ev := sub.Recv()
		switch {
		case ev.EventAppeared != nil:
			got = append(got, ev.EventAppeared.Event.EventID)
		case ev.CheckPointReached != nil:
			checkpoints++
		case ev.CaughtUp != nil:
			caughtUp = true
		case ev.SubscriptionDropped != nil:
			t.Fatalf("dropped: %v", ev.SubscriptionDropped.Error)
		}
	}
	if got[0] != a.EventID || checkpoints == 0 {
		t.Fatalf("subscription: %v, %d checkpoints", got, checkpoints)
	}

	// Stop: calls fail; Restart on the same port: the log is still there.
	srv.Stop()
	if _, err := c.AppendToStream(ctx, "order-1", esdb.AppendToStreamOptions{}, event("order.down")); err == nil {
		t.Fatalf("append to a stopped server: nil error")
	}
	if ev := sub.Recv(); ev.SubscriptionDropped == nil {
		t.Fatalf("subscription across Stop: %+v, want dropped", ev)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	c2 := client(t, srv.URL())
	if n := len(readAll(t, ctx, c2, esdb.ReadAllOptions{}, 100)); n != 5 {
		t.Fatalf("after restart: %d events, want 5", n)
	}
}
