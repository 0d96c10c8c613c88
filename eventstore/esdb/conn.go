package esdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	kdb "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hooklog/hooklog/eventstore"
)

// ErrUnavailable: the KurrentDB server cannot be reached right now; the
// store is reconnecting with backoff.
var ErrUnavailable = errors.New("esdb: server unavailable")

// link is one generation of the client. The client's connection state
// machine ends for good when a discovery fails (every later call fails), so
// a link that saw a connection error is retired and the next call makes a
// new client, after a backoff.
//
// A retired client is closed only once no call is in flight on it: the
// client's error path sends on a channel that Close closes, and a send on a
// closed channel panics.
type link struct {
	client   *kdb.Client
	inflight sync.WaitGroup
	broken   atomic.Bool
}

// conns hands out the current link and replaces broken ones.
type conns struct {
	cfg *kdb.Configuration
	log *slog.Logger
	min time.Duration
	max time.Duration

	mu      sync.Mutex
	cur     *link
	closed  bool
	backoff time.Duration
	retryAt time.Time
	retired sync.WaitGroup
	healthy atomic.Bool // the last call on the current link succeeded
}

func newConns(cfg *kdb.Configuration, log *slog.Logger, min, max time.Duration) *conns {
	return &conns{cfg: cfg, log: log, min: min, max: max, backoff: min}
}

// acquire returns the current link with a call counted in flight; release
// it. It fails with ErrClosed after close and with ErrUnavailable while
// waiting out the backoff after a connection error.
func (c *conns) acquire() (*link, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, eventstore.ErrClosed
	}
	if c.cur != nil && c.cur.broken.Load() {
		c.retire(c.cur)
		c.cur = nil
	}
	if c.cur == nil {
		if wait := time.Until(c.retryAt); wait > 0 {
			return nil, fmt.Errorf("%w: reconnecting in %s", ErrUnavailable, wait.Round(time.Millisecond))
		}
		cfg := *c.cfg
		cl, err := kdb.NewClient(&cfg)
		if err != nil {
			return nil, fmt.Errorf("esdb: new client: %w", err)
		}
		c.cur = &link{client: cl}
	}
	c.cur.inflight.Add(1)
	return c.cur, nil
}

// release ends a call on l. A connection error (unless ctx ended, which
// explains it) marks l broken and pushes the next attempt back by the
// backoff; a success resets the backoff.
func (c *conns) release(ctx context.Context, l *link, err error) {
	defer l.inflight.Done()
	switch {
	case err == nil:
		if !c.healthy.Load() {
			c.mu.Lock()
			c.backoff = c.min
			c.mu.Unlock()
			c.healthy.Store(true)
		}
	case ctx.Err() == nil && isConnError(err):
		c.fail(l, err)
	}
}

func (c *conns) fail(l *link, err error) {
	if !l.broken.CompareAndSwap(false, true) {
		return
	}
	c.healthy.Store(false)
	c.mu.Lock()
	c.retryAt = time.Now().Add(c.backoff)
	c.log.Warn("esdb: connection lost, reconnecting", "err", err, "backoff", c.backoff)
	c.backoff = min(2*c.backoff, c.max)
	c.mu.Unlock()
}

// retire closes l's client once its calls are done, in the background.
// Called with c.mu held.
func (c *conns) retire(l *link) {
	c.retired.Add(1)
	go func() {
		defer c.retired.Done()
		done := make(chan struct{})
		go func() { l.inflight.Wait(); close(done) }()
		select {
		case <-done:
			_ = l.client.Close()
		case <-time.After(10 * time.Second):
			// A call is stuck inside the client (its error path blocks on a
			// dead connection state machine): closing would make it panic.
			c.log.Error("esdb: a call is stuck in a retired client; leaving it open")
		}
	}()
}

// close retires the current link and waits for every retired client to be
// closed.
func (c *conns) close() {
	c.mu.Lock()
	c.closed = true
	if c.cur != nil {
		c.retire(c.cur)
		c.cur = nil
	}
	c.mu.Unlock()
	c.retired.Wait()
}

// isConnError reports whether err means the connection (not the request)
// failed: the server is unreachable or went away.
func isConnError(err error) bool {
	var ee *kdb.Error
	if errors.As(err, &ee) {
		switch ee.Code() {
		case kdb.ErrorUnavailable, kdb.ErrorCodeConnectionClosed, kdb.ErrorCodeDeadlineExceeded:
			return true
		}
		if ee.Err() != nil {
			err = ee.Err()
		}
	}
	switch status.Code(unwrapStatus(err)) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// unwrapStatus finds a gRPC status error inside err.
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := status.FromError(e); ok {
			return e
		}
	}
	return err
}
