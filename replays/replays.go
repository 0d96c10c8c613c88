package replays

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions/streamfold"
)

// Stream is the internal stream holding every replay event.
const Stream = eventstore.InternalStreamPrefix + "replays"

// Event types of Stream. Each event's data carries the replay "id" and the
// command's time "at" (the fold never reads RecordedAt).
const (
	TypeRequested  = "replay.requested"
	TypeProgressed = "replay.progressed"
	TypeCompleted  = "replay.completed"
	TypeCancelled  = "replay.cancelled"
	TypeFailed     = "replay.failed"
)

// Replay statuses.
const (
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusCancelled = "cancelled"
	StatusFailed    = "failed"
)

// Errors.
var (
	// ErrNotFound: no replay with that id. It matches eventstore.ErrNotFound
	// too, so the API answers 404 for it like for any unknown id.
	ErrNotFound = fmt.Errorf("replays: replay not found (%w)", eventstore.ErrNotFound)
	// ErrFinished: the command needs a running replay and this one has
	// completed or failed.
	ErrFinished = errors.New("replays: the replay has finished")
	// ErrNotStarted: a command was called before Start or after Stop.
	ErrNotStarted = streamfold.ErrNotStarted
)

// Limits and defaults.
const (
	// DefaultMaxWindow is the longest window a replay may cover by default.
	DefaultMaxWindow = 30 * 24 * time.Hour
	// MaxEventTypes bounds the event_types of one replay.
	MaxEventTypes = 100
	// MaxSubscriptions bounds the subscriptions of one replay.
	MaxSubscriptions = 1000
	// MaxReasonLen bounds the reason of a failed replay.
	MaxReasonLen = 1000
)

// Replay is one replay job as the read model holds it. Values returned by
// the Service are copies.
type Replay struct {
	ID     string
	Status string // running, completed, cancelled or failed
	// Subscriptions are the ids the replay delivers to ("all" is resolved
	// when the replay is requested).
	Subscriptions []string
	All           bool   // the request said "all"
	Tenant        string // the one tenant every subscription belongs to, "" if none
	From, To      time.Time
	EventTypes    []string // empty = every type the subscriptions take
	// StartPosition is where reading the window starts (the store's
	// PositionAt(From)): reading after it yields every event of the window.
	StartPosition eventstore.Position
	// Total is the number of (event, subscription) pairs of the window,
	// counted when the replay was requested, or an estimate when
	// TotalEstimated (a window too large to count at once); an estimate is
	// replaced by the real number when the replay completes.
	Total          int64
	TotalEstimated bool
	Delivered      int64 // pairs delivered
	Failed         int64 // pairs that failed for good (the retry schedule ran out)
	// Parts is the progress of each subscription as of the last
	// replay.progressed (or the final) event.
	Parts       []Part
	Error       string // why a failed replay could not run
	RequestedBy string // the API key id of the request, if any
	CreatedAt   time.Time
	UpdatedAt   time.Time
	FinishedAt  time.Time // zero while running
}

// Part is the progress of one subscription of a replay.
type Part struct {
	SubscriptionID string `json:"subscription_id"`
	// Cursor: every event of the window up to Cursor is settled.
	Cursor    eventstore.Position `json:"cursor"`
	Delivered int64               `json:"delivered"`
	Failed    int64               `json:"failed"`
	// Done: the subscription's part of the window is settled (or the
	// subscription was deleted).
	Done bool `json:"done"`
}

// Running reports whether the replay has not finished.
func (r Replay) Running() bool { return r.Status == StatusRunning }

func (r Replay) clone() Replay {
	c := r
	c.Subscriptions = slices.Clone(r.Subscriptions)
	c.EventTypes = slices.Clone(r.EventTypes)
	c.Parts = slices.Clone(r.Parts)
	return c
}

// RequestParams is a resolved replay request.
type RequestParams struct {
	Subscriptions []string // subscription ids, 1 to MaxSubscriptions
	All           bool
	Tenant        string
	From, To      time.Time
	EventTypes    []string
	StartPosition eventstore.Position
	Total         int64
	// TotalEstimated marks Total as an estimate.
	TotalEstimated bool
	RequestedBy    string
}

