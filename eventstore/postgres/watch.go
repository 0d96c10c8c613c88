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
		head, pending, err := s.refresh(ctx, notify)
		next := s.cfg.PollInterval
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if notify {
				s.kick(s.localKick) // send it at the next round
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
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
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
