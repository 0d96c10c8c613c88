package streamfold

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

// Errors of the Folder lifecycle.
var (
	// ErrNotStarted: Exec was called before Start or after Stop.
	ErrNotStarted = errors.New("streamfold: not started")
	// ErrConflict: the stream kept changing under the command; it gave up after
	// Config.MaxRetries attempts.
	ErrConflict = errors.New("streamfold: too many concurrent changes, try again")
)

// Config configures a Folder.
type Config struct {
	// Stream is the stream folded. Required.
	Stream string
	// Apply folds one event into the caller's model. It is called in version
	// order, never concurrently, exactly once per event. Required.
	Apply func(e *eventstore.Event)
	// MinRefreshInterval throttles the follower: it re-reads the stream at most
	// once per interval however fast the log's head moves. Default 100ms.
	MinRefreshInterval time.Duration
	// MaxRefreshInterval makes the follower re-read the stream at least this
	// often even when the log's head does not move. The settled head of a
	// PostgreSQL store stalls while any older transaction in the cluster is
	// open, but ReadStream sees committed events at once; this keeps another
	// process's change visible within about a second anyway. Default 500ms.
	MaxRefreshInterval time.Duration
	// RetryDelay is the pause after a store error in the follower. Default 1s.
	RetryDelay time.Duration
	// PageSize is the number of events per ReadStream call. Default 1000.
	PageSize int
	// MaxRetries is how many times Exec decides again after ErrWrongVersion,
	// after a catch-up and a short random pause (a few ms, doubling). Default 10.
	MaxRetries int
	// Logger reports follower errors. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() error {
	if c.Stream == "" {
		return errors.New("streamfold: Config.Stream is required")
	}
	if c.Apply == nil {
		return errors.New("streamfold: Config.Apply is required")
	}
	if c.MinRefreshInterval < 0 {
		return errors.New("streamfold: Config.MinRefreshInterval must not be negative")
	}
	if c.MinRefreshInterval == 0 {
		c.MinRefreshInterval = 100 * time.Millisecond
	}
	if c.MaxRefreshInterval <= 0 {
		c.MaxRefreshInterval = 500 * time.Millisecond
	}
	if c.MaxRefreshInterval < c.MinRefreshInterval {
		c.MaxRefreshInterval = c.MinRefreshInterval
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = time.Second
	}
	if c.PageSize <= 0 {
		c.PageSize = 1000
	}
	if c.PageSize > eventstore.MaxReadLimit {
		c.PageSize = eventstore.MaxReadLimit
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Folder folds one stream into a caller's model and keeps it current.
type Folder struct {
	store eventstore.Store
	cfg   Config

	cmdMu  sync.Mutex // one local command at a time
	syncMu sync.Mutex // one catch-up read at a time

	mu       sync.Mutex // guards the fields below
	version  int64      // last folded version, -1 = none
	head     eventstore.Position
	state    int // 0 new, 1 running, 2 stopped
	cancel   context.CancelFunc
	done     chan struct{}
	watchers map[chan struct{}]struct{}
}

// New returns a Folder; nothing is read until Start.
func New(store eventstore.Store, cfg Config) (*Folder, error) {
	if store == nil {
		return nil, errors.New("streamfold: store is nil")
	}
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	return &Folder{store: store, cfg: cfg, version: -1, watchers: map[chan struct{}]struct{}{}}, nil
}

// Start folds the whole stream, then starts the follower and returns. ctx
// bounds the initial fold only; the follower runs until Stop.
func (f *Folder) Start(ctx context.Context) error {
	f.mu.Lock()
	if f.state != 0 {
		f.mu.Unlock()
		return errors.New("streamfold: Start called twice or after Stop")
	}
	f.mu.Unlock()
	if err := f.Sync(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != 0 { // Stop raced with the initial fold
		return ErrNotStarted
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.state, f.cancel, f.done = 1, cancel, make(chan struct{})
	go f.follow(runCtx, f.done)
	return nil
}

// Stop ends the follower and waits for it. It is idempotent. The model stays
// readable; Exec returns ErrNotStarted afterwards.
func (f *Folder) Stop() {
	f.mu.Lock()
	prev := f.state
	f.state = 2
	cancel, done := f.cancel, f.done
	f.mu.Unlock()
	if prev == 1 {
		cancel()
		<-done
	}
}

// Version is the stream version folded so far (-1 before the first event).
func (f *Folder) Version() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.version
}

// Watch returns a channel that receives (without blocking the folder: one
// pending signal at most) after any event is folded, and a function that
// stops the watch.
func (f *Folder) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	f.watchers[ch] = struct{}{}
	f.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.watchers, ch)
			f.mu.Unlock()
		})
	}
}

