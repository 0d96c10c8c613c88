package eventstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
)

// Event is a recorded event, as read back from the log.
type Event struct {
	ID         uuid.UUID       `json:"id"`
	Stream     string          `json:"stream"`
	Type       string          `json:"type"`
	Tenant     string          `json:"tenant,omitempty"` // "" = no tenant
	Data       json.RawMessage `json:"data"`             // always a JSON object
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	Position   Position        `json:"position"`
	Version    int64           `json:"version"` // 0-based number within the stream
	RecordedAt time.Time       `json:"recorded_at"`
}

// ProposedEvent is an event to append. A zero ID is replaced by a fresh UUIDv7.
type ProposedEvent struct {
	ID       uuid.UUID
	Type     string
	Tenant   string
	Data     json.RawMessage // must be a JSON object
	Metadata json.RawMessage // empty, null or a JSON object
}

// ExpectedVersion is the optimistic-concurrency condition of an append.
type ExpectedVersion struct {
	kind    int8 // 0 any, 1 no stream, 2 exists, 3 exact
	version int64
}

var (
	// Any appends whatever the stream's state.
	Any = ExpectedVersion{kind: 0}
	// NoStream appends only if the stream has no events yet.
	NoStream = ExpectedVersion{kind: 1}
	// StreamExists appends only if the stream has at least one event.
	StreamExists = ExpectedVersion{kind: 2}
)

// Exact appends only if the stream's last event has version v (0-based).
func Exact(v int64) ExpectedVersion { return ExpectedVersion{kind: 3, version: v} }

// IsAny, IsNoStream, IsExists report the kind; Exact returns (v, true) for Exact(v).
func (e ExpectedVersion) IsAny() bool                  { return e.kind == 0 }
func (e ExpectedVersion) IsNoStream() bool             { return e.kind == 1 }
func (e ExpectedVersion) IsExists() bool               { return e.kind == 2 }
func (e ExpectedVersion) Exact() (int64, bool)         { return e.version, e.kind == 3 }
func (e ExpectedVersion) Equal(o ExpectedVersion) bool { return e == o }

// Check reports whether a stream whose last version is current (-1 = no stream)
// satisfies e. It returns a *WrongVersionError when it does not.
func (e ExpectedVersion) Check(stream string, current int64) error {
	ok := true
	switch e.kind {
	case 1:
		ok = current == -1
	case 2:
		ok = current >= 0
	case 3:
		ok = current == e.version
	}
	if ok {
		return nil
	}
	return &WrongVersionError{Stream: stream, Expected: e, Actual: current}
}

func (e ExpectedVersion) String() string {
	switch e.kind {
	case 1:
		return "no_stream"
	case 2:
		return "exists"
	case 3:
		return strconv.FormatInt(e.version, 10)
	}
	return "any"
}

// MarshalJSON writes "any", "no_stream", "exists" or the number.
func (e ExpectedVersion) MarshalJSON() ([]byte, error) {
	if e.kind == 3 {
		return []byte(strconv.FormatInt(e.version, 10)), nil
	}
	return json.Marshal(e.String())
}

// UnmarshalJSON accepts "any", "no_stream", "exists" or a non-negative integer.
func (e *ExpectedVersion) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := ParseExpectedVersion(s)
		if err != nil {
			return err
		}
		*e = v
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil || n < 0 {
		return fmt.Errorf(`expected_version must be "any", "no_stream", "exists" or a non-negative integer`)
	}
	*e = Exact(n)
	return nil
}

// ParseExpectedVersion parses the String form.
func ParseExpectedVersion(s string) (ExpectedVersion, error) {
	switch s {
	case "", "any":
		return Any, nil
	case "no_stream":
		return NoStream, nil
	case "exists":
		return StreamExists, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return Any, fmt.Errorf(`expected_version must be "any", "no_stream", "exists" or a non-negative integer, not %q`, s)
	}
	return Exact(n), nil
}

// AppendParams is one append: events to one stream, atomically.
type AppendParams struct {
	Stream   string
	Expected ExpectedVersion
	Events   []ProposedEvent
}

// AppendedEvent is where one appended event landed.
type AppendedEvent struct {
	ID       uuid.UUID `json:"id"`
	Position Position  `json:"position"`
	Version  int64     `json:"version"`
}

// AppendResult is the outcome of a successful append.
type AppendResult struct {
	Events []AppendedEvent
	// Duplicate is true when every id was already in the stream: nothing was
	// written and Events holds the original positions (an idempotent retry).
	Duplicate bool
}

// Limits of the append API.
const (
	MaxEventsPerAppend = 1000
	MaxStreamLen       = 200
	MaxTypeLen         = 200
	MaxTenantLen       = 200
)

