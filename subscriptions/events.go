package subscriptions

import (
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

// Stream is the internal stream holding every subscription event.
const Stream = eventstore.InternalStreamPrefix + "subscriptions"

// Event types of Stream. Each event's data carries the subscription "id" and
// the command's time "at" (the fold never reads RecordedAt, so a rebuild gives
// exactly the state the local fold gave).
const (
	TypeCreated       = "subscription.created"
	TypeUpdated       = "subscription.updated"
	TypePaused        = "subscription.paused"
	TypeResumed       = "subscription.resumed"
	TypeSecretRotated = "subscription.secret_rotated"
	TypeDisabled      = "subscription.disabled"
	TypeDeleted       = "subscription.deleted"
)

// createdData is the whole subscription as created.
type createdData struct {
	ID            string              `json:"id"`
	URL           string              `json:"url"`
	Description   string              `json:"description,omitempty"`
	EventTypes    []string            `json:"event_types,omitempty"`
	Streams       []string            `json:"streams,omitempty"`
	Tenant        string              `json:"tenant,omitempty"`
	Start         StartSpec           `json:"start"`
	StartPosition eventstore.Position `json:"start_position"`
	Retry         RetryPolicy         `json:"retry"`
	Ordered       bool                `json:"ordered"`
	MaxInFlight   int                 `json:"max_in_flight"`
	RateLimit     float64             `json:"rate_limit"`
	Headers       map[string]string   `json:"headers,omitempty"`
	Secret        string              `json:"secret"`
	At            time.Time           `json:"at"`
}

// updatedData carries only the fields that changed.
type updatedData struct {
	ID          string             `json:"id"`
	URL         *string            `json:"url,omitempty"`
	Description *string            `json:"description,omitempty"`
	EventTypes  *[]string          `json:"event_types,omitempty"`
	Streams     *[]string          `json:"streams,omitempty"`
	Retry       *RetryPolicy       `json:"retry,omitempty"`
	Ordered     *bool              `json:"ordered,omitempty"`
	MaxInFlight *int               `json:"max_in_flight,omitempty"`
	RateLimit   *float64           `json:"rate_limit,omitempty"`
	Headers     *map[string]string `json:"headers,omitempty"`
	At          time.Time          `json:"at"`
}

// stateData is paused, resumed, disabled (with a reason) and deleted.
type stateData struct {
	ID     string    `json:"id"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// rotatedData adds a new current secret; the previous current one expires at
// PreviousExpiresAt.
type rotatedData struct {
	ID                string    `json:"id"`
	Secret            string    `json:"secret"`
	PreviousExpiresAt time.Time `json:"previous_expires_at"`
	At                time.Time `json:"at"`
}

func proposed(typ string, data any) (eventstore.ProposedEvent, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return eventstore.ProposedEvent{}, err
	}
	return eventstore.ProposedEvent{Type: typ, Data: b}, nil
}

// model is the read model: every subscription not deleted, by id.
type model struct {
	subs map[string]*Subscription
}

// apply folds one event. Unknown types and undecodable data are skipped (and
// reported): a newer hooklog may write events this one does not know.
func (m *model) apply(e *eventstore.Event) error {
	var id struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(e.Data, &id); err != nil {
		return err
	}
	switch e.Type {
	case TypeCreated:
		var d createdData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		if _, exists := m.subs[d.ID]; exists {
			return nil
		}
		m.subs[d.ID] = &Subscription{
			ID: d.ID, URL: d.URL, Description: d.Description, EventTypes: d.EventTypes, Streams: d.Streams,
			Tenant: d.Tenant, Start: d.Start, StartPosition: d.StartPosition, Retry: d.Retry, Ordered: d.Ordered,
			MaxInFlight: d.MaxInFlight, RateLimit: d.RateLimit, Headers: d.Headers, State: StateActive,
			Secrets: []Secret{{Value: d.Secret}}, CreatedAt: d.At, UpdatedAt: d.At,
		}
		return nil
	}
	sub := m.subs[id.ID]
	if sub == nil {
		return nil // changes to a deleted subscription (a race between nodes)
	}
	switch e.Type {
	case TypeUpdated:
		var d updatedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		if d.URL != nil {
			sub.URL = *d.URL
		}
		if d.Description != nil {
			sub.Description = *d.Description
		}
		if d.EventTypes != nil {
			sub.EventTypes = slices.Clone(*d.EventTypes)
		}
		if d.Streams != nil {
			sub.Streams = slices.Clone(*d.Streams)
		}
		if d.Retry != nil {
			sub.Retry = *d.Retry
		}
		if d.Ordered != nil {
			sub.Ordered = *d.Ordered
		}
		if d.MaxInFlight != nil {
			sub.MaxInFlight = *d.MaxInFlight
		}
		if d.RateLimit != nil {
			sub.RateLimit = *d.RateLimit
		}
		if d.Headers != nil {
			sub.Headers = maps.Clone(*d.Headers)
		}
		sub.UpdatedAt = d.At
	case TypePaused, TypeResumed, TypeDisabled, TypeDeleted:
		var d stateData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		switch e.Type {
		case TypePaused:
			sub.State, sub.DisabledReason = StatePaused, ""
		case TypeResumed:
			sub.State, sub.DisabledReason = StateActive, ""
		case TypeDisabled:
			sub.State, sub.DisabledReason = StateDisabled, d.Reason
		case TypeDeleted:
			delete(m.subs, id.ID)
			return nil
		}
		sub.UpdatedAt = d.At
	case TypeSecretRotated:
		var d rotatedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		kept := []Secret{{Value: d.Secret}}
		for _, s := range sub.Secrets {
			switch {
			case s.ExpiresAt == nil:
				exp := d.PreviousExpiresAt
				s.ExpiresAt = &exp
			case !d.At.Before(*s.ExpiresAt):
				continue // expired before this rotation: drop it
			}
			kept = append(kept, s)
		}
		sub.Secrets = kept
		sub.UpdatedAt = d.At
	}
	return nil
}
