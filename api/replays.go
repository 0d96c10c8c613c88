package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/replays"
)

// Replayer is what the replay routes need: *projector.Projector, which runs
// the replays, implements it. Deps.Projector is used when it implements
// Replayer; otherwise the replay routes answer 503.
type Replayer interface {
	CreateReplay(ctx context.Context, p projector.ReplayParams) (replays.Replay, error)
	Replays(ctx context.Context, tenant *string) []replays.Replay
	Replay(ctx context.Context, id string) (replays.Replay, error)
	CancelReplay(ctx context.Context, id string) (replays.Replay, error)
}

var _ Replayer = (*projector.Projector)(nil)

func (s *Server) replayRoutes() {
	s.handle(http.MethodPost, "/v1/replays", subscribers, s.createReplay)
	s.handle(http.MethodGet, "/v1/replays", subscribers, s.listReplays)
	s.handle(http.MethodGet, "/v1/replays/{id}", subscribers, s.getReplay)
	s.handle(http.MethodPost, "/v1/replays/{id}/cancel", subscribers, s.cancelReplay)
}

var errNoReplays = &httpError{status: http.StatusServiceUnavailable, slug: "unavailable", detail: "replays are not available on this server"}

func (s *Server) replayer() (Replayer, error) {
	if r, ok := s.deps.Projector.(Replayer); ok {
		return r, nil
	}
	return nil, errNoReplays
}

// replayJSON is a replay job on the wire. total is counted when the replay
// is requested, or estimated (total_estimated) for a window too large to
// count at once, and then set to the real number when it completes.
type replayJSON struct {
	ID             string   `json:"id"`
	Status         string   `json:"status"` // running, completed, cancelled or failed
	Subscriptions  []string `json:"subscriptions"`
	All            bool     `json:"all"`
	Tenant         *string  `json:"tenant"`
	From           string   `json:"from"`
	To             string   `json:"to"`
	EventTypes     []string `json:"event_types"`
	Total          int64    `json:"total"`
	TotalEstimated bool     `json:"total_estimated"`
	Delivered      int64    `json:"delivered"`
	Failed         int64    `json:"failed"`
	Error          *string  `json:"error"` // why a failed replay could not run
	CreatedAt      string   `json:"created_at"`
	UpdatedAt      string   `json:"updated_at"`
	FinishedAt     *string  `json:"finished_at"`
}

type replayList struct {
	Replays []replayJSON `json:"replays"`
}

func toReplayJSON(r replays.Replay) replayJSON {
	out := replayJSON{
		ID: r.ID, Status: r.Status, Subscriptions: r.Subscriptions, All: r.All,
		From: formatTime(r.From), To: formatTime(r.To), EventTypes: r.EventTypes,
		Total: r.Total, TotalEstimated: r.TotalEstimated, Delivered: r.Delivered, Failed: r.Failed,
		CreatedAt: formatTime(r.CreatedAt), UpdatedAt: formatTime(r.UpdatedAt), FinishedAt: formatTimePtr(r.FinishedAt),
	}
	if out.Subscriptions == nil {
		out.Subscriptions = []string{}
	}
	if out.EventTypes == nil {
		out.EventTypes = []string{}
	}
	if r.Tenant != "" {
		t := r.Tenant
		out.Tenant = &t
	}
	if r.Error != "" {
		e := r.Error
		out.Error = &e
	}
	return out
}

// replayRequest is POST /v1/replays.
type replayRequest struct {
	Subscriptions json.RawMessage `json:"subscriptions"` // ["<id>", ...] or "all"
	From          string          `json:"from"`
	To            string          `json:"to"`
	EventTypes    []string        `json:"event_types"`
}

