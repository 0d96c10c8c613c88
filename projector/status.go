package projector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// LagLimit caps RouteStatus.Lag: a larger backlog reports LagLimit.
const LagLimit = 10000

// lagMaxScan bounds the events Status examines to count the lag; a sparse
// filter far behind reports the matches found within it (a lower bound).
const lagMaxScan = 100000

// RouteStatus is GET /v1/subscriptions/{id}/status.
type RouteStatus struct {
	State  string              `json:"state"` // active, paused or disabled
	Cursor eventstore.Position `json:"cursor"`
	// Lag counts the matching events after the cursor not yet settled. It is
	// exact up to LagLimit; a larger backlog reports LagLimit, and at most
	// 100,000 events after the cursor are examined (a very sparse filter far
	// behind reports what was found in them).
	Lag           int        `json:"lag"`
	InFlight      int        `json:"in_flight"`
	Circuit       string     `json:"circuit"` // closed, open or half_open
	LastSuccessAt *time.Time `json:"last_success_at"`
	FailingSince  *time.Time `json:"failing_since"`
	DeadLetters   int        `json:"dead_letters"`
}

// Status reports a subscription's route. It returns subscriptions.ErrNotFound
// for an unknown id. A route that is not running (paused, disabled, projector
// stopped) reports its persisted checkpoint.
func (p *Projector) Status(ctx context.Context, subID string) (RouteStatus, error) {
	sub, err := p.subs.Get(ctx, subID)
	if err != nil {
		return RouteStatus{}, err
	}
	key, _ := subKey(sub.ID)
	st := RouteStatus{State: sub.State, Circuit: CircuitClosed}
	var snap routeSnapshot
	if r := p.route(sub.ID); r != nil {
		snap = r.snapshot()
	}
	if !snap.loaded {
		cp, err := p.checkpoint(ctx, key, sub)
		if err != nil {
			return RouteStatus{}, err
		}
		snap = routeSnapshot{cursor: cp.Cursor, circuit: CircuitClosed}
		if cp.LastSuccessAt != nil {
			snap.lastSuccess = *cp.LastSuccessAt
		}
		if cp.FailingSince != nil {
			snap.failingSince = *cp.FailingSince
		}
	}
	st.Cursor, st.InFlight, st.Circuit = snap.cursor, snap.inFlight, snap.circuit
	if !snap.lastSuccess.IsZero() {
		t := snap.lastSuccess
		st.LastSuccessAt = &t
	}
	if !snap.failingSince.IsZero() {
		t := snap.failingSince
		st.FailingSince = &t
	}
	lag, err := p.countLag(ctx, sub, snap.cursor)
	if err != nil {
		return RouteStatus{}, err
	}
	st.Lag = max(lag-snap.settledAhead, 0)
	err = p.state.ScanState(ctx, eventstore.ScanParams{Bucket: bucketDead, Prefix: key}, func(_, _ []byte) error {
		st.DeadLetters++
		return nil
	})
	if err != nil {
		return RouteStatus{}, fmt.Errorf("projector: status: %w", err)
	}
	return st, nil
}

func (p *Projector) checkpoint(ctx context.Context, key []byte, sub subscriptions.Subscription) (checkpoint, error) {
	cp := checkpoint{Cursor: sub.StartPosition}
	v, ok := []byte(nil), false
	if p.batcher != nil {
		v, ok = p.batcher.pendingCheckpoint(key)
	}
	var err error
	if !ok {
		v, err = p.state.GetState(ctx, bucketRoutes, key)
	}
	switch {
	case errors.Is(err, eventstore.ErrNotFound):
		return cp, nil
	case err != nil:
		return cp, fmt.Errorf("projector: status: %w", err)
	}
	if err := json.Unmarshal(v, &cp); err != nil {
		return checkpoint{Cursor: sub.StartPosition}, nil
	}
	return cp, nil
}

// countLag counts matching events after cursor, up to LagLimit.
func (p *Projector) countLag(ctx context.Context, sub subscriptions.Subscription, cursor eventstore.Position) (int, error) {
	f := sub.Filter()
	f.NoInternal = true
	n, scanned := 0, 0
	after := cursor
	for n < LagLimit && scanned < lagMaxScan {
		res, err := p.store.ReadAll(ctx, eventstore.ReadParams{After: after, Filter: f, Limit: min(LagLimit-n, 1000), MaxScan: 10000})
		if err != nil {
			return 0, fmt.Errorf("projector: status: %w", err)
		}
		for i := range res.Events {
			if sub.Matches(&res.Events[i]) {
				n++
			}
		}
		if !after.Less(res.Next) {
			break
		}
		scanned += 10000 // an upper bound of what one read examined
		after = res.Next
	}
	return min(n, LagLimit), nil
}

// DeliveriesQuery filters Deliveries.
type DeliveriesQuery struct {
	Status  string // "", succeeded, failed or dead
	EventID string // "" or an event id
	Limit   int    // <= 0: DefaultDeliveriesLimit; at most MaxDeliveriesLimit
}

