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

// `hooklog bench fanout` and `--memory` run end to end (small) and print
// their tables.
func TestBenchFanoutCommand(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	var out, errb syncBuffer
	code := run(context.Background(), []string{"bench", "fanout", "--events", "200", "--subscriptions", "2", "--rounds", "1",
		"--latency-rate", "50", "--latency-duration", "300ms", "--dir", t.TempDir()}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
	}
	for _, want := range []string{"fan-out 200 events x 2 subscriptions", "deliveries/s", "POSTs/s", "append -> receipt at 50 ev/s", "p99"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out, errb = syncBuffer{}, syncBuffer{}
	code = run(context.Background(), []string{"bench", "fanout", "--memory", "--memory-events", "2000", "--subscriptions", "2",
		"--watch", "200ms", "--dir", t.TempDir()}, &out, &errb)
	if code != 0 {
		t.Fatalf("--memory: exit %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
	}
	for _, want := range []string{"2000 events appended, 2 endpoints down (503)", "peak RSS", "delivery resumes"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--memory output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBenchFanoutFlags(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ args, want string }{
		{"--driver mysql", "--driver"},
		{"--driver postgres --postgres-url=", "--postgres-url"},
		{"--down slowly", "--down"},
		{"--driver esdb --postgres-url postgres://x/y --memory", "--memory"},
	} {
		var out, errb syncBuffer
		args := append([]string{"bench", "fanout"}, strings.Fields(c.args)...)
		if code := run(context.Background(), args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%s: exit %d, stderr %q", c.args, code, errb.String())
		}
	}
}
