package eventstore

import (
	"context"
	"errors"
)

// FollowParams configures Follow.
type FollowParams struct {
	After   Position // exclusive start
	Filter  Filter
	Batch   int // events per handler call at most; <= 0 means DefaultReadLimit
	MaxScan int
}

// Follow tails the log: it reads everything after p.After (catch-up), then waits
// for new events (live), calling handle with each non-empty batch in log order.
// It never skips a settled event and never repeats one. It returns when ctx ends
// (ctx.Err()), when handle returns an error (that error), or on a store error.
//
// progress, if non-nil, is called with the cursor after each read, including
// reads whose events were all filtered out, so callers can checkpoint.
func Follow(ctx context.Context, s Store, p FollowParams, handle func(context.Context, []Event) error, progress func(Position)) error {
	after := p.After
	for {
		res, err := s.ReadAll(ctx, ReadParams{After: after, Filter: p.Filter, Limit: p.Batch, MaxScan: p.MaxScan})
		if err != nil {
			return err
		}
		if len(res.Events) > 0 {
			if err := handle(ctx, res.Events); err != nil {
				return err
			}
		}
		moved := after.Less(res.Next)
		after = res.Next
		if moved && progress != nil {
			progress(after)
		}
		if moved {
			continue // there may be more right away
		}
		if err := s.Wait(ctx, after); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return ctx.Err()
			}
			return err
		}
	}
}
