package subscriptions

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

// Subscription states.
const (
	StateActive   = "active"
	StatePaused   = "paused"
	StateDisabled = "disabled"
)

// Subscription is one webhook endpoint as the read model holds it. Values
// returned by the Service are copies: changing them changes nothing.
//
// The JSON form is the API's, without the secrets (the API shows a secret only
// on create and on rotate).
type Subscription struct {
	ID          string    `json:"id"` // a UUID
	URL         string    `json:"url"`
	Description string    `json:"description"`
	EventTypes  []string  `json:"event_types"` // empty = all types
	Streams     []string  `json:"streams"`     // empty = all streams
	Tenant      string    `json:"tenant"`      // "" = every tenant's events and those without one
	Start       StartSpec `json:"start"`
	// StartPosition is Start resolved when the subscription was created: the
	// route's first cursor (reading after it yields the first event to deliver).
	StartPosition  eventstore.Position `json:"start_position"`
	Retry          RetryPolicy         `json:"retry"`
	Ordered        bool                `json:"ordered"`
	MaxInFlight    int                 `json:"max_in_flight"`
	RateLimit      float64             `json:"rate_limit"` // deliveries per second, 0 = unlimited
	Headers        map[string]string   `json:"headers"`
	State          string              `json:"state"` // active, paused or disabled
	DisabledReason string              `json:"disabled_reason,omitempty"`
	// Secrets sign deliveries, newest first. During a rotation's grace period
	// the previous secret is kept with its expiry time.
	Secrets   []Secret  `json:"-"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Secret is a signing secret ("whsec_" + base64 of 32 random bytes).
type Secret struct {
	Value     string     `json:"value"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"` // nil = current secret
}

// Filter is the log filter of the subscription: its event types, streams and
// tenant. It does not exclude internal streams; Matches does.
func (s Subscription) Filter() eventstore.Filter {
	f := eventstore.Filter{Types: s.EventTypes, Streams: s.Streams}
	if s.Tenant != "" {
		t := s.Tenant
		f.Tenant = &t
	}
	return f
}

// Matches reports whether e is to be delivered to s: it passes the filter and
// is not one of hooklog's internal events.
func (s Subscription) Matches(e *eventstore.Event) bool {
	return !eventstore.IsInternalStream(e.Stream) && s.Filter().Match(e)
}

// ActiveSecrets returns the secret values to sign with at now, newest first.
func (s Subscription) ActiveSecrets(now time.Time) []string {
	out := make([]string, 0, len(s.Secrets))
	for _, sec := range s.Secrets {
		if sec.ExpiresAt == nil || now.Before(*sec.ExpiresAt) {
			out = append(out, sec.Value)
		}
	}
	return out
}

// Secret returns the current (newest) secret value.
func (s Subscription) Secret() string {
	if len(s.Secrets) == 0 {
		return ""
	}
	return s.Secrets[0].Value
}

func (s Subscription) clone() Subscription {
	c := s
	// Empty lists and maps are returned non-nil so they encode as [] and {}.
	c.EventTypes = append([]string{}, s.EventTypes...)
	c.Streams = append([]string{}, s.Streams...)
	c.Headers = make(map[string]string, len(s.Headers))
	maps.Copy(c.Headers, s.Headers)
	c.Retry.Schedule = slices.Clone(s.Retry.Schedule)
	c.Secrets = make([]Secret, len(s.Secrets))
	for i, sec := range s.Secrets {
		c.Secrets[i] = sec
		if sec.ExpiresAt != nil {
			t := *sec.ExpiresAt
			c.Secrets[i].ExpiresAt = &t
		}
	}
	return c
}

// Start kinds.
const (
	StartNow       = "now"
	StartBeginning = "beginning"
	StartTime      = "time"
	StartAfter     = "after"
)

// StartSpec says where a new subscription starts in the log. JSON: "now",
// "beginning", {"time": "<RFC 3339>"} or {"after": "<cursor>"}.
type StartSpec struct {
	Kind  string              // now, beginning, time or after; "" means now
	Time  time.Time           // for time: the first event delivered has RecordedAt >= Time
	After eventstore.Position // for after: the first event delivered follows this cursor
}

// MarshalJSON writes the API form.
func (s StartSpec) MarshalJSON() ([]byte, error) {
	switch s.Kind {
	case "", StartNow:
		return []byte(`"now"`), nil
	case StartBeginning:
		return []byte(`"beginning"`), nil
	case StartTime:
		return json.Marshal(map[string]string{"time": s.Time.Format(time.RFC3339Nano)})
	case StartAfter:
		return json.Marshal(map[string]string{"after": s.After.String()})
	}
	return nil, fmt.Errorf("subscriptions: unknown start kind %q", s.Kind)
}

const startForms = `must be "now", "beginning", {"time": "<RFC 3339>"} or {"after": "<cursor>"}`

