package projector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/replays"
	"github.com/hooklog/hooklog/subscriptions"
)

// ReplayConfig configures replays (Config.Replay). The zero value is usable.
type ReplayConfig struct {
	// MaxWindow is the longest window (to - from) a replay may cover.
	// Default replays.DefaultMaxWindow (30 days).
	MaxWindow time.Duration
	// ProgressEvery bounds how often a running replay's progress is recorded
	// in the log (replay.progressed), per replay. Default 2s. The state store
	// has it within checkpointEvery, and GET /v1/replays/{id} shows the live
	// figures.
	ProgressEvery time.Duration
	// LiveRate paces replays on a subscription that has live traffic (a
	// live attempt started in the last 500ms): they start at most this many
	// attempts per second, so their deliveries and outcome records leave
	// the live deliveries their latency. Without live traffic a replay runs
	// as fast as the endpoint's window allows. Default
	// DefaultReplayLiveRate; negative: no pacing.
	LiveRate float64
}

// Defaults of ReplayConfig.
const (
	DefaultReplayProgressEvery = 2 * time.Second
	DefaultReplayLiveRate      = 2000
)

func (c ReplayConfig) withDefaults() (ReplayConfig, error) {
	switch {
	case c.MaxWindow < 0:
		return c, fmt.Errorf("%w: Replay.MaxWindow must not be negative (0 = %s), got %s", ErrInvalidProjectorConfig, replays.DefaultMaxWindow, c.MaxWindow)
	case c.ProgressEvery < 0:
		return c, fmt.Errorf("%w: Replay.ProgressEvery must not be negative (0 = %s), got %s", ErrInvalidProjectorConfig, DefaultReplayProgressEvery, c.ProgressEvery)
	}
	if c.MaxWindow == 0 {
		c.MaxWindow = replays.DefaultMaxWindow
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = DefaultReplayProgressEvery
	}
	if c.LiveRate == 0 {
		c.LiveRate = DefaultReplayLiveRate
	}
	return c, nil
}

// bucketReplays: sub (16) | replay id (16) → replays.Part JSON, the
// committed progress of one subscription's part of a running replay. Entries
// of finished replays are deleted.
const bucketReplays = "projector.replays"

// Bounds of replays.
const (
	// replayMaxAhead bounds the events of the window one replay cursor
	// tracks past its lowest unsettled one (a failing event waiting for its
	// retry holds the cursor; reading stops this far ahead of it).
	replayMaxAhead = 4096
	// windowEndSlack: the window's end is the last event before the first
	// one recorded at or after to + windowEndSlack, so an event recorded
	// just before `to` whose transaction committed a little later is still
	// in it.
	windowEndSlack = time.Second
	// countMaxScan and countMaxTime bound counting a window's total when a
	// replay is requested; a larger window gets an estimate. The time bound
	// applies only after countMinReads reads: a window that fits in them is
	// counted exactly however slow the store is at that moment (on a loaded
	// machine one read took the whole 20ms, and extrapolating from its
	// three events turned a 2-event window into an "estimated" 52).
	countMaxScan  = 200000
	countMaxTime  = 20 * time.Millisecond
	countMinReads = 2
)

// ReplayParams is a replay request (POST /v1/replays).
type ReplayParams struct {
	// Subscriptions are the subscription ids to replay to; ignored when All.
	Subscriptions []string
	// All replays to every active subscription (of Tenant, when set).
	All bool
	// Tenant confines the request to one tenant's subscriptions (a tenant
	// key): another tenant's subscription is unknown. nil: no confinement.
	Tenant     *string
	From, To   time.Time
	EventTypes []string
	// RequestedBy is recorded with the replay (an API key id).
	RequestedBy string
}

