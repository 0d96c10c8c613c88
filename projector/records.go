package projector

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// DeliveriesStream is the internal stream holding every delivery attempt, as
// "delivery.attempts" events of AttemptsData (one event per batcher flush).
const DeliveriesStream = eventstore.InternalStreamPrefix + "deliveries"

// TypeAttempts is the type of the events of DeliveriesStream.
const TypeAttempts = "delivery.attempts"

// AttemptsData is the data of a delivery.attempts event: the attempts of one
// batcher flush, grouped by subscription, in the order they were made.
type AttemptsData struct {
	Routes []RouteAttempts `json:"routes"`
}

// RouteAttempts are one subscription's attempts in a delivery.attempts event.
type RouteAttempts struct {
	SubscriptionID string    `json:"subscription_id"`
	Attempts       []Attempt `json:"attempts"`
}

// Attempt statuses.
const (
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed" // retried later (or the endpoint answered 410)
	StatusDead      = "dead"   // the last attempt: the pair was dead-lettered
)

// Attempt is one delivery attempt as served by Deliveries (GET
// /v1/subscriptions/{id}/deliveries). The log and the attempts index store
// the same fields, leaving out the empty error, replay_id and next_attempt_at.
type Attempt struct {
	ID            string     `json:"id"`
	EventID       string     `json:"event_id"`
	Attempt       int        `json:"attempt"` // 1-based, per (event, subscription)
	Status        string     `json:"status"`  // succeeded, failed or dead
	StatusCode    int        `json:"status_code"`
	Error         string     `json:"error"`
	DurationMS    float64    `json:"duration_ms"`
	At            time.Time  `json:"at"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"` // failed attempts that will be retried
	ReplayID      string     `json:"replay_id"`                 // "" for live deliveries
}

// State buckets. Every key starts with the 16 bytes of the subscription id,
// so deleting a subscription's state is one DeletePrefix per bucket.
const (
	// bucketRoutes: sub → checkpoint JSON.
	bucketRoutes = "projector.routes"
	// bucketRetries: sub | due (unix ns, 8 bytes BE) | position (16) → retryEntry JSON.
	bucketRetries = "projector.retries"
	// bucketDead: sub | position (16) → deadEntry JSON.
	bucketDead = "projector.dead"
	// bucketAttempts: sub | at (unix ns) | attempt id (16) → Attempt JSON.
	bucketAttempts = "projector.attempts"
	// bucketAttemptsByEvent: sub | event id (16) | at | attempt id → empty.
	bucketAttemptsByEvent = "projector.attempts_by_event"
	// bucketAttemptsByStatus: sub | status byte | at | attempt id → empty,
	// for failed and dead attempts only (succeeded ones are most of the
	// index; a succeeded filter scans it directly).
	bucketAttemptsByStatus = "projector.attempts_by_status"
)

var subBuckets = []string{bucketRoutes, bucketRetries, bucketDead, bucketAttempts, bucketAttemptsByEvent, bucketAttemptsByStatus}

// StateBuckets lists the eventstore.StateStore buckets the projector keeps
// its derived state in. Every key in them starts with the 16 bytes of a
// subscription id.
func StateBuckets() []string { return slices.Clone(subBuckets) }

// checkpoint is a route's persisted progress.
type checkpoint struct {
	Cursor        eventstore.Position `json:"cursor"`
	LastSuccessAt *time.Time          `json:"last_success_at,omitempty"`
	FailingSince  *time.Time          `json:"failing_since,omitempty"`
}

// retryEntry is one (event, subscription) pair waiting for its next attempt.
type retryEntry struct {
	EventID  uuid.UUID           `json:"event_id"`
	Position eventstore.Position `json:"position"`
	Attempts int                 `json:"attempts"` // attempts made so far
	// Base is the number of attempts made before the current schedule run
	// started (a redrive starts a new run): the schedule index is Attempts-Base.
	Base    int       `json:"base"`
	FirstAt time.Time `json:"first_at"` // first attempt of the current run
	Due     time.Time `json:"due"`
}

// deadEntry is a dead-lettered pair.
type deadEntry struct {
	EventID   uuid.UUID           `json:"event_id"`
	Position  eventstore.Position `json:"position"`
	Attempts  int                 `json:"attempts"`
	LastError string              `json:"last_error"`
	DeadAt    time.Time           `json:"dead_at"`
}

