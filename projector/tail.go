package projector

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

// tailMsg is what the shared tail hands an attached route: the events of one
// read that the route matches (possibly none) and the position read up to.
type tailMsg struct {
	events []eventstore.Event
	to     eventstore.Position
}

// tail is the one reader that follows the log for every caught-up route.
// dispatch never blocks: a route whose inbox would overflow is detached (its
// inbox closed) and reads the store on its own from where it got to.
type tail struct {
	store    eventstore.Store
	cfg      Config
	inboxMax int64

	mu     sync.Mutex
	pos    eventstore.Position // everything up to pos has been dispatched
	routes map[*route]chan tailMsg
	// recent are the latest reads, oldest first, contiguous up to pos, at
	// most recentBytes of events: a route that fell behind by less (its
	// inbox overflowed in a burst) reads them from here instead of the store.
	recent      []recentRead
	recentBytes int64
}

// recentBytes bounds tail.recent (the events' data, shared with the routes
// that hold them, and their other fields).
const recentBytes = 16 << 20

// recentRead is one read of the tail: the events after `from` up to `to`.
type recentRead struct {
	from, to eventstore.Position
	events   []eventstore.Event
	size     int64
}

func eventSize(e *eventstore.Event) int64 {
	return int64(len(e.Data)+len(e.Metadata)+len(e.Type)+len(e.Stream)+len(e.Tenant)) + 160
}

// remember adds the read (from, to] to recent; t.mu is held.
func (t *tail) remember(evs []eventstore.Event, from, to eventstore.Position) {
	if n := len(t.recent); len(evs) == 0 && n > 0 && t.recent[n-1].to == from {
		t.recent[n-1].to = to // progress only
		return
	}
	rd := recentRead{from: from, to: to, events: evs}
	for i := range evs {
		rd.size += eventSize(&evs[i])
	}
	t.recent = append(t.recent, rd)
	t.recentBytes += rd.size
	drop := 0
	for t.recentBytes > recentBytes && drop < len(t.recent)-1 {
		t.recentBytes -= t.recent[drop].size
		t.recent[drop] = recentRead{}
		drop++
	}
	if drop > 0 {
		t.recent = append(t.recent[:0], t.recent[drop:]...)
	}
}

// readRecent is ReadAll(After: after, Filter: match, Limit: limit) from the
// tail's recent reads: the matching events after `after` (copies sharing
// their data) and the position read up to. ok is false when `after` is older
// than what recent holds (read the store).
func (t *tail) readRecent(after eventstore.Position, match func(*eventstore.Event) bool, limit int) (evs []eventstore.Event, next eventstore.Position, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.recent) == 0 || after.Less(t.recent[0].from) || t.pos.Less(after) {
		return nil, after, false
	}
	next = after
	i, _ := slices.BinarySearchFunc(t.recent, after, func(rd recentRead, p eventstore.Position) int {
		if rd.to.Less(p) || rd.to == p {
			return -1 // entirely at or before p
		}
		return 1
	})
	for ; i < len(t.recent); i++ {
		rd := &t.recent[i]
		for j := range rd.events {
			e := &rd.events[j]
			if !after.Less(e.Position) {
				continue
			}
			next = e.Position
			if match(e) {
				evs = append(evs, *e)
				if len(evs) == limit {
					return evs, next, true
				}
			}
		}
		next = rd.to
	}
	return evs, next, true
}

func newTail(store eventstore.Store, cfg Config, head eventstore.Position) *tail {
	return &tail{store: store, cfg: cfg, inboxMax: int64(cfg.RouteInbox), pos: head, routes: map[*route]chan tailMsg{}}
}

// attach registers r, which has read up to readPos, and returns its inbox, or
// nil when the tail has dispatched past readPos (r must read on).
func (t *tail) attach(r *route, readPos eventstore.Position) chan tailMsg {
	t.mu.Lock()
	defer t.mu.Unlock()
	if readPos.Less(t.pos) {
		return nil
	}
	ch := make(chan tailMsg, t.cfg.RouteInbox)
	t.routes[r] = ch
	return ch
}

// detach unregisters r and closes its inbox (no-op when not attached).
func (t *tail) detach(r *route) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.detachLocked(r)
}

func (t *tail) detachLocked(r *route) {
	if ch, ok := t.routes[r]; ok {
		delete(t.routes, r)
		close(ch)
	}
}

func (t *tail) position() eventstore.Position {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

func (t *tail) run(ctx context.Context) {
	after := t.position()
	for {
		var batch []eventstore.Event
		err := eventstore.Follow(ctx, t.store, eventstore.FollowParams{After: after, Filter: eventstore.Filter{NoInternal: true}, Batch: t.cfg.TailBatch},
			func(_ context.Context, evs []eventstore.Event) error {
				batch = evs
				return nil
			},
			func(next eventstore.Position) {
				t.dispatch(batch, next)
				batch, after = nil, next
			})
		if ctx.Err() != nil {
			return
		}
		t.cfg.Logger.Error("projector: reading the log failed; retrying", "after", after.String(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// dispatch hands the events up to `to` to every attached route.
func (t *tail) dispatch(evs []eventstore.Event, to eventstore.Position) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for r, ch := range t.routes {
		var m []eventstore.Event
		for i := range evs {
			if r.match(&evs[i]) {
				m = append(m, evs[i])
			}
		}
		if len(m) == 0 {
			select { // progress only: droppable
			case ch <- tailMsg{to: to}:
			default:
			}
			continue
		}
		n := int64(len(m))
		if r.buffered.Load()+n > t.inboxMax {
			t.detachLocked(r)
			continue
		}
		r.buffered.Add(n)
		select {
		case ch <- tailMsg{events: m, to: to}:
		default:
			r.buffered.Add(-n)
			t.detachLocked(r)
		}
	}
	t.remember(evs, t.pos, to)
	t.pos = to
}
