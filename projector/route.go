package projector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// Bounds of one route's memory (see the package doc).
const (
	// maxTracked bounds the unsettled positions a route tracks; a route that
	// has this many (one slow delivery holding the cursor while later ones
	// settle) reads nothing more until the oldest settles.
	maxTracked = 1 << 16
	// retryWindow is how many retry-queue entries (soonest first) a route
	// keeps in memory; the rest stay in the state store until needed.
	retryWindow = 256
	// ownMaxScan bounds one read of a detached route.
	ownMaxScan = eventstore.DefaultMaxScan
	// checkpointEvery bounds how often a route hands its checkpoint to the batcher.
	checkpointEvery = 100 * time.Millisecond
)

// Circuit states, as Status reports them.
const (
	CircuitClosed   = "closed"
	CircuitOpen     = "open"
	CircuitHalfOpen = "half_open"
)

// job is one (event, subscription) pair the route is working on.
type job struct {
	ev       *eventstore.Event // nil for retry-queue jobs until fetched
	eventID  uuid.UUID
	pos      eventstore.Position
	attempts int // attempts made so far
	base     int // attempts before the current schedule run
	firstAt  time.Time
	due      time.Time // ordered routes: the in-place retry is not before due
	retryKey []byte    // the pair's retry-queue entry, if it has one
	entry    *outEntry // fresh jobs: the pair's place in the cursor order
	running  bool
	rc       *replayCursor // set on replay jobs
}

// outEntry is a read, matching event in log order; the cursor is the
// position before the first unsettled one.
type outEntry struct {
	pos     eventstore.Position
	before  eventstore.Position // everything up to before was read before this event
	settled bool
	failed  bool // replays: settled as failed for good
}

type retryItem struct {
	key []byte
	e   retryEntry
}

type result struct {
	j         *job
	ev        *eventstore.Event // fetched for a retry-queue job
	out       Outcome
	cancelled bool
}

type noteKind int

const (
	noteNone         noteKind = iota
	noteSettle                // delivered or dead-lettered
	noteToRetry               // moved to the retry queue (unordered routes)
	noteReplayFailed          // a replay pair failed for good
)

// note is a commit confirmation from the batcher.
type note struct {
	j       *job
	kind    noteKind
	item    *retryItem
	release []byte // retry key no longer in use once committed
	err     error
}

// routeSnapshot is what Status reads of a running route.
type routeSnapshot struct {
	loaded       bool
	cursor       eventstore.Position
	inFlight     int
	circuit      string
	lastSuccess  time.Time
	failingSince time.Time
	settledAhead int
}

// route delivers one subscription's events. Everything below "loop state" is
// owned by the route's goroutine.
type route struct {
	p       *Projector
	id      string
	key     []byte
	prev    *route // a stopping route of the same subscription to wait for
	filter  eventstore.Filter
	ordered bool
	last    subscriptions.Subscription // as last seen by reconcile (Projector.mu)

	ctx     context.Context // reading and starting; cancelled to stop
	cancel  context.CancelFunc
	dctx    context.Context // deliveries in flight
	dcancel context.CancelFunc
	done    chan struct{}
	exit    chan struct{} // closed when the loop has ended

	buffered   atomic.Int64 // events in the inbox (tail side)
	newSub     atomic.Pointer[subscriptions.Subscription]
	reload     atomic.Bool
	wake       chan struct{}
	results    chan result
	tasks      chan task
	noteMu     sync.Mutex
	notes      []note
	noteSig    chan struct{}
	deliveries sync.WaitGroup

	statMu sync.Mutex
	stat   routeSnapshot

	// loop state
	sub          subscriptions.Subscription
	inbox        chan tailMsg // nil when detached
	readPos      eventstore.Position
	readBackoff  time.Time
	pending      []*job
	out          []*outEntry
	outHead      int
	settledAhead int
	cursor       eventstore.Position
	inFlight     int
	awaiting     int
	head         *job // ordered: the pair in the one window slot
	retries      []*retryItem
	retryHigh    []byte
	retryMore    bool
	busyKeys     map[string]bool
	adopt        map[eventstore.Position]*retryItem
	circuit      string
	openUntil    time.Time
	cooldown     time.Duration
	failures     int
	limiter      *rate.Limiter
	gone         bool
	lastSuccess  time.Time
	failingSince time.Time
	cpDirty      bool
	cpPushed     time.Time

	// replays (loop state but replayReaders)
	rcs            []*replayCursor
	replayGen      uint64
	replayInFlight int
	replayNext     int
	liveAt         time.Time // the last live attempt started
	replayLim      *rate.Limiter
	replayReaders  sync.WaitGroup
}

