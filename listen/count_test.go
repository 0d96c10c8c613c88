package listen

import "testing"

// The attempt counter remembers a bounded number of ids, oldest forgotten first.
func TestCountForgetsOldest(t *testing.T) {
	h, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	h.remember = 3
	for _, step := range []struct {
		id   string
		want int
	}{
		{"a", 1}, {"b", 1}, {"a", 2}, {"c", 1}, // a, b, c remembered
		{"d", 1},           // forgets a
		{"a", 1},           // forgets b
		{"c", 2}, {"d", 2}, // still there
		{"b", 1},
	} {
		if got := h.count(step.id); got != step.want {
			t.Fatalf("count(%s) = %d, want %d", step.id, got, step.want)
		}
	}
	if len(h.seen) != 3 || len(h.order) != 3 {
		t.Errorf("remembers %d ids (ring %d), want 3", len(h.seen), len(h.order))
	}
}
