package embedded_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a committer goroutine (or any other) outlives
// the stores the tests closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
