package projector

import (
	"context"
	"errors"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/replays"
)

// A replay runs on the route of each of its subscriptions as a temporary
// extra cursor over the replay's window (replayCursor): a reader goroutine
// reads the window from the log into a small feed, and the route starts its
// deliveries in the spare capacity of its own window and rate limit. Live
// work always goes first: a replay attempt starts only when the route has
// no live attempt to start, and replay attempts leave a quarter of the
// in-flight window (at least one slot) free, so live events find a free slot
// at once (up to that quarter at a time) or take the next one that frees; on
// an ordered route (one slot) a live event waits for at most one replay
// attempt. While the route has live traffic, its replays also start at most
// ReplayConfig.LiveRate attempts per second: against a fast endpoint a
// replay would otherwise take the CPU and the store's commits (every attempt
// is recorded) from the live deliveries; against a remote one the window is
// the bound anyway. Replay attempts carry webhook-replay and the event's own
// webhook-id.
//
// A replay's failures are retried on the subscription's schedule, in memory
// and in place (ordered routes) or out of order (others), never through the
// route's retry queue or dead letters: a pair whose schedule runs out is
// counted as failed. They do not count towards the route's circuit (a
// replay must not stop live traffic), but a replay cursor pauses on its own
// after Config.CircuitFailures consecutive failures, and an open circuit
// stops replays too. A success of a half-open circuit's probe closes it.
//
// The cursor of a replay part is, like a route's, the lowest unsettled
// position (settled = delivered or failed for good); its progress (cursor,
// delivered, failed) goes to the state store through the outcome batcher,
// after the attempts it counts are committed, so a restart resumes from it
// and counts every pair once.

// replayCursor is one replay part running on a route. Fields below "loop
// state" belong to the route's goroutine.
type replayCursor struct {
	part     *replayPart
	id       string // replay id: webhook-replay, Attempt.ReplayID
	filter   eventstore.Filter
	types    []string // the replay's event types, when filter has the subscription's
	from, to time.Time
	rctx     context.Context // the reader
	dctx     context.Context // deliveries in flight
	cancel   func()
	feed     chan replayBatch

	// loop state
	readPos   eventstore.Position
	ended     bool // the reader reached the window's end
	pending   []*job
	out       []*outEntry
	outHead   int
	retries   []*job // due order; unordered routes
	head      *job   // ordered routes: the pair in the replay's slot
	cursor    eventstore.Position
	delivered int64
	failed    int64
	inFlight  int
	failures  int
	cooldown  time.Duration
	pausedAt  time.Time // paused until
	dirty     bool
	pushed    time.Time
	dropped   bool
}

// replayBatch is one read of a replay's reader: the window's events in it
// and the position read up to.
type replayBatch struct {
	events []eventstore.Event
	to     eventstore.Position
	end    bool  // nothing of the window follows
	err    error // a read error that will not go away: the replay fails
}

// replayCap is how many replay attempts a route runs at once: its window
// less a quarter (at least one slot) kept free for live work, which also
// takes every slot that frees up while it has any.
func (r *route) replayCap() int {
	w := r.window()
	if w <= 1 {
		return 1
	}
	return w - max(1, w/4)
}

// liveActive: a route whose last live attempt started this recently has
// live traffic, and its replays are paced (ReplayConfig.LiveRate).
const liveActive = 500 * time.Millisecond

// syncReplays makes the route's replay cursors match the running parts of
// its subscription.
func (r *route) syncReplays() {
	rm := r.p.rm
	gen := rm.gen.Load()
	if gen == r.replayGen {
		return
	}
	r.replayGen = gen
	parts := rm.partsFor(r.id)
	keep := r.rcs[:0]
	for _, c := range r.rcs {
		if slices.Contains(parts, c.part) && c.part.run.ctx.Err() == nil {
			keep = append(keep, c)
			continue
		}
		c.drop()
	}
	clear(r.rcs[len(keep):])
	r.rcs = keep
	for _, pt := range parts {
		if !slices.ContainsFunc(r.rcs, func(c *replayCursor) bool { return c.part == pt }) {
			r.rcs = append(r.rcs, r.newReplayCursor(pt))
		}
	}
}