var (
	streamRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$`)
	typeRE   = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)+$`)
	tenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$`)
)

// ValidStream reports whether s is an acceptable stream name.
func ValidStream(s string) bool { return streamRE.MatchString(s) }

// ValidType reports whether s is an acceptable dotted event type (e.g. payment.succeeded).
func ValidType(s string) bool { return len(s) <= MaxTypeLen && typeRE.MatchString(s) }

// ValidTenant reports whether s is an acceptable tenant name.
func ValidTenant(s string) bool { return tenantRE.MatchString(s) }

// Validate checks p and fills in missing event ids (UUIDv7). Every backend calls it
// before writing anything; it returns a *ValidationError (ErrInvalid).
func (p *AppendParams) Validate() error {
	v := &ValidationError{}
	if !ValidStream(p.Stream) {
		v.add("stream", "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
	}
	switch n := len(p.Events); {
	case n == 0:
		v.add("events", "at least one event is required")
	case n > MaxEventsPerAppend:
		v.add("events", "at most %d events per append, got %d", MaxEventsPerAppend, n)
	}
	if ver, ok := p.Expected.Exact(); ok && ver < 0 {
		v.add("expected_version", "must not be negative")
	}
	seen := make(map[uuid.UUID]int, len(p.Events))
	okType := "" // the last type that passed: a batch mostly repeats one
	for i := range p.Events {
		e := &p.Events[i]
		f := func(name string) string { return fmt.Sprintf("events[%d].%s", i, name) }
		if e.ID != uuid.Nil {
			if j, dup := seen[e.ID]; dup {
				v.add(f("id"), "duplicate of events[%d].id", j)
			}
			seen[e.ID] = i
		}
		switch {
		case e.Type == "":
			v.add(f("type"), "is required")
		case e.Type == okType:
		case !ValidType(e.Type):
			v.add(f("type"), "must be a dotted lower-case name like payment.succeeded")
		default:
			okType = e.Type
		}
		if e.Tenant != "" && !ValidTenant(e.Tenant) {
			v.add(f("tenant"), "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
		}
		if !IsJSONObject(e.Data) {
			v.add(f("data"), "%s", notObject(e.Data))
		}
		if len(e.Metadata) > 0 && !bytes.Equal(bytes.TrimSpace(e.Metadata), []byte("null")) && !IsJSONObject(e.Metadata) {
			v.add(f("metadata"), "%s", notObject(e.Metadata))
		}
	}
	if err := v.orNil(); err != nil {
		return err
	}
	for i := range p.Events {
		e := &p.Events[i]
		if e.ID == uuid.Nil {
			e.ID = uuid.Must(uuid.NewV7())
		}
		if m := bytes.TrimSpace(e.Metadata); len(m) == 0 || bytes.Equal(m, []byte("null")) {
			e.Metadata = nil
		}
	}
	return nil
}

// IsJSONObject reports whether b is a valid JSON object in UTF-8.
//
// It accepts a subset of what encoding/json's Valid accepts: RFC 8259 JSON
// whose strings are valid UTF-8 and whose escapes are valid Unicode (no lone
// surrogate) other than \u0000, which is also what PostgreSQL's jsonb takes,
// so every backend stores the same data. Duplicate member names are allowed, as in
// encoding/json and jsonb. The validator is encoding/json/v2's jsontext,
// about four times faster than json.Valid, and every append runs it on
// every event.
func IsJSONObject(b json.RawMessage) bool {
	return opensObject(b) && ValidJSON(b) && !hasNULEscape(b)
}

// hasNULEscape reports whether b, valid JSON, holds a \u0000 escape, which
// jsonb refuses (PostgreSQL's text cannot hold NUL). In valid JSON a
// backslash only occurs in strings, and starts an escape when an even number
// of backslashes precede it.
func hasNULEscape(b []byte) bool {
	for {
		i := bytes.Index(b, []byte(`\u0000`))
		if i < 0 {
			return false
		}
		n := 0
		for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return true
		}
		b = b[i+1:]
	}
}

// opensObject reports whether b's first byte after JSON whitespace is '{'.
// Only JSON's own whitespace: bytes.TrimSpace would also skip Unicode spaces
// such as U+00A0, which JSON (and jsonb) refuse.
func opensObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// notObject is the field error for b, which IsJSONObject refused: it says
// why when b looks like an object but is not valid.
func notObject(b []byte) string {
	if !opensObject(b) {
		return "must be a JSON object"
	}
	d := jsontext.NewDecoder(bytes.NewReader(b), allowDuplicateNames)
	_, err := d.ReadValue()
	if err == nil {
		if _, err = d.ReadToken(); err == nil {
			return "must be a JSON object: more data follows the object"
		}
		if hasNULEscape(b) {
			return `must be a JSON object without \u0000 in its strings (PostgreSQL cannot store NUL)`
		}
	}
	if err == nil || err == io.EOF {
		return "must be a JSON object" // not reached: IsJSONObject refused b
	}
	return "must be a JSON object: " + strings.TrimPrefix(err.Error(), "jsontext: ")
}

// ValidJSON reports whether b is one valid JSON value by IsJSONObject's rules,
// \u0000 escapes aside (events stored before they were refused still go out).
func ValidJSON(b []byte) bool {
	return jsontext.Value(b).IsValid(allowDuplicateNames)
}

var allowDuplicateNames = jsontext.AllowDuplicateNames(true)
