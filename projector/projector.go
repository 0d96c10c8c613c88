package projector

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/replays"
	"github.com/hooklog/hooklog/subscriptions"
)

// ErrNotRunning: Start was called twice, or after Stop.
var ErrNotRunning = errors.New("projector: already started or stopped")

// reconcileEvery re-reads the subscriptions even without a change signal.
const reconcileEvery = time.Second

// Projector runs one route per active subscription. Create it with New, run
// it with Start and Stop. Status, Deliveries and Redrive work whether it is
// running or not.
type Projector struct {
	cfg       Config
	store     eventstore.Store
	state     eventstore.StateStore
	subs      *subscriptions.Service
	deliverer *Deliverer
	replays   *replays.Service // the replay jobs, followed while running

	readCtx       context.Context // reading the log, starting deliveries
	cancelRead    context.CancelFunc
	deliverCtx    context.Context // deliveries in flight
	cancelDeliver context.CancelFunc

	batcher *outcomes
	tail    *tail
	bg      sync.WaitGroup // tail, reconcile, janitor, disables, route waiters

	mu       sync.Mutex
	phase    int // 0 new, 1 running, 2 stopping/stopped
	routes   map[string]*route
	retiring map[string]*route
	rm       *replayManager // set by Start
	stopped  chan struct{}
	stopErr  error
}

// New checks cfg and deps and builds a Projector; nothing runs until Start.
func New(cfg Config, deps Deps) (*Projector, error) {
	switch {
	case deps.Store == nil:
		return nil, fmt.Errorf("%w: Deps.Store is nil", ErrInvalidProjectorConfig)
	case deps.State == nil:
		return nil, fmt.Errorf("%w: Deps.State is nil", ErrInvalidProjectorConfig)
	case deps.Subs == nil:
		return nil, fmt.Errorf("%w: Deps.Subs is nil", ErrInvalidProjectorConfig)
	}
	if hb, ok := deps.State.(eventstore.CommitsHoldBackReaders); ok && cfg.OutcomeFlush == 0 && hb.CommitsHoldBackReaders() {
		cfg.OutcomeFlush = HoldBackOutcomeFlush
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Replay, err = cfg.Replay.withDefaults(); err != nil {
		return nil, err
	}
	if cfg.Delivery.Policy == (subscriptions.URLPolicy{}) {
		cfg.Delivery.Policy = deps.Subs.URLPolicy()
	}
	if cfg.Delivery.MaxIdleConnsPerHost == 0 {
		cfg.Delivery.MaxIdleConnsPerHost = DefaultIdleConnsPerHost
	}
	d, err := NewDeliverer(cfg.Delivery)
	if err != nil {
		return nil, err
	}
	rs, err := replays.New(deps.Store, replays.Config{MaxWindow: cfg.Replay.MaxWindow, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidProjectorConfig, err)
	}
	return &Projector{
		cfg: cfg, store: deps.Store, state: deps.State, subs: deps.Subs, deliverer: d, replays: rs,
		routes: map[string]*route{}, retiring: map[string]*route{}, stopped: make(chan struct{}),
	}, nil
}

// Start starts the tail, the batcher and a route per active subscription,
// and returns; the projector runs until Stop (ctx bounds only Start itself).
func (p *Projector) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.phase != 0 {
		return ErrNotRunning
	}
	head, err := p.store.Head(ctx)
	if err != nil {
		return fmt.Errorf("projector: start: %w", err)
	}
	if err := p.replays.Start(ctx); err != nil {
		return fmt.Errorf("projector: start: %w", err)
	}
	base := context.WithoutCancel(ctx)
	p.readCtx, p.cancelRead = context.WithCancel(base)
	p.deliverCtx, p.cancelDeliver = context.WithCancel(base)
	p.batcher = newOutcomes(p.state, p.cfg)
	p.tail = newTail(p.store, p.cfg, head)
	p.phase = 1
	p.rm = newReplayManager(p)
	p.batcher.run()
	p.bg.Go(func() { p.tail.run(p.readCtx) })
	p.bg.Go(p.rm.run)
	watch, unwatch := p.subs.Watch()
	p.reconcileLocked()
	p.bg.Go(func() {
		defer unwatch()
		p.watch(watch)
	})
	p.bg.Go(p.janitor)
	return nil
}