func (r *route) newReplayCursor(pt *replayPart) *replayCursor {
	rep := pt.run.rep
	prog := pt.progress()
	c := &replayCursor{
		part: pt, id: rep.ID, filter: r.filter, from: rep.From, to: rep.To,
		feed:    make(chan replayBatch, 2),
		readPos: prog.Cursor, cursor: prog.Cursor, delivered: prog.Delivered, failed: prog.Failed,
		cooldown: r.p.cfg.CircuitCooldown,
	}
	if len(rep.EventTypes) > 0 {
		if len(c.filter.Types) == 0 {
			c.filter.Types = rep.EventTypes
		} else {
			c.types = rep.EventTypes
		}
	}
	rctx, rcancel := context.WithCancel(r.ctx)
	dctx, dcancel := context.WithCancel(r.dctx)
	stopR := context.AfterFunc(pt.run.ctx, rcancel)
	stopD := context.AfterFunc(pt.run.ctx, dcancel)
	c.rctx, c.dctx = rctx, dctx
	c.cancel = func() {
		stopR()
		stopD()
		rcancel()
		dcancel()
	}
	r.replayReaders.Add(1)
	go c.read(r)
	return c
}

// drop ends a cursor whose replay stopped (or whose route stops): its reader
// ends and its deliveries in flight are abandoned.
func (c *replayCursor) drop() {
	c.dropped = true
	c.cancel()
}

// dropReplays ends every cursor of the route (the route stops).
func (r *route) dropReplays() {
	for _, c := range r.rcs {
		c.drop()
	}
	r.rcs = nil
}

// read is the reader goroutine: it reads the window after the cursor's
// position into the feed until the window's end.
func (c *replayCursor) read(r *route) {
	defer r.replayReaders.Done()
	p := r.p
	after := c.readPos
	var end eventstore.Position
	endKnown := false
	backoff := 100 * time.Millisecond
	fail := func(err error) bool {
		if c.rctx.Err() != nil {
			return false
		}
		if errors.Is(err, eventstore.ErrInvalid) || errors.Is(err, eventstore.ErrBadPosition) {
			c.send(r, replayBatch{to: after, err: err})
			return false
		}
		p.cfg.Logger.Error("projector: reading a replay's window failed; retrying", "replay", c.id, "subscription", r.id, "err", err)
		select {
		case <-c.rctx.Done():
			return false
		case <-time.After(backoff):
			backoff = min(2*backoff, 5*time.Second)
			return true
		}
	}
	for {
		if !endKnown {
			e, ok, err := p.windowEnd(c.rctx, c.to)
			if err != nil {
				if fail(err) {
					continue
				}
				return
			}
			end, endKnown = e, ok
		}
		if endKnown && !after.Less(end) {
			c.send(r, replayBatch{to: after, end: true})
			return
		}
		res, err := p.store.ReadAll(c.rctx, eventstore.ReadParams{After: after, Filter: c.filter, Limit: p.cfg.TailBatch, MaxScan: ownMaxScan})
		if err != nil {
			if fail(err) {
				continue
			}
			return
		}
		backoff = 100 * time.Millisecond
		next := res.Next
		if endKnown && end.Less(next) {
			next = end
		}
		evs := res.Events[:0]
		for i := range res.Events {
			e := &res.Events[i]
			if endKnown && end.Less(e.Position) {
				break
			}
			// The filter again in memory: a backend may examine it only in part.
			if inWindow(e, c.from, c.to) && c.filter.Match(e) && eventstore.MatchAny(c.types, e.Type) {
				evs = append(evs, *e)
			}
		}
		if after.Less(next) {
			if !c.send(r, replayBatch{events: evs, to: next}) {
				return
			}
			after = next
			continue
		}
		// At the head of the log, before the window's end is known (or
		// reached): wait for more, or for the clock to pass the end.
		wait := time.Second
		if !endKnown {
			wait = min(wait, max(time.Until(c.to.Add(windowEndSlack)), time.Millisecond))
		}
		wctx, cancel := context.WithTimeout(c.rctx, wait)
		err = p.store.Wait(wctx, after)
		cancel()
		if c.rctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			if !fail(err) {
				return
			}
		}
	}
}

