package eventstore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

func TestExpectedVersionJSON(t *testing.T) {
	for _, c := range []struct {
		in   string
		want eventstore.ExpectedVersion
		out  string
	}{
		{`"any"`, eventstore.Any, `"any"`},
		{`""`, eventstore.Any, `"any"`},
		{`null`, eventstore.Any, `"any"`},
		{`"no_stream"`, eventstore.NoStream, `"no_stream"`},
		{`"exists"`, eventstore.StreamExists, `"exists"`},
		{`0`, eventstore.Exact(0), `0`},
		{`42`, eventstore.Exact(42), `42`},
		{`"7"`, eventstore.Exact(7), `7`},
	} {
		var v eventstore.ExpectedVersion
		if err := json.Unmarshal([]byte(c.in), &v); err != nil {
			t.Errorf("Unmarshal(%s): %v", c.in, err)
			continue
		}
		if !v.Equal(c.want) {
			t.Errorf("Unmarshal(%s) = %s, want %s", c.in, v, c.want)
		}
		b, err := json.Marshal(v)
		if err != nil || string(b) != c.out {
			t.Errorf("Marshal(%s) = %s, %v; want %s", v, b, err, c.out)
		}
	}
	for _, in := range []string{`-1`, `1.5`, `"-1"`, `"latest"`, `true`, `{}`, `[]`, `"1e3"`, `99999999999999999999`} {
		var v eventstore.ExpectedVersion
		if err := json.Unmarshal([]byte(in), &v); err == nil {
			t.Errorf("Unmarshal(%s) = %s, want an error", in, v)
		}
	}
	// In a request body.
	var body struct {
		Expected eventstore.ExpectedVersion `json:"expected_version"`
	}
	if err := json.Unmarshal([]byte(`{"expected_version": 3}`), &body); err != nil || !body.Expected.Equal(eventstore.Exact(3)) {
		t.Errorf("body: %s, %v", body.Expected, err)
	}
	body.Expected = eventstore.Any
	if err := json.Unmarshal([]byte(`{}`), &body); err != nil || !body.Expected.IsAny() {
		t.Errorf("absent expected_version: %s, %v; want any", body.Expected, err)
	}
}

func TestExpectedVersionCheck(t *testing.T) {
	for _, c := range []struct {
		e       eventstore.ExpectedVersion
		current int64
		ok      bool
	}{
		{eventstore.Any, -1, true}, {eventstore.Any, 5, true},
		{eventstore.NoStream, -1, true}, {eventstore.NoStream, 0, false},
		{eventstore.StreamExists, -1, false}, {eventstore.StreamExists, 0, true},
		{eventstore.Exact(0), -1, false}, {eventstore.Exact(0), 0, true}, {eventstore.Exact(0), 1, false},
		{eventstore.Exact(3), 3, true},
	} {
		err := c.e.Check("s", c.current)
		if (err == nil) != c.ok {
			t.Errorf("%s.Check(%d) = %v, want ok=%v", c.e, c.current, err, c.ok)
		}
		if err != nil {
			var we *eventstore.WrongVersionError
			if !errors.Is(err, eventstore.ErrWrongVersion) || !errors.As(err, &we) || we.Actual != c.current || we.Stream != "s" {
				t.Errorf("%s.Check(%d): %#v is not a WrongVersionError with Actual %d", c.e, c.current, err, c.current)
			}
		}
	}
	if v, ok := eventstore.Exact(4).Exact(); !ok || v != 4 {
		t.Errorf("Exact(4).Exact() = %d, %v", v, ok)
	}
	if _, ok := eventstore.Any.Exact(); ok {
		t.Errorf("Any.Exact() reports exact")
	}
}