// createReplay is POST /v1/replays: 202 with the running replay. A tenant
// key replays its own subscriptions only ("all" = its own active ones);
// another tenant's subscription is unknown, like an id that does not exist.
func (s *Server) createReplay(w http.ResponseWriter, r *http.Request) error {
	rp, err := s.replayer()
	if err != nil {
		return err
	}
	var req replayRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	var p projector.ReplayParams
	switch raw := bytes.TrimSpace(req.Subscriptions); {
	case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
		return badRequest("subscriptions", `is required: a list of subscription ids, or "all"`)
	case raw[0] == '"':
		var all string
		if err := json.Unmarshal(raw, &all); err != nil || all != "all" {
			return badRequest("subscriptions", `must be a list of subscription ids, or "all"`)
		}
		p.All = true
	default:
		if err := json.Unmarshal(raw, &p.Subscriptions); err != nil {
			return badRequest("subscriptions", `must be a list of subscription ids, or "all"`)
		}
	}
	if p.From, err = parseReplayTime("from", req.From); err != nil {
		return err
	}
	if p.To, err = parseReplayTime("to", req.To); err != nil {
		return err
	}
	p.EventTypes = req.EventTypes
	pr := principalFrom(r.Context())
	if tenant, scoped := pr.tenantScope(); scoped {
		p.Tenant = &tenant
	}
	p.RequestedBy = pr.KeyID
	rep, err := rp.CreateReplay(r.Context(), p)
	if err != nil {
		return fmt.Errorf("create replay: %w", err)
	}
	return writeJSON(w, http.StatusAccepted, toReplayJSON(rep))
}

func parseReplayTime(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, badRequest(field, "is required (an RFC 3339 time)")
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest(field, "must be an RFC 3339 time with an offset, e.g. 2026-11-01T00:00:00Z")
	}
	return t, nil
}

// listReplays is GET /v1/replays, newest first: a tenant key sees its own
// tenant's; an admin sees all, or one tenant's with ?tenant=.
func (s *Server) listReplays(w http.ResponseWriter, r *http.Request) error {
	rp, err := s.replayer()
	if err != nil {
		return err
	}
	var filter *string
	if tenant, scoped := principalFrom(r.Context()).tenantScope(); scoped {
		filter = &tenant
	} else if q := r.URL.Query(); q.Has("tenant") {
		t := q.Get("tenant")
		filter = &t
	}
	list := rp.Replays(r.Context(), filter)
	out := replayList{Replays: make([]replayJSON, len(list))}
	for i, rep := range list {
		out.Replays[i] = toReplayJSON(rep)
	}
	return writeJSON(w, http.StatusOK, out)
}

// ownReplay loads the replay named in the path as the caller may see it:
// another tenant's replay is not found, like an unknown id.
func (s *Server) ownReplay(r *http.Request, rp Replayer) (replays.Replay, error) {
	id := mux.Vars(r)["id"]
	rep, err := rp.Replay(r.Context(), id)
	if err != nil {
		return rep, fmt.Errorf("replay %q: %w", id, err)
	}
	if tenant, scoped := principalFrom(r.Context()).tenantScope(); scoped && rep.Tenant != tenant {
		return replays.Replay{}, fmt.Errorf("replay %q: %w", id, replays.ErrNotFound)
	}
	return rep, nil
}

func (s *Server) getReplay(w http.ResponseWriter, r *http.Request) error {
	rp, err := s.replayer()
	if err != nil {
		return err
	}
	rep, err := s.ownReplay(r, rp)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toReplayJSON(rep))
}

// cancelReplay is POST /v1/replays/{id}/cancel: 200 with the cancelled
// replay (also when it was cancelled already); 409 when it has completed or
// failed.
func (s *Server) cancelReplay(w http.ResponseWriter, r *http.Request) error {
	rp, err := s.replayer()
	if err != nil {
		return err
	}
	if err := decodeEmptyBody(r); err != nil {
		return err
	}
	rep, err := s.ownReplay(r, rp)
	if err != nil {
		return err
	}
	rep, err = rp.CancelReplay(r.Context(), rep.ID)
	if errors.Is(err, replays.ErrFinished) {
		return &httpError{status: http.StatusConflict, slug: "replay-finished", detail: "the replay has finished; only a running replay can be cancelled", cause: err}
	}
	if err != nil {
		return fmt.Errorf("cancel replay: %w", err)
	}
	return writeJSON(w, http.StatusOK, toReplayJSON(rep))
}
