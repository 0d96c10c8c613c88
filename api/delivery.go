package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/projector"
)

// Projector is what the API needs of the projector: the delivery state of a
// subscription's route. *projector.Projector implements it; the methods work
// whether the projector is running or not.
type Projector interface {
	Status(ctx context.Context, subID string) (projector.RouteStatus, error)
	Deliveries(ctx context.Context, subID string, q projector.DeliveriesQuery) ([]projector.Attempt, error)
	Redrive(ctx context.Context, subID string) (int, error)
}

var _ Projector = (*projector.Projector)(nil)

func (s *Server) deliveryRoutes() {
	s.handle(http.MethodGet, "/v1/subscriptions/{id}/status", subscribers, s.subscriptionStatus)
	s.handle(http.MethodGet, "/v1/subscriptions/{id}/deliveries", subscribers, s.subscriptionDeliveries)
	s.handle(http.MethodPost, "/v1/subscriptions/{id}/redrive", subscribers, s.redriveSubscription)
}

// statusJSON is GET /v1/subscriptions/{id}/status.
type statusJSON struct {
	State         string  `json:"state"`  // active, paused or disabled
	Cursor        string  `json:"cursor"` // the route's lowest unsettled position, as GET /v1/events' cursors
	Lag           int     `json:"lag"`
	InFlight      int     `json:"in_flight"`
	Circuit       string  `json:"circuit"` // closed, open or half_open
	LastSuccessAt *string `json:"last_success_at"`
	FailingSince  *string `json:"failing_since"`
	DeadLetters   int     `json:"dead_letters"`
}

func (s *Server) subscriptionStatus(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.ownSubscription(r)
	if err != nil {
		return err
	}
	st, err := s.deps.Projector.Status(r.Context(), sub.ID)
	if err != nil {
		return fmt.Errorf("status of subscription %s: %w", sub.ID, err)
	}
	out := statusJSON{
		State: st.State, Cursor: st.Cursor.String(), Lag: st.Lag, InFlight: st.InFlight,
		Circuit: st.Circuit, DeadLetters: st.DeadLetters,
	}
	if st.LastSuccessAt != nil {
		out.LastSuccessAt = formatTimePtr(*st.LastSuccessAt)
	}
	if st.FailingSince != nil {
		out.FailingSince = formatTimePtr(*st.FailingSince)
	}
	return writeJSON(w, http.StatusOK, out)
}

// attemptJSON is one delivery attempt on the wire. status_code is null when
// no HTTP answer came (connection error, timeout); error is null after a 2xx;
// replay_id is null for live deliveries.
type attemptJSON struct {
	ID            string  `json:"id"`
	EventID       string  `json:"event_id"`
	Attempt       int     `json:"attempt"`
	Status        string  `json:"status"` // succeeded, failed or dead
	StatusCode    *int    `json:"status_code"`
	Error         *string `json:"error"`
	DurationMS    float64 `json:"duration_ms"`
	At            string  `json:"at"`
	NextAttemptAt *string `json:"next_attempt_at,omitempty"` // failed attempts that will be retried
	ReplayID      *string `json:"replay_id"`
}

type attemptList struct {
	Attempts []attemptJSON `json:"attempts"`
}

func toAttemptJSON(a projector.Attempt) attemptJSON {
	out := attemptJSON{
		ID: a.ID, EventID: a.EventID, Attempt: a.Attempt, Status: a.Status,
		DurationMS: a.DurationMS, At: formatTime(a.At),
	}
	if a.StatusCode != 0 {
		c := a.StatusCode
		out.StatusCode = &c
	}
	if a.Error != "" {
		e := a.Error
		out.Error = &e
	}
	if a.NextAttemptAt != nil {
		out.NextAttemptAt = formatTimePtr(*a.NextAttemptAt)
	}
	if a.ReplayID != "" {
		id := a.ReplayID
		out.ReplayID = &id
	}
	return out
}

// subscriptionDeliveries is GET /v1/subscriptions/{id}/deliveries
// ?status=succeeded|failed|dead&event_id=&limit=: attempts, newest first.
func (s *Server) subscriptionDeliveries(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var dq projector.DeliveriesQuery
	switch st := q.Get("status"); st {
	case "", projector.StatusSucceeded, projector.StatusFailed, projector.StatusDead:
		dq.Status = st
	default:
		return badRequest("status", "must be succeeded, failed or dead")
	}
	if id := q.Get("event_id"); id != "" {
		u, err := uuid.Parse(id)
		if err != nil {
			return badRequest("event_id", "must be an event id (a UUID)")
		}
		dq.EventID = u.String()
	}
	var err error
	if dq.Limit, err = parseLimit(q.Get("limit")); err != nil {
		return err
	}
	sub, err := s.ownSubscription(r)
	if err != nil {
		return err
	}
	attempts, err := s.deps.Projector.Deliveries(r.Context(), sub.ID, dq)
	if err != nil {
		return fmt.Errorf("deliveries of subscription %s: %w", sub.ID, err)
	}
	out := attemptList{Attempts: make([]attemptJSON, len(attempts))}
	for i, a := range attempts {
		out.Attempts[i] = toAttemptJSON(a)
	}
	return writeJSON(w, http.StatusOK, out)
}

// redriveJSON answers POST /v1/subscriptions/{id}/redrive.
type redriveJSON struct {
	Requeued int `json:"requeued"`
}

// redriveSubscription moves the subscription's dead letters back to its
// retry queue, due now; it answers how many it moved.
func (s *Server) redriveSubscription(w http.ResponseWriter, r *http.Request) error {
	if err := decodeEmptyBody(r); err != nil {
		return err
	}
	sub, err := s.ownSubscription(r)
	if err != nil {
		return err
	}
	n, err := s.deps.Projector.Redrive(r.Context(), sub.ID)
	if err != nil {
		return fmt.Errorf("redrive subscription %s: %w", sub.ID, err)
	}
	return writeJSON(w, http.StatusOK, redriveJSON{Requeued: n})
}
