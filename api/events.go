package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/hooklog/hooklog/eventstore"
)

// eventJSON is an event as API.md shows it.
type eventJSON struct {
	ID         string          `json:"id"`
	Stream     string          `json:"stream"`
	Type       string          `json:"type"`
	Tenant     *string         `json:"tenant"` // null when the event has none
	Data       json.RawMessage `json:"data"`
	Metadata   json.RawMessage `json:"metadata"` // {} when the event has none
	Position   string          `json:"position"`
	Version    int64           `json:"version"`
	RecordedAt string          `json:"recorded_at"`
}

var emptyObject = json.RawMessage(`{}`)

func toEventJSON(e *eventstore.Event) eventJSON {
	out := eventJSON{
		ID:         e.ID.String(),
		Stream:     e.Stream,
		Type:       e.Type,
		Data:       e.Data,
		Metadata:   e.Metadata,
		Position:   e.Position.String(),
		Version:    e.Version,
		RecordedAt: formatTime(e.RecordedAt),
	}
	if e.Tenant != "" {
		t := e.Tenant
		out.Tenant = &t
	}
	if len(out.Metadata) == 0 || string(out.Metadata) == "null" {
		out.Metadata = emptyObject
	}
	if len(out.Data) == 0 {
		out.Data = emptyObject
	}
	return out
}

func toEventsJSON(events []eventstore.Event) []eventJSON {
	out := make([]eventJSON, len(events))
	for i := range events {
		out[i] = toEventJSON(&events[i])
	}
	return out
}

// appendRequest is the body of POST /v1/streams/{stream}/events.
type appendRequest struct {
	// ExpectedVersion is decoded by hand so a bad value is a field error.
	ExpectedVersion json.RawMessage     `json:"expected_version"`
	Events          []appendEventFields `json:"events"`
}

type appendEventFields struct {
	ID       *string         `json:"id"`
	Type     string          `json:"type"`
	Tenant   *string         `json:"tenant"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata"`
}

type appendResponse struct {
	Events []appendedJSON `json:"events"`
}

type appendedJSON struct {
	ID       string `json:"id"`
	Position string `json:"position"`
	Version  int64  `json:"version"`
}

// appendParams turns a decoded request into AppendParams, checking what only
// the HTTP layer knows (reserved streams, id spelling, expected_version). When
// it finds a problem it adds the store's own validation, so every problem is
// reported at once in one *eventstore.ValidationError.
func appendParams(stream string, req *appendRequest) (eventstore.AppendParams, error) {
	fields := map[string]string{}
	p := eventstore.AppendParams{Stream: stream, Expected: eventstore.Any}
	if eventstore.IsInternalStream(stream) {
		fields["stream"] = fmt.Sprintf("streams starting with %q are reserved for hooklog itself", eventstore.InternalStreamPrefix)
	}
	if raw := strings.TrimSpace(string(req.ExpectedVersion)); raw != "" && raw != "null" {
		if err := json.Unmarshal(req.ExpectedVersion, &p.Expected); err != nil {
			fields["expected_version"] = `must be "any", "no_stream", "exists" or a non-negative integer`
		}
	}
	p.Events = make([]eventstore.ProposedEvent, len(req.Events))
	for i, e := range req.Events {
		pe := eventstore.ProposedEvent{Type: e.Type, Data: e.Data, Metadata: e.Metadata}
		if e.ID != nil {
			id, err := parseUUID(*e.ID)
			switch {
			case err != nil:
				fields[fmt.Sprintf("events[%d].id", i)] = "must be a UUID like 0190a3a4-7d2c-7b8e-9a63-5c1f1d2e3f40"
			case id == uuid.Nil:
				fields[fmt.Sprintf("events[%d].id", i)] = "must not be the nil UUID; omit it to have one generated"
			default:
				pe.ID = id
			}
		}
		if e.Tenant != nil {
			pe.Tenant = *e.Tenant
			if pe.Tenant == "" {
				fields[fmt.Sprintf("events[%d].tenant", i)] = "must not be empty; use null or omit it for no tenant"
			}
		}
		p.Events[i] = pe
	}
	if len(fields) == 0 {
		// The store validates the rest (Store.Append calls Validate) and
		// answers with a *ValidationError; validating here as well would scan
		// every event's data twice on the hot path.
		return p, nil
	}
	// Report the store's findings together with ours, in one 400.
	if err := p.Validate(); err != nil {
		var ve *eventstore.ValidationError
		if !errors.As(err, &ve) {
			return p, err
		}
		for k, v := range ve.Fields {
			if _, ok := fields[k]; !ok {
				fields[k] = v
			}
		}
	}
	return p, &eventstore.ValidationError{Fields: fields}
}