// Sync reads the stream from the next unfolded version to its end and folds
// what it finds. Callers use it to see another process's change right away
// rather than within the follower's delay.
func (f *Folder) Sync(ctx context.Context) error {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	// Head first: every event settled at or before it is visible to the reads
	// below, and anything settled later moves the head past it, which wakes
	// the follower's Wait.
	head, err := f.store.Head(ctx)
	if err != nil {
		return fmt.Errorf("streamfold: %s: head: %w", f.cfg.Stream, err)
	}
	for {
		from := f.Version() + 1
		evs, err := f.store.ReadStream(ctx, eventstore.ReadStreamParams{Stream: f.cfg.Stream, FromVersion: from, Limit: f.cfg.PageSize})
		if err != nil {
			return fmt.Errorf("streamfold: read %s from version %d: %w", f.cfg.Stream, from, err)
		}
		if len(evs) == 0 {
			break
		}
		if err := f.fold(evs); err != nil {
			return err
		}
	}
	f.mu.Lock()
	if f.head.Less(head) {
		f.head = head
	}
	f.mu.Unlock()
	return nil
}

// fold applies the events the model has not seen yet, in order.
func (f *Folder) fold(evs []eventstore.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	applied := 0
	var err error
	for i := range evs {
		e := &evs[i]
		if e.Version <= f.version {
			continue // folded already (a local command and a catch-up raced)
		}
		if e.Version != f.version+1 {
			err = fmt.Errorf("streamfold: %s: version gap: have %d, got %d", f.cfg.Stream, f.version, e.Version)
			break
		}
		f.cfg.Apply(e)
		f.version = e.Version
		applied++
	}
	if applied > 0 {
		for ch := range f.watchers {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	return err
}

// Exec runs one command. decide looks at the model (which is at least at the
// version Exec will expect) and returns the events to append, or none for a
// no-op, or an error that Exec returns as is (nothing written). The events are
// appended with the expected version the model has folded; if another process
// wrote first, Exec catches up and calls decide again, up to MaxRetries times.
// On success the events are folded before Exec returns (read-your-writes).
func (f *Folder) Exec(ctx context.Context, decide func() ([]eventstore.ProposedEvent, error)) ([]eventstore.AppendedEvent, error) {
	f.mu.Lock()
	running := f.state == 1
	f.mu.Unlock()
	if !running {
		return nil, ErrNotStarted
	}
	f.cmdMu.Lock()
	defer f.cmdMu.Unlock()
	for attempt := 0; ; attempt++ {
		// Read the version before deciding: the model decide sees is then at
		// least this version, and if it is ahead the append fails and we retry.
		version := f.Version()
		proposed, err := decide()
		if err != nil || len(proposed) == 0 {
			return nil, err
		}
		expected := eventstore.NoStream
		if version >= 0 {
			expected = eventstore.Exact(version)
		}
		res, err := f.store.Append(ctx, eventstore.AppendParams{Stream: f.cfg.Stream, Expected: expected, Events: proposed})
		if errors.Is(err, eventstore.ErrWrongVersion) {
			if attempt >= f.cfg.MaxRetries {
				return nil, fmt.Errorf("%w (%s)", ErrConflict, f.cfg.Stream)
			}
			// Another writer won: back off a little (randomly, so two
			// writers retrying at once separate), catch up, decide again.
			if !sleep(ctx, retryBackoff(attempt)) {
				return nil, ctx.Err()
			}
			if err := f.Sync(ctx); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("streamfold: append to %s: %w", f.cfg.Stream, err)
		}
		if len(res.Events) != len(proposed) {
			return nil, fmt.Errorf("streamfold: append to %s returned %d events for %d", f.cfg.Stream, len(res.Events), len(proposed))
		}
		recorded := make([]eventstore.Event, len(proposed))
		for i, p := range proposed {
			recorded[i] = eventstore.Event{
				ID: res.Events[i].ID, Stream: f.cfg.Stream, Type: p.Type, Tenant: p.Tenant,
				Data: p.Data, Metadata: p.Metadata, Position: res.Events[i].Position, Version: res.Events[i].Version,
			}
		}
		if err := f.fold(recorded); err != nil {
			// Only possible if the store broke its contract; the follower
			// will fold from the log.
			f.cfg.Logger.Error("streamfold: local fold", "stream", f.cfg.Stream, "err", err)
		}
		return res.Events, nil
	}
}

// ExecOn runs a command on one entity of the model through f.Exec: get
// loads the entity (its error, such as a not-found, is returned as is) and
// decide returns the one event to append, or ok=false for a no-op. Like
// Exec it retries on a conflict, calling get and decide again.
func ExecOn[T any](ctx context.Context, f *Folder, get func() (T, error), decide func(T) (ev eventstore.ProposedEvent, ok bool, err error)) error {
	_, err := f.Exec(ctx, func() ([]eventstore.ProposedEvent, error) {
		v, err := get()
		if err != nil {
			return nil, err
		}
		ev, ok, err := decide(v)
		if err != nil || !ok {
			return nil, err
		}
		return []eventstore.ProposedEvent{ev}, nil
	})
	return err
}

// follow re-reads the stream whenever the log's head moves past what the last
// Sync saw, at most once per MinRefreshInterval and at least once per
// MaxRefreshInterval.
func (f *Folder) follow(ctx context.Context, done chan struct{}) {
	defer close(done)
	var last time.Time
	for {
		f.mu.Lock()
		head := f.head
		f.mu.Unlock()
		waitCtx, cancel := context.WithTimeout(ctx, f.cfg.MaxRefreshInterval)
		err := f.store.Wait(waitCtx, head)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = nil // no head movement for a while: re-read anyway
		}
		if err != nil {
			if errors.Is(err, eventstore.ErrClosed) {
				f.cfg.Logger.Warn("streamfold: store closed, follower stops", "stream", f.cfg.Stream)
				return
			}
			f.cfg.Logger.Warn("streamfold: wait", "stream", f.cfg.Stream, "err", err)
			if !sleep(ctx, f.cfg.RetryDelay) {
				return
			}
			continue
		}
		if d := f.cfg.MinRefreshInterval - time.Since(last); d > 0 {
			if !sleep(ctx, d) {
				return
			}
		}
		last = time.Now()
		if err := f.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, eventstore.ErrClosed) {
				f.cfg.Logger.Warn("streamfold: store closed, follower stops", "stream", f.cfg.Stream)
				return
			}
			f.cfg.Logger.Warn("streamfold: catch up", "stream", f.cfg.Stream, "err", err)
			if !sleep(ctx, f.cfg.RetryDelay) {
				return
			}
		}
	}
}

// retryBackoff is a random pause in [0, 2ms * 2^attempt), at most 200ms.
func retryBackoff(attempt int) time.Duration {
	limit := min(2*time.Millisecond<<min(attempt, 10), 200*time.Millisecond)
	return rand.N(limit)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
