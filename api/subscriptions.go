package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hooklog/hooklog/subscriptions"
)

func (s *Server) subscriptionRoutes() {
	s.handle(http.MethodPost, "/v1/subscriptions", subscribers, s.createSubscription)
	s.handle(http.MethodGet, "/v1/subscriptions", subscribers, s.listSubscriptions)
	s.handle(http.MethodGet, "/v1/subscriptions/{id}", subscribers, s.getSubscription)
	s.handle(http.MethodPatch, "/v1/subscriptions/{id}", subscribers, s.updateSubscription)
	s.handle(http.MethodDelete, "/v1/subscriptions/{id}", subscribers, s.deleteSubscription)
	s.handle(http.MethodPost, "/v1/subscriptions/{id}/pause", subscribers, s.subscriptionCommand(s.deps.Subscriptions.Pause, false))
	s.handle(http.MethodPost, "/v1/subscriptions/{id}/resume", subscribers, s.subscriptionCommand(s.deps.Subscriptions.Resume, false))
	s.handle(http.MethodPost, "/v1/subscriptions/{id}/rotate-secret", subscribers, s.subscriptionCommand(s.deps.Subscriptions.RotateSecret, true))

	s.deliveryRoutes()
}

// subscriptionJSON is a subscription on the wire. Secret is set only in the
// answers to create and rotate-secret.
type subscriptionJSON struct {
	ID             string                    `json:"id"`
	URL            string                    `json:"url"`
	Description    string                    `json:"description"`
	EventTypes     []string                  `json:"event_types"`
	Streams        []string                  `json:"streams"`
	Tenant         *string                   `json:"tenant"` // null: every tenant's events and those without one
	Start          subscriptions.StartSpec   `json:"start"`
	StartPosition  string                    `json:"start_position"`
	Retry          subscriptions.RetryPolicy `json:"retry"`
	Ordered        bool                      `json:"ordered"`
	MaxInFlight    int                       `json:"max_in_flight"`
	RateLimit      float64                   `json:"rate_limit"`
	Headers        map[string]string         `json:"headers"`
	State          string                    `json:"state"`
	DisabledReason string                    `json:"disabled_reason,omitempty"`
	CreatedAt      string                    `json:"created_at"`
	UpdatedAt      string                    `json:"updated_at"`
	Secret         string                    `json:"secret,omitempty"`
}

func toSubscriptionJSON(sub subscriptions.Subscription, withSecret bool) subscriptionJSON {
	out := subscriptionJSON{
		ID: sub.ID, URL: sub.URL, Description: sub.Description,
		EventTypes: sub.EventTypes, Streams: sub.Streams,
		Start: sub.Start, StartPosition: sub.StartPosition.String(), Retry: sub.Retry,
		Ordered: sub.Ordered, MaxInFlight: sub.MaxInFlight, RateLimit: sub.RateLimit,
		Headers: sub.Headers, State: sub.State, DisabledReason: sub.DisabledReason,
		CreatedAt: formatTime(sub.CreatedAt), UpdatedAt: formatTime(sub.UpdatedAt),
	}
	if out.EventTypes == nil {
		out.EventTypes = []string{}
	}
	if out.Streams == nil {
		out.Streams = []string{}
	}
	if out.Headers == nil {
		out.Headers = map[string]string{}
	}
	if sub.Tenant != "" {
		t := sub.Tenant
		out.Tenant = &t
	}
	if withSecret {
		out.Secret = sub.Secret()
	}
	return out
}

type subscriptionList struct {
	Subscriptions []subscriptionJSON `json:"subscriptions"`
}