func (c *replayCursor) send(r *route, b replayBatch) bool {
	select {
	case c.feed <- b:
		r.signal()
		return true
	case <-c.rctx.Done():
		return false
	}
}

// takeReplays moves what the readers have read into the cursors, as far as
// they have room.
func (r *route) takeReplays() {
	for _, c := range r.rcs {
		for !c.ended && len(c.pending) < r.lowWater() && len(c.out)-c.outHead < replayMaxAhead {
			select {
			case b := <-c.feed:
				c.add(b, r.ordered)
				continue
			default:
			}
			break
		}
	}
}

// add takes one batch of the reader.
func (c *replayCursor) add(b replayBatch, ordered bool) {
	if b.err != nil {
		c.ended = true
		c.part.fail(b.err)
		return
	}
	before := c.readPos
	for i := range b.events {
		e := &b.events[i]
		if !c.readPos.Less(e.Position) {
			continue
		}
		ent := &outEntry{pos: e.Position, before: before}
		before = e.Position
		c.readPos = e.Position
		c.out = append(c.out, ent)
		c.pending = append(c.pending, &job{ev: e, eventID: e.ID, pos: e.Position, entry: ent, rc: c})
	}
	if c.readPos.Less(b.to) {
		c.readPos = b.to
	}
	c.ended = b.end
	c.advance()
}

// advance moves the cursor past settled events, counting them.
func (c *replayCursor) advance() {
	moved := false
	for c.outHead < len(c.out) && c.out[c.outHead].settled {
		if c.out[c.outHead].failed {
			c.failed++
		} else {
			c.delivered++
		}
		c.out[c.outHead] = nil
		c.outHead++
		moved = true
	}
	var cur eventstore.Position
	if c.outHead == len(c.out) {
		c.out, c.outHead = c.out[:0], 0
		cur = c.readPos
	} else {
		cur = c.out[c.outHead].before
		if c.outHead > 1024 && c.outHead > len(c.out)/2 {
			n := copy(c.out, c.out[c.outHead:])
			clear(c.out[n:])
			c.out, c.outHead = c.out[:n], 0
		}
	}
	if c.cursor.Less(cur) {
		c.cursor = cur
		moved = true
	}
	if moved {
		c.dirty = true
		c.part.set(c.progress(false))
	}
}

func (c *replayCursor) progress(done bool) replays.Part {
	return replays.Part{SubscriptionID: c.part.subID, Cursor: c.cursor, Delivered: c.delivered, Failed: c.failed, Done: done}
}

// finished reports whether every event of the cursor's window is settled.
func (c *replayCursor) finished() bool {
	return c.ended && len(c.pending) == 0 && len(c.retries) == 0 && c.head == nil && c.inFlight == 0 && c.outHead == len(c.out)
}

// replayMaxAwaiting bounds the attempts of a route handed to the outcome
// batcher and not yet committed, past which replays start nothing: a replay
// runs as fast as outcomes are recorded, and never fills the batcher's queue
// (a full queue would hold up the route's live attempts).
func (r *route) replayMaxAwaiting() int { return max(r.p.cfg.OutcomeBatch/2, 2*r.window()) }

// replayRoom reports whether the route has room for one more replay attempt.
func (r *route) replayRoom() bool {
	return len(r.rcs) > 0 && r.inFlight < r.window() && r.replayInFlight < r.replayCap() && r.awaiting < r.replayMaxAwaiting()
}

