package embedded_test

import (
	"testing"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/storetest"
)

func harness() storetest.Harness {
	return storetest.Harness{
		Open: func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store) {
			dir := t.TempDir()
			s := openStore(t, dir)
			return s, func(t *testing.T) eventstore.Store { return openStore(t, dir) }
		},
		ExactPositionAt: true,
	}
}

func openStore(t testing.TB, dir string) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(embedded.Config{Path: dir})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, harness())
}
