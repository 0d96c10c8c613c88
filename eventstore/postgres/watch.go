package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hooklog/hooklog/eventstore"
)

// Wait implements eventstore.Store. Waiters share the Store's HeadWatch; only
// the watcher goroutine queries the database.
func (s *Store) Wait(ctx context.Context, after eventstore.Position) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	return s.watch.Wait(ctx, after)
}

// kick signals ch without blocking; signals pending at once coalesce.
func (s *Store) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// watcher is the one goroutine per Store that refreshes the visible head. It
// wakes on a local commit, a notification from another process, or the poll
// timer. After local commits it also sends the NOTIFY, in the same statement
// as the head read: its own small transaction, never the append's. Appends
// that commit while it is busy coalesce into one more round.
//
// While committed rows wait behind an older open transaction (a pending
// position above the head), it re-reads every millisecond for a while, then
// backs off to PollInterval, so they are seen soon after the blocker ends even
// when that transaction sends no notification.
func (s *Store) watcher(ctx context.Context) {
	defer s.wg.Done()
	timer := time.NewTimer(s.cfg.PollInterval)
	defer timer.Stop()
	fastPolls := 0
	var peers peerCheck
	for {
		notify := false
		select {
		case <-ctx.Done():
			return
		case <-s.localKick:
			notify = true
		case <-s.remoteKick:
		case <-timer.C:
		}
		notify = peers.notify(ctx, s, notify)
		head, pending, err := s.refresh(ctx, notify)
		next := s.cfg.PollInterval
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if notify {
				peers.owed, peers.present = true, true // send it at the next round
			}
			fastPolls = 0
		default:
			s.noteStuck(head, pending)
			s.watch.Advance(head)
			if head.Less(pending) || head.Less(s.localTarget()) {
				next = min(fastPollDelay(fastPolls), s.cfg.PollInterval)
				fastPolls++
			} else {
				fastPolls = 0
			}
		}
		timer.Reset(next)
	}
}

// peerCheckEvery is how often the watcher looks again whether another Store
// listens on the channel.
const peerCheckEvery = time.Second

// peerCheck decides whether a watcher round sends the wake-up NOTIFY. A
// NOTIFY is a small write transaction (it takes a transaction id and writes
// a commit record) and wakes every listening connection, this Store's own
// included, so with no other Store listening (a single process, the usual
// deployment) it is left out. Whether another Store listens is read from the
// shared advisory lock every listener holds while it listens, at most every
// peerCheckEvery. A wake-up skipped on the strength of an older check is owed
// until the next check: if that one finds a listener, it is sent then (so a
// Store that starts listening is woken about a second late at worst, and its
// own poll covers that time too); if it finds none, it is dropped, since a
// Store that starts listening after the check reads the head after taking
// its lock, and so sees every commit before the check.
type peerCheck struct {
	checked time.Time
	present bool
	owed    bool // a NOTIFY skipped since the last check
}

// notify reports whether this round sends the NOTIFY; local is whether it
// follows a local commit.
func (c *peerCheck) notify(ctx context.Context, s *Store, local bool) bool {
	if local {
		c.owed = true
	}
	if !c.owed {
		return false
	}
	if time.Since(c.checked) >= peerCheckEvery {
		c.present, c.checked = s.peersListen(ctx), time.Now()
		if !c.present {
			c.owed = false
		}
	}
	if !c.present {
		return false
	}
	c.owed = false
	return true
}

// peersListen reports whether a session other than this Store's LISTEN
// connection holds the listen lock of this schema's channel; true when that
// cannot be told (no LISTEN connection of its own yet, a failed query).
func (s *Store) peersListen(ctx context.Context) bool {
	pid := s.listenPID.Load()
	if pid == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var present bool
	if err := s.pool.QueryRow(ctx, s.q.peers, s.listenKey(), pid).Scan(&present); err != nil {
		return true
	}
	return present
}

// listenKey names the advisory lock of the channel's listeners.
func (s *Store) listenKey() string { return "hooklog.listen." + s.channel }

// fastPollDelay is the wait before the n-th quick re-read while rows are held
// back: 1ms for the first 20, then 16ms for about a second (a blocker that
// outlasts a fsync stall, such as another process's migration or a slow
// commit, is still likely to end soon, and doubling from 1ms would leave
// rows unseen for up to 2x the blocker's time), then doubling (capped by the
// caller at PollInterval) for a transaction that stays open.
func fastPollDelay(n int) time.Duration {
	switch {
	case n < 20:
		return time.Millisecond
	case n < 82: // 20 + 62x16ms: just over a second
		return 16 * time.Millisecond
	}
	return 16 * time.Millisecond << min(n-81, 12)
}