// parseUUID accepts only the canonical 36-character form, so one id has one
// spelling in requests.
func parseUUID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, errors.New("not a canonical UUID")
	}
	return uuid.Parse(s)
}

// appendEvents is POST /v1/streams/{stream}/events.
func (s *Server) appendEvents(w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if err != nil {
			s.m.appendRequests.WithLabelValues("rejected").Inc()
		}
	}()
	var req appendRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p, err := appendParams(mux.Vars(r)["stream"], &req)
	if err != nil {
		return err
	}
	res, err := s.store.Append(r.Context(), p)
	if err != nil {
		return fmt.Errorf("append to %q: %w", p.Stream, err)
	}
	out := appendResponse{Events: make([]appendedJSON, len(res.Events))}
	for i, e := range res.Events {
		out.Events[i] = appendedJSON{ID: e.ID.String(), Position: e.Position.String(), Version: e.Version}
	}
	status := http.StatusCreated
	if res.Duplicate {
		status = http.StatusOK
		s.m.appendRequests.WithLabelValues("duplicate").Inc()
	} else {
		s.m.appendRequests.WithLabelValues("created").Inc()
		s.m.appendedEvents.Add(float64(len(res.Events)))
	}
	return writeJSON(w, status, out)
}

// pullQuery is the parsed query of GET /v1/events.
type pullQuery struct {
	after        eventstore.Position
	afterNow     bool
	limit        int
	filter       eventstore.Filter
	wait         time.Duration
	showInternal bool // admin asked for hooklog-* streams explicitly
}

// internalPatterns returns the stream patterns that name internal streams.
func internalPatterns(patterns []string) []string {
	var out []string
	for _, p := range patterns {
		if strings.HasPrefix(p, eventstore.InternalStreamPrefix) {
			out = append(out, p)
		}
	}
	return out
}

func parsePatterns(name, raw string) ([]string, error) {
	if raw == "" {
		return nil, nil
	}
	var out []string
	for _, p := range strings.Split(raw, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !eventstore.ValidPattern(p) {
			return nil, badRequest(name, "%q is not a name or a prefix with one trailing *", p)
		}
		out = append(out, p)
	}
	if len(out) > 100 {
		return nil, badRequest(name, "at most 100 patterns")
	}
	return out, nil
}

// parseLimit reads a 1..maxPageLimit page size, defaulting to defaultPageLimit.
func parseLimit(raw string) (int, error) {
	if raw == "" {
		return defaultPageLimit, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > maxPageLimit {
		return 0, badRequest("limit", "must be an integer from 1 to %d", maxPageLimit)
	}
	return n, nil
}

func (s *Server) parsePull(r *http.Request, who principal) (pullQuery, error) {
	q := r.URL.Query()
	var pq pullQuery
	var err error
	switch after := q.Get("after"); after {
	case "now":
		pq.afterNow = true
	default:
		if pq.after, err = eventstore.ParsePosition(after); err != nil {
			return pq, badRequest("after", `must be a cursor returned by this API, "now", or empty`)
		}
	}
	if pq.limit, err = parseLimit(q.Get("limit")); err != nil {
		return pq, err
	}
	if pq.filter.Types, err = parsePatterns("types", q.Get("types")); err != nil {
		return pq, err
	}
	if pq.filter.Streams, err = parsePatterns("streams", q.Get("streams")); err != nil {
		return pq, err
	}
	if raw := q.Get("wait"); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d < 0 {
			return pq, badRequest("wait", `must be a non-negative Go duration like "30s"`)
		}
		pq.wait = min(d, s.cfg.MaxWait)
	}
	if len(internalPatterns(pq.filter.Streams)) > 0 {
		if !who.isAdmin() {
			return pq, forbidden("streams starting with %q are readable by admin keys only", eventstore.InternalStreamPrefix)
		}
		pq.showInternal = true
	}
	if tenant, scoped := who.tenantScope(); scoped {
		pq.filter.Tenant = &tenant
	}
	return pq, nil
}

// visible reports whether the pull API may return e: internal events only to
// an admin that named internal streams explicitly.
func (pq *pullQuery) visible(e *eventstore.Event) bool {
	if !eventstore.IsInternalStream(e.Stream) {
		return true
	}
	return pq.showInternal && eventstore.MatchAny(internalPatterns(pq.filter.Streams), e.Stream)
}

type pullResponse struct {
	Events []eventJSON `json:"events"`
	Next   string      `json:"next"`
}