// CreateReplay checks a replay request, finds where its window starts in
// the log (the store's PositionAt, no scan), counts its total (an estimate
// beyond a bounded count), and records it; the running projector starts it
// at once. A rejected request writes nothing and returns a
// *eventstore.ValidationError (unknown subscription, to <= from, window
// longer than ReplayConfig.MaxWindow).
//
// A named subscription that is paused or disabled is accepted: its part
// waits until it is resumed (the replay stays running until then, or until
// cancelled); "all" takes the active subscriptions only. A subscription
// deleted during the replay ends its part with what it delivered. A window
// that reaches into the future runs until the clock passes its end.
func (p *Projector) CreateReplay(ctx context.Context, rp ReplayParams) (replays.Replay, error) {
	if err := p.replays.Check(rp.From, rp.To, rp.EventTypes); err != nil {
		return replays.Replay{}, err
	}
	var subs []subscriptions.Subscription
	if rp.All {
		for _, s := range p.subs.List(ctx, rp.Tenant) {
			if s.State == subscriptions.StateActive {
				subs = append(subs, s)
			}
		}
		if len(subs) == 0 {
			return replays.Replay{}, eventstore.Invalid("subscriptions", "there is no active subscription to replay to")
		}
	} else {
		if len(rp.Subscriptions) == 0 {
			return replays.Replay{}, eventstore.Invalid("subscriptions", `name at least one subscription id, or "all"`)
		}
		if len(rp.Subscriptions) > replays.MaxSubscriptions {
			return replays.Replay{}, eventstore.Invalid("subscriptions", "at most %d subscriptions", replays.MaxSubscriptions)
		}
		v := &eventstore.ValidationError{Fields: map[string]string{}}
		seen := map[string]bool{}
		for i, id := range rp.Subscriptions {
			s, err := p.subs.Get(ctx, id)
			switch {
			case errors.Is(err, subscriptions.ErrNotFound), err == nil && rp.Tenant != nil && s.Tenant != *rp.Tenant:
				v.Fields[fmt.Sprintf("subscriptions[%d]", i)] = "unknown subscription"
				continue
			case err != nil:
				return replays.Replay{}, fmt.Errorf("projector: replay: %w", err)
			}
			if !seen[s.ID] {
				seen[s.ID] = true
				subs = append(subs, s)
			}
		}
		if len(v.Fields) > 0 {
			return replays.Replay{}, v
		}
	}
	ids := make([]string, len(subs))
	tenant := subs[0].Tenant
	for i, s := range subs {
		ids[i] = s.ID
		if s.Tenant != tenant {
			tenant = ""
		}
	}
	start, err := p.store.PositionAt(ctx, rp.From)
	if err != nil {
		return replays.Replay{}, fmt.Errorf("projector: replay: finding the window's start: %w", err)
	}
	total, estimated, err := p.countWindow(ctx, subs, rp.EventTypes, start, rp.From, rp.To)
	if err != nil {
		return replays.Replay{}, fmt.Errorf("projector: replay: counting the window: %w", err)
	}
	return p.replays.Request(ctx, replays.RequestParams{
		Subscriptions: ids, All: rp.All, Tenant: tenant, From: rp.From, To: rp.To, EventTypes: rp.EventTypes,
		StartPosition: start, Total: total, TotalEstimated: estimated, RequestedBy: rp.RequestedBy,
	})
}

// windowEnd is the last position of a window ending at `to`, once the
// clock has passed to + windowEndSlack (ok false before).
func (p *Projector) windowEnd(ctx context.Context, to time.Time) (end eventstore.Position, ok bool, err error) {
	at := to.Add(windowEndSlack)
	if p.cfg.Now().Before(at) {
		return eventstore.Position{}, false, nil
	}
	end, err = p.store.PositionAt(ctx, at)
	if err != nil {
		return eventstore.Position{}, false, err
	}
	// PositionAt is a lower bound: every event recorded at or after `at`
	// lies after it, but so may events recorded before it (the esdb time
	// index answers up to a few seconds early). Move the end up to the last
	// event before the first one recorded at or after `at`, or the head.
	for {
		res, err := p.store.ReadAll(ctx, eventstore.ReadParams{After: end, Limit: 1000, MaxScan: 1000})
		if err != nil {
			return eventstore.Position{}, false, err
		}
		for i := range res.Events {
			if !res.Events[i].RecordedAt.Before(at) {
				return end, true, nil
			}
			end = res.Events[i].Position
		}
		if !end.Less(res.Next) {
			return end, true, nil // the head
		}
		end = res.Next
	}
}

// inWindow reports whether e was recorded in [from, to).
func inWindow(e *eventstore.Event, from, to time.Time) bool {
	return !e.RecordedAt.Before(from) && e.RecordedAt.Before(to)
}

