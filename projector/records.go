package projector

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

// DeliveriesStream is the internal stream holding every delivery attempt, as
// "delivery.attempts" events of AttemptsData (one event per batcher flush).
const DeliveriesStream = eventstore.InternalStreamPrefix + "deliveries"

// TypeAttempts is the type of the events of DeliveriesStream.
const TypeAttempts = "delivery.attempts"

// AttemptsData is a delivery.attempts event: the attempts of one batcher
// flush, grouped by subscription, in the order they were made. In the log it
// is stored compactly (see DecodeAttemptsData):
//
//	{"v":2,"routes":[{"subscription_id":"<uuid>","attempts":"<base64>"}, …]}
//
// where "attempts" is the standard base64 of the subscription's attempt
// records (see appendAttemptRecord) one after another. Events written before
// that form hold the attempts as JSON objects (v absent):
//
//	{"routes":[{"subscription_id":"<uuid>","attempts":[{Attempt JSON}, …]}, …]}
type AttemptsData struct {
	Routes []RouteAttempts `json:"routes"`
}

// RouteAttempts are one subscription's attempts in a delivery.attempts event.
type RouteAttempts struct {
	SubscriptionID string    `json:"subscription_id"`
	Attempts       []Attempt `json:"attempts"`
}

// DecodeAttemptsData reads the data of a delivery.attempts event, in either form.
func DecodeAttemptsData(data []byte) (AttemptsData, error) {
	var head struct {
		V      int `json:"v"`
		Routes []struct {
			SubscriptionID string          `json:"subscription_id"`
			Attempts       json.RawMessage `json:"attempts"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return AttemptsData{}, fmt.Errorf("projector: delivery.attempts: %w", err)
	}
	d := AttemptsData{Routes: make([]RouteAttempts, 0, len(head.Routes))}
	for _, r := range head.Routes {
		ra := RouteAttempts{SubscriptionID: r.SubscriptionID}
		if head.V < 2 {
			if err := json.Unmarshal(r.Attempts, &ra.Attempts); err != nil {
				return AttemptsData{}, fmt.Errorf("projector: delivery.attempts: %w", err)
			}
			d.Routes = append(d.Routes, ra)
			continue
		}
		var b64 string
		if err := json.Unmarshal(r.Attempts, &b64); err != nil {
			return AttemptsData{}, fmt.Errorf("projector: delivery.attempts: %w", err)
		}
		recs, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return AttemptsData{}, fmt.Errorf("projector: delivery.attempts: %w", err)
		}
		for len(recs) > 0 {
			var a Attempt
			n, err := decodeAttemptRecord(recs, &a)
			if err != nil {
				return AttemptsData{}, fmt.Errorf("projector: delivery.attempts: subscription %s: %w", r.SubscriptionID, err)
			}
			ra.Attempts = append(ra.Attempts, a)
			recs = recs[n:]
		}
		d.Routes = append(d.Routes, ra)
	}
	return d, nil
}

// Attempt statuses.
const (
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed" // retried later (or the endpoint answered 410)
	StatusDead      = "dead"   // the last attempt: the pair was dead-lettered
)

// Attempt is one delivery attempt as served by Deliveries (GET
// /v1/subscriptions/{id}/deliveries). The log and the attempts index store
// it as an attempt record (appendAttemptRecord).
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

	// uid and eventUID are the ids of an attempt the engine made, which
	// leaves ID and EventID empty: its record and keys are made from these
	// without formatting and parsing text. Zero in every other Attempt.
	uid, eventUID uuid.UUID
}

// uuids returns a's id and event id.
func (a *Attempt) uuids() (id, ev uuid.UUID) {
	if a.uid != uuid.Nil {
		return a.uid, a.eventUID
	}
	id, _ = uuid.Parse(a.ID)
	ev, _ = uuid.Parse(a.EventID)
	return id, ev
}

// newAttemptID returns a fresh attempt id: a version 7 UUID (RFC 9562: unix
// milliseconds, then the sub-millisecond fraction in rand_a, as
// github.com/google/uuid makes them) whose random bits come from the
// runtime's generator (math/rand/v2, seeded from the system) rather than
// crypto/rand, which cost a system call per attempt. Attempt ids need to be
// unique, not secret: 62 random bits per 244 ns of time.
func newAttemptID(now time.Time) uuid.UUID {
	var u uuid.UUID
	ns := now.UnixNano()
	ms := ns / 1e6
	frac := uint64(ns-ms*1e6) * 4096 / 1e6 // 12 bits
	binary.BigEndian.PutUint64(u[:8], uint64(ms)<<16|0x7000|frac)
	binary.BigEndian.PutUint64(u[8:], rand.Uint64()>>2|1<<63) // variant 10
	return u
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
	// bucketAttempts: one entry per subscription and flush (a group):
	// sub | at (unix ns) | attempt id (16) of the group's latest attempt →
	// the group's attempt records, one after another. (Entries written
	// before groups hold one record, or one Attempt JSON: groups of one.)
	bucketAttempts = "projector.attempts"
	// bucketAttemptsByEvent: sub | event id (16) | at | attempt id → the
	// at | attempt id of the attempt's group (empty: the attempt's own).
	bucketAttemptsByEvent = "projector.attempts_by_event"
	// bucketAttemptsByStatus: sub | status byte | at | attempt id → as in
	// bucketAttemptsByEvent, for failed and dead attempts only (succeeded
	// ones are most of the index; a succeeded filter scans the groups).
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
	_, main, byEvent, byStatus = appendAttemptKeys(make([]byte, 0, attemptKeysSize), sub, a)
	return main, byEvent, byStatus
}

// Room for an attempt's record (without error and replay id) and its keys
// with a 16-byte subscription key.
const (
	attemptRecordSize = 1 + 16 + 16 + 8 + 2*binary.MaxVarintLen16 + 2 + binary.MaxVarintLen64 + 8 + 2*binary.MaxVarintLen16
	attemptKeysSize   = 40 + 56 + 41
)

// appendAttemptKeys appends a's keys to buf and returns them as slices of it
// (capped, so later appends to buf leave them alone).
func appendAttemptKeys(buf, sub []byte, a *Attempt) (out, main, byEvent, byStatus []byte) {
	id, ev := a.uuids()
	cut := func(start int) []byte { return buf[start:len(buf):len(buf)] }
	start := len(buf)
	buf = append(buf, sub...)
	buf = putTime(buf, a.At)
	buf = append(buf, id[:]...)
	main = cut(start)
	start = len(buf)
	buf = append(buf, sub...)
	buf = append(buf, ev[:]...)
	buf = append(buf, main[len(sub):]...)
	byEvent = cut(start)
	if c := statusByte(a.Status); c != 0 {
		start = len(buf)
		buf = append(buf, sub...)
		buf = append(buf, c)
		buf = append(buf, main[len(sub):]...)
		byStatus = cut(start)
	}
	return buf, main, byEvent, byStatus
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

// An attempt record is the compact form of an Attempt in the attempts index
// and in delivery.attempts events (about 50 bytes for a success, against
// about 170 as JSON):
//
//	0x01                      format
//	id, event id              16 bytes each (UUIDs)
//	at                        8 bytes, unix nanoseconds, big-endian
//	attempt, status code      uvarint each
//	status                    1 byte: 's' succeeded, 'f' failed, 'd' dead
//	flags                     1 byte: 1 error, 2 next_attempt_at, 4 replay_id,
//	                          8 duration as float64 bits (else uvarint µs)
//	duration_ms               uvarint microseconds, or 8 bytes of float64 bits
//	error                     (flag 1) uvarint length, bytes
//	next_attempt_at           (flag 2) 8 bytes, unix nanoseconds
//	replay_id                 (flag 4) uvarint length, bytes
//
// Times decode in UTC; they must lie between the years 1678 and 2262.
const attemptRecordV1 = 0x01

const (
	recError    = 1
	recNext     = 2
	recReplay   = 4
	recFloatDur = 8
)

// appendAttemptRecord appends a's record to b. It runs once per attempt.
func appendAttemptRecord(b []byte, a *Attempt) []byte {
	id, ev := a.uuids()
	b = append(b, attemptRecordV1)
	b = append(b, id[:]...)
	b = append(b, ev[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(a.At.UnixNano()))
	b = binary.AppendUvarint(b, uint64(max(a.Attempt, 0)))
	b = binary.AppendUvarint(b, uint64(max(a.StatusCode, 0)))
	b = append(b, statusCode(a.Status))
	var flags byte
	if a.Error != "" {
		flags |= recError
	}
	if a.NextAttemptAt != nil {
		flags |= recNext
	}
	if a.ReplayID != "" {
		flags |= recReplay
	}
	us, exact := durationMicros(a.DurationMS)
	if !exact {
		flags |= recFloatDur
	}
	b = append(b, flags)
	if exact {
		b = binary.AppendUvarint(b, us)
	} else {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(a.DurationMS))
	}
	if a.Error != "" {
		b = binary.AppendUvarint(b, uint64(len(a.Error)))
		b = append(b, a.Error...)
	}
	if a.NextAttemptAt != nil {
		b = binary.BigEndian.AppendUint64(b, uint64(a.NextAttemptAt.UnixNano()))
	}
	if a.ReplayID != "" {
		b = binary.AppendUvarint(b, uint64(len(a.ReplayID)))
		b = append(b, a.ReplayID...)
	}
	return b
}

// durationMicros returns ms in whole microseconds when that is exact (it is
// for the durations the projector records).
func durationMicros(ms float64) (uint64, bool) {
	if ms < 0 || ms > 1e12 {
		return 0, false
	}
	us := math.Round(ms * 1000)
	if us/1000 != ms {
		return 0, false
	}
	return uint64(us), true
}

func statusCode(s string) byte {
	switch s {
	case StatusSucceeded:
		return 's'
	case StatusFailed:
		return 'f'
	case StatusDead:
		return 'd'
	}
	return '?'
}

func statusName(c byte) string {
	switch c {
	case 's':
		return StatusSucceeded
	case 'f':
		return StatusFailed
	case 'd':
		return StatusDead
	}
	return ""
}

// errBadRecord: an attempt record is truncated or of an unknown format.
var errBadRecord = errors.New("projector: unreadable attempt record")

// decodeAttemptRecord reads the attempt record at the start of b into a and
// returns its length.
func decodeAttemptRecord(b []byte, a *Attempt) (int, error) {
	r := recordReader{b: b}
	if r.byte() != attemptRecordV1 {
		return 0, errBadRecord
	}
	id, ev := r.uuid(), r.uuid()
	at := r.time()
	attempt, code := r.uvarint(), r.uvarint()
	status := r.byte()
	flags := r.byte()
	*a = Attempt{ID: id.String(), EventID: ev.String(), At: at, Attempt: int(attempt), StatusCode: int(code), Status: statusName(status)}
	if flags&recFloatDur != 0 {
		a.DurationMS = math.Float64frombits(r.uint64())
	} else {
		a.DurationMS = float64(r.uvarint()) / 1000
	}
	if flags&recError != 0 {
		a.Error = r.string()
	}
	if flags&recNext != 0 {
		t := r.time()
		a.NextAttemptAt = &t
	}
	if flags&recReplay != 0 {
		a.ReplayID = r.string()
	}
	if r.bad || a.Status == "" {
		return 0, errBadRecord
	}
	return r.off, nil
}

// recordReader reads an attempt record; past its end it reads zeros and
// sets bad.
type recordReader struct {
	b   []byte
	off int
	bad bool
}

func (r *recordReader) next(n int) []byte {
	if n < 0 || len(r.b)-r.off < n {
		r.bad, r.off = true, len(r.b)
		return make([]byte, max(n, 0))
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *recordReader) byte() byte      { return r.next(1)[0] }
func (r *recordReader) uuid() uuid.UUID { return uuid.UUID(r.next(16)) }
func (r *recordReader) uint64() uint64  { return binary.BigEndian.Uint64(r.next(8)) }
func (r *recordReader) time() time.Time { return time.Unix(0, int64(r.uint64())).UTC() }
func (r *recordReader) string() string  { return string(r.next(int(min(r.uvarint(), math.MaxInt32)))) }
func (r *recordReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.bad, r.off = true, len(r.b)
		return 0
	}
	r.off += n
	return v
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are marshalled here
	}
	return b
}

// attemptsData builds the data of a flush's delivery.attempts event (the v2
// form of AttemptsData): records[i] holds the attempt records of the
// subscription with key subs[i].
func attemptsData(subs [][]byte, records [][]byte) json.RawMessage {
	n := len(`{"v":2,"routes":[]}`)
	for _, r := range records {
		n += len(`{"subscription_id":"","attempts":""},`) + 36 + base64.StdEncoding.EncodedLen(len(r))
	}
	b := make([]byte, 0, n)
	b = append(b, `{"v":2,"routes":[`...)
	for i, r := range records {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"subscription_id":"`...)
		b = append(b, uuid.UUID(subs[i]).String()...)
		b = append(b, `","attempts":"`...)
		b = base64.StdEncoding.AppendEncode(b, r)
		b = append(b, `"}`...)
	}
	return append(b, `]}`...)
}

// attemptAfter reports whether a sorts after b in the attempts index: by at
// (unix ns, as keys hold it), then attempt id.
func attemptAfter(a, b *Attempt) bool {
	at, bt := max(a.At.UnixNano(), 0), max(b.At.UnixNano(), 0)
	if at != bt {
		return at > bt
	}
	ai, _ := a.uuids()
	bi, _ := b.uuids()
	return bytes.Compare(ai[:], bi[:]) > 0 // the order of their text
}

// decodeGroup appends the attempts of a value of the attempts bucket to out:
// a group of attempt records, or one Attempt JSON (entries written before
// records).
func decodeGroup(v []byte, out []Attempt) ([]Attempt, error) {
	if len(v) > 0 && v[0] == '{' {
		var a Attempt
		if err := json.Unmarshal(v, &a); err != nil {
			return out, err
		}
		return append(out, a), nil
	}
	if len(v) == 0 {
		return out, errBadRecord
	}
	for len(v) > 0 {
		var a Attempt
		n, err := decodeAttemptRecord(v, &a)
		if err != nil {
			return out, err
		}
		out = append(out, a)
		v = v[n:]
	}
	return out, nil
}

// groupTailLen is the length of a group key after the subscription: at | attempt id.
const groupTailLen = 8 + 16

// groupKeyFromIndex returns, for the index entry (idx, v) of sub, the key of
// the group holding the attempt and the attempt's id.
func groupKeyFromIndex(sub, idx, v []byte) (group []byte, id string) {
	tail := v
	if len(tail) != groupTailLen { // written before groups: the attempt's own entry
		tail = idx[len(idx)-groupTailLen:]
	}
	group = append(append(make([]byte, 0, len(sub)+groupTailLen), sub...), tail...)
	return group, uuid.UUID(idx[len(idx)-16:]).String()
}

// listAttempts serves Deliveries from the attempts index: sub's attempts,
// newest first (by at, then attempt id), of the given status and event ("":
// any), at most limit.
func (p *Projector) listAttempts(ctx context.Context, sub []byte, status, eventID string, limit int) ([]Attempt, error) {
	switch {
	case eventID != "":
		ev, err := uuid.Parse(eventID)
		if err != nil {
			return []Attempt{}, nil // no event has that id
		}
		return p.listIndexed(ctx, sub, bucketAttemptsByEvent, append(bytes.Clone(sub), ev[:]...), status, limit)
	case statusByte(status) != 0:
		return p.listIndexed(ctx, sub, bucketAttemptsByStatus, append(bytes.Clone(sub), statusByte(status)), status, limit)
	}
	return p.listGroups(ctx, sub, status, limit)
}

// listIndexed lists the attempts an index names, in the index's order (newest
// first), reading each group once.
func (p *Projector) listIndexed(ctx context.Context, sub []byte, bucket string, prefix []byte, status string, limit int) ([]Attempt, error) {
	out := []Attempt{}
	groups := map[string][]Attempt{} // decoded for this call; nil: gone
	type ref struct {
		group []byte
		id    string
	}
	var after []byte
	for len(out) < limit {
		var refs []ref
		err := p.state.ScanState(ctx, eventstore.ScanParams{Bucket: bucket, Prefix: prefix, After: after, Limit: limit, Reverse: true},
			func(k, v []byte) error {
				g, id := groupKeyFromIndex(sub, k, v)
				refs = append(refs, ref{g, id})
				after = bytes.Clone(k)
				return nil
			})
		if err != nil {
			return nil, fmt.Errorf("projector: deliveries: %w", err)
		}
		for _, r := range refs {
			as, ok := groups[string(r.group)]
			if !ok {
				v, err := p.state.GetState(ctx, bucketAttempts, r.group)
				switch {
				case errors.Is(err, eventstore.ErrNotFound): // pruned meanwhile
				case err != nil:
					return nil, fmt.Errorf("projector: deliveries: %w", err)
				default:
					as, _ = decodeGroup(v, nil)
				}
				if len(groups) >= 256 {
					clear(groups)
				}
				groups[string(r.group)] = as
			}
			for i := range as {
				if as[i].ID == r.id {
					if (status == "" || as[i].Status == status) && len(out) < limit {
						out = append(out, as[i])
					}
					break
				}
			}
		}
		if len(refs) < limit {
			break
		}
	}
	return out, nil
}

// listGroups lists sub's attempts newest first from its groups. A group's
// key holds its latest attempt's (at, id) and no attempt of a group sorts
// after its key, so reading the groups from the latest key down, an attempt
// can be listed once it sorts after the key of the next group.
func (p *Projector) listGroups(ctx context.Context, sub []byte, status string, limit int) ([]Attempt, error) {
	out := []Attempt{}
	h := &attemptHeap{}
	scanned := 0
	// emit lists the pending attempts that sort after (at, id); all of them
	// when id is "".
	emit := func(at int64, id string) bool {
		for h.Len() > 0 && len(out) < limit {
			top := (*h)[0]
			if id != "" && (top.at < at || top.at == at && top.a.ID < id) {
				break
			}
			heap.Pop(h)
			if status == "" || top.a.Status == status {
				out = append(out, top.a)
			}
		}
		return len(out) >= limit
	}
	err := p.state.ScanState(ctx, eventstore.ScanParams{Bucket: bucketAttempts, Prefix: sub, Reverse: true}, func(k, v []byte) error {
		if len(k) != len(sub)+groupTailLen {
			return nil
		}
		at := int64(binary.BigEndian.Uint64(k[len(sub):]))
		if emit(at, uuid.UUID(k[len(sub)+8:]).String()) {
			return eventstore.ErrStopScan
		}
		as, _ := decodeGroup(v, nil)
		for _, a := range as {
			heap.Push(h, heapAttempt{at: max(a.At.UnixNano(), 0), a: a})
		}
		if scanned += len(as); scanned >= deliveriesMaxScan {
			return eventstore.ErrStopScan
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("projector: deliveries: %w", err)
	}
	emit(0, "")
	return out, nil
}

type heapAttempt struct {
	at int64 // a.At in unix ns, as in keys
	a  Attempt
}

// attemptHeap pops the latest attempt (by at, then id) first.
type attemptHeap []heapAttempt

func (h attemptHeap) Len() int { return len(h) }
func (h attemptHeap) Less(i, j int) bool {
	return h[i].at > h[j].at || h[i].at == h[j].at && h[i].a.ID > h[j].a.ID
}
func (h attemptHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *attemptHeap) Push(x any)   { *h = append(*h, x.(heapAttempt)) }
func (h *attemptHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// pruneOps bounds the deletions of one pruning commit.
const pruneOps = 10000

// pruneAttempts deletes a subscription's attempt groups whose latest attempt
// is from before cutoff, and their index entries.
func (p *Projector) pruneAttempts(ctx context.Context, key []byte, cutoff time.Time) error {
	limit := uint64(max(cutoff.UnixNano(), 0))
	for {
		var ops []eventstore.StateOp
		n, full := 0, false
		err := p.state.ScanState(ctx, eventstore.ScanParams{Bucket: bucketAttempts, Prefix: key, Limit: prunePage}, func(k, v []byte) error {
			if len(k) < len(key)+8 || binary.BigEndian.Uint64(k[len(key):]) >= limit {
				return eventstore.ErrStopScan
			}
			n++
			ops = append(ops, eventstore.StateOp{Bucket: bucketAttempts, Key: bytes.Clone(k), Delete: true})
			as, _ := decodeGroup(v, nil) // what is readable: its index entries too
			for i := range as {
				_, byEvent, byStatus := attemptKeys(key, &as[i])
				ops = append(ops, eventstore.StateOp{Bucket: bucketAttemptsByEvent, Key: byEvent, Delete: true})
				if byStatus != nil {
					ops = append(ops, eventstore.StateOp{Bucket: bucketAttemptsByStatus, Key: byStatus, Delete: true})
				}
			}
			if len(ops) >= pruneOps {
				full = true
				return eventstore.ErrStopScan
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(ops) > 0 {
			if _, err := p.state.CommitState(ctx, eventstore.StateCommit{Ops: ops}); err != nil {
				return err
			}
		}
		if n < prunePage && !full {
			return nil
		}
	}
}
