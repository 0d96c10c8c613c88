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
//
// The client can also strand a call for good: when a discovery fails, its
// state machine ends, and a call that queued for a connection meanwhile
// waits forever (EventStore-Client-Go v4.2.0, grpcClient.getConnectionHandle
// ignores the context). Two things keep callers out of that:
//   - A new link connects with a probe, one caller at a time (see
//     conns.open), before any call goes in, so the discovery of a server
//     that is still down fails with no call queued behind it.
//   - Each call runs on a goroutine of its own (see conns.run), and a call
//     still inside the client strandGrace after its link broke is left
//     there: the caller gets ErrUnavailable and retries on a new link. That
//     is for calls already in flight when a connected server goes away. A
//     link with a stranded call is never closed, since Close would make the
//     stranded send panic.
type link struct {
	client   *kdb.Client
	inflight sync.WaitGroup
	broken   atomic.Bool
	dead     chan struct{} // closed when broken is set
	stranded atomic.Bool

	opening   chan struct{} // the token of the one caller probing, until connected
	connected chan struct{} // closed once the probe has connected
	connOnce  sync.Once
}

// strandGrace is how long a call may stay inside a client after its link
// broke before the caller gives up on it.
const strandGrace = time.Second

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
		c.cur = &link{client: cl, dead: make(chan struct{}), opening: make(chan struct{}, 1), connected: make(chan struct{})}
	}
	c.cur.inflight.Add(1)
	return c.cur, nil
}

// call runs fn with l's client, once l has connected (see open), on a
// goroutine of its own (see run).
func (c *conns) call(ctx context.Context, l *link, fn func(*kdb.Client) error) error {
	if err := c.open(ctx, l); err != nil {
		return err
	}
	return c.run(ctx, l, fn)
}

// open returns once l has connected. Until then one caller at a time makes
// the client connect with a probe that sends no request of its own
// (GetServerVersion runs the discovery and nothing else), while the others
// wait: a discovery that fails then has nobody queued behind it, and a
// caller's own work (an append waiting on another's id reservation, say)
// never holds the others back.
func (c *conns) open(ctx context.Context, l *link) error {
	select {
	case <-l.connected:
		return nil
	default:
	}
	select {
	case <-l.connected:
		return nil
	case <-l.dead:
		return fmt.Errorf("%w: the connection attempt failed", ErrUnavailable)
	case <-ctx.Done():
		return ctx.Err()
	case l.opening <- struct{}{}:
	}
	defer func() { <-l.opening }()
	select {
	case <-l.connected: // while this caller waited for its turn
		return nil
	default:
	}
	err := c.run(ctx, l, func(cl *kdb.Client) error {
		_, err := cl.GetServerVersion()
		return err
	})
	switch {
	case err == nil:
		l.connOnce.Do(func() { close(l.connected) })
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	c.fail(l, err)
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// run runs fn with l's client on a goroutine of its own, counted in flight
// while it is inside the client, and returns its error. When ctx ends or l
// breaks, fn has strandGrace more to return (the client honours ctx
// everywhere but where it strands calls); after that the caller gives up on
// it (see link): l is marked stranded and the call no longer counts in
// flight.
func (c *conns) run(ctx context.Context, l *link, fn func(*kdb.Client) error) error {
	l.inflight.Add(1)
	var settled atomic.Bool // whoever sets it first ends the call in flight
	done := make(chan error, 1)
	go func() {
		err := fn(l.client)
		if settled.CompareAndSwap(false, true) {
			l.inflight.Done()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	case <-l.dead:
	}
	t := time.NewTimer(strandGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	if settled.CompareAndSwap(false, true) {
		// Still inside the client: leave it there.
		l.stranded.Store(true)
		l.inflight.Done()
		c.log.Warn("esdb: a call is stranded in a broken client; giving up on it")
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("%w: a call is stranded in a broken client", ErrUnavailable)
	}
	return <-done // it finished just now
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
	close(l.dead)
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
			if l.stranded.Load() {
				c.log.Warn("esdb: leaving a retired client open: a call is stranded in it")
				return
			}
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
	}
	switch grpcCode(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// grpcCode is the code of the gRPC status inside err.
func grpcCode(err error) codes.Code { return status.Code(unwrapStatus(err)) }

// unwrapStatus finds a gRPC status error inside err.
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := status.FromError(e); ok {
			return e
		}
	}
	return err
}
