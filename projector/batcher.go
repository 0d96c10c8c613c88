package projector

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

// replayOutcomeFlush caps the outcome batcher's wait while a batch holds a
// replay's attempts: a replay starts no more attempts once a few hundred
// await their commit (route.replayMaxAwaiting), so the wait bounds its
// throughput, where live deliveries go on regardless.
const replayOutcomeFlush = 10 * time.Millisecond

// checkpointInterval bounds how often checkpoints are written when no
// attempts are (a route moving through events it does not match).
const checkpointInterval = time.Second

// finalFlushTimeout bounds the last commit of Stop.
const finalFlushTimeout = 5 * time.Second

// errBatcherStopped: an item was submitted after the batcher stopped.
var errBatcherStopped = errors.New("projector: outcome batcher stopped")

// batchItem is one recorded attempt (or only state ops) and its callback.
type batchItem struct {
	sub     []byte
	attempt *Attempt
	ops     []eventstore.StateOp
	// done, when set, is called once the item is committed (nil error) or
	// given up (the store failed until Stop).
	done func(error)
	// route, when set, gets note back the same way (route.noted): a route's
	// attempts need no closure each.
	route *route
	note  note
	// flush commits the batch at once (sync).
	flush bool
}

// batcher commits the outcomes of every route: one CommitState per flush
// holding one delivery.attempts event and the state ops the attempts imply,
// plus the latest checkpoints of the routes.
type batcher struct {
	state  eventstore.StateStore
	cfg    Config
	in     chan batchItem
	stopCh chan struct{}
	done   chan struct{}

	mu       sync.Mutex
	cps      map[string][]byte // string(sub key) → checkpoint JSON, not yet written
	flushing map[string][]byte // the checkpoints of the flush under way
	deletes  [][]byte          // sub keys whose state is to be deleted
	kick     chan struct{}
	stopOnce sync.Once
}

func newBatcher(state eventstore.StateStore, cfg Config) *batcher {
	return &batcher{
		state:  state,
		cfg:    cfg,
		in:     make(chan batchItem, cfg.OutcomeBatch),
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
		cps:    map[string][]byte{},
		kick:   make(chan struct{}, 1),
	}
}

// submit queues it; it blocks while the queue is full (the store is the
// bottleneck of every route alike) and fails once the batcher has stopped.
func (b *batcher) submit(it batchItem) error {
	select {
	case <-b.done:
		return errBatcherStopped
	default:
	}
	select {
	case b.in <- it:
		return nil
	case <-b.done:
		return errBatcherStopped
	}
}

// setCheckpoint records the latest checkpoint of a route; it is written with
// the next flush (within checkpointInterval).
func (b *batcher) setCheckpoint(sub []byte, cp checkpoint) {
	v := mustJSON(cp)
	b.mu.Lock()
	b.cps[string(sub)] = v
	b.mu.Unlock()
}

// pendingCheckpoint returns a route's checkpoint that is set but not yet
// committed, if any.
func (b *batcher) pendingCheckpoint(sub []byte) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.cps[string(sub)]; ok {
		return v, true
	}
	v, ok := b.flushing[string(sub)]
	return v, ok
}

// flushSoon asks for a flush now (a stopped route's last checkpoint).
func (b *batcher) flushSoon() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// deleteSub deletes every state entry of a deleted subscription with the
// next flush, after whatever was submitted for it before.
func (b *batcher) deleteSub(sub []byte) {
	b.mu.Lock()
	delete(b.cps, string(sub))
	b.deletes = append(b.deletes, sub)
	b.mu.Unlock()
	b.flushSoon()
}