// countWindow counts the (event, subscription) pairs of a window, examining
// at most countMaxScan events for at most countMaxTime; past that it
// extrapolates by time and reports an estimate.
func (p *Projector) countWindow(ctx context.Context, subs []subscriptions.Subscription, types []string, start eventstore.Position, from, to time.Time) (int64, bool, error) {
	end, endKnown, err := p.windowEnd(ctx, to)
	if err != nil {
		return 0, false, err
	}
	if !endKnown {
		// The window ended less than windowEndSlack ago, or has not ended:
		// count what the log holds now. Reading on to a moving head would
		// chase the projector's own records and run out of time.
		if end, err = p.store.Head(ctx); err != nil {
			return 0, false, err
		}
	}
	filters := make([]eventstore.Filter, len(subs))
	for i, s := range subs {
		filters[i] = s.Filter()
		filters[i].NoInternal = true
	}
	began := time.Now()
	var n int64
	scanned, reads := 0, 0
	after := start
	var last time.Time
	for {
		if !after.Less(end) {
			return n, false, nil
		}
		if scanned >= countMaxScan || reads >= countMinReads && time.Since(began) > countMaxTime {
			break
		}
		res, err := p.store.ReadAll(ctx, eventstore.ReadParams{After: after, Filter: eventstore.Filter{Types: types, NoInternal: true}, Limit: 2000, MaxScan: 20000})
		if err != nil {
			return 0, false, err
		}
		reads++
		for i := range res.Events {
			e := &res.Events[i]
			if end.Less(e.Position) {
				break
			}
			last = e.RecordedAt
			if !inWindow(e, from, to) {
				continue
			}
			for j := range filters {
				if filters[j].Match(e) {
					n++
				}
			}
		}
		if !after.Less(res.Next) {
			return n, false, nil // the head: everything there is, is counted
		}
		scanned += max(len(res.Events), 1)
		after = res.Next
	}
	// Extrapolate over the part of the window not examined.
	stop := to
	if now := p.cfg.Now(); now.Before(stop) {
		stop = now
	}
	covered := last.Sub(from)
	if covered > 0 && stop.After(last) {
		n = int64(float64(n) * float64(stop.Sub(from)) / float64(covered))
	}
	return n, true, nil
}

// Replays lists the replays of tenant (nil = all), newest first, with the
// live progress of running ones.
func (p *Projector) Replays(ctx context.Context, tenant *string) []replays.Replay {
	out := p.replays.List(ctx, tenant)
	for i := range out {
		out[i] = p.live(out[i])
	}
	return out
}

// Replay returns one replay with its live progress, or replays.ErrNotFound.
func (p *Projector) Replay(ctx context.Context, id string) (replays.Replay, error) {
	r, err := p.replays.Get(ctx, id)
	if err != nil {
		return r, err
	}
	return p.live(r), nil
}

// CancelReplay cancels a running replay: its deliveries in flight are
// abandoned and no more are started (within a second, on every node).
// Cancelling a cancelled replay changes nothing; a completed or failed one
// returns replays.ErrFinished.
func (p *Projector) CancelReplay(ctx context.Context, id string) (replays.Replay, error) {
	var parts []replays.Part
	if rm := p.replayManager(); rm != nil {
		parts = rm.liveParts(id)
	}
	r, err := p.replays.Cancel(ctx, id, parts)
	if err != nil {
		return r, err
	}
	return p.live(r), nil
}

func (p *Projector) replayManager() *replayManager {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rm
}

// live overlays the running progress on a running replay.
func (p *Projector) live(r replays.Replay) replays.Replay {
	if !r.Running() {
		return r
	}
	rm := p.replayManager()
	if rm == nil {
		return r
	}
	if parts := rm.liveParts(r.ID); parts != nil {
		r.Parts = parts
		r.Delivered, r.Failed = 0, 0
		for _, pt := range parts {
			r.Delivered += pt.Delivered
			r.Failed += pt.Failed
		}
	}
	return r
}

// replayManager runs the replays: it follows the replay jobs, hands each
// running one's parts to the routes of their subscriptions (route.syncReplays),
// records progress at a bounded rate, and completes, fails or cleans up
// jobs.
type replayManager struct {
	p    *Projector
	svc  *replays.Service
	kick chan struct{}
	gen  atomic.Uint64 // bumped whenever the set of running parts changes

	mu   sync.Mutex
	runs map[string]*replayRun
}

// replayRun is one running replay.
type replayRun struct {
	rep    replays.Replay // as requested
	ctx    context.Context
	cancel context.CancelFunc
	parts  []*replayPart // in the replay's subscription order
	last   []replays.Part
	failed bool
}

// replayPart is one subscription's share of a running replay. The route's
// cursor keeps prog current; the manager reads it.
type replayPart struct {
	run   *replayRun
	subID string
	key   []byte // state key: sub | replay id
	mgr   *replayManager

	mu        sync.Mutex
	prog      replays.Part
	finishing bool  // its final progress is being committed
	readErr   error // a permanent read error: the replay fails
}

