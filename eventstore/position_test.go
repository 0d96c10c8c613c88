package eventstore_test

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/hooklog/hooklog/eventstore"
)

func TestPositionRoundTrip(t *testing.T) {
	for _, p := range []eventstore.Position{
		eventstore.Start, {Lo: 1}, {Hi: 1}, {Hi: 1, Lo: 2}, {Hi: math.MaxUint64, Lo: math.MaxUint64}, {Hi: 0x0123456789abcdef, Lo: 0xfedcba9876543210},
	} {
		s := p.String()
		if len(s) != 32 || strings.ToLower(s) != s {
			t.Errorf("%v.String() = %q, want 32 lower-case hex digits", p, s)
		}
		q, err := eventstore.ParsePosition(s)
		if err != nil || q != p {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v", s, q, err, p)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var r eventstore.Position
		if err := json.Unmarshal(b, &r); err != nil || r != p {
			t.Errorf("JSON round trip of %v via %s: %v, %v", p, b, r, err)
		}
	}
	if p, err := eventstore.ParsePosition(""); err != nil || p != eventstore.Start {
		t.Errorf(`ParsePosition("") = %v, %v; want Start`, p, err)
	}
	if !eventstore.Start.IsZero() || (eventstore.Position{Lo: 1}).IsZero() {
		t.Errorf("IsZero is wrong")
	}
}

func TestParsePositionRejects(t *testing.T) {
	for _, s := range []string{
		"0", "now", strings.Repeat("0", 31), strings.Repeat("0", 33),
		strings.Repeat("0", 31) + "g", strings.Repeat("0", 31) + "A", // one position, one spelling
		" " + strings.Repeat("0", 31), strings.Repeat("0", 30) + "-1",
	} {
		if _, err := eventstore.ParsePosition(s); !errors.Is(err, eventstore.ErrBadPosition) {
			t.Errorf("ParsePosition(%q) = %v, want ErrBadPosition", s, err)
		}
		var p eventstore.Position
		if err := json.Unmarshal([]byte(`"`+s+`"`), &p); !errors.Is(err, eventstore.ErrBadPosition) {
			t.Errorf("json.Unmarshal(%q) = %v, want ErrBadPosition", s, err)
		}
	}
}

// TestPositionOrder: Compare orders by (Hi, Lo) and the string forms sort the
// same way, so positions compared "as returned" sort in log order.
func TestPositionOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ps := []eventstore.Position{eventstore.Start, {Lo: math.MaxUint64}, {Hi: 1}, {Hi: math.MaxUint64}}
	for range 500 {
		ps = append(ps, eventstore.Position{Hi: rng.Uint64N(4), Lo: rng.Uint64() >> rng.UintN(64)})
	}
	for _, p := range ps {
		for _, q := range ps {
			c := p.Compare(q)
			want := 0
			switch {
			case p.Hi < q.Hi || p.Hi == q.Hi && p.Lo < q.Lo:
				want = -1
			case p != q:
				want = 1
			}
			if c != want {
				t.Fatalf("%v.Compare(%v) = %d, want %d", p, q, c, want)
			}
			if p.Less(q) != (want < 0) {
				t.Fatalf("%v.Less(%v) = %v", p, q, p.Less(q))
			}
			if sc := strings.Compare(p.String(), q.String()); sc != c {
				t.Fatalf("strings of %v and %v compare %d, positions %d", p, q, sc, c)
			}
		}
	}
	sorted := slices.Clone(ps)
	slices.SortFunc(sorted, eventstore.Position.Compare)
	if sorted[0] != eventstore.Start {
		t.Errorf("Start does not sort first")
	}
}