func TestValidate(t *testing.T) {
	ok := func() eventstore.ProposedEvent {
		return eventstore.ProposedEvent{Type: "order.created", Data: json.RawMessage(`{"a":1}`)}
	}
	with := func(f func(e *eventstore.ProposedEvent)) []eventstore.ProposedEvent {
		e := ok()
		f(&e)
		return []eventstore.ProposedEvent{ok(), e}
	}
	id := uuid.Must(uuid.NewV7())
	many := make([]eventstore.ProposedEvent, eventstore.MaxEventsPerAppend+1)
	for i := range many {
		many[i] = ok()
	}
	for _, c := range []struct {
		name   string
		p      eventstore.AppendParams
		fields []string
	}{
		{"bad stream", eventstore.AppendParams{Stream: "a b", Events: []eventstore.ProposedEvent{ok()}}, []string{"stream"}},
		{"stream too long", eventstore.AppendParams{Stream: strings.Repeat("x", 201), Events: []eventstore.ProposedEvent{ok()}}, []string{"stream"}},
		{"no events", eventstore.AppendParams{Stream: "s"}, []string{"events"}},
		{"too many", eventstore.AppendParams{Stream: "s", Events: many}, []string{"events"}},
		{"negative exact", eventstore.AppendParams{Stream: "s", Expected: eventstore.Exact(-1), Events: []eventstore.ProposedEvent{ok()}}, []string{"expected_version"}},
		{"dup id", eventstore.AppendParams{Stream: "s", Events: []eventstore.ProposedEvent{{ID: id, Type: "a.b", Data: []byte(`{}`)}, ok(), {ID: id, Type: "a.b", Data: []byte(`{}`)}}}, []string{"events[2].id"}},
		{"no type", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Type = "" })}, []string{"events[1].type"}},
		{"type one segment", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Type = "order" })}, []string{"events[1].type"}},
		{"type too long", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Type = "a." + strings.Repeat("b", 199) })}, []string{"events[1].type"}},
		{"data array", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Data = []byte(`[]`) })}, []string{"events[1].data"}},
		{"data NUL escape", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Data = []byte(`{"a":"x\\\u0000"}`) })}, []string{"events[1].data"}},
		{"metadata NUL escape in a name", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Metadata = []byte(`{"\u0000":1}`) })}, []string{"events[1].metadata"}},
		{"data two objects", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Data = []byte(`{} {}`) })}, []string{"events[1].data"}},
		{"metadata string", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Metadata = []byte(`"x"`) })}, []string{"events[1].metadata"}},
		{"tenant", eventstore.AppendParams{Stream: "s", Events: with(func(e *eventstore.ProposedEvent) { e.Tenant = "-x" })}, []string{"events[1].tenant"}},
		{"several at once", eventstore.AppendParams{Stream: "", Events: with(func(e *eventstore.ProposedEvent) { e.Type = "X"; e.Data = nil })}, []string{"stream", "events[1].type", "events[1].data"}},
	} {
		p := c.p
		err := p.Validate()
		var ve *eventstore.ValidationError
		if !errors.Is(err, eventstore.ErrInvalid) || !errors.As(err, &ve) {
			t.Errorf("%s: %v, want a *ValidationError", c.name, err)
			continue
		}
		if len(ve.Fields) != len(c.fields) {
			t.Errorf("%s: fields %v, want exactly %v", c.name, ve.Fields, c.fields)
		}
		for _, f := range c.fields {
			if ve.Fields[f] == "" {
				t.Errorf("%s: fields %v lack %q", c.name, ve.Fields, f)
			}
		}
		if !strings.Contains(err.Error(), c.fields[0]) {
			t.Errorf("%s: message %q does not name %s", c.name, err, c.fields[0])
		}
		for _, e := range p.Events {
			if e.ID == uuid.Nil {
				continue
			}
			if e.ID != id {
				t.Errorf("%s: a rejected Validate filled in ids", c.name)
				break
			}
		}
	}
}

// A backslash before u0000 that is itself escaped is text, not a NUL.
func TestIsJSONObjectNUL(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{`{"a":"\u0000"}`, false},
		{`{"a":"x\\\u0000"}`, false},
		{`{"a":"\\u0000"}`, true},
		{`{"a":"\\\\u0000"}`, true},
		{`{"a":"\\u0000","b":"\u0000"}`, false},
		{`{"a":"\u00000"}`, false},
		{`{"a":"\u0001"}`, true},
	} {
		if got := eventstore.IsJSONObject([]byte(c.in)); got != c.want {
			t.Errorf("IsJSONObject(%s) = %v, want %v", c.in, got, c.want)
		}
	}
	err := (&eventstore.AppendParams{Stream: "s", Events: []eventstore.ProposedEvent{{Type: "a.b", Data: []byte(`{"a":"\u0000"}`)}}}).Validate()
	if err == nil || !strings.Contains(err.Error(), `\u0000`) {
		t.Errorf("Validate: %v, want an error that names \\u0000", err)
	}
}