func (pt *replayPart) progress() replays.Part {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.prog
}

func (pt *replayPart) set(prog replays.Part) {
	pt.mu.Lock()
	pt.prog = prog
	pt.mu.Unlock()
}

// finish marks the part done once its final progress is committed.
func (pt *replayPart) finish(err error) {
	pt.mu.Lock()
	pt.finishing = false
	pt.prog.Done = err == nil // else: not recorded, it finishes again after a restart
	pt.mu.Unlock()
	pt.mgr.signal()
}

// active reports whether the part still needs a cursor.
func (pt *replayPart) active() bool {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return !pt.prog.Done && !pt.finishing
}

func (pt *replayPart) fail(err error) {
	pt.mu.Lock()
	pt.readErr = err
	pt.mu.Unlock()
	pt.mgr.signal()
}

func newReplayManager(p *Projector) *replayManager {
	return &replayManager{p: p, svc: p.replays, kick: make(chan struct{}, 1), runs: map[string]*replayRun{}}
}

func (m *replayManager) signal() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// partsFor returns the unfinished parts of running replays for a subscription.
func (m *replayManager) partsFor(subID string) []*replayPart {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*replayPart
	for _, run := range m.runs {
		if run.ctx.Err() != nil {
			continue
		}
		for _, pt := range run.parts {
			if pt.subID == subID && pt.active() {
				out = append(out, pt)
			}
		}
	}
	return out
}

// liveParts returns the current progress of a running replay, nil when it
// is not running here.
func (m *replayManager) liveParts(id string) []replays.Part {
	m.mu.Lock()
	run := m.runs[id]
	m.mu.Unlock()
	if run == nil {
		return nil
	}
	return run.snapshot()
}

func (run *replayRun) snapshot() []replays.Part {
	out := make([]replays.Part, len(run.parts))
	for i, pt := range run.parts {
		out[i] = pt.progress()
	}
	return out
}

// run is the manager's goroutine; it ends with the projector's read context.
func (m *replayManager) run() {
	ctx := m.p.readCtx
	watch, unwatch := m.svc.Watch()
	defer unwatch()
	tick := time.NewTicker(min(m.p.cfg.Replay.ProgressEvery, reconcileEvery))
	defer tick.Stop()
	m.sweep(ctx)
	lastProgress := time.Now()
	for {
		m.reconcile(ctx)
		if time.Since(lastProgress) >= m.p.cfg.Replay.ProgressEvery {
			m.recordProgress(ctx)
			lastProgress = time.Now()
		}
		select {
		case <-ctx.Done():
			m.mu.Lock()
			for _, run := range m.runs {
				run.cancel()
			}
			m.mu.Unlock()
			return
		case <-watch:
		case <-m.kick:
		case <-tick.C:
		}
	}
}

// reconcile starts runs for new running replays, stops those no longer
// running, marks the parts of deleted subscriptions done, and completes or
// fails runs.
func (m *replayManager) reconcile(ctx context.Context) {
	running := m.svc.Running()
	want := make(map[string]bool, len(running))
	changed := false
	for _, rep := range running {
		want[rep.ID] = true
		m.mu.Lock()
		_, ok := m.runs[rep.ID]
		m.mu.Unlock()
		if ok {
			continue
		}
		run, err := m.newRun(ctx, rep)
		if err != nil {
			if ctx.Err() == nil {
				m.p.cfg.Logger.Error("projector: loading a replay's progress failed; retrying", "replay", rep.ID, "err", err)
			}
			continue
		}
		m.mu.Lock()
		m.runs[rep.ID] = run
		m.mu.Unlock()
		changed = true
	}
	m.mu.Lock()
	var ended, active []*replayRun
	for id, run := range m.runs {
		if !want[id] {
			delete(m.runs, id)
			run.cancel()
			ended = append(ended, run)
			changed = true
		} else {
			active = append(active, run)
		}
	}
	m.mu.Unlock()
	for _, run := range ended {
		m.cleanup(run)
	}
	for _, run := range active {
		done := true
		for _, pt := range run.parts {
			prog := pt.progress()
			if prog.Done {
				continue
			}
			if _, err := m.p.subs.Get(ctx, pt.subID); errors.Is(err, subscriptions.ErrNotFound) {
				prog.Done = true // deleted: nothing more to deliver
				pt.set(prog)
				changed = true
				continue
			}
			done = false
			pt.mu.Lock()
			rerr := pt.readErr
			pt.mu.Unlock()
			if rerr != nil && !run.failed {
				if _, err := m.svc.Fail(ctx, run.rep.ID, "reading the window failed: "+rerr.Error()); err == nil {
					run.failed = true
				}
			}
		}
		if done {
			if _, err := m.svc.Complete(ctx, run.rep.ID, run.snapshot()); err != nil && ctx.Err() == nil {
				m.p.cfg.Logger.Error("projector: recording a replay's completion failed; retrying", "replay", run.rep.ID, "err", err)
			}
		}
	}
	if changed {
		m.gen.Add(1)
		m.p.mu.Lock()
		for _, r := range m.p.routes {
			r.signal()
		}
		m.p.mu.Unlock()
	}
}

