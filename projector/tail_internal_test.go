package projector

import (
	"slices"
	"testing"

	"github.com/hooklog/hooklog/eventstore"
)

// TestTailRecent: a route reading from the tail's recent reads gets what
// ReadAll would: the matching events after its position, at most limit, and
// the position read up to; a position older than what is kept reads the store.
func TestTailRecent(t *testing.T) {
	pos := func(n uint64) eventstore.Position { return eventstore.Position{Hi: 1, Lo: n} }
	evs := func(from, to uint64) []eventstore.Event {
		var out []eventstore.Event
		for n := from; n <= to; n++ {
			typ := "odd"
			if n%2 == 0 {
				typ = "even"
			}
			out = append(out, eventstore.Event{Position: pos(n), Type: typ, Data: []byte(`{}`)})
		}
		return out
	}
	tl := newTail(nil, Config{}, pos(0))
	tl.dispatch(evs(1, 10), pos(10))
	tl.dispatch(nil, pos(12)) // progress only: 11 and 12 were internal
	tl.dispatch(evs(13, 20), pos(20))
	all := func(*eventstore.Event) bool { return true }
	even := func(e *eventstore.Event) bool { return e.Type == "even" }
	positions := func(es []eventstore.Event) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.Position.Lo)
		}
		return out
	}
	for _, c := range []struct {
		after, limit int
		match        func(*eventstore.Event) bool
		want         []uint64
		next         uint64
	}{
		{0, 100, all, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16, 17, 18, 19, 20}, 20},
		{0, 3, all, []uint64{1, 2, 3}, 3},
		{9, 3, all, []uint64{10, 13, 14}, 14},
		{10, 100, even, []uint64{14, 16, 18, 20}, 20},
		{11, 1, even, []uint64{14}, 14},
		{19, 100, even, []uint64{20}, 20},
		{20, 100, all, nil, 20},
		{15, 100, func(*eventstore.Event) bool { return false }, nil, 20},
	} {
		got, next, ok := tl.readRecent(pos(uint64(c.after)), c.match, c.limit)
		if !ok || !slices.Equal(positions(got), c.want) || next != pos(c.next) {
			t.Errorf("after %d limit %d: %v, next %v, %v; want %v, next %d", c.after, c.limit, positions(got), next.Lo, ok, c.want, c.next)
		}
	}
	if _, _, ok := tl.readRecent(pos(21), all, 10); ok {
		t.Errorf("after the tail's position: served from memory")
	}

	// Past recentBytes the oldest reads go: positions before them read the store.
	big := make([]byte, recentBytes/4)
	for n := uint64(21); n <= 30; n++ {
		tl.dispatch([]eventstore.Event{{Position: pos(n), Data: big}}, pos(n))
	}
	if _, _, ok := tl.readRecent(pos(5), all, 10); ok {
		t.Errorf("after a dropped read: served from memory")
	}
	if got, next, ok := tl.readRecent(pos(29), all, 10); !ok || !slices.Equal(positions(got), []uint64{30}) || next != pos(30) {
		t.Errorf("after 29: %v, next %v, %v; want [30], next 30", positions(got), next.Lo, ok)
	}
	if tl.recentBytes > recentBytes {
		t.Errorf("recent holds %d bytes, more than %d", tl.recentBytes, recentBytes)
	}
}