// replayPace returns the limiter replays start their attempts through while
// the route has live traffic, nil when they are not paced now.
func (r *route) replayPace(now time.Time) *rate.Limiter {
	lr := r.p.cfg.Replay.LiveRate
	if lr <= 0 || now.Sub(r.liveAt) >= liveActive {
		return nil
	}
	if r.replayLim == nil {
		r.replayLim = rate.NewLimiter(rate.Limit(lr), max(1, int(lr/100))) // 10ms worth
	}
	return r.replayLim
}

// nextReplay picks a replay job for a free slot, round robin over the
// route's replays: due retries first, then fresh events.
func (r *route) nextReplay(now time.Time) (*job, time.Time) {
	if !r.replayRoom() {
		return nil, time.Time{}
	}
	if lim := r.replayPace(now); lim != nil {
		if lim.TokensAt(now) < 1 {
			return nil, now.Add(time.Duration(float64(time.Second) / float64(lim.Limit())))
		}
		lim.AllowN(now, 1)
	}
	var wakeAt time.Time
	n := len(r.rcs)
	for i := range n {
		c := r.rcs[(r.replayNext+i)%n]
		j, w := c.next(now, r.ordered)
		if j != nil {
			r.replayNext = (r.replayNext + i + 1) % n
			return j, time.Time{}
		}
		wakeAt = earliest(wakeAt, w)
	}
	return nil, wakeAt
}