// refresh reads the visible head and the last committed row still held back
// (pending; Start when none), sending the wake-up NOTIFY too when notify is
// set.
func (s *Store) refresh(ctx context.Context, notify bool) (head, pending eventstore.Position, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var htxid, hseq, ptxid, pseq *int64
	if notify {
		var ignored, ignored2 string
		err = s.pool.QueryRow(ctx, s.q.notifyHead, s.channel, s.self).Scan(&htxid, &hseq, &ptxid, &pseq, &ignored, &ignored2)
	} else {
		err = s.pool.QueryRow(ctx, s.q.head).Scan(&htxid, &hseq, &ptxid, &pseq)
	}
	if err != nil {
		return head, pending, err
	}
	if htxid != nil && hseq != nil {
		head = eventstore.Position{Hi: uint64(*htxid), Lo: uint64(*hseq)}
	}
	if ptxid != nil && pseq != nil {
		pending = eventstore.Position{Hi: uint64(*ptxid), Lo: uint64(*pseq)}
	}
	return head, pending, nil
}

// settleTimeout bounds how long Head and ReadAll wait for this Store's own
// committed appends to become visible (see settle).
const settleTimeout = time.Second

// noteStuck tracks since when committed rows have been held back without the
// head moving: a long-open transaction, which settle does not wait for.
func (s *Store) noteStuck(head, pending eventstore.Position) {
	prev := s.watch.Head()
	switch {
	case !head.Less(pending):
		s.stuckSince.Store(0) // nothing held back
	case prev.Less(head):
		s.stuckSince.Store(time.Now().UnixNano()) // held back, but moving
	default:
		s.stuckSince.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// noteAppended records pos as committed by this Store's Append.
func (s *Store) noteAppended(pos eventstore.Position) {
	s.targetMu.Lock()
	if s.target.Less(pos) {
		s.target = pos
	}
	s.targetMu.Unlock()
}

// localTarget is the last position committed by this Store's Append.
func (s *Store) localTarget() eventstore.Position {
	s.targetMu.Lock()
	defer s.targetMu.Unlock()
	return s.target
}

// settle gives read-your-writes within this Store: when a read ended at seen,
// the end of the visible log, but this Store's Append has committed an event
// after seen, that event is only held back by an older open transaction, which
// is normally about to end. settle waits for the watcher to see the head move
// past seen (untilTarget: reach that event) and reports whether the caller
// should read again. Waiting only for progress keeps a tailing reader's
// latency that of the events it gets, not that of the newest append; a
// reader that pages on reaches the event. It waits at most settleTimeout, and
// not at all once the head has been stuck that long (a long transaction is
// open: reads then return what is visible without delay).
func (s *Store) settle(ctx context.Context, seen eventstore.Position, untilTarget bool) bool {
	target := s.localTarget()
	if !seen.Less(target) || s.watch == nil {
		return false
	}
	deadline := time.Now().Add(settleTimeout)
	if since := s.stuckSince.Load(); since != 0 {
		if d := time.Unix(0, since).Add(settleTimeout); d.Before(deadline) {
			deadline = d
		}
	}
	if !time.Now().Before(deadline) {
		return false
	}
	after := seen
	if untilTarget {
		after = eventstore.Position{Hi: target.Hi, Lo: target.Lo - 1} // seq >= 1
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	s.kick(s.remoteKick)
	return s.watch.Wait(wctx, after) == nil
}

// Backoff of the listener's reconnects.
const (
	listenBackoffMin = 50 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// listener keeps a dedicated connection LISTENing on the schema's channel and
// kicks the watcher on every notification from another Store. When the
// connection drops it reconnects with exponential backoff, and kicks the
// watcher after each (re)connect since notifications may have been missed.
func (s *Store) listener(ctx context.Context) {
	defer s.wg.Done()
	backoff := listenBackoffMin
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, func() { backoff = listenBackoffMin })
		if ctx.Err() != nil {
			return
		}
		_ = err // the poll covers the gap; nothing to report to
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listenOnce connects, LISTENs and forwards notifications until the connection
// fails or ctx ends. connected is called once the LISTEN is in place.
func (s *Store) listenOnce(ctx context.Context, connected func()) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, s.pool.Config().ConnConfig)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	// The shared lock tells other Stores that this one listens (see
	// peerCheck); it ends with the connection. The head is read again after
	// both (connected kicks the watcher).
	if _, err := conn.Exec(ctx, s.q.listenLock, s.listenKey()); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	s.listenPID.Store(conn.PgConn().PID())
	defer s.listenPID.Store(0)
	connected()
	s.kick(s.remoteKick)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload != s.self {
			s.kick(s.remoteKick)
		}
	}
}