func (p *Projector) newRoute(sub subscriptions.Subscription, prev *route) *route {
	key, _ := subKey(sub.ID)
	f := sub.Filter()
	f.NoInternal = true
	r := &route{
		p: p, id: sub.ID, key: key, prev: prev, filter: f, ordered: sub.Ordered, last: sub, sub: sub,
		done:     make(chan struct{}),
		exit:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
		results:  make(chan result, 64),
		tasks:    make(chan task),
		noteSig:  make(chan struct{}, 1),
		busyKeys: map[string]bool{},
		adopt:    map[eventstore.Position]*retryItem{},
		circuit:  CircuitClosed,
		cooldown: p.cfg.CircuitCooldown,
	}
	r.ctx, r.cancel = context.WithCancel(p.readCtx)
	r.dctx, r.dcancel = context.WithCancel(p.deliverCtx)
	r.setLimiter()
	return r
}

// match is Subscription.Matches with the filter built once (it has
// NoInternal set, so internal events never match).
func (r *route) match(e *eventstore.Event) bool { return r.filter.Match(e) }

// update hands the route a changed subscription (URL, headers, secrets,
// retry, window, rate limit); it applies to attempts started afterwards.
func (r *route) update(sub subscriptions.Subscription) {
	r.newSub.Store(&sub)
	r.signal()
}

// reloadRetries makes the route read its retry queue again (after a redrive).
func (r *route) reloadRetries() {
	r.reload.Store(true)
	r.signal()
}

func (r *route) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// stop makes the route stop at once, abandoning its deliveries in flight
// (they stay unsettled and are sent again when the route runs next).
func (r *route) stop() {
	r.cancel()
	r.dcancel()
}

func (r *route) snapshot() routeSnapshot {
	r.statMu.Lock()
	defer r.statMu.Unlock()
	return r.stat
}

func (r *route) now() time.Time { return r.p.cfg.Now() }

func (r *route) setLimiter() {
	if r.sub.RateLimit <= 0 {
		r.limiter = nil
		return
	}
	burst := max(1, int(math.Ceil(r.sub.RateLimit/100))) // 10ms worth
	if r.limiter == nil {
		r.limiter = rate.NewLimiter(rate.Limit(r.sub.RateLimit), burst)
		return
	}
	r.limiter.SetLimit(rate.Limit(r.sub.RateLimit))
	r.limiter.SetBurst(burst)
}

func (r *route) window() int {
	if r.ordered {
		return 1
	}
	return max(r.sub.MaxInFlight, 1)
}

// lowWater is how few pending events make the route read more.
func (r *route) lowWater() int {
	return min(max(2*r.window(), 32), r.p.cfg.TailBatch)
}

