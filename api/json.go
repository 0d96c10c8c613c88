package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"
)

// decodeJSON reads r's body (already limited by http.MaxBytesReader) into v,
// rejecting unknown fields and trailing data. Every failure is a *decodeError
// (or wraps *http.MaxBytesError), which problemFor maps to 400 or 413.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return wrapDecode(err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errTrailingData
		}
		return wrapDecode(err)
	}
	return nil
}

func wrapDecode(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return &decodeError{err: err}
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

// timeFormat is RFC 3339 with exactly microseconds, always in UTC.
const timeFormat = "2006-01-02T15:04:05.000000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// formatTimePtr formats t, or returns nil for the zero time (JSON null).
func formatTimePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := formatTime(t)
	return &s
}