// Limits of Deliveries.
const (
	DefaultDeliveriesLimit = 100
	MaxDeliveriesLimit     = 1000
	// deliveriesMaxScan bounds the attempts examined for a status=succeeded
	// query (the only one not served by an index).
	deliveriesMaxScan = 100000
)

// Deliveries lists a subscription's attempts, newest first, from the attempts
// index (which keeps Config.AttemptRetention of them). It returns
// subscriptions.ErrNotFound for an unknown subscription and an
// eventstore.ErrInvalid *ValidationError for a bad status.
func (p *Projector) Deliveries(ctx context.Context, subID string, q DeliveriesQuery) ([]Attempt, error) {
	sub, err := p.subs.Get(ctx, subID)
	if err != nil {
		return nil, err
	}
	switch q.Status {
	case "", StatusSucceeded, StatusFailed, StatusDead:
	default:
		return nil, eventstore.Invalid("status", "must be succeeded, failed or dead")
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultDeliveriesLimit
	}
	limit = min(limit, MaxDeliveriesLimit)
	key, _ := subKey(sub.ID)
	return p.listAttempts(ctx, key, q.Status, q.EventID, limit) // records.go
}

// redrivePage is how many dead letters one Redrive commit moves.
const redrivePage = 500

// Redrive moves a subscription's dead letters back to its retry queue, due
// now, each starting its retry schedule afresh (attempt numbers go on). It
// returns how many it moved, or subscriptions.ErrNotFound.
func (p *Projector) Redrive(ctx context.Context, subID string) (int, error) {
	sub, err := p.subs.Get(ctx, subID)
	if err != nil {
		return 0, err
	}
	key, _ := subKey(sub.ID)
	total := 0
	var after []byte
	for {
		now := p.cfg.Now()
		var ops []eventstore.StateOp
		n := 0
		err := p.state.ScanState(ctx, eventstore.ScanParams{Bucket: bucketDead, Prefix: key, After: after, Limit: redrivePage}, func(k, v []byte) error {
			n++
			after = bytes.Clone(k)
			var d deadEntry
			if err := json.Unmarshal(v, &d); err != nil {
				p.cfg.Logger.Error("projector: redrive: skipping an unreadable dead letter", "subscription", sub.ID, "err", err)
				return nil
			}
			e := retryEntry{EventID: d.EventID, Position: d.Position, Attempts: d.Attempts, Base: d.Attempts, FirstAt: now, Due: now}
			ops = append(ops,
				eventstore.StateOp{Bucket: bucketDead, Key: after, Delete: true},
				eventstore.StateOp{Bucket: bucketRetries, Key: retryKey(key, now, d.Position), Value: mustJSON(e)})
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("projector: redrive: %w", err)
		}
		if len(ops) > 0 {
			if _, err := p.state.CommitState(ctx, eventstore.StateCommit{Ops: ops}); err != nil {
				return total, fmt.Errorf("projector: redrive: %w", err)
			}
			total += len(ops) / 2
		}
		if n < redrivePage {
			break
		}
	}
	if total > 0 {
		if r := p.route(sub.ID); r != nil {
			r.reloadRetries()
		}
	}
	return total, nil
}

// Retention of the attempts index.
const (
	janitorEvery = time.Minute
	prunePage    = 1000
)

// janitor prunes attempt records older than AttemptRetention and, on its
// first pass, the state of subscriptions deleted while hooklog was down.
func (p *Projector) janitor() {
	first := true
	for {
		p.sweep(p.readCtx, first)
		first = false
		select {
		case <-p.readCtx.Done():
			return
		case <-time.After(janitorEvery):
		}
	}
}

func (p *Projector) sweep(ctx context.Context, first bool) {
	var subs [][]byte
	err := p.state.ScanState(ctx, eventstore.ScanParams{Bucket: bucketRoutes}, func(k, _ []byte) error {
		subs = append(subs, bytes.Clone(k))
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			p.cfg.Logger.Error("projector: attempt retention: listing routes failed", "err", err)
		}
		return
	}
	cutoff := p.cfg.Now().Add(-p.cfg.AttemptRetention)
	for _, key := range subs {
		if ctx.Err() != nil {
			return
		}
		if first && len(key) == 16 {
			if _, err := p.subs.Get(ctx, uuid.UUID(key).String()); errors.Is(err, subscriptions.ErrNotFound) {
				ops := make([]eventstore.StateOp, 0, len(subBuckets))
				for _, b := range subBuckets {
					ops = append(ops, eventstore.StateOp{Bucket: b, Key: key, DeletePrefix: true})
				}
				if _, err := p.state.CommitState(ctx, eventstore.StateCommit{Ops: ops}); err != nil && ctx.Err() == nil {
					p.cfg.Logger.Error("projector: deleting a deleted subscription's state failed", "err", err)
				}
				continue
			}
		}
		if err := p.pruneAttempts(ctx, key, cutoff); err != nil && ctx.Err() == nil {
			p.cfg.Logger.Error("projector: attempt retention failed", "err", err)
		}
	}
}
