package eventstore

import (
	"context"
	"sync"
)

// HeadWatch tracks a backend's settled head and wakes waiters when it moves.
// Backends embed one to implement Store.Wait without a query per waiter.
type HeadWatch struct {
	mu     sync.Mutex
	head   Position
	ch     chan struct{} // closed and replaced on every advance
	closed bool
}

// NewHeadWatch starts at head.
func NewHeadWatch(head Position) *HeadWatch {
	return &HeadWatch{head: head, ch: make(chan struct{})}
}

// Advance records a new head; waiters wake if it moved forward.
func (w *HeadWatch) Advance(head Position) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || !w.head.Less(head) {
		return
	}
	w.head = head
	close(w.ch)
	w.ch = make(chan struct{})
}

// Head returns the last recorded head.
func (w *HeadWatch) Head() Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.head
}

// Close wakes every waiter for good; Wait then returns ErrClosed.
func (w *HeadWatch) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
}

// Wait returns nil once the head is after `after`, ctx.Err() when ctx ends, or
// ErrClosed after Close.
func (w *HeadWatch) Wait(ctx context.Context, after Position) error {
	for {
		w.mu.Lock()
		head, ch, closed := w.head, w.ch, w.closed
		w.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if after.Less(head) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
