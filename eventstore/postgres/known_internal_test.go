package postgres

import (
	"testing"

	"github.com/hooklog/hooklog/eventstore"
)

// Concurrent Appends of one Store on one stream must not all guess the same
// next version: only an Append alone on its stream uses the remembered one.
func TestKnownNextOnlyWhenAlone(t *testing.T) {
	s := &Store{}
	s.noteVersion("s-1", 4)
	p := eventstore.AppendParams{Stream: "s-1", Expected: eventstore.Any}

	last, ok := s.knownNext(p)
	if !ok || last != 4 {
		t.Fatalf("alone: knownNext = %d, %v; want 4, true", last, ok)
	}
	if _, ok := s.knownNext(p); ok {
		t.Fatal("a second Append on the stream while the first runs used the remembered version")
	}
	if _, ok := s.knownNext(eventstore.AppendParams{Stream: "s-2", Expected: eventstore.Any}); ok {
		t.Fatal("a stream never appended to has no remembered version")
	}
	s.appendDone("s-2")
	s.appendDone("s-1")
	s.appendDone("s-1")
	if last, ok := s.knownNext(p); !ok || last != 4 {
		t.Fatalf("after both ended: knownNext = %d, %v; want 4, true", last, ok)
	}
	s.appendDone("s-1")
	if len(s.inflight) != 0 {
		t.Fatalf("registrations left: %v", s.inflight)
	}
	if _, ok := s.knownNext(eventstore.AppendParams{Stream: "s-1", Expected: eventstore.Exact(3)}); ok {
		t.Fatal("an exact expected version other than the remembered one used the fast path")
	}
	s.appendDone("s-1")
}
