package projector

import (
	"context"
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
	t.pos = to
}