func (c *replayCursor) next(now time.Time, ordered bool) (*job, time.Time) {
	if now.Before(c.pausedAt) {
		return nil, c.pausedAt
	}
	if ordered {
		if h := c.head; h != nil {
			if h.running {
				return nil, time.Time{}
			}
			if now.Before(h.due) {
				return nil, h.due
			}
			return h, time.Time{}
		}
	}
	var wakeAt time.Time
	if len(c.retries) > 0 {
		if j := c.retries[0]; !now.Before(j.due) {
			c.retries[0] = nil
			c.retries = c.retries[1:]
			return j, time.Time{}
		}
		wakeAt = c.retries[0].due
	}
	if len(c.pending) > 0 {
		j := c.pending[0]
		c.pending[0] = nil
		c.pending = c.pending[1:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		if ordered {
			c.head = j
		}
		return j, time.Time{}
	}
	return nil, wakeAt
}

// hasReplayWork reports whether nextReplay could return a job now.
func (r *route) hasReplayWork(now time.Time) bool {
	if !r.replayRoom() {
		return false
	}
	for _, c := range r.rcs {
		if now.Before(c.pausedAt) {
			continue
		}
		if r.ordered && c.head != nil {
			if !c.head.running && !now.Before(c.head.due) {
				return true
			}
			continue
		}
		if len(c.pending) > 0 || (len(c.retries) > 0 && !now.Before(c.retries[0].due)) {
			return true
		}
	}
	return false
}

// onReplayResult decides what follows a replay attempt: settle (delivered
// or, once the schedule runs out, failed), or retry later.
func (r *route) onReplayResult(res result) {
	j := res.j
	c := j.rc
	c.inFlight--
	r.replayInFlight--
	if res.cancelled || c.dropped {
		return // abandoned: unsettled, sent again when the replay runs next
	}
	now := r.now()
	out := res.out
	if out.At.IsZero() {
		out.At = now
	}
	j.attempts++
	a := &Attempt{
		uid: newAttemptID(out.At), eventUID: j.eventID, Attempt: j.attempts, StatusCode: out.StatusCode, Error: out.Err,
		DurationMS: float64(out.Duration.Microseconds()) / 1000, At: out.At, ReplayID: c.id,
	}
	switch out.Kind {
	case Succeeded:
		a.Status = StatusSucceeded
		if r.circuit == CircuitHalfOpen { // the probe went through
			r.failures, r.circuit, r.cooldown = 0, CircuitClosed, r.p.cfg.CircuitCooldown
		}
		c.failures, c.cooldown = 0, r.p.cfg.CircuitCooldown
		if r.ordered {
			c.head = nil
		}
		r.submit(a, nil, note{j: j, kind: noteSettle})
		return
	case Gone:
		a.Status = StatusFailed
		r.gone = true
		r.p.disable(r.id, "endpoint answered 410 Gone")
		r.submit(a, nil, note{j: j, kind: noteNone})
		return
	}
	if r.circuit == CircuitHalfOpen {
		r.openCircuit(now, min(2*r.cooldown, MaxCircuitCooldown))
	}
	c.failures++
	if c.failures >= r.p.cfg.CircuitFailures {
		c.pausedAt = now.Add(c.cooldown)
		c.cooldown = min(2*c.cooldown, MaxCircuitCooldown)
	}
	a.Status = StatusFailed
	delay, exhausted := NextDelay(r.sub.Retry, j.attempts, j.firstAt, now, out.RetryAfter, r.p.cfg.Jitter)
	if exhausted {
		if r.ordered {
			c.head = nil
		}
		r.submit(a, nil, note{j: j, kind: noteReplayFailed})
		return
	}
	due := now.Add(delay)
	a.NextAttemptAt = &due
	j.due, j.ev = due, nil // read again for the retry
	if !r.ordered {
		i, _ := slices.BinarySearchFunc(c.retries, due, func(x *job, t time.Time) int { return x.due.Compare(t) })
		c.retries = slices.Insert(c.retries, i, j)
	}
	r.submit(a, nil, note{j: j, kind: noteNone})
}

// settleReplay marks a replay job's event settled once its outcome is committed.
func settleReplay(j *job, failed bool) {
	if e := j.entry; e != nil && !e.settled {
		e.settled, e.failed = true, failed
	}
}

// advanceReplays moves the replay cursors after commits.
func (r *route) advanceReplays() {
	for _, c := range r.rcs {
		c.advance()
	}
}

// finishReplays records the end of the cursors whose window is settled:
// their part is done once that is committed.
func (r *route) finishReplays() {
	if len(r.rcs) == 0 {
		return
	}
	keep := r.rcs[:0]
	for _, c := range r.rcs {
		if !c.finished() {
			keep = append(keep, c)
			continue
		}
		c.cursor = c.readPos
		prog := c.progress(true)
		pt := c.part
		pt.mu.Lock()
		pt.prog = replays.Part{SubscriptionID: prog.SubscriptionID, Cursor: prog.Cursor, Delivered: prog.Delivered, Failed: prog.Failed}
		pt.finishing = true
		pt.mu.Unlock()
		r.awaiting++
		err := r.p.batcher.submit(batchItem{sub: r.key, ops: []eventstore.StateOp{{Bucket: bucketReplays, Key: pt.key, Value: mustJSON(prog)}},
			done: func(err error) {
				pt.finish(err)
				r.noteMu.Lock()
				r.notes = append(r.notes, note{kind: noteNone, err: err})
				r.noteMu.Unlock()
				select {
				case r.noteSig <- struct{}{}:
				default:
				}
			}})
		if err != nil {
			r.awaiting--
			pt.finish(err)
		}
		c.dropped = true
		c.cancel()
	}
	clear(r.rcs[len(keep):])
	r.rcs = keep
}

// publishReplays hands the replay cursors' changed progress to the batcher.
func (r *route) publishReplays(now time.Time, force bool) {
	for _, c := range r.rcs {
		if !c.dirty || (!force && now.Sub(c.pushed) < checkpointEvery) || c.part.run.ctx.Err() != nil {
			continue
		}
		err := r.p.batcher.submit(batchItem{sub: r.key, ops: []eventstore.StateOp{{Bucket: bucketReplays, Key: c.part.key, Value: mustJSON(c.progress(false))}}})
		if err != nil {
			continue
		}
		c.dirty, c.pushed = false, now
	}
}

// replayWake is when a dirty replay progress is due to be pushed.
func (r *route) replayWake(wakeAt time.Time) time.Time {
	for _, c := range r.rcs {
		if c.dirty {
			wakeAt = earliest(wakeAt, c.pushed.Add(checkpointEvery))
		}
	}
	return wakeAt
}