// createSubscription is POST /v1/subscriptions. A tenant key's subscription
// is its own tenant's: naming another tenant is a 400 on "tenant".
func (s *Server) createSubscription(w http.ResponseWriter, r *http.Request) error {
	var p subscriptions.CreateParams
	if err := decodeJSON(r, &p); err != nil {
		return err
	}
	if tenant, scoped := principalFrom(r.Context()).tenantScope(); scoped {
		if p.Tenant != "" && p.Tenant != tenant {
			return badRequest("tenant", "a tenant key creates subscriptions for its own tenant (%q) only", tenant)
		}
		p.Tenant = tenant
	}
	sub, err := s.deps.Subscriptions.Create(r.Context(), p)
	if err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	return writeJSON(w, http.StatusCreated, toSubscriptionJSON(sub, true))
}

// listSubscriptions is GET /v1/subscriptions: a tenant key sees its own; an
// admin sees all, or one tenant's with ?tenant=.
func (s *Server) listSubscriptions(w http.ResponseWriter, r *http.Request) error {
	var filter *string
	if tenant, scoped := principalFrom(r.Context()).tenantScope(); scoped {
		filter = &tenant
	} else if q := r.URL.Query(); q.Has("tenant") {
		t := q.Get("tenant")
		filter = &t
	}
	subs := s.deps.Subscriptions.List(r.Context(), filter)
	out := subscriptionList{Subscriptions: make([]subscriptionJSON, len(subs))}
	for i, sub := range subs {
		out.Subscriptions[i] = toSubscriptionJSON(sub, false)
	}
	return writeJSON(w, http.StatusOK, out)
}

// ownSubscription loads the subscription named in the path, as the caller may
// see it: another tenant's subscription is ErrNotFound, like an unknown id.
func (s *Server) ownSubscription(r *http.Request) (subscriptions.Subscription, error) {
	id := mux.Vars(r)["id"]
	sub, err := s.deps.Subscriptions.Get(r.Context(), id)
	if err != nil {
		return sub, fmt.Errorf("subscription %q: %w", id, err)
	}
	if tenant, scoped := principalFrom(r.Context()).tenantScope(); scoped && sub.Tenant != tenant {
		return subscriptions.Subscription{}, fmt.Errorf("subscription %q: %w", id, subscriptions.ErrNotFound)
	}
	return sub, nil
}

func (s *Server) getSubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.ownSubscription(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toSubscriptionJSON(sub, false))
}

// updateSubscription is PATCH /v1/subscriptions/{id}: only the fields present
// change. The tenant of a subscription cannot change (an unknown field).
func (s *Server) updateSubscription(w http.ResponseWriter, r *http.Request) error {
	var p subscriptions.UpdateParams
	if err := decodeJSON(r, &p); err != nil {
		return err
	}
	sub, err := s.ownSubscription(r)
	if err != nil {
		return err
	}
	id := sub.ID
	if sub, err = s.deps.Subscriptions.Update(r.Context(), id, p); err != nil {
		return fmt.Errorf("update subscription %s: %w", id, err)
	}
	return writeJSON(w, http.StatusOK, toSubscriptionJSON(sub, false))
}

func (s *Server) deleteSubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.ownSubscription(r)
	if err != nil {
		return err
	}
	if err := s.deps.Subscriptions.Delete(r.Context(), sub.ID); err != nil {
		return fmt.Errorf("delete subscription %s: %w", sub.ID, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// subscriptionCommand serves the body-less POST commands (pause, resume,
// rotate-secret). A body, if any, must be empty or an empty JSON object.
func (s *Server) subscriptionCommand(cmd func(context.Context, string) (subscriptions.Subscription, error), withSecret bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := decodeEmptyBody(r); err != nil {
			return err
		}
		sub, err := s.ownSubscription(r)
		if err != nil {
			return err
		}
		id := sub.ID
		if sub, err = cmd(r.Context(), id); err != nil {
			return fmt.Errorf("subscription %s: %w", id, err)
		}
		return writeJSON(w, http.StatusOK, toSubscriptionJSON(sub, withSecret))
	}
}

// decodeEmptyBody accepts no body or {} for commands that take no input.
func decodeEmptyBody(r *http.Request) error {
	var v struct{}
	if err := decodeJSON(r, &v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
