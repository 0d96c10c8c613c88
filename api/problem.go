package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hooklog/hooklog/apikeys"
	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// problem is an RFC 9457 problem document.
type problem struct {
	Type   string            `json:"type"`
	Title  string            `json:"title"`
	Status int               `json:"status"`
	Detail string            `json:"detail,omitempty"`
	Errors map[string]string `json:"errors,omitempty"` // field → message, for validation
}

const problemBase = "urn:hooklog:problem:"

// Errors of the HTTP layer itself. Services' errors are mapped in problemFor.
var (
	errUnauthenticated = errors.New("missing or unknown API key")
	errForbidden       = errors.New("this API key's role may not do that")
	errNotFound        = errors.New("not found")
	errMethod          = errors.New("method not allowed")
	errTrailingData    = errors.New("trailing data after the JSON value")
)

// httpError carries an explicit status and message for errors found by the
// handlers themselves (bad query parameters, forbidden filters).
type httpError struct {
	status int
	slug   string
	detail string
	fields map[string]string
	cause  error // logged, never shown
}

func (e *httpError) Error() string {
	if e.cause != nil {
		return e.detail + ": " + e.cause.Error()
	}
	return e.detail
}

func (e *httpError) Unwrap() error { return e.cause }

// badRequest is a 400 naming one field.
func badRequest(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &httpError{status: http.StatusBadRequest, slug: "validation", detail: field + ": " + msg, fields: map[string]string{field: msg}}
}

// forbidden is a 403 with a specific reason.
func forbidden(format string, args ...any) error {
	return &httpError{status: http.StatusForbidden, slug: "forbidden", detail: fmt.Sprintf(format, args...)}
}

// decodeError wraps every failure to decode a JSON request body.
type decodeError struct {
	err error
}

func (e *decodeError) Error() string { return "decode request: " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// problemFor is the one place an error becomes an HTTP status and problem
// document. Anything it does not recognise is a 500 whose detail reveals
// nothing; the caller logs the real error.
func problemFor(err error) problem {
	var (
		he  *httpError
		ve  *eventstore.ValidationError
		mbe *http.MaxBytesError
		de  *decodeError
		wve *eventstore.WrongVersionError
		pe  *subscriptions.PolicyError
	)
	switch {
	case errors.As(err, &he):
		title := http.StatusText(he.status)
		if he.slug == "validation" {
			title = "Invalid request"
		}
		return problem{Type: problemBase + he.slug, Title: title, Status: he.status, Detail: he.detail, Errors: he.fields}
	case errors.As(err, &mbe):
		return problem{Type: problemBase + "body-too-large", Title: "Request body too large", Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("the request body exceeds %d bytes", mbe.Limit)}
	case errors.As(err, &ve): // also from a field's UnmarshalJSON inside a decodeError
		return problem{Type: problemBase + "validation", Title: "Invalid request", Status: http.StatusBadRequest,
			Detail: "the request has invalid fields; see errors", Errors: ve.Fields}
	case errors.As(err, &de):
		return decodeProblem(de.err)
	case errors.Is(err, eventstore.ErrInvalid):
		return problem{Type: problemBase + "validation", Title: "Invalid request", Status: http.StatusBadRequest, Detail: err.Error()}
	case errors.Is(err, eventstore.ErrBadPosition):
		return problem{Type: problemBase + "validation", Title: "Invalid request", Status: http.StatusBadRequest,
			Detail: "after: not a cursor returned by this API", Errors: map[string]string{"after": "not a cursor returned by this API"}}
	case errors.As(err, &wve):
		return problem{Type: problemBase + "wrong-version", Title: "Wrong expected version", Status: http.StatusConflict,
			Detail: fmt.Sprintf("stream %q is at version %d, expected %s; nothing was written", wve.Stream, wve.Actual, wve.Expected)}
	case errors.Is(err, eventstore.ErrWrongVersion):
		return problem{Type: problemBase + "wrong-version", Title: "Wrong expected version", Status: http.StatusConflict,
			Detail: "the stream is not at the expected version; nothing was written"}
	case errors.Is(err, eventstore.ErrIDConflict):
		return problem{Type: problemBase + "id-conflict", Title: "Event id conflict", Status: http.StatusConflict,
			Detail: "some event ids are already in the log (in this or another stream) and others are new; nothing was written"}
	case errors.Is(err, eventstore.ErrNotFound), errors.Is(err, subscriptions.ErrNotFound),
		errors.Is(err, apikeys.ErrNotFound), errors.Is(err, errNotFound):
		return problem{Type: problemBase + "not-found", Title: "Not found", Status: http.StatusNotFound, Detail: "no such resource"}
	case errors.Is(err, errUnauthenticated), errors.Is(err, apikeys.ErrUnauthorized):
		return problem{Type: problemBase + "unauthenticated", Title: "Unauthorized", Status: http.StatusUnauthorized,
			Detail: "send a valid API key as Authorization: Bearer <key>"}
	case errors.Is(err, errForbidden):
		return problem{Type: problemBase + "forbidden", Title: "Forbidden", Status: http.StatusForbidden, Detail: err.Error()}
	case errors.Is(err, errMethod):
		return problem{Type: problemBase + "method-not-allowed", Title: "Method not allowed", Status: http.StatusMethodNotAllowed, Detail: "this route does not accept that method"}
	case errors.As(err, &pe): // normally a field error already; kept for callers that pass it through
		return problem{Type: problemBase + "validation", Title: "Invalid request", Status: http.StatusBadRequest,
			Detail: "url: " + pe.Msg, Errors: map[string]string{"url": pe.Msg}}
	case errors.Is(err, eventstore.ErrClosed), errors.Is(err, subscriptions.ErrNotStarted),
		errors.Is(err, apikeys.ErrNotStarted), errors.Is(err, context.DeadlineExceeded):
		return problem{Type: problemBase + "unavailable", Title: "Service unavailable", Status: http.StatusServiceUnavailable, Detail: "the event store is not available"}
	}
	return problem{Type: problemBase + "internal", Title: "Internal server error", Status: http.StatusInternalServerError, Detail: "an internal error occurred; it has been logged"}
}

// decodeProblem describes a request body that is not the JSON we expect.
func decodeProblem(err error) problem {
	bad := func(detail string, fields map[string]string) problem {
		return problem{Type: problemBase + "malformed-json", Title: "Malformed request body", Status: http.StatusBadRequest, Detail: detail, Errors: fields}
	}
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return bad("the request body is empty; send a JSON object", nil)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("the request body ends in the middle of a JSON value", nil)
	case errors.As(err, &se):
		return bad(fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se), nil)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return bad(fmt.Sprintf("the request body must be a JSON object, not %s", te.Value), nil)
		}
		msg := fmt.Sprintf("must be %s, not %s", jsonKind(te.Type.Kind().String()), te.Value)
		return problem{Type: problemBase + "validation", Title: "Invalid request", Status: http.StatusBadRequest,
			Detail: field + ": " + msg, Errors: map[string]string{field: msg}}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return problem{Type: problemBase + "validation", Title: "Invalid request", Status: http.StatusBadRequest,
			Detail: fmt.Sprintf("unknown field %q", name), Errors: map[string]string{name: "unknown field"}}
	}
	if errors.Is(err, errTrailingData) {
		return bad("the request body holds more than one JSON value", nil)
	}
	return bad("malformed JSON: "+msg, nil)
}

// jsonKind names a Go kind the way a JSON user would.
func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "another type"
}

// writeProblem writes p as application/problem+json.
func writeProblem(w http.ResponseWriter, p problem) {
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hooklog"`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