// newRun loads the progress of a running replay: each part from the state
// store, or from the replay's last recorded progress when that is further
// on (or the state is gone), or from the window's start.
func (m *replayManager) newRun(ctx context.Context, rep replays.Replay) (*replayRun, error) {
	rid, err := uuid.Parse(rep.ID)
	if err != nil {
		return nil, err
	}
	run := &replayRun{rep: rep}
	for _, subID := range rep.Subscriptions {
		sk, ok := subKey(subID)
		if !ok {
			continue
		}
		pt := &replayPart{run: run, subID: subID, key: append(sk, rid[:]...), mgr: m}
		prog := replays.Part{SubscriptionID: subID, Cursor: rep.StartPosition}
		for _, rp := range rep.Parts {
			if rp.SubscriptionID == subID {
				prog = rp
			}
		}
		v, err := m.p.state.GetState(ctx, bucketReplays, pt.key)
		switch {
		case errors.Is(err, eventstore.ErrNotFound):
		case err != nil:
			return nil, err
		default:
			var st replays.Part
			if json.Unmarshal(v, &st) == nil && (prog.Cursor.Less(st.Cursor) || (st.Done && !prog.Done)) {
				prog = st
			}
		}
		prog.SubscriptionID = subID
		pt.prog = prog
		run.parts = append(run.parts, pt)
	}
	run.last = run.snapshot()
	run.ctx, run.cancel = context.WithCancel(m.p.readCtx)
	return run, nil
}

// recordProgress appends replay.progressed for the runs that moved.
func (m *replayManager) recordProgress(ctx context.Context) {
	m.mu.Lock()
	runs := make([]*replayRun, 0, len(m.runs))
	for _, run := range m.runs {
		runs = append(runs, run)
	}
	m.mu.Unlock()
	for _, run := range runs {
		parts := run.snapshot()
		if slices.Equal(parts, run.last) {
			continue
		}
		if _, err := m.svc.Progress(ctx, run.rep.ID, parts); err != nil {
			if ctx.Err() == nil {
				m.p.cfg.Logger.Error("projector: recording a replay's progress failed", "replay", run.rep.ID, "err", err)
			}
			continue
		}
		run.last = parts
	}
}

// cleanup deletes a finished run's state entries, through each
// subscription's outcome lane so they go after its cursor's last progress.
func (m *replayManager) cleanup(run *replayRun) {
	for _, pt := range run.parts {
		sk := pt.key[:16]
		_ = m.p.batcher.submit(batchItem{sub: sk, ops: []eventstore.StateOp{{Bucket: bucketReplays, Key: pt.key, Delete: true}}})
	}
}

// sweep deletes the state entries of replays that are not running (left by
// a crash between a replay's end and its cleanup).
func (m *replayManager) sweep(ctx context.Context) {
	running := map[string]bool{}
	for _, r := range m.svc.Running() {
		running[r.ID] = true
	}
	var ops []eventstore.StateOp
	err := m.p.state.ScanState(ctx, eventstore.ScanParams{Bucket: bucketReplays}, func(k, _ []byte) error {
		if len(k) != 32 || !running[uuid.UUID(k[16:]).String()] {
			ops = append(ops, eventstore.StateOp{Bucket: bucketReplays, Key: bytes.Clone(k), Delete: true})
		}
		return nil
	})
	if err == nil && len(ops) > 0 {
		_, err = m.p.state.CommitState(ctx, eventstore.StateCommit{Ops: ops})
	}
	if err != nil && ctx.Err() == nil {
		m.p.cfg.Logger.Error("projector: deleting finished replays' state failed", "err", err)
	}
}