// Config configures the Service.
type Config struct {
	// MaxWindow is the longest To-From accepted. Default DefaultMaxWindow (30 days).
	MaxWindow time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger reports events that cannot be folded. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() error {
	if c.MaxWindow < 0 {
		return fmt.Errorf("replays: Config.MaxWindow must not be negative (0 = %s), got %s", DefaultMaxWindow, c.MaxWindow)
	}
	if c.MaxWindow == 0 {
		c.MaxWindow = DefaultMaxWindow
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Service runs the replay commands and serves the read model. All methods
// are safe for concurrent use.
type Service struct {
	cfg  Config
	fold *streamfold.Folder

	mu      sync.RWMutex
	replays map[string]*Replay
}

// New returns a Service; call Start before use.
func New(store eventstore.Store, cfg Config) (*Service, error) {
	if store == nil {
		return nil, errors.New("replays: store is nil")
	}
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, replays: map[string]*Replay{}}
	f, err := streamfold.New(store, streamfold.Config{Stream: Stream, Apply: s.apply, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	s.fold = f
	return s, nil
}

// Start folds the replay stream and starts following it; ctx bounds the
// initial fold only.
func (s *Service) Start(ctx context.Context) error {
	if err := s.fold.Start(ctx); err != nil {
		return fmt.Errorf("replays: start: %w", err)
	}
	return nil
}

// Stop stops following the log. It is idempotent; reads keep working.
func (s *Service) Stop() { s.fold.Stop() }

// Sync catches up with the log now.
func (s *Service) Sync(ctx context.Context) error { return s.fold.Sync(ctx) }

// Watch returns a channel that receives after any change to any replay (one
// pending signal at most), and a function that ends the watch.
func (s *Service) Watch() (<-chan struct{}, func()) { return s.fold.Watch() }

// MaxWindow is the longest window accepted.
func (s *Service) MaxWindow() time.Duration { return s.cfg.MaxWindow }

func canonicalID(id string) string {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return ""
	}
	return u.String()
}

// Get returns one replay, or ErrNotFound.
func (s *Service) Get(_ context.Context, id string) (Replay, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.replays[canonicalID(id)]
	if r == nil {
		return Replay{}, ErrNotFound
	}
	return r.clone(), nil
}

// List returns the replays of tenant (nil = all), newest first.
func (s *Service) List(_ context.Context, tenant *string) []Replay {
	s.mu.RLock()
	out := make([]Replay, 0, len(s.replays))
	for _, r := range s.replays {
		if tenant == nil || r.Tenant == *tenant {
			out = append(out, r.clone())
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Replay) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(b.ID, a.ID))
	})
	return out
}

// Running returns the running replays, oldest first.
func (s *Service) Running() []Replay {
	s.mu.RLock()
	var out []Replay
	for _, r := range s.replays {
		if r.Running() {
			out = append(out, r.clone())
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Replay) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

// Check validates the fields of a request that need no other service: the
// window (From before To, at most MaxWindow long) and the event types. It
// returns a *eventstore.ValidationError naming the fields.
func (s *Service) Check(from, to time.Time, eventTypes []string) error {
	v := &eventstore.ValidationError{}
	add := func(field, format string, args ...any) {
		if v.Fields == nil {
			v.Fields = map[string]string{}
		}
		if _, ok := v.Fields[field]; !ok {
			v.Fields[field] = fmt.Sprintf(format, args...)
		}
	}
	switch {
	case from.IsZero():
		add("from", "is required (an RFC 3339 time)")
	case to.IsZero():
		add("to", "is required (an RFC 3339 time)")
	case !from.Before(to):
		add("to", "must be after from")
	case to.Sub(from) > s.cfg.MaxWindow:
		add("to", "the window may be at most %s long (replay.max_window), got %s", s.cfg.MaxWindow, to.Sub(from))
	}
	if len(eventTypes) > MaxEventTypes {
		add("event_types", "at most %d entries", MaxEventTypes)
	}
	for i, p := range eventTypes {
		if !eventstore.ValidPattern(p) {
			add(fmt.Sprintf("event_types[%d]", i), "must be a type name or a prefix ending in '*'")
		}
	}
	if len(v.Fields) == 0 {
		return nil
	}
	return v
}

// Request records a new running replay (replay.requested) and returns it.
// A rejected request writes nothing and returns a *eventstore.ValidationError.
func (s *Service) Request(ctx context.Context, p RequestParams) (Replay, error) {
	if err := s.Check(p.From, p.To, p.EventTypes); err != nil {
		return Replay{}, err
	}
	switch n := len(p.Subscriptions); {
	case n == 0:
		return Replay{}, eventstore.Invalid("subscriptions", "at least one subscription is required")
	case n > MaxSubscriptions:
		return Replay{}, eventstore.Invalid("subscriptions", "at most %d subscriptions", MaxSubscriptions)
	}
	d := requestedData{
		ID: uuid.Must(uuid.NewV7()).String(), Subscriptions: slices.Clone(p.Subscriptions), All: p.All, Tenant: p.Tenant,
		From: p.From.UTC(), To: p.To.UTC(), EventTypes: slices.Clone(p.EventTypes), StartPosition: p.StartPosition,
		Total: max(p.Total, 0), TotalEstimated: p.TotalEstimated, RequestedBy: p.RequestedBy, At: s.now(),
	}
	ev, err := proposed(TypeRequested, d)
	if err != nil {
		return Replay{}, err
	}
	if _, err := s.fold.Exec(ctx, func() ([]eventstore.ProposedEvent, error) {
		return []eventstore.ProposedEvent{ev}, nil
	}); err != nil {
		return Replay{}, fmt.Errorf("replays: request: %w", err)
	}
	return s.Get(ctx, d.ID)
}

// exec runs a command on one existing replay: decide sees a copy of it and
// returns the event to append, or ok=false for a no-op.
func (s *Service) exec(ctx context.Context, id string, decide func(r Replay) (ev eventstore.ProposedEvent, ok bool, err error)) (Replay, error) {
	id = canonicalID(id)
	if id == "" {
		return Replay{}, ErrNotFound
	}
	err := streamfold.ExecOn(ctx, s.fold, func() (Replay, error) { return s.Get(ctx, id) }, decide)
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrFinished) {
			return Replay{}, err
		}
		return Replay{}, fmt.Errorf("replays: %w", err)
	}
	return s.Get(ctx, id)
}

// Progress records the progress of a running replay (replay.progressed).
// It writes nothing when the replay is not running or nothing changed.
// Callers bound how often they call it: every call that changes something
// is an event in the log.
func (s *Service) Progress(ctx context.Context, id string, parts []Part) (Replay, error) {
	return s.exec(ctx, id, func(r Replay) (eventstore.ProposedEvent, bool, error) {
		if !r.Running() || slices.Equal(r.Parts, parts) {
			return eventstore.ProposedEvent{}, false, nil
		}
		ev, err := proposed(TypeProgressed, progressData{ID: r.ID, Parts: parts, At: s.now()})
		return ev, true, err
	})
}

// Complete records that every event of the window is settled
// (replay.completed) with the final progress. It writes nothing when the
// replay is not running.
func (s *Service) Complete(ctx context.Context, id string, parts []Part) (Replay, error) {
	return s.exec(ctx, id, func(r Replay) (eventstore.ProposedEvent, bool, error) {
		if !r.Running() {
			return eventstore.ProposedEvent{}, false, nil
		}
		ev, err := proposed(TypeCompleted, progressData{ID: r.ID, Parts: parts, At: s.now()})
		return ev, true, err
	})
}

// Cancel stops a running replay (replay.cancelled) with the progress made
// so far (parts may be nil: the last recorded progress stands). Cancelling
// a cancelled replay writes nothing; a completed or failed one returns
// ErrFinished.
func (s *Service) Cancel(ctx context.Context, id string, parts []Part) (Replay, error) {
	return s.exec(ctx, id, func(r Replay) (eventstore.ProposedEvent, bool, error) {
		switch r.Status {
		case StatusCancelled:
			return eventstore.ProposedEvent{}, false, nil
		case StatusCompleted, StatusFailed:
			return eventstore.ProposedEvent{}, false, fmt.Errorf("%w (%s)", ErrFinished, r.Status)
		}
		if parts == nil {
			parts = r.Parts
		}
		ev, err := proposed(TypeCancelled, progressData{ID: r.ID, Parts: parts, At: s.now()})
		return ev, true, err
	})
}

// Fail records that a running replay could not run (replay.failed). It
// writes nothing when the replay is not running.
func (s *Service) Fail(ctx context.Context, id, reason string) (Replay, error) {
	if len([]rune(reason)) > MaxReasonLen {
		reason = string([]rune(reason)[:MaxReasonLen])
	}
	return s.exec(ctx, id, func(r Replay) (eventstore.ProposedEvent, bool, error) {
		if !r.Running() {
			return eventstore.ProposedEvent{}, false, nil
		}
		ev, err := proposed(TypeFailed, failedData{ID: r.ID, Reason: reason, At: s.now()})
		return ev, true, err
	})
}

// Event data.

type requestedData struct {
	ID             string              `json:"id"`
	Subscriptions  []string            `json:"subscriptions"`
	All            bool                `json:"all,omitempty"`
	Tenant         string              `json:"tenant,omitempty"`
	From           time.Time           `json:"from"`
	To             time.Time           `json:"to"`
	EventTypes     []string            `json:"event_types,omitempty"`
	StartPosition  eventstore.Position `json:"start_position"`
	Total          int64               `json:"total"`
	TotalEstimated bool                `json:"total_estimated,omitempty"`
	RequestedBy    string              `json:"requested_by,omitempty"`
	At             time.Time           `json:"at"`
}

// progressData is replay.progressed, replay.completed and replay.cancelled.
type progressData struct {
	ID    string    `json:"id"`
	Parts []Part    `json:"parts"`
	At    time.Time `json:"at"`
}

type failedData struct {
	ID     string    `json:"id"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

func proposed(typ string, data any) (eventstore.ProposedEvent, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return eventstore.ProposedEvent{}, err
	}
	return eventstore.ProposedEvent{Type: typ, Data: b}, nil
}

func (s *Service) apply(e *eventstore.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.applyLocked(e); err != nil {
		s.cfg.Logger.Error("replays: skipping an event that cannot be folded",
			"stream", e.Stream, "version", e.Version, "type", e.Type, "err", err)
	}
}

// applyLocked folds one event. Unknown types are skipped: a newer hooklog
// may write events this one does not know.
func (s *Service) applyLocked(e *eventstore.Event) error {
	switch e.Type {
	case TypeRequested:
		var d requestedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		if _, exists := s.replays[d.ID]; exists {
			return nil
		}
		s.replays[d.ID] = &Replay{
			ID: d.ID, Status: StatusRunning, Subscriptions: d.Subscriptions, All: d.All, Tenant: d.Tenant,
			From: d.From, To: d.To, EventTypes: d.EventTypes, StartPosition: d.StartPosition,
			Total: d.Total, TotalEstimated: d.TotalEstimated, RequestedBy: d.RequestedBy,
			CreatedAt: d.At, UpdatedAt: d.At,
		}
	case TypeProgressed, TypeCompleted, TypeCancelled:
		var d progressData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		r := s.replays[d.ID]
		if r == nil || !r.Running() {
			return nil
		}
		r.Parts = d.Parts
		r.Delivered, r.Failed = 0, 0
		for _, p := range d.Parts {
			r.Delivered += p.Delivered
			r.Failed += p.Failed
		}
		r.UpdatedAt = d.At
		switch e.Type {
		case TypeCompleted:
			r.Status, r.FinishedAt = StatusCompleted, d.At
			if r.TotalEstimated {
				r.Total, r.TotalEstimated = r.Delivered+r.Failed, false
			}
		case TypeCancelled:
			r.Status, r.FinishedAt = StatusCancelled, d.At
		}
	case TypeFailed:
		var d failedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		r := s.replays[d.ID]
		if r == nil || !r.Running() {
			return nil
		}
		r.Status, r.Error, r.UpdatedAt, r.FinishedAt = StatusFailed, d.Reason, d.At, d.At
	}
	return nil
}
