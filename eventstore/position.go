package eventstore

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Position is a point in the log. It is opaque to callers: backends give it
// meaning (embedded: a sequence number in Lo; postgres: transaction id and row
// sequence; esdb: commit and prepare positions). Positions are totally ordered by
// (Hi, Lo). The zero Position is the start of the log, before every event.
//
// A Position used as a read cursor means "after this point": reading after the
// position of event e returns the events that follow e.
type Position struct {
	Hi, Lo uint64
}

// Start is the cursor before the first event.
var Start = Position{}

// IsZero reports whether p is the start of the log.
func (p Position) IsZero() bool { return p == Start }

// Compare returns -1, 0 or +1 as p sorts before, equal to or after q.
func (p Position) Compare(q Position) int {
	if c := cmp.Compare(p.Hi, q.Hi); c != 0 {
		return c
	}
	return cmp.Compare(p.Lo, q.Lo)
}

// Less reports whether p sorts before q.
func (p Position) Less(q Position) bool { return p.Compare(q) < 0 }

// String is the cursor form: 32 lower-case hex digits, which sort
// lexicographically in log order.
func (p Position) String() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], p.Hi)
	binary.BigEndian.PutUint64(b[8:], p.Lo)
	return hex.EncodeToString(b[:])
}

// MarshalText implements encoding.TextMarshaler.
func (p Position) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Position) UnmarshalText(b []byte) error {
	q, err := ParsePosition(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParsePosition parses the String form. The empty string is Start.
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Start, nil
	}
	if len(s) != 32 {
		return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, s)
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], []byte(s)); err != nil {
		return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, s)
	}
	for _, c := range s { // reject upper-case so one position has one spelling
		if c >= 'A' && c <= 'F' {
			return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, s)
		}
	}
	return Position{Hi: binary.BigEndian.Uint64(b[:8]), Lo: binary.BigEndian.Uint64(b[8:])}, nil
}