func (r *route) run() {
	defer close(r.done)
	defer r.deliveries.Wait()
	defer close(r.exit) // idle workers leave
	defer r.replayReaders.Wait()
	defer r.dropReplays()
	defer r.p.tail.detach(r)
	if r.prev != nil {
		select {
		case <-r.prev.done:
		case <-r.ctx.Done():
			return
		}
		// The previous route's last outcomes and checkpoint are committed
		// before this one reads them.
		if err := r.p.batcher.sync(r.ctx); err != nil {
			return
		}
		r.prev = nil
	}
	if !r.load() {
		return
	}
	r.syncReplays()
	timer := time.NewTimer(time.Hour) // Go 1.23 timers: Reset and Stop need no draining
	timer.Stop()
	defer timer.Stop()
	var timerAt time.Time
	stopping := false
	var giveUp time.Time
	for {
		now := r.now()
		if !stopping && r.ctx.Err() != nil {
			stopping = true
			r.p.tail.detach(r)
		}
		var wakeAt time.Time
		if !stopping {
			wakeAt = r.pump(now)
		}
		r.publish(now, stopping)
		if stopping && r.inFlight == 0 {
			// Wait for the outcomes to commit, so the checkpoint covers them
			// and nothing delivered is sent again; the batcher runs until
			// every route has stopped, but the store may be failing.
			if giveUp.IsZero() {
				giveUp = now.Add(finalFlushTimeout)
			}
			if r.awaiting == 0 || !now.Before(giveUp) {
				if r.awaiting > 0 {
					r.p.cfg.Logger.Warn("projector: route stopped before its outcomes were recorded; they are sent again", "subscription", r.id, "attempts", r.awaiting)
				}
				r.publish(now, true)
				r.p.batcher.flushSoon(r.key)
				return
			}
			wakeAt = giveUp
		} else if !stopping && r.inbox == nil && r.wantRead() && !now.Before(r.readBackoff) {
			if !r.poll() {
				r.readOwn(now)
			}
			continue
		}
		var inbox chan tailMsg
		if !stopping && r.wantRead() {
			inbox = r.inbox
			if inbox == nil { // detached, waiting out a read backoff
				wakeAt = earliest(wakeAt, r.readBackoff)
			}
		}
		if r.cpDirty {
			wakeAt = earliest(wakeAt, r.cpPushed.Add(checkpointEvery))
		}
		wakeAt = r.replayWake(wakeAt)
		if !wakeAt.Equal(timerAt) {
			if wakeAt.IsZero() {
				timer.Stop()
			} else {
				timer.Reset(max(wakeAt.Sub(now), time.Millisecond))
			}
			timerAt = wakeAt
		}
		var ctxDone <-chan struct{}
		if !stopping {
			ctxDone = r.ctx.Done()
		}
		select {
		case m, ok := <-inbox:
			r.onTail(m, ok)
		case res := <-r.results:
			r.onResult(res)
			r.drainResults()
		case <-r.noteSig:
			r.onNotes()
		case <-r.wake:
			r.onWake()
		case <-timer.C:
			timerAt = time.Time{}
		case <-ctxDone:
		}
	}
}

// drainResults handles the results that are ready, up to a window's worth,
// before the route looks at its window again.
func (r *route) drainResults() {
	for range r.window() {
		select {
		case res := <-r.results:
			r.onResult(res)
		default:
			return
		}
	}
}

// poll handles one pending signal without blocking; it reports whether it did.
func (r *route) poll() bool {
	select {
	case res := <-r.results:
		r.onResult(res)
	case <-r.noteSig:
		r.onNotes()
	case <-r.wake:
		r.onWake()
	default:
		return false
	}
	return true
}

