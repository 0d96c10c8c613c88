package eventstore

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinel errors. Backends translate their own errors into these at the
// boundary, so callers only ever test with errors.Is.
var (
	// ErrWrongVersion: the stream is not at the expected version. Nothing was written.
	ErrWrongVersion = errors.New("eventstore: wrong expected version")
	// ErrIDConflict: some (not all) event ids of an append already exist in the
	// log, or they exist in another stream. Nothing was written.
	ErrIDConflict = errors.New("eventstore: event id already used")
	// ErrNotFound: no such event or stream.
	ErrNotFound = errors.New("eventstore: not found")
	// ErrInvalid: the input was rejected before anything was written. The
	// concrete error is a *ValidationError naming the fields.
	ErrInvalid = errors.New("eventstore: invalid input")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("eventstore: store closed")
	// ErrBadPosition: a position string that no backend produced.
	ErrBadPosition = errors.New("eventstore: malformed position")
)

// ValidationError lists field → problem for rejected input. It matches ErrInvalid
// with errors.Is. Field names follow the JSON request shape, e.g. "stream",
// "events[2].type".
type ValidationError struct {
	Fields map[string]string
}

func (e *ValidationError) Error() string {
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+": "+e.Fields[k])
	}
	return "eventstore: invalid input: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// add records a problem for field (the first problem per field wins).
func (e *ValidationError) add(field, format string, args ...any) {
	if e.Fields == nil {
		e.Fields = map[string]string{}
	}
	if _, ok := e.Fields[field]; !ok {
		e.Fields[field] = fmt.Sprintf(format, args...)
	}
}

func (e *ValidationError) orNil() error {
	if len(e.Fields) == 0 {
		return nil
	}
	return e
}

// Invalid returns a *ValidationError for one field.
func Invalid(field, format string, args ...any) error {
	v := &ValidationError{}
	v.add(field, format, args...)
	return v
}

// WrongVersionError carries the stream's actual version. It matches
// ErrWrongVersion with errors.Is.
type WrongVersionError struct {
	Stream   string
	Expected ExpectedVersion
	Actual   int64 // -1 when the stream does not exist
}

func (e *WrongVersionError) Error() string {
	return fmt.Sprintf("eventstore: stream %q: expected version %s, actual %d", e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrWrongVersion) true.
func (e *WrongVersionError) Is(target error) bool { return target == ErrWrongVersion }