// pullEvents is GET /v1/events, the pull API with long-poll.
func (s *Server) pullEvents(w http.ResponseWriter, r *http.Request) error {
	pq, err := s.parsePull(r, principalFrom(r.Context()))
	if err != nil {
		return err
	}
	ctx := r.Context()
	if pq.afterNow {
		if pq.after, err = s.store.Head(ctx); err != nil {
			return fmt.Errorf("pull: head: %w", err)
		}
	}
	events, next, err := s.pull(ctx, &pq)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, pullResponse{Events: toEventsJSON(events), Next: next.String()})
}

// pull reads the first page of visible events after pq.after. With a wait it
// keeps scanning while the cursor moves over non-matching events, and sleeps
// on the store's shared notification (Store.Wait) when it reaches the head,
// until an event matches or the wait ends.
func (s *Server) pull(ctx context.Context, pq *pullQuery) ([]eventstore.Event, eventstore.Position, error) {
	after := pq.after
	var deadline time.Time
	if pq.wait > 0 {
		deadline = time.Now().Add(pq.wait)
	}
	waiting := false
	defer func() {
		if waiting {
			s.m.inflightPolls.Dec()
		}
	}()
	for {
		res, err := s.store.ReadAll(ctx, eventstore.ReadParams{After: after, Filter: pq.filter, Limit: pq.limit, MaxScan: eventstore.DefaultMaxScan})
		if err != nil {
			return nil, after, fmt.Errorf("pull: read: %w", err)
		}
		events := res.Events[:0]
		for i := range res.Events {
			if pq.visible(&res.Events[i]) {
				events = append(events, res.Events[i])
			}
		}
		moved := after.Less(res.Next)
		if moved {
			after = res.Next
		}
		if len(events) > 0 || deadline.IsZero() || !time.Now().Before(deadline) {
			return events, after, nil
		}
		if moved {
			continue // skipped non-matching events; the head may be further on
		}
		if !waiting {
			waiting = true
			s.m.inflightPolls.Inc()
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		err = s.store.Wait(wctx, after)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, after, ctx.Err() // the client went away
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, after, nil // the wait ended: empty page, cursor advanced
			}
			return nil, after, fmt.Errorf("pull: wait: %w", err)
		}
	}
}

// getEvent is GET /v1/events/{id}.
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) error {
	id, err := uuid.Parse(mux.Vars(r)["id"])
	if err != nil {
		return errNotFound // an unknown id of any shape is 404
	}
	e, err := s.store.Event(r.Context(), id)
	if err != nil {
		return fmt.Errorf("event %s: %w", id, err)
	}
	who := principalFrom(r.Context())
	if eventstore.IsInternalStream(e.Stream) && !who.isAdmin() {
		return errNotFound
	}
	if tenant, scoped := who.tenantScope(); scoped && e.Tenant != tenant {
		return errNotFound // no existence leak across tenants
	}
	return writeJSON(w, http.StatusOK, toEventJSON(&e))
}

type streamResponse struct {
	Events []eventJSON `json:"events"`
	// NextFromVersion is the from_version of the next page: one past the last
	// event examined (for tenant keys, events of other tenants are examined
	// but not returned), or the requested from_version when there were none.
	NextFromVersion int64 `json:"next_from_version"`
}

// readStream is GET /v1/streams/{stream}/events.
func (s *Server) readStream(w http.ResponseWriter, r *http.Request) error {
	stream := mux.Vars(r)["stream"]
	if !eventstore.ValidStream(stream) {
		return badRequest("stream", "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
	}
	who := principalFrom(r.Context())
	if eventstore.IsInternalStream(stream) && !who.isAdmin() {
		return forbidden("streams starting with %q are readable by admin keys only", eventstore.InternalStreamPrefix)
	}
	q := r.URL.Query()
	var from int64
	if raw := q.Get("from_version"); raw != "" {
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n < 0 {
			return badRequest("from_version", "must be a non-negative integer")
		}
		from = n
	}
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	events, err := s.store.ReadStream(r.Context(), eventstore.ReadStreamParams{Stream: stream, FromVersion: from, Limit: limit})
	if err != nil {
		return fmt.Errorf("read stream %q: %w", stream, err)
	}
	next := from
	if n := len(events); n > 0 {
		next = events[n-1].Version + 1
	}
	if tenant, scoped := who.tenantScope(); scoped {
		kept := events[:0]
		for _, e := range events {
			if e.Tenant == tenant {
				kept = append(kept, e)
			}
		}
		events = kept
	}
	return writeJSON(w, http.StatusOK, streamResponse{Events: toEventsJSON(events), NextFromVersion: next})
}