// load reads the route's checkpoint and retry queue.
func (r *route) load() bool {
	backoff := 100 * time.Millisecond
	for {
		err := r.tryLoad()
		if err == nil {
			return true
		}
		if r.ctx.Err() != nil {
			return false
		}
		r.p.cfg.Logger.Error("projector: loading route state failed; retrying", "subscription", r.id, "err", err)
		select {
		case <-r.ctx.Done():
			return false
		case <-time.After(backoff):
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

func (r *route) tryLoad() error {
	var cp checkpoint
	v, err := r.p.state.GetState(r.ctx, bucketRoutes, r.key)
	switch {
	case errors.Is(err, eventstore.ErrNotFound):
		cp.Cursor = r.sub.StartPosition
		r.cpDirty = true // mark the route as known to the janitor
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(v, &cp); err != nil {
			r.p.cfg.Logger.Error("projector: unreadable checkpoint; starting from the subscription's start", "subscription", r.id, "err", err)
			cp = checkpoint{Cursor: r.sub.StartPosition}
		}
	}
	r.cursor, r.readPos = cp.Cursor, cp.Cursor
	if cp.LastSuccessAt != nil {
		r.lastSuccess = *cp.LastSuccessAt
	}
	if cp.FailingSince != nil {
		r.failingSince = *cp.FailingSince
	}
	r.retries, r.retryHigh, r.retryMore = nil, nil, true
	clear(r.adopt)
	return r.fillRetries()
}

// fillRetries loads the next retry-queue entries (soonest first) when the
// in-memory part runs low.
func (r *route) fillRetries() error {
	if !r.retryMore || len(r.retries) >= retryWindow/4 {
		return nil
	}
	n := 0
	err := r.p.state.ScanState(r.ctx, eventstore.ScanParams{Bucket: bucketRetries, Prefix: r.key, After: r.retryHigh, Limit: retryWindow},
		func(k, v []byte) error {
			n++
			r.retryHigh = bytes.Clone(k)
			if r.busyKeys[string(k)] {
				return nil
			}
			var e retryEntry
			if err := json.Unmarshal(v, &e); err != nil {
				r.p.cfg.Logger.Error("projector: skipping an unreadable retry entry", "subscription", r.id, "err", err)
				return nil
			}
			it := &retryItem{key: r.retryHigh, e: e}
			if r.readPos.Less(e.Position) {
				// Not read yet: the pair was failing when the route last
				// stopped. The fresh read takes over its attempt count.
				r.adopt[e.Position] = it
				if r.ordered {
					return nil
				}
			}
			r.insertRetry(it)
			return nil
		})
	if err != nil {
		return err
	}
	r.retryMore = n == retryWindow
	return nil
}

// insertRetry adds a committed retry entry to the in-memory queue, unless it
// sorts past what is loaded (it is read from the store when its turn comes).
func (r *route) insertRetry(it *retryItem) {
	if r.retryMore && r.retryHigh != nil && bytes.Compare(it.key, r.retryHigh) > 0 {
		return
	}
	i, found := slices.BinarySearchFunc(r.retries, it.key, func(a *retryItem, k []byte) int { return bytes.Compare(a.key, k) })
	if found {
		return
	}
	r.retries = slices.Insert(r.retries, i, it)
	if len(r.retries) > 2*retryWindow {
		clear(r.retries[retryWindow:])
		r.retries = r.retries[:retryWindow]
		r.retryHigh = r.retries[retryWindow-1].key
		r.retryMore = true
	}
}

func (r *route) onWake() {
	r.syncReplays()
	if s := r.newSub.Swap(nil); s != nil {
		r.sub = *s
		r.setLimiter()
	}
	if r.reload.Swap(false) {
		r.retries, r.retryHigh, r.retryMore = nil, nil, true
		if err := r.fillRetries(); err != nil && r.ctx.Err() == nil {
			r.p.cfg.Logger.Error("projector: reloading the retry queue failed", "subscription", r.id, "err", err)
			r.reload.Store(true)
			r.readBackoff = r.now().Add(time.Second)
		}
	}
}

// wantRead reports whether the route takes more events from the log.
func (r *route) wantRead() bool {
	if r.gone || r.circuit != CircuitClosed {
		return false
	}
	if len(r.out)-r.outHead >= maxTracked {
		return false
	}
	return len(r.pending) < r.lowWater()
}

// readOwn reads the store after readPos (a detached route); at the head it
// attaches to the tail.
func (r *route) readOwn(now time.Time) {
	var res eventstore.ReadResult
	var err error
	if evs, next, ok := r.p.tail.readRecent(r.readPos, r.match, r.p.cfg.TailBatch); ok {
		res = eventstore.ReadResult{Events: evs, Next: next} // what the tail read lately
	} else {
		res, err = r.p.store.ReadAll(r.ctx, eventstore.ReadParams{After: r.readPos, Filter: r.filter, Limit: r.p.cfg.TailBatch, MaxScan: ownMaxScan})
	}
	if err != nil {
		if r.ctx.Err() == nil {
			r.p.cfg.Logger.Error("projector: reading the log failed; retrying", "subscription", r.id, "err", err)
			r.readBackoff = now.Add(time.Second)
		}
		return
	}
	if !r.readPos.Less(res.Next) {
		// At the head: join the tail, unless it has moved on meanwhile.
		if r.inbox = r.p.tail.attach(r, r.readPos); r.inbox == nil {
			r.readBackoff = now.Add(time.Millisecond)
		}
		return
	}
	r.addEvents(res.Events, res.Next)
}

func (r *route) onTail(m tailMsg, ok bool) {
	if !ok { // detached by the tail: read on our own from readPos
		r.inbox = nil
		return
	}
	r.buffered.Add(-int64(len(m.events)))
	r.addEvents(m.events, m.to)
}

// addEvents takes the events read up to `to`, skipping what was read already.
func (r *route) addEvents(evs []eventstore.Event, to eventstore.Position) {
	before := r.readPos
	for i := range evs {
		e := &evs[i]
		if !r.readPos.Less(e.Position) || !r.match(e) {
			continue
		}
		ent := &outEntry{pos: e.Position, before: before}
		before = e.Position
		r.readPos = e.Position
		r.out = append(r.out, ent)
		j := &job{ev: e, eventID: e.ID, pos: e.Position, entry: ent}
		if it := r.adopt[e.Position]; it != nil {
			delete(r.adopt, e.Position)
			if !r.ordered { // its retry-queue entry delivers it
				ent.settled = true
				r.settledAhead++
				continue
			}
			j.attempts, j.base, j.firstAt, j.due, j.retryKey = it.e.Attempts, it.e.Base, it.e.FirstAt, it.e.Due, it.key
			r.busyKeys[string(it.key)] = true
		}
		r.pending = append(r.pending, j)
	}
	if r.readPos.Less(to) {
		r.readPos = to
	}
	r.advance()
}

// advance moves the cursor past settled events.
func (r *route) advance() {
	for r.outHead < len(r.out) && r.out[r.outHead].settled {
		r.out[r.outHead] = nil
		r.outHead++
		r.settledAhead--
	}
	var c eventstore.Position
	if r.outHead == len(r.out) {
		r.out, r.outHead = r.out[:0], 0
		c = r.readPos
	} else {
		c = r.out[r.outHead].before
		if r.outHead > 1024 && r.outHead > len(r.out)/2 {
			n := copy(r.out, r.out[r.outHead:])
			clear(r.out[n:])
			r.out, r.outHead = r.out[:n], 0
		}
	}
	if r.cursor.Less(c) {
		r.cursor = c
		r.cpDirty = true
	}
}

// pump starts what the window, circuit and rate limit allow, and returns
// when to look again (zero: on the next signal).
func (r *route) pump(now time.Time) time.Time {
	if r.gone {
		return time.Time{}
	}
	r.takeReplays()
	r.finishReplays()
	for {
		if r.circuit == CircuitOpen {
			if now.Before(r.openUntil) {
				return r.openUntil
			}
			r.circuit = CircuitHalfOpen
		}
		if r.circuit == CircuitHalfOpen && r.inFlight > 0 {
			return time.Time{} // one probe at a time
		}
		var res *rate.Reservation
		if r.limiter != nil {
			res = r.limiter.ReserveN(now, 1)
			if d := res.DelayFrom(now); d > 0 {
				res.CancelAt(now)
				if r.hasWork(now) {
					return now.Add(d)
				}
				return time.Time{}
			}
		}
		j, wakeAt := r.next(now)
		if j == nil {
			if res != nil {
				res.CancelAt(now) // give the token back
			}
			return wakeAt
		}
		r.start(j, now)
		if r.circuit == CircuitHalfOpen {
			return time.Time{}
		}
	}
}

// next picks the next job to start: live work first, then replays in the
// spare capacity (replay_route.go).
func (r *route) next(now time.Time) (*job, time.Time) {
	j, wakeAt := r.nextLive(now)
	if j != nil {
		return j, time.Time{}
	}
	j, w := r.nextReplay(now)
	if j != nil {
		return j, time.Time{}
	}
	return nil, earliest(wakeAt, w)
}

// nextLive picks the next live job: due retries first, then fresh events;
// an ordered route keeps one pair in its slot until it settles.
func (r *route) nextLive(now time.Time) (*job, time.Time) {
	var wakeAt time.Time
	if r.inFlight >= r.window() { // replay attempts included
		return nil, time.Time{}
	}
	if r.ordered {
		if h := r.head; h != nil {
			if now.Before(h.due) {
				return nil, h.due
			}
			return h, time.Time{}
		}
	}
	if len(r.retries) > 0 {
		it := r.retries[0]
		if !now.Before(it.e.Due) {
			r.retries[0] = nil
			r.retries = r.retries[1:]
			if err := r.fillRetries(); err != nil && r.ctx.Err() == nil {
				r.p.cfg.Logger.Error("projector: reading the retry queue failed", "subscription", r.id, "err", err)
			}
			j := &job{eventID: it.e.EventID, pos: it.e.Position, attempts: it.e.Attempts, base: it.e.Base, firstAt: it.e.FirstAt, due: it.e.Due, retryKey: it.key}
			r.busyKeys[string(it.key)] = true
			if r.ordered {
				r.head = j
			}
			return j, time.Time{}
		}
		wakeAt = it.e.Due
	}
	if len(r.pending) > 0 {
		j := r.pending[0]
		r.pending[0] = nil
		r.pending = r.pending[1:]
		if len(r.pending) == 0 {
			r.pending = nil // let the backing array go
		}
		if r.ordered {
			r.head = j
			if now.Before(j.due) {
				return nil, j.due
			}
		}
		return j, time.Time{}
	}
	return nil, wakeAt
}

// hasWork reports whether next could return a job now (rate limit aside).
func (r *route) hasWork(now time.Time) bool {
	return r.hasLiveWork(now) || r.hasReplayWork(now)
}

func (r *route) hasLiveWork(now time.Time) bool {
	if r.inFlight >= r.window() {
		return false
	}
	if r.ordered {
		if h := r.head; h != nil {
			return !h.running && !now.Before(h.due)
		}
	}
	return len(r.pending) > 0 || (len(r.retries) > 0 && !now.Before(r.retries[0].e.Due))
}

func (r *route) start(j *job, now time.Time) {
	j.running = true
	if j.firstAt.IsZero() {
		j.firstAt = now
	}
	r.inFlight++
	if j.rc != nil {
		j.rc.inFlight++
		r.replayInFlight++
	} else {
		r.liveAt = now
	}
	t := task{j: j, sub: r.sub, attempt: j.attempts + 1}
	select {
	case r.tasks <- t: // an idle worker takes it
	default:
		r.deliveries.Add(1)
		go r.worker(t)
	}
}

// task is one attempt handed to a worker.
type task struct {
	j       *job
	sub     subscriptions.Subscription
	attempt int
}

// workerIdle is how long (up to twice that) a delivery worker waits for the
// next attempt before it exits. Workers outlive one attempt so a busy route
// does not start (and grow the stack of) a goroutine per delivery.
const workerIdle = time.Second

func (r *route) worker(t task) {
	defer r.deliveries.Done()
	ac := r.p.deliverer.newAttemptCtx()
	defer ac.close()
	// The idle timer is not re-armed per attempt: when it fires, a worker
	// that made attempts since the last time waits another round.
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	attempts, seen := 0, 0
	for {
		r.results <- r.attempt(t, ac)
		attempts++
		for got := false; !got; {
			select {
			case t = <-r.tasks:
				got = true
			case <-idle.C:
				if attempts == seen {
					return
				}
				seen = attempts
				idle.Reset(workerIdle)
			case <-r.exit:
				return
			}
		}
	}
}

// attempt makes one delivery attempt (reading the event first for a
// retry-queue job).
func (r *route) attempt(t task, ac *attemptCtx) result {
	j := t.j
	res := result{j: j}
	ctx, replayID := r.dctx, ""
	if j.rc != nil {
		ctx, replayID = j.rc.dctx, j.rc.id
	}
	ev := j.ev
	if ev == nil {
		e, err := r.p.store.Event(ctx, j.eventID)
		switch {
		case ctx.Err() != nil:
			res.cancelled = true
			return res
		case err != nil:
			res.out = Outcome{Kind: Failed, Err: short("reading the event: " + err.Error()), At: r.now()}
			return res
		}
		ev, res.ev = &e, &e
	}
	res.out = r.p.deliverer.deliver(ctx, Request{Sub: t.sub, Event: *ev, Attempt: t.attempt, ReplayID: replayID}, ac)
	res.cancelled = res.out.Kind != Succeeded && ctx.Err() != nil
	return res
}

// onResult decides what follows an attempt: settle, retry (in place on
// ordered routes), dead-letter, or disable the subscription (410).
func (r *route) onResult(res result) {
	r.inFlight--
	j := res.j
	j.running = false
	if j.rc != nil {
		r.onReplayResult(res)
		return
	}
	if res.ev != nil {
		j.ev = res.ev
	}
	if res.cancelled {
		return // abandoned: unsettled, sent again when the route runs next
	}
	now := r.now()
	out := res.out
	if out.At.IsZero() {
		out.At = now
	}
	j.attempts++
	a := &Attempt{
		uid: newAttemptID(out.At), eventUID: j.eventID, Attempt: j.attempts, StatusCode: out.StatusCode, Error: out.Err,
		DurationMS: float64(out.Duration.Microseconds()) / 1000, At: out.At,
	}
	old := j.retryKey
	var ops []eventstore.StateOp
	if old != nil {
		ops = append(ops, eventstore.StateOp{Bucket: bucketRetries, Key: old, Delete: true})
	}
	switch out.Kind {
	case Succeeded:
		a.Status = StatusSucceeded
		r.failures, r.circuit, r.cooldown = 0, CircuitClosed, r.p.cfg.CircuitCooldown
		r.lastSuccess, r.failingSince, r.cpDirty = out.At, time.Time{}, true
		if r.ordered {
			r.head = nil
		}
		r.submit(a, ops, note{j: j, kind: noteSettle, release: old})
		return
	case Gone:
		a.Status = StatusFailed
		r.gone = true
		r.p.disable(r.id, "endpoint answered 410 Gone")
		r.submit(a, nil, note{j: j, kind: noteNone})
		return
	}
	r.onFailure(now)
	if r.failingSince.IsZero() {
		r.failingSince, r.cpDirty = out.At, true
	}
	delay, exhausted := NextDelay(r.sub.Retry, j.attempts-j.base, j.firstAt, now, out.RetryAfter, r.p.cfg.Jitter)
	if exhausted {
		a.Status = StatusDead
		d := deadEntry{EventID: j.eventID, Position: j.pos, Attempts: j.attempts, LastError: out.Err, DeadAt: now}
		ops = append(ops, eventstore.StateOp{Bucket: bucketDead, Key: deadKey(r.key, j.pos), Value: mustJSON(d)})
		if r.ordered {
			r.head = nil
		}
		r.submit(a, ops, note{j: j, kind: noteSettle, release: old})
		return
	}
	due := now.Add(delay)
	a.Status, a.NextAttemptAt = StatusFailed, &due
	it := &retryItem{
		key: retryKey(r.key, due, j.pos),
		e:   retryEntry{EventID: j.eventID, Position: j.pos, Attempts: j.attempts, Base: j.base, FirstAt: j.firstAt, Due: due},
	}
	ops = append(ops, eventstore.StateOp{Bucket: bucketRetries, Key: it.key, Value: mustJSON(it.e)})
	j.retryKey, j.due = it.key, due
	if r.ordered { // retried in place: the slot stays taken
		r.busyKeys[string(it.key)] = true
		r.submit(a, ops, note{j: j, kind: noteNone, release: old})
		return
	}
	r.submit(a, ops, note{j: j, kind: noteToRetry, item: it, release: old})
}

func (r *route) onFailure(now time.Time) {
	r.failures++
	switch r.circuit {
	case CircuitHalfOpen:
		r.openCircuit(now, min(2*r.cooldown, MaxCircuitCooldown))
	case CircuitClosed:
		if r.failures >= r.p.cfg.CircuitFailures {
			r.openCircuit(now, r.p.cfg.CircuitCooldown)
		}
	}
}

func (r *route) openCircuit(now time.Time, cooldown time.Duration) {
	r.circuit, r.cooldown, r.openUntil = CircuitOpen, cooldown, now.Add(cooldown)
}

// submit hands an attempt to the batcher; n comes back through onNotes once
// it is committed.
func (r *route) submit(a *Attempt, ops []eventstore.StateOp, n note) {
	r.awaiting++
	err := r.p.batcher.submit(batchItem{sub: r.key, attempt: a, ops: ops, route: r, note: n})
	if err != nil {
		r.awaiting--
		r.p.cfg.Logger.Error("projector: an attempt could not be recorded; it is sent again after a restart", "subscription", r.id, "err", err)
	}
}

// noted hands the route the confirmation n of a submitted attempt (the
// batcher calls it once the attempt is committed, or given up with err).
func (r *route) noted(n note, err error) {
	n.err = err
	r.noteMu.Lock()
	r.notes = append(r.notes, n)
	r.noteMu.Unlock()
	select {
	case r.noteSig <- struct{}{}:
	default:
	}
}

func (r *route) onNotes() {
	r.noteMu.Lock()
	ns := r.notes
	r.notes = nil
	r.noteMu.Unlock()
	for _, n := range ns {
		r.awaiting--
		if n.release != nil {
			delete(r.busyKeys, string(n.release))
		}
		if n.err != nil {
			continue // not recorded: the pair stays unsettled
		}
		switch n.kind {
		case noteSettle:
			if n.j.rc != nil {
				settleReplay(n.j, false)
			} else {
				r.settle(n.j)
			}
		case noteReplayFailed:
			settleReplay(n.j, true)
		case noteToRetry:
			r.settle(n.j)
			r.insertRetry(n.item)
		}
	}
	r.advance()
	r.advanceReplays()
}

func (r *route) settle(j *job) {
	if e := j.entry; e != nil && !e.settled {
		e.settled = true
		r.settledAhead++
	}
}

// publish refreshes the Status snapshot and hands a changed checkpoint to the batcher.
func (r *route) publish(now time.Time, force bool) {
	r.statMu.Lock()
	r.stat = routeSnapshot{
		loaded: true, cursor: r.cursor, inFlight: r.inFlight, circuit: r.circuit,
		lastSuccess: r.lastSuccess, failingSince: r.failingSince, settledAhead: r.settledAhead,
	}
	r.statMu.Unlock()
	r.publishReplays(now, force)
	if !r.cpDirty || (!force && now.Sub(r.cpPushed) < checkpointEvery) {
		return
	}
	cp := checkpoint{Cursor: r.cursor}
	if !r.lastSuccess.IsZero() {
		t := r.lastSuccess
		cp.LastSuccessAt = &t
	}
	if !r.failingSince.IsZero() {
		t := r.failingSince
		cp.FailingSince = &t
	}
	r.p.batcher.setCheckpoint(r.key, cp)
	r.cpDirty, r.cpPushed = false, now
}

// earliest returns the earlier of two wake times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
