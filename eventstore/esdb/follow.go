package esdb

import (
	"context"
	"time"

	kdb "github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/hooklog/hooklog/eventstore"
)

// subscribeLoop keeps one subscription to $all open, from where the indexer
// stopped, with a server-side filter (hooklog's stream prefix, or no system
// events). Every hooklog event it delivers moves the head that Wait watches
// and goes to the indexer. When the subscription drops (the server went
// away), it resubscribes after its last event, with backoff.
func (s *Store) subscribeLoop(ctx context.Context) {
	defer s.wg.Done()
	from := s.followFrom
	backoff := s.cfg.ReconnectMin
	for ctx.Err() == nil {
		progressed, err := s.subscribeOnce(ctx, &from)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			backoff = s.cfg.ReconnectMin
		}
		s.cfg.Logger.Debug("esdb: subscription ended, resubscribing", "err", err, "after", from, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, s.cfg.ReconnectMax)
	}
}

// subscribeOnce runs one subscription until it drops; progressed reports
// whether it was confirmed.
func (s *Store) subscribeOnce(ctx context.Context, from *eventstore.Position) (progressed bool, err error) {
	l, err := s.conns.acquire()
	if err != nil {
		return false, err
	}
	defer func() { s.conns.release(ctx, l, err) }()

	opts := kdb.SubscribeToAllOptions{From: kdb.Start{}, Filter: kdb.ExcludeSystemEventsFilter()}
	if !from.IsZero() {
		opts.From = fromPos(*from)
	}
	if s.cfg.StreamPrefix != "" {
		opts.Filter = &kdb.SubscriptionFilter{Type: kdb.StreamFilterType, Prefixes: []string{s.cfg.StreamPrefix}}
	}
	var sub *kdb.Subscription
	err = s.conns.call(ctx, l, func(c *kdb.Client) error {
		var err error
		sub, err = c.SubscribeToAll(ctx, opts)
		return err
	})
	if err != nil {
		return false, err
	}
	defer sub.Close()
	for {
		ev := sub.Recv()
		switch {
		case ev.SubscriptionDropped != nil:
			return true, ev.SubscriptionDropped.Error
		case ev.EventAppeared != nil:
			r := ev.EventAppeared.OriginalEvent()
			pos := toPos(r.Position)
			if !from.Less(pos) {
				continue
			}
			*from = pos
			if s.foreign(r.StreamID, r.EventType) {
				continue
			}
			s.watch.Advance(pos)
			select {
			case s.queue <- indexEntry{id: r.EventID, stream: r.StreamID, version: int64(r.EventNumber), pos: pos, at: r.CreatedDate}:
			case <-ctx.Done():
				return true, ctx.Err()
			}
		}
	}
}

// indexLoop records what the subscription delivers in the id and time
// indexes, in batches of whatever has queued up (at most 1000).
func (s *Store) indexLoop(ctx context.Context) {
	defer s.wg.Done()
	batch := make([]indexEntry, 0, 1000)
	for {
		batch = batch[:0]
		select {
		case e := <-s.queue:
			batch = append(batch, e)
		case <-ctx.Done():
			return
		}
	drain:
		for len(batch) < cap(batch) {
			select {
			case e := <-s.queue:
				batch = append(batch, e)
			default:
				break drain
			}
		}
		backoff := s.cfg.ReconnectMin
		for {
			err := s.writeIndex(ctx, batch)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.cfg.Logger.Warn("esdb: index write failed, retrying", "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, s.cfg.ReconnectMax)
		}
		s.indexed.Advance(batch[len(batch)-1].pos)
	}
}