// sync returns once everything submitted and every checkpoint set before the
// call is committed.
func (b *batcher) sync(ctx context.Context) error {
	ch := make(chan error, 1)
	if err := b.submit(batchItem{flush: true, done: func(err error) { ch <- err }}); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop flushes what is queued and ends the batcher. Callers stop submitting first.
func (b *batcher) stop() {
	b.stopOnce.Do(func() { close(b.stopCh) })
	<-b.done
}

func (b *batcher) run() {
	defer close(b.done)
	var buf []batchItem
	attempts := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	var due time.Time // when the armed timer fires
	replay := false   // buf holds a replay's attempt
	tick := time.NewTicker(checkpointInterval)
	defer tick.Stop()
	flush := func() {
		if armed {
			timer.Stop()
			armed = false
		}
		b.flush(buf)
		clear(buf)
		buf, attempts, replay = buf[:0], 0, false
	}
	add := func(it batchItem) bool {
		buf = append(buf, it)
		if it.attempt != nil {
			attempts++
		}
		if it.note.j != nil && it.note.j.rc != nil {
			replay = true
		}
		return it.flush || attempts >= b.cfg.OutcomeBatch
	}
	// arm starts the flush timer, or brings it forward for a replay.
	arm := func() {
		d := b.cfg.OutcomeFlush
		if replay {
			d = min(d, replayOutcomeFlush)
		}
		at := time.Now().Add(d)
		if armed && !at.Before(due) {
			return
		}
		if armed {
			timer.Stop()
		}
		timer.Reset(d)
		armed, due = true, at
	}
	for {
		select {
		case it := <-b.in:
			now := add(it)
			for !now && attempts < b.cfg.OutcomeBatch {
				select {
				case it := <-b.in:
					now = add(it)
					continue
				default:
				}
				break
			}
			if now {
				flush()
			} else {
				arm()
			}
		case <-timer.C:
			armed = false
			flush()
		case <-tick.C:
			if len(buf) > 0 || b.hasPending() {
				flush()
			}
		case <-b.kick:
			flush()
		case <-b.stopCh:
			for {
				select {
				case it := <-b.in:
					add(it)
					if attempts >= b.cfg.OutcomeBatch {
						flush()
					}
					continue
				default:
				}
				break
			}
			flush()
			return
		}
	}
}

func (b *batcher) hasPending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.cps) > 0 || len(b.deletes) > 0
}

// flush commits buf and the pending checkpoints and deletions, retrying
// while the store fails until the batcher is stopped; then the items are
// given up (their routes re-send them after a restart).
func (b *batcher) flush(buf []batchItem) {
	b.mu.Lock()
	cps, deletes := b.cps, b.deletes
	b.cps, b.deletes, b.flushing = map[string][]byte{}, nil, cps
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.flushing = nil
		b.mu.Unlock()
	}()
	if len(buf) == 0 && len(cps) == 0 && len(deletes) == 0 {
		return
	}
	c := b.build(buf, cps, deletes)
	var err error
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), finalFlushTimeout)
		_, err = b.state.CommitState(ctx, c)
		cancel()
		if err == nil || errors.Is(err, eventstore.ErrClosed) || errors.Is(err, eventstore.ErrInvalid) {
			break
		}
		b.cfg.Logger.Error("projector: recording delivery outcomes failed; retrying", "err", err, "attempts", len(c.Ops))
		select {
		case <-b.stopCh:
		case <-time.After(backoff):
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		// Stopping: one last try.
		ctx, cancel = context.WithTimeout(context.Background(), finalFlushTimeout)
		_, err = b.state.CommitState(ctx, c)
		cancel()
		break
	}
	if err != nil {
		b.cfg.Logger.Error("projector: giving up recording delivery outcomes; they are re-sent after a restart", "err", err)
		// Keep checkpoints that were not replaced meanwhile.
		b.mu.Lock()
		for k, v := range cps {
			if _, ok := b.cps[k]; !ok {
				b.cps[k] = v
			}
		}
		b.mu.Unlock()
	}
	for i := range buf {
		it := &buf[i]
		if it.route != nil {
			it.route.noted(it.note, err)
		}
		if it.done != nil {
			it.done(err)
		}
	}
}