func TestValidateFillsIn(t *testing.T) {
	given := uuid.Must(uuid.NewRandom())
	p := eventstore.AppendParams{Stream: "order-1:x.y_z", Events: []eventstore.ProposedEvent{
		{Type: "order.created", Data: json.RawMessage(` {"a":1} `), Metadata: json.RawMessage(` null `)},
		{ID: given, Type: "order.v2.paid_now", Tenant: "acme", Data: json.RawMessage(`{}`), Metadata: json.RawMessage(`{"m":1}`)},
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Events[0].ID == uuid.Nil || p.Events[0].ID.Version() != 7 {
		t.Errorf("missing id filled with %s, want a UUIDv7", p.Events[0].ID)
	}
	if p.Events[1].ID != given {
		t.Errorf("given id changed to %s", p.Events[1].ID)
	}
	if p.Events[0].Metadata != nil {
		t.Errorf("null metadata kept as %q, want nil", p.Events[0].Metadata)
	}
	if string(p.Events[1].Metadata) != `{"m":1}` {
		t.Errorf("metadata changed to %q", p.Events[1].Metadata)
	}
}

// FuzzIsJSONObject holds the object check to encoding/json's rules narrowed
// to what PostgreSQL's jsonb also takes: everything it accepts, json.Valid
// accepts too, and it turns down nothing json.Valid accepts unless the
// input has invalid UTF-8, a \uD800-\uDFFF escape (which may be a lone
// surrogate) or a \u0000 escape. Run it longer with
// go test ./eventstore -run '^$' -fuzz FuzzIsJSONObject -fuzztime 1m.
func FuzzIsJSONObject(f *testing.F) {
	for _, s := range []string{
		`{}`, ` {"a":1} `, `{"a":1,"a":2}`, `{"a":"\u00e9\ud83d\ude00"}`, `{"a":"\ud800"}`,
		`{"a":"\udc00\ud800"}`, "{\"a\":\"\xff\"}", "{\"a\":\"\n\"}", `{"a":01}`, `{"a":1.}`,
		`{"a":-0.5e+10}`, `{"a":[1,{"b":null}]}`, `{"a":1}{}`, `{"a":1} x`, `[]`, `"x"`, `{`,
		`{"a":tru}`, `{"a":"\x"}`, "{\"a\":1}\u00a0", `{"a":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := eventstore.IsJSONObject(b)
		trimmed := bytes.TrimSpace(b)
		v1 := json.Valid(b) && len(trimmed) > 0 && trimmed[0] == '{'
		if got && !v1 {
			t.Fatalf("IsJSONObject(%q) = true; encoding/json does not take it as an object", b)
		}
		if got && !utf8.Valid(b) {
			t.Fatalf("IsJSONObject(%q) = true for invalid UTF-8", b)
		}
		surrogate := bytes.Contains(bytes.ToLower(b), []byte(`\ud8`)) || bytes.Contains(bytes.ToLower(b), []byte(`\ud9`)) ||
			bytes.Contains(bytes.ToLower(b), []byte(`\uda`)) || bytes.Contains(bytes.ToLower(b), []byte(`\udb`)) ||
			bytes.Contains(bytes.ToLower(b), []byte(`\udc`)) || bytes.Contains(bytes.ToLower(b), []byte(`\udd`)) ||
			bytes.Contains(bytes.ToLower(b), []byte(`\ude`)) || bytes.Contains(bytes.ToLower(b), []byte(`\udf`))
		if !got && v1 && utf8.Valid(b) && !surrogate && !bytes.Contains(b, []byte(`\u0000`)) {
			t.Fatalf("IsJSONObject(%q) = false; encoding/json takes it and it is valid UTF-8 with no surrogate or NUL escape", b)
		}
	})
}