func subKey(id string) ([]byte, bool) {
	u, err := uuid.Parse(id)
	if err != nil {
		return nil, false
	}
	return u[:], true
}

func putPos(b []byte, p eventstore.Position) []byte {
	b = binary.BigEndian.AppendUint64(b, p.Hi)
	return binary.BigEndian.AppendUint64(b, p.Lo)
}

func getPos(b []byte) eventstore.Position {
	return eventstore.Position{Hi: binary.BigEndian.Uint64(b[:8]), Lo: binary.BigEndian.Uint64(b[8:16])}
}

func putTime(b []byte, t time.Time) []byte {
	ns := t.UnixNano()
	if ns < 0 {
		ns = 0
	}
	return binary.BigEndian.AppendUint64(b, uint64(ns))
}

func retryKey(sub []byte, due time.Time, pos eventstore.Position) []byte {
	b := make([]byte, 0, 40)
	b = append(b, sub...)
	b = putTime(b, due)
	return putPos(b, pos)
}

func deadKey(sub []byte, pos eventstore.Position) []byte {
	return putPos(append(make([]byte, 0, 32), sub...), pos)
}

// attemptKeys returns the keys of a in the three attempt buckets (status nil
// for succeeded attempts).
func attemptKeys(sub []byte, a *Attempt) (main, byEvent, byStatus []byte) {
	id, _ := uuid.Parse(a.ID)
	ev, _ := uuid.Parse(a.EventID)
	tail := putTime(make([]byte, 0, 24), a.At)
	tail = append(tail, id[:]...)
	main = append(append(make([]byte, 0, 40), sub...), tail...)
	byEvent = append(append(append(make([]byte, 0, 56), sub...), ev[:]...), tail...)
	if c := statusByte(a.Status); c != 0 {
		byStatus = append(append(append(make([]byte, 0, 41), sub...), c), tail...)
	}
	return main, byEvent, byStatus
}

func statusByte(s string) byte {
	switch s {
	case StatusFailed:
		return 'f'
	case StatusDead:
		return 'd'
	}
	return 0
}

// mainKeyFromIndex rebuilds the attempts key from an index key whose last 24
// bytes are at | attempt id.
func mainKeyFromIndex(sub, idx []byte) []byte {
	return append(append(make([]byte, 0, 40), sub...), idx[len(idx)-24:]...)
}

// appendAttempt encodes a as the JSON object stored in the log and the
// attempts index (Attempt's form without its empty optional fields), without
// reflection: it runs once per attempt.
func appendAttempt(b []byte, a *Attempt) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, a.ID)
	b = append(b, `,"event_id":`...)
	b = appendString(b, a.EventID)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(a.Attempt), 10)
	b = append(b, `,"status":`...)
	b = appendString(b, a.Status)
	b = append(b, `,"status_code":`...)
	b = strconv.AppendInt(b, int64(a.StatusCode), 10)
	if a.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, a.Error)
	}
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, a.DurationMS, 'f', -1, 64)
	b = append(b, `,"at":"`...)
	b = a.At.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if a.NextAttemptAt != nil {
		b = append(b, `,"next_attempt_at":"`...)
		b = a.NextAttemptAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if a.ReplayID != "" {
		b = append(b, `,"replay_id":`...)
		b = appendString(b, a.ReplayID)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string; plain ASCII (ids, statuses, most
// errors) is copied as is, anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return append(b, mustJSON(s)...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are marshalled here
	}
	return b
}

// attemptsData builds the AttemptsData JSON of a flush from already encoded
// attempts: subs[i] is the subscription key of encoded[i].
func attemptsData(subs [][]byte, encoded [][]byte) json.RawMessage {
	n := len(`{"routes":[]}`)
	order := make([]string, 0, 16)
	groups := make(map[string][]int, 16)
	for i, e := range encoded {
		n += len(e) + 1
		k := string(subs[i])
		if _, ok := groups[k]; !ok {
			order = append(order, k)
			n += len(`{"subscription_id":"","attempts":[]},`) + 36
		}
		groups[k] = append(groups[k], i)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"routes":[`...)
	for gi, k := range order {
		if gi > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"subscription_id":"`...)
		b = append(b, uuid.UUID([]byte(k)).String()...)
		b = append(b, `","attempts":[`...)
		for i, ei := range groups[k] {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, encoded[ei]...)
		}
		b = append(b, `]}`...)
	}
	return append(b, `]}`...)
}
