package subscriptions

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions/streamfold"
)

// ErrNotFound: no subscription with that id (also for ids that are not UUIDs,
// and for subscriptions deleted).
var ErrNotFound = errors.New("subscriptions: subscription not found")

// ErrNotStarted: a command was called before Start or after Stop.
var ErrNotStarted = streamfold.ErrNotStarted

// ErrConflict: other processes kept changing subscriptions while a command
// retried; nothing was written by it. The request may be retried.
var ErrConflict = streamfold.ErrConflict

// Config configures the Service.
type Config struct {
	// AllowPrivateNetworks accepts webhook URLs on loopback and private
	// networks (delivery.allow_private_networks). Default false.
	AllowPrivateNetworks bool
	// Resolver resolves URL host names at create/update. Default net.DefaultResolver.
	Resolver *net.Resolver
	// RotationGrace is how long the previous secret keeps signing after a
	// rotation. Default 24h.
	RotationGrace time.Duration
	// DefaultRetry is the retry policy of subscriptions that name none.
	// Default 5s, 5m, 30m, 2h, 5h, 10h, 10h with max age 72h.
	DefaultRetry RetryPolicy
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger reports events of the stream that cannot be folded and follower
	// errors. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() error {
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.RotationGrace < 0 {
		return errors.New("subscriptions: Config.RotationGrace must not be negative")
	}
	if c.RotationGrace == 0 {
		c.RotationGrace = 24 * time.Hour
	}
	c.DefaultRetry = withRetryDefaults(c.DefaultRetry, DefaultRetryPolicy())
	var fe fieldErrors
	validateRetry(&fe, c.DefaultRetry)
	if len(c.DefaultRetry.Schedule) == 0 {
		fe.add("retry.schedule", "must not be empty")
	}
	if err := fe.err(); err != nil {
		return fmt.Errorf("subscriptions: Config.DefaultRetry: %w", err)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Service runs the subscription commands and serves the read model. All
// methods are safe for concurrent use.
type Service struct {
	store  eventstore.Store
	cfg    Config
	policy URLPolicy
	fold   *streamfold.Folder

	mu sync.RWMutex
	m  model
}

// New returns a Service; call Start before use.
func New(store eventstore.Store, cfg Config) (*Service, error) {
	if store == nil {
		return nil, errors.New("subscriptions: store is nil")
	}
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	s := &Service{
		store:  store,
		cfg:    cfg,
		policy: URLPolicy{AllowPrivateNetworks: cfg.AllowPrivateNetworks, Resolver: cfg.Resolver},
		m:      model{subs: map[string]*Subscription{}},
	}
	f, err := streamfold.New(store, streamfold.Config{Stream: Stream, Apply: s.apply, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	s.fold = f
	return s, nil
}

func (s *Service) apply(e *eventstore.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.m.apply(e); err != nil {
		s.cfg.Logger.Error("subscriptions: skipping an event that cannot be folded",
			"stream", e.Stream, "version", e.Version, "type", e.Type, "err", err)
	}
}

// Start folds the subscription stream and starts following it. It returns
// once the initial fold is done; ctx bounds that fold only.
func (s *Service) Start(ctx context.Context) error {
	if err := s.fold.Start(ctx); err != nil {
		return fmt.Errorf("subscriptions: start: %w", err)
	}
	return nil
}

// Stop stops following the log. It is idempotent. Reads keep working on the
// last state; commands return ErrNotStarted.
func (s *Service) Stop() { s.fold.Stop() }

// Sync catches up with the log now (a change made by another process is
// otherwise seen within about a second).
func (s *Service) Sync(ctx context.Context) error { return s.fold.Sync(ctx) }

// Watch returns a channel that receives after any change to any subscription
// (at most one signal pending), and a function that ends the watch.
func (s *Service) Watch() (<-chan struct{}, func()) { return s.fold.Watch() }

// URLPolicy returns the policy the service checks URLs with, for the
// delivery dialer.
func (s *Service) URLPolicy() URLPolicy { return s.policy }

// canonicalID returns the canonical form of a UUID, or "".
func canonicalID(id string) string {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return ""
	}
	return u.String()
}

// Get returns one subscription, or ErrNotFound.
func (s *Service) Get(_ context.Context, id string) (Subscription, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sub := s.m.subs[canonicalID(id)]
	if sub == nil {
		return Subscription{}, ErrNotFound
	}
	return sub.clone(), nil
}

// List returns the subscriptions of tenant (nil = all), oldest first.
func (s *Service) List(_ context.Context, tenant *string) []Subscription {
	s.mu.RLock()
	out := make([]Subscription, 0, len(s.m.subs))
	for _, sub := range s.m.subs {
		if tenant == nil || sub.Tenant == *tenant {
			out = append(out, sub.clone())
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Subscription) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

// newSecret returns "whsec_" + base64 (standard) of 32 random bytes, the
// Standard Webhooks secret form.
func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// checkURL validates a URL for the "url" field; a cancelled ctx is returned as is.
func (s *Service) checkURL(ctx context.Context, fe *fieldErrors, raw string) error {
	if raw == "" {
		fe.add("url", "is required")
		return nil
	}
	err := s.policy.CheckURL(ctx, raw)
	var pe *PolicyError
	switch {
	case err == nil:
	case errors.As(err, &pe):
		fe.add("url", "%s", pe.Msg)
	default:
		return err
	}
	return nil
}

// Create validates p, resolves its start position and appends
// subscription.created. A rejected request writes nothing and returns a
// *eventstore.ValidationError.
func (s *Service) Create(ctx context.Context, p CreateParams) (Subscription, error) {
	var fe fieldErrors
	if err := s.checkURL(ctx, &fe, p.URL); err != nil {
		return Subscription{}, err
	}
	validateDescription(&fe, p.Description)
	validatePatterns(&fe, "event_types", p.EventTypes)
	validatePatterns(&fe, "streams", p.Streams)
	if p.Tenant != "" && !eventstore.ValidTenant(p.Tenant) {
		fe.add("tenant", "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
	}
	start := StartSpec{Kind: StartNow}
	if p.Start != nil {
		start = *p.Start
		if start.Kind == "" {
			start.Kind = StartNow
		}
	}
	switch start.Kind {
	case StartNow, StartBeginning, StartAfter:
	case StartTime:
		if start.Time.IsZero() {
			fe.add("start", "time is required")
		}
	default:
		fe.add("start", "%s", startForms)
	}
	retry := s.cfg.DefaultRetry
	if p.Retry != nil {
		validateRetry(&fe, *p.Retry)
		if p.Retry.Schedule != nil && len(p.Retry.Schedule) == 0 {
			fe.add("retry.schedule", "must have 1 to %d entries", MaxRetrySchedule)
		}
		retry = withRetryDefaults(*p.Retry, s.cfg.DefaultRetry)
	}
	ordered := p.Ordered != nil && *p.Ordered
	maxInFlight := DefaultMaxInFlight
	if p.MaxInFlight != nil {
		maxInFlight = *p.MaxInFlight
		validateMaxInFlight(&fe, maxInFlight)
	}
	var rateLimit float64
	if p.RateLimit != nil {
		rateLimit = *p.RateLimit
		validateRateLimit(&fe, rateLimit)
	}
	validateHeaders(&fe, p.Headers)
	if err := fe.err(); err != nil {
		return Subscription{}, err
	}

	startPos, err := s.resolveStart(ctx, start)
	if err != nil {
		return Subscription{}, err
	}
	now := s.now()
	data := createdData{
		ID: uuid.Must(uuid.NewV7()).String(), URL: p.URL, Description: p.Description,
		EventTypes: slices.Clone(p.EventTypes), Streams: slices.Clone(p.Streams), Tenant: p.Tenant,
		Start: start, StartPosition: startPos, Retry: retry, Ordered: ordered, MaxInFlight: maxInFlight,
		RateLimit: rateLimit, Headers: maps.Clone(p.Headers), Secret: newSecret(), At: now,
	}
	if len(data.Headers) == 0 {
		data.Headers = nil
	}
	ev, err := proposed(TypeCreated, data)
	if err != nil {
		return Subscription{}, err
	}
	if _, err := s.fold.Exec(ctx, func() ([]eventstore.ProposedEvent, error) {
		return []eventstore.ProposedEvent{ev}, nil
	}); err != nil {
		return Subscription{}, fmt.Errorf("subscriptions: create: %w", err)
	}
	return s.Get(ctx, data.ID)
}

// resolveStart turns a start spec into the route's first cursor.
func (s *Service) resolveStart(ctx context.Context, start StartSpec) (eventstore.Position, error) {
	switch start.Kind {
	case StartBeginning:
		return eventstore.Start, nil
	case StartTime:
		p, err := s.store.PositionAt(ctx, start.Time)
		if err != nil {
			return eventstore.Position{}, fmt.Errorf("subscriptions: resolve start time: %w", err)
		}
		return p, nil
	}
	head, err := s.store.Head(ctx)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("subscriptions: resolve start: %w", err)
	}
	if start.Kind == StartAfter {
		if head.Less(start.After) {
			// A cursor just returned by an append can be ahead of the settled
			// head for a moment (PostgreSQL): wait briefly for the head to
			// reach it before calling it bogus.
			wctx, cancel := context.WithTimeout(ctx, afterCursorWait)
			err := s.store.Wait(wctx, predecessor(start.After))
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return eventstore.Position{}, ctx.Err()
				}
				return eventstore.Position{}, eventstore.Invalid("start", "after is beyond the end of the log")
			}
		}
		return start.After, nil
	}
	return head, nil
}

// afterCursorWait bounds how long Create waits for the head to reach a
// start cursor that is ahead of it.
const afterCursorWait = 2 * time.Second

// predecessor is the position just before p (p must not be Start): reading
// after it, the head has reached p once it is past it.
func predecessor(p eventstore.Position) eventstore.Position {
	if p.Lo > 0 {
		return eventstore.Position{Hi: p.Hi, Lo: p.Lo - 1}
	}
	return eventstore.Position{Hi: p.Hi - 1, Lo: ^uint64(0)}
}

// exec runs a command on one existing subscription: decide gets a copy of it
// (ErrNotFound when there is none) and returns the event to append, or
// ok=false for a no-op.
func (s *Service) exec(ctx context.Context, id string, decide func(sub Subscription) (ev eventstore.ProposedEvent, ok bool, err error)) (Subscription, error) {
	id = canonicalID(id)
	if id == "" {
		return Subscription{}, ErrNotFound
	}
	err := streamfold.ExecOn(ctx, s.fold, func() (Subscription, error) { return s.Get(ctx, id) }, decide)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return Subscription{}, err
		}
		return Subscription{}, fmt.Errorf("subscriptions: %w", err)
	}
	sub, err := s.Get(ctx, id)
	if err != nil { // deleted by another process right after
		return Subscription{}, err
	}
	return sub, nil
}

// Update changes the given fields. Fields equal to the current values are not
// recorded; an update that changes nothing writes nothing.
func (s *Service) Update(ctx context.Context, id string, p UpdateParams) (Subscription, error) {
	if canonicalID(id) == "" {
		return Subscription{}, ErrNotFound
	}
	var fe fieldErrors
	if p.URL != nil {
		if err := s.checkURL(ctx, &fe, *p.URL); err != nil {
			return Subscription{}, err
		}
	}
	if p.Description != nil {
		validateDescription(&fe, *p.Description)
	}
	if p.EventTypes != nil {
		validatePatterns(&fe, "event_types", *p.EventTypes)
	}
	if p.Streams != nil {
		validatePatterns(&fe, "streams", *p.Streams)
	}
	if p.Retry != nil {
		validateRetry(&fe, *p.Retry)
		if p.Retry.Schedule != nil && len(p.Retry.Schedule) == 0 {
			fe.add("retry.schedule", "must have 1 to %d entries", MaxRetrySchedule)
		}
	}
	if p.MaxInFlight != nil {
		validateMaxInFlight(&fe, *p.MaxInFlight)
	}
	if p.RateLimit != nil {
		validateRateLimit(&fe, *p.RateLimit)
	}
	if p.Headers != nil {
		validateHeaders(&fe, *p.Headers)
	}
	if err := fe.err(); err != nil {
		return Subscription{}, err
	}
	return s.exec(ctx, id, func(cur Subscription) (eventstore.ProposedEvent, bool, error) {
		d := updatedData{ID: cur.ID, At: s.now()}
		changed := false
		if p.URL != nil && *p.URL != cur.URL {
			d.URL, changed = p.URL, true
		}
		if p.Description != nil && *p.Description != cur.Description {
			d.Description, changed = p.Description, true
		}
		if p.EventTypes != nil && !slices.Equal(*p.EventTypes, cur.EventTypes) {
			v := slices.Clone(*p.EventTypes)
			d.EventTypes, changed = &v, true
		}
		if p.Streams != nil && !slices.Equal(*p.Streams, cur.Streams) {
			v := slices.Clone(*p.Streams)
			d.Streams, changed = &v, true
		}
		if p.Retry != nil {
			// Zero fields keep the subscription's current values.
			r := withRetryDefaults(*p.Retry, cur.Retry)
			if !slices.Equal(r.Schedule, cur.Retry.Schedule) || r.MaxAge != cur.Retry.MaxAge {
				d.Retry, changed = &r, true
			}
		}
		if p.Ordered != nil && *p.Ordered != cur.Ordered {
			d.Ordered, changed = p.Ordered, true
		}
		if p.MaxInFlight != nil && *p.MaxInFlight != cur.MaxInFlight {
			d.MaxInFlight, changed = p.MaxInFlight, true
		}
		if p.RateLimit != nil && *p.RateLimit != cur.RateLimit {
			d.RateLimit, changed = p.RateLimit, true
		}
		if p.Headers != nil && !maps.Equal(*p.Headers, cur.Headers) {
			h := maps.Clone(*p.Headers)
			if h == nil {
				h = map[string]string{}
			}
			d.Headers, changed = &h, true
		}
		if !changed {
			return eventstore.ProposedEvent{}, false, nil
		}
		ev, err := proposed(TypeUpdated, d)
		return ev, true, err
	})
}

func (s *Service) setState(ctx context.Context, id, typ, want, reason string) (Subscription, error) {
	return s.exec(ctx, id, func(cur Subscription) (eventstore.ProposedEvent, bool, error) {
		if cur.State == want && (typ != TypeDisabled || cur.DisabledReason == reason) {
			return eventstore.ProposedEvent{}, false, nil
		}
		ev, err := proposed(typ, stateData{ID: cur.ID, Reason: reason, At: s.now()})
		return ev, true, err
	})
}

// Pause stops deliveries (events keep accumulating in the log; the route
// resumes from its cursor). Pausing a disabled subscription makes it paused.
// Pausing a paused one writes nothing.
func (s *Service) Pause(ctx context.Context, id string) (Subscription, error) {
	return s.setState(ctx, id, TypePaused, StatePaused, "")
}

// Resume makes a paused or disabled subscription active again. Resuming an
// active one writes nothing.
func (s *Service) Resume(ctx context.Context, id string) (Subscription, error) {
	return s.setState(ctx, id, TypeResumed, StateActive, "")
}

// MaxDisabledReasonLen bounds the reason recorded by Disable.
const MaxDisabledReasonLen = 1000

// Disable stops deliveries for good until Resume; the projector calls it
// when an endpoint answers 410 Gone. Disabling a disabled subscription with
// the same reason writes nothing.
func (s *Service) Disable(ctx context.Context, id, reason string) error {
	if utf8.RuneCountInString(reason) > MaxDisabledReasonLen {
		reason = string([]rune(reason)[:MaxDisabledReasonLen])
	}
	_, err := s.setState(ctx, id, TypeDisabled, StateDisabled, reason)
	return err
}

// RotateSecret makes a new secret current; the previous one keeps signing
// (with an ExpiresAt) for Config.RotationGrace. Secrets expired by then are
// dropped.
func (s *Service) RotateSecret(ctx context.Context, id string) (Subscription, error) {
	return s.exec(ctx, id, func(cur Subscription) (eventstore.ProposedEvent, bool, error) {
		now := s.now()
		ev, err := proposed(TypeSecretRotated, rotatedData{ID: cur.ID, Secret: newSecret(), PreviousExpiresAt: now.Add(s.cfg.RotationGrace), At: now})
		return ev, true, err
	})
}

// Delete removes the subscription. Its events stay in the log; its id is
// never reused.
func (s *Service) Delete(ctx context.Context, id string) error {
	id = canonicalID(id)
	if id == "" {
		return ErrNotFound
	}
	_, err := s.fold.Exec(ctx, func() ([]eventstore.ProposedEvent, error) {
		cur, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		ev, err := proposed(TypeDeleted, stateData{ID: cur.ID, At: s.now()})
		return []eventstore.ProposedEvent{ev}, err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("subscriptions: delete: %w", err)
	}
	return err
}
