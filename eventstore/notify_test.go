package eventstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

func TestHeadWatch(t *testing.T) {
	w := eventstore.NewHeadWatch(eventstore.Position{Lo: 5})
	ctx := context.Background()
	if err := w.Wait(ctx, eventstore.Position{Lo: 4}); err != nil {
		t.Errorf("Wait behind the head: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := w.Wait(short, eventstore.Position{Lo: 5}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait at the head: %v, want DeadlineExceeded", err)
	}
	w.Advance(eventstore.Position{Lo: 3}) // backwards: ignored
	if h := w.Head(); h.Lo != 5 {
		t.Errorf("Head after a backward Advance = %s", h)
	}

	done := make(chan error, 2)
	go func() { done <- w.Wait(ctx, eventstore.Position{Lo: 5}) }()
	go func() { done <- w.Wait(ctx, eventstore.Position{Lo: 6}) }()
	time.Sleep(20 * time.Millisecond)
	w.Advance(eventstore.Position{Lo: 6})
	if err := <-done; err != nil {
		t.Errorf("Wait woken by Advance: %v", err)
	}
	select {
	case err := <-done:
		t.Errorf("a waiter at 6 returned (%v) when the head reached only 6", err)
	case <-time.After(20 * time.Millisecond):
	}
	w.Close()
	w.Close() // idempotent
	if err := <-done; !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Wait across Close: %v, want ErrClosed", err)
	}
	w.Advance(eventstore.Position{Lo: 9}) // after Close: no panic
}