// build turns a flush into one StateCommit: the delivery.attempts event, the
// attempts index (one group entry per subscription holding its attempt
// records, and the index entries of each attempt), the items' own ops,
// checkpoints, and last the deletions of deleted subscriptions' state.
func (b *batcher) build(buf []batchItem, cps map[string][]byte, deletes [][]byte) eventstore.StateCommit {
	n, attempts := 0, 0
	for _, it := range buf {
		n += len(it.ops)
		if it.attempt != nil {
			attempts++
			n += 2
		}
	}
	type member struct{ byEvent, byStatus []byte }
	type group struct {
		sub     []byte
		records []byte
		latest  *Attempt
		tail    []byte // at | id of latest
		members []member
	}
	var order []*group
	bySub := make(map[string]*group, 16)
	// The index keys share one buffer (the store reads them until CommitState returns).
	arena := make([]byte, 0, attempts*attemptKeysSize)
	var ops []eventstore.StateOp
	for _, it := range buf {
		if a := it.attempt; a != nil {
			g := bySub[string(it.sub)]
			if g == nil {
				g = &group{sub: it.sub}
				bySub[string(it.sub)] = g
				order = append(order, g)
			}
			g.records = appendAttemptRecord(g.records, a)
			var main, byEvent, byStatus []byte
			arena, main, byEvent, byStatus = appendAttemptKeys(arena, it.sub, a)
			if g.latest == nil || attemptAfter(a, g.latest) {
				g.latest, g.tail = a, main[len(it.sub):]
			}
			g.members = append(g.members, member{byEvent, byStatus})
		}
		if len(it.ops) > 0 {
			if ops == nil {
				ops = make([]eventstore.StateOp, 0, n+len(order)+len(cps)+len(deletes)*len(subBuckets))
			}
			ops = append(ops, it.ops...)
		}
	}
	if ops == nil {
		ops = make([]eventstore.StateOp, 0, n+len(order)+len(cps)+len(deletes)*len(subBuckets))
	}
	subs, values := make([][]byte, 0, len(order)), make([][]byte, 0, len(order))
	for _, g := range order {
		// Every attempts key holds a fresh attempt id: New (PostgreSQL
		// inserts them without an upsert's look for an existing row).
		ops = append(ops, eventstore.StateOp{Bucket: bucketAttempts, Key: append(bytes.Clone(g.sub), g.tail...), Value: g.records, New: true})
		for _, m := range g.members {
			ops = append(ops, eventstore.StateOp{Bucket: bucketAttemptsByEvent, Key: m.byEvent, Value: g.tail, New: true})
			if m.byStatus != nil {
				ops = append(ops, eventstore.StateOp{Bucket: bucketAttemptsByStatus, Key: m.byStatus, Value: g.tail, New: true})
			}
		}
		subs, values = append(subs, g.sub), append(values, g.records)
	}
	for k, v := range cps {
		ops = append(ops, eventstore.StateOp{Bucket: bucketRoutes, Key: []byte(k), Value: v})
	}
	for _, sub := range deletes {
		for _, bk := range subBuckets {
			ops = append(ops, eventstore.StateOp{Bucket: bk, Key: sub, DeletePrefix: true})
		}
	}
	c := eventstore.StateCommit{Ops: ops}
	if len(order) > 0 {
		c.Appends = []eventstore.AppendParams{{
			Stream:   DeliveriesStream,
			Expected: eventstore.Any,
			Events:   []eventstore.ProposedEvent{{Type: TypeAttempts, Data: attemptsData(subs, values)}},
		}}
	}
	return c
}

// outcomeLanes is how many batchers commit concurrently. One commit's round
// trip (PostgreSQL) no longer caps the attempts recorded per second.
const outcomeLanes = 2

// outcomes spreads the subscriptions over outcomeLanes batchers that commit
// concurrently. A subscription always uses the same lane, so its state ops
// commit in the order they were made.
type outcomes struct{ lanes []*batcher }

func newOutcomes(state eventstore.StateStore, cfg Config) *outcomes {
	o := &outcomes{}
	for range outcomeLanes {
		o.lanes = append(o.lanes, newBatcher(state, cfg))
	}
	return o
}

func (o *outcomes) lane(sub []byte) *batcher {
	if len(sub) == 0 {
		return o.lanes[0]
	}
	return o.lanes[int(sub[len(sub)-1])%len(o.lanes)]
}

func (o *outcomes) run() {
	for _, l := range o.lanes {
		go l.run()
	}
}

func (o *outcomes) submit(it batchItem) error               { return o.lane(it.sub).submit(it) }
func (o *outcomes) setCheckpoint(sub []byte, cp checkpoint) { o.lane(sub).setCheckpoint(sub, cp) }
func (o *outcomes) deleteSub(sub []byte)                    { o.lane(sub).deleteSub(sub) }
func (o *outcomes) flushSoon(sub []byte)                    { o.lane(sub).flushSoon() }

func (o *outcomes) pendingCheckpoint(sub []byte) ([]byte, bool) {
	return o.lane(sub).pendingCheckpoint(sub)
}

// sync returns once everything submitted to any lane before the call is committed.
func (o *outcomes) sync(ctx context.Context) error {
	for _, l := range o.lanes {
		if err := l.sync(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (o *outcomes) stop() {
	for _, l := range o.lanes {
		l.stopOnce.Do(func() { close(l.stopCh) })
	}
	for _, l := range o.lanes {
		<-l.done
	}
}
