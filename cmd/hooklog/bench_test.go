package main

import (
	"context"
	"strings"
	"testing"
)

// `hooklog bench api` runs end to end (briefly) through serve's own wiring and
// prints its table; the figures themselves are for people, not for tests.
func TestBenchAPICommand(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	var out, errb syncBuffer
	code := run(context.Background(), []string{"bench", "api", "--duration", "200ms", "--concurrency", "4", "--batch", "10", "--dir", t.TempDir()}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
	}
	for _, want := range []string{"single-event requests, 4 clients", "10-event requests, 1 client", "RATIO"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBenchAppendUnknownDriver(t *testing.T) {
	t.Parallel()
	var out, errb syncBuffer
	if code := run(context.Background(), []string{"bench", "append", "--driver", "mysql"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--driver") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