// Stop stops reading the log and starting deliveries, waits for the
// deliveries in flight until ctx ends (then cancels them: they are sent again
// after a restart), records the outcomes and checkpoints, and returns once
// no goroutine of the projector is left. It is idempotent.
func (p *Projector) Stop(ctx context.Context) error {
	p.mu.Lock()
	switch p.phase {
	case 0:
		p.phase = 2
		close(p.stopped)
		p.mu.Unlock()
		return nil
	case 2:
		p.mu.Unlock()
		<-p.stopped
		return p.stopErr
	}
	p.phase = 2
	var all []*route
	for _, r := range p.routes {
		all = append(all, r)
	}
	for _, r := range p.retiring {
		all = append(all, r)
	}
	p.mu.Unlock()

	p.cancelRead()
	routesDone := make(chan struct{})
	go func() {
		for _, r := range all {
			<-r.done
		}
		close(routesDone)
	}()
	select {
	case <-routesDone:
	case <-ctx.Done():
		p.cfg.Logger.Warn("projector: stop: abandoning deliveries in flight; they are sent again after a restart")
		p.cancelDeliver()
		<-routesDone
	}
	p.bg.Wait()
	p.replays.Stop()
	p.batcher.stop()
	p.cancelDeliver()
	p.deliverer.Close()
	close(p.stopped)
	return nil
}

func (p *Projector) watch(changed <-chan struct{}) {
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-p.readCtx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		p.mu.Lock()
		p.reconcileLocked()
		p.mu.Unlock()
	}
}

// reconcileLocked makes the routes match the subscriptions: a route per
// active one, none for paused, disabled or deleted ones. A change of filter
// or ordering restarts the route; other changes apply in place.
func (p *Projector) reconcileLocked() {
	if p.phase != 1 {
		return
	}
	seen := map[string]bool{}
	for _, s := range p.subs.List(p.readCtx, nil) {
		seen[s.ID] = true
		r := p.routes[s.ID]
		switch {
		case s.State != subscriptions.StateActive:
			if r != nil {
				p.retireLocked(r, false)
			}
		case r == nil:
			p.startRouteLocked(s)
		case r.ordered != s.Ordered || !slices.Equal(r.last.EventTypes, s.EventTypes) ||
			!slices.Equal(r.last.Streams, s.Streams) || r.last.Tenant != s.Tenant:
			p.retireLocked(r, false)
			p.startRouteLocked(s)
		case !reflect.DeepEqual(r.last, s):
			r.last = s
			r.update(s)
		}
	}
	for id, r := range p.routes {
		if !seen[id] {
			p.retireLocked(r, true)
		}
	}
}

func (p *Projector) startRouteLocked(s subscriptions.Subscription) {
	if _, ok := subKey(s.ID); !ok {
		p.cfg.Logger.Error("projector: subscription id is not a UUID; no route", "subscription", s.ID)
		return
	}
	r := p.newRoute(s, p.retiring[s.ID])
	p.routes[s.ID] = r
	p.bg.Go(r.run)
}

// retireLocked stops r; once it is gone, a deleted subscription's state is deleted.
func (p *Projector) retireLocked(r *route, deleted bool) {
	delete(p.routes, r.id)
	p.retiring[r.id] = r
	r.stop()
	p.bg.Go(func() {
		<-r.done
		p.mu.Lock()
		if p.retiring[r.id] == r {
			delete(p.retiring, r.id)
		}
		p.mu.Unlock()
		if deleted {
			p.batcher.deleteSub(r.key)
		}
	})
}

func (p *Projector) route(id string) *route {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.routes[id]; r != nil {
		return r
	}
	return p.retiring[id] // stopping: its snapshot is the latest word
}

// disable disables a subscription whose endpoint answered 410.
func (p *Projector) disable(id, reason string) {
	p.bg.Go(func() {
		backoff := 100 * time.Millisecond
		for {
			err := p.subs.Disable(p.readCtx, id, reason)
			if err == nil || errors.Is(err, subscriptions.ErrNotFound) || p.readCtx.Err() != nil {
				return // when stopped first, the next run gets 410 again
			}
			p.cfg.Logger.Error("projector: disabling a subscription failed; retrying", "subscription", id, "err", err)
			select {
			case <-p.readCtx.Done():
				return
			case <-time.After(backoff):
				backoff = min(2*backoff, 10*time.Second)
			}
		}
	})
}