// UnmarshalJSON reads the API form. Errors are *eventstore.ValidationError for
// the field "start".
func (s *StartSpec) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return eventstore.Invalid("start", startForms)
		}
		switch str {
		case StartNow, StartBeginning:
			*s = StartSpec{Kind: str}
			return nil
		}
		return eventstore.Invalid("start", startForms)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || len(obj) != 1 {
		return eventstore.Invalid("start", startForms)
	}
	var str string
	if raw, ok := obj["time"]; ok {
		if json.Unmarshal(raw, &str) != nil {
			return eventstore.Invalid("start", startForms)
		}
		t, err := time.Parse(time.RFC3339Nano, str)
		if err != nil {
			return eventstore.Invalid("start", "time must be RFC 3339 with an offset, e.g. 2026-11-01T00:00:00Z")
		}
		*s = StartSpec{Kind: StartTime, Time: t}
		return nil
	}
	if raw, ok := obj["after"]; ok {
		if json.Unmarshal(raw, &str) != nil {
			return eventstore.Invalid("start", startForms)
		}
		p, err := eventstore.ParsePosition(str)
		if err != nil {
			return eventstore.Invalid("start", "after must be a cursor returned by the API")
		}
		*s = StartSpec{Kind: StartAfter, After: p}
		return nil
	}
	return eventstore.Invalid("start", startForms)
}

// RetryPolicy is when failed deliveries are retried: Schedule[i] is the delay
// before attempt i+2; a delivery is dead-lettered when the schedule is spent
// or the event is older than MaxAge. JSON: {"schedule": ["5s", ...], "max_age": "72h"}.
type RetryPolicy struct {
	Schedule []time.Duration
	MaxAge   time.Duration
}

// DefaultRetryPolicy is the schedule of API.md: 5s, 5m, 30m, 2h, 5h, 10h, 10h;
// max age 72h.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		Schedule: []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour},
		MaxAge:   72 * time.Hour,
	}
}

// Limits of a retry policy.
const MaxRetrySchedule = 20

type retryJSON struct {
	Schedule []string `json:"schedule"`
	MaxAge   string   `json:"max_age"`
}

// MarshalJSON writes Go duration strings.
func (r RetryPolicy) MarshalJSON() ([]byte, error) {
	j := retryJSON{Schedule: make([]string, len(r.Schedule)), MaxAge: r.MaxAge.String()}
	for i, d := range r.Schedule {
		j.Schedule[i] = d.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads Go duration strings. A missing field is left zero (the
// default applies); a present one must be valid. Errors are
// *eventstore.ValidationError with fields "retry", "retry.schedule[i]",
// "retry.max_age".
func (r *RetryPolicy) UnmarshalJSON(b []byte) error {
	var raw struct {
		Schedule *[]json.RawMessage `json:"schedule"`
		MaxAge   *json.RawMessage   `json:"max_age"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return eventstore.Invalid("retry", `must be {"schedule": ["5s", ...], "max_age": "72h"}`)
	}
	v := &eventstore.ValidationError{Fields: map[string]string{}}
	var out RetryPolicy
	if raw.Schedule != nil {
		out.Schedule = make([]time.Duration, 0, len(*raw.Schedule))
		if len(*raw.Schedule) == 0 {
			v.Fields["retry.schedule"] = fmt.Sprintf("must have 1 to %d entries", MaxRetrySchedule)
		}
		for i, item := range *raw.Schedule {
			d, err := parseDuration(item)
			if err != nil {
				v.Fields[fmt.Sprintf("retry.schedule[%d]", i)] = err.Error()
			}
			out.Schedule = append(out.Schedule, d)
		}
	}
	if raw.MaxAge != nil {
		d, err := parseDuration(*raw.MaxAge)
		if err != nil {
			v.Fields["retry.max_age"] = err.Error()
		} else if d <= 0 {
			v.Fields["retry.max_age"] = "must be positive"
		}
		out.MaxAge = d
	}
	if len(v.Fields) > 0 {
		return v
	}
	*r = out
	return nil
}

func parseDuration(raw json.RawMessage) (time.Duration, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf(`must be a duration string such as "5s" or "2h"`)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf(`must be a duration string such as "5s" or "2h", not %q`, s)
	}
	return d, nil
}

// CreateParams are the fields of a new subscription. Only URL is required;
// nil pointers take the defaults. The JSON tags are the API's request shape.
type CreateParams struct {
	URL         string            `json:"url"`
	Description string            `json:"description"`
	EventTypes  []string          `json:"event_types"`
	Streams     []string          `json:"streams"`
	Tenant      string            `json:"tenant"`
	Start       *StartSpec        `json:"start"`         // default now
	Retry       *RetryPolicy      `json:"retry"`         // default Config.DefaultRetry; zero fields take its values
	Ordered     *bool             `json:"ordered"`       // default false
	MaxInFlight *int              `json:"max_in_flight"` // default 16
	RateLimit   *float64          `json:"rate_limit"`    // default 0 (unlimited)
	Headers     map[string]string `json:"headers"`
}

// UpdateParams changes some fields of a subscription; nil = unchanged. An empty
// (non-nil) EventTypes or Streams means all; an empty Headers removes them all.
type UpdateParams struct {
	URL         *string            `json:"url"`
	Description *string            `json:"description"`
	EventTypes  *[]string          `json:"event_types"`
	Streams     *[]string          `json:"streams"`
	Retry       *RetryPolicy       `json:"retry"`
	Ordered     *bool              `json:"ordered"`
	MaxInFlight *int               `json:"max_in_flight"`
	RateLimit   *float64           `json:"rate_limit"`
	Headers     *map[string]string `json:"headers"`
}
