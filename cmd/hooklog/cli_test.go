package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore/embedded"
)

const testAdminKey = "test-admin-key-0123456789"

// testServer runs the same wiring as `hooklog serve` (newApp) on an embedded
// store, behind a real HTTP server on 127.0.0.1.
func testServer(t *testing.T) string {
	t.Helper()
	cfg, err := loadConfig(flags(t, "--auth.admin_key", testAdminKey, "--delivery.allow_private_networks"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := embedded.Open(embedded.Config{Path: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := newApp(context.Background(), cfg, store, log, io.Discard)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.handler) // listens on 127.0.0.1
	t.Cleanup(func() {
		srv.Close()
		if err := a.close(); err != nil {
			t.Error(err)
		}
		if err := store.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv.URL
}

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cli runs hooklog in-process against server with key.
func cli(t *testing.T, server, key string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb syncBuffer
	full := append(append([]string{}, args...), "--server", server)
	if key != "" {
		full = append(full, "--key", key)
	}
	code = run(context.Background(), full, &out, &errb)
	return out.String(), errb.String(), code
}

// mustCLI runs a command that must succeed.
func mustCLI(t *testing.T, server, key string, args ...string) string {
	t.Helper()
	stdout, stderr, code := cli(t, server, key, args...)
	if code != 0 {
		t.Fatalf("hooklog %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

func TestCLIEvents(t *testing.T) {
	t.Parallel()
	srv := testServer(t)

	out := mustCLI(t, srv, testAdminKey, "events", "append", "order-1", "payment.succeeded", `{"amount": 1299}`, "--tenant", "acme")
	if !regexp.MustCompile(`^appended [0-9a-f-]{36}: stream order-1 version 0 position [0-9a-f]{32}\n$`).MatchString(out) {
		t.Fatalf("append output: %q", out)
	}
	id := "0190c4a8-3c1e-7000-8000-000000000001"
	mustCLI(t, srv, testAdminKey, "events", "append", "order-2", "order.created", `{}`, "--id", id, "--expected-version", "no_stream")
	out = mustCLI(t, srv, testAdminKey, "events", "append", "order-2", "order.created", `{}`, "--id", id)
	if !strings.HasPrefix(out, "already in the log (nothing written) "+id) {
		t.Fatalf("idempotent retry output: %q", out)
	}

	// A version conflict: readable problem, exit 1.
	_, stderr, code := cli(t, srv, testAdminKey, "events", "append", "order-1", "payment.failed", `{}`, "--expected-version", "no_stream")
	if code != 1 || !strings.HasPrefix(stderr, "hooklog: 409 Conflict") {
		t.Fatalf("conflict: exit %d, stderr %q", code, stderr)
	}
	// Validation: one line per field error.
	_, stderr, code = cli(t, srv, testAdminKey, "events", "append", "bad stream!", "Nope", `{"a":1}`)
	if code != 1 || !strings.HasPrefix(stderr, "hooklog: 400 Bad Request") ||
		!strings.Contains(stderr, "\n  stream: ") || !strings.Contains(stderr, "\n  events[0].type: ") {
		t.Fatalf("validation: exit %d, stderr %q", code, stderr)
	}
	// DATA that is not JSON never reaches the server: usage error.
	if _, stderr, code = cli(t, srv, testAdminKey, "events", "append", "s", "a.b", `{nope`); code != 2 || !strings.Contains(stderr, "DATA") {
		t.Fatalf("bad DATA: exit %d, stderr %q", code, stderr)
	}

	// tail --no-follow from the start prints both events, one line each.
	out = mustCLI(t, srv, testAdminKey, "events", "tail", "--after", "start", "--no-follow")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], " order-1@0 payment.succeeded tenant=acme {\"amount\":1299}") ||
		!strings.Contains(lines[1], " order-2@0 order.created tenant=- {}") {
		t.Fatalf("tail output:\n%s", out)
	}
	out = mustCLI(t, srv, testAdminKey, "events", "tail", "--after", "start", "--no-follow", "--types", "order.*", "--json")
	var ev map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ev); err != nil || ev["id"] != id {
		t.Fatalf("tail --json --types order.*: %q (%v)", out, err)
	}
}

// tail follows the long-poll: an event appended after it started is printed
// promptly, and cancelling stops it with exit 0.
func TestCLITailFollows(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	mustCLI(t, srv, testAdminKey, "events", "append", "old-1", "order.created", `{}`)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"events", "tail", "--server", srv, "--key", testAdminKey, "--streams", "new-*", "--wait", "10s"}, &out, &errb)
	}()
	time.Sleep(200 * time.Millisecond) // let the first long-poll start at the head
	mustCLI(t, srv, testAdminKey, "events", "append", "other-1", "order.created", `{}`)
	mustCLI(t, srv, testAdminKey, "events", "append", "new-1", "order.shipped", `{"n":1}`)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "new-1@0 order.shipped") {
		if time.Now().After(deadline) {
			t.Fatalf("tail did not print the new event in 5s; stdout %q stderr %q", out.String(), errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("tail exit %d after cancel; stderr %q", code, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tail did not stop after cancel")
	}
	if s := out.String(); strings.Contains(s, "old-1") || strings.Contains(s, "other-1") || strings.Count(s, "\n") != 1 {
		t.Fatalf("tail printed more than the new matching event:\n%s", s)
	}
}

func TestCLISubscriptions(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	out := mustCLI(t, srv, testAdminKey, "subs", "create", "http://127.0.0.1:9/hook",
		"--event-types", "payment.*,order.created", "--streams", "order-*", "--tenant", "acme",
		"--description", "fulfillment", "--header", "X-Team=ops", "--start", "beginning", "--ordered")
	var sub struct {
		ID, URL, Secret, State, Description string
		EventTypes                          []string `json:"event_types"`
		Tenant                              string
		Ordered                             bool
		Headers                             map[string]string
	}
	if err := json.Unmarshal([]byte(out), &sub); err != nil {
		t.Fatalf("create output is not the subscription JSON: %v\n%s", err, out)
	}
	if sub.ID == "" || !strings.HasPrefix(sub.Secret, "whsec_") || sub.State != "active" || sub.Tenant != "acme" ||
		!sub.Ordered || sub.Headers["X-Team"] != "ops" || len(sub.EventTypes) != 2 || sub.Description != "fulfillment" {
		t.Fatalf("created subscription: %+v", sub)
	}

	out = mustCLI(t, srv, testAdminKey, "subs", "list")
	if !regexp.MustCompile(`(?m)^` + sub.ID + `\s+active\s+acme\s+payment\.\*,order\.created\s+order-\*\s+http://127\.0\.0\.1:9/hook$`).MatchString(out) {
		t.Fatalf("list:\n%s", out)
	}
	out = mustCLI(t, srv, testAdminKey, "subs", "pause", sub.ID)
	if !strings.Contains(out, `"state": "paused"`) {
		t.Fatalf("pause:\n%s", out)
	}
	out = mustCLI(t, srv, testAdminKey, "subs", "show", sub.ID)
	if !strings.Contains(out, `"state": "paused"`) || strings.Contains(out, "whsec_") {
		t.Fatalf("show (paused, no secret):\n%s", out)
	}
	out = mustCLI(t, srv, testAdminKey, "subs", "resume", sub.ID)
	if !strings.Contains(out, `"state": "active"`) {
		t.Fatalf("resume:\n%s", out)
	}
	if out = mustCLI(t, srv, testAdminKey, "subs", "delete", sub.ID); out != "deleted subscription "+sub.ID+"\n" {
		t.Fatalf("delete: %q", out)
	}
	_, stderr, code := cli(t, srv, testAdminKey, "subs", "show", sub.ID)
	if code != 1 || !strings.HasPrefix(stderr, "hooklog: 404 Not Found") {
		t.Fatalf("show after delete: exit %d, %q", code, stderr)
	}
	// A hostile URL: 400 naming the field.
	_, stderr, code = cli(t, srv, testAdminKey, "subs", "create", "http://user:pw@example.com/")
	if code != 1 || !strings.Contains(stderr, "400 Bad Request") || !strings.Contains(stderr, "\n  url: ") {
		t.Fatalf("bad url: exit %d, %q", code, stderr)
	}
}

func TestCLIKeys(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	out := mustCLI(t, srv, testAdminKey, "keys", "create", "shop", "--role", "producer")
	var k struct{ ID, Key, Role, Name string }
	if err := json.Unmarshal([]byte(out), &k); err != nil || k.Key == "" || k.Role != "producer" || k.Name != "shop" {
		t.Fatalf("create: %v\n%s", err, out)
	}
	// The new key works for its role and not beyond it.
	mustCLI(t, srv, k.Key, "events", "append", "order-9", "order.created", `{}`)
	_, stderr, code := cli(t, srv, k.Key, "keys", "list")
	if code != 1 || !strings.HasPrefix(stderr, "hooklog: 403 Forbidden") {
		t.Fatalf("producer listing keys: exit %d, %q", code, stderr)
	}

	out = mustCLI(t, srv, testAdminKey, "keys", "list")
	if !regexp.MustCompile(`(?m)^`+k.ID+`\s+shop\s+producer\s+-\s`).MatchString(out) || strings.Contains(out, k.Key) {
		t.Fatalf("list (no plaintext):\n%s", out)
	}
	tenant := mustCLI(t, srv, testAdminKey, "keys", "create", "acme-portal", "--role", "tenant", "--tenant", "acme")
	if !strings.Contains(tenant, `"tenant": "acme"`) {
		t.Fatalf("tenant key: %s", tenant)
	}

	if out = mustCLI(t, srv, testAdminKey, "keys", "revoke", k.ID); out != "revoked key "+k.ID+"\n" {
		t.Fatalf("revoke: %q", out)
	}
	_, stderr, code = cli(t, srv, k.Key, "events", "append", "order-9", "order.created", `{}`)
	if code != 1 || !strings.HasPrefix(stderr, "hooklog: 401 Unauthorized") || !strings.Contains(stderr, "--key or HOOKLOG_KEY") {
		t.Fatalf("revoked key: exit %d, %q", code, stderr)
	}
	// --role is required: a usage error, exit 2, nothing sent.
	if _, stderr, code = cli(t, srv, testAdminKey, "keys", "create", "x"); code != 2 || !strings.Contains(stderr, "role") {
		t.Fatalf("missing --role: exit %d, %q", code, stderr)
	}
}

func TestCLIUnreachableServer(t *testing.T) {
	t.Parallel()
	// A port that was free a moment ago: nothing listens there.
	srv := httptest.NewServer(nil)
	url := srv.URL
	srv.Close()
	_, stderr, code := cli(t, url, testAdminKey, "subs", "list")
	if code != 1 || !strings.Contains(stderr, "cannot reach "+url) || !strings.Contains(stderr, "HOOKLOG_SERVER") {
		t.Fatalf("exit %d, %q", code, stderr)
	}
	_, stderr, code = cli(t, "ftp://example", testAdminKey, "subs", "list")
	if code != 2 || !strings.Contains(stderr, "--server") {
		t.Fatalf("bad --server: exit %d, %q", code, stderr)
	}
}

// The README's tested CLI block runs as written against a real server.
func TestReadmeCLIExamples(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "<!-- tested: TestReadmeCLIExamples"
	i := strings.Index(string(raw), marker)
	if i < 0 {
		t.Fatal("README.md has no tested CLI block")
	}
	block := string(raw[i:])
	start := strings.Index(block, "```sh\n")
	end := strings.Index(block[start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatal("README.md: the tested CLI block is not a ```sh block")
	}
	srv := testServer(t)
	n := 0
	for _, line := range strings.Split(block[start+6:start+6+end], "\n") {
		if !strings.HasPrefix(line, "hooklog ") {
			continue
		}
		args, err := shellWords(strings.TrimPrefix(line, "hooklog "))
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if _, stderr, code := cli(t, srv, testAdminKey, args...); code != 0 {
			t.Errorf("README: %s\nexit %d: %s", line, code, stderr)
		}
		n++
	}
	if n < 5 {
		t.Fatalf("only %d commands found in the tested block", n)
	}
}

// shellWords splits a command line the way sh does for plain words and
// single- or double-quoted strings (no expansions).
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, errors.New("unterminated quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			i = len(s)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// subs status, deliveries and redrive against serve's wiring with its
// projector delivering to a real receiver that fails until told otherwise.
func TestCLIDeliveries(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	var ok atomic.Bool
	var hits atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if !ok.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	out := mustCLI(t, srv, testAdminKey, "subs", "create", recv.URL+"/hook", "--retry-schedule", "10ms", "--max-age", "1h")
	var sub struct{ ID string }
	if err := json.Unmarshal([]byte(out), &sub); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	mustCLI(t, srv, testAdminKey, "events", "append", "order-1", "order.created", `{}`)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(mustCLI(t, srv, testAdminKey, "subs", "status", sub.ID), `"dead_letters": 1`) {
		if time.Now().After(deadline) {
			t.Fatal("no dead letter in 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out = mustCLI(t, srv, testAdminKey, "subs", "deliveries", sub.ID)
	if !regexp.MustCompile(`(?m)^AT\s+EVENT\s+ATTEMPT\s+STATUS\s+CODE\s+MS\s+REPLAY\s+ERROR\n.*\s2\s+dead\s+500\s.*\n.*\s1\s+failed\s+500\s`).MatchString(out) {
		t.Fatalf("deliveries:\n%s", out)
	}
	ok.Store(true)
	if out = mustCLI(t, srv, testAdminKey, "subs", "redrive", sub.ID); !strings.Contains(out, `"requeued": 1`) {
		t.Fatalf("redrive: %s", out)
	}
	for !strings.Contains(mustCLI(t, srv, testAdminKey, "subs", "deliveries", sub.ID, "--status", "succeeded", "--json"), `"attempt": 3`) {
		if time.Now().After(deadline) {
			t.Fatal("the redriven delivery did not succeed in 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, stderr, code := cli(t, srv, testAdminKey, "subs", "deliveries", sub.ID, "--status", "nope"); code != 1 || !strings.Contains(stderr, "status:") {
		t.Fatalf("bad --status: exit %d, %q", code, stderr)
	}
}

// The README's quick start works as written: `hooklog listen` (on a free
// port instead of 9000), a subscription to it, an event, and the listener
// prints the delivery. Lines may start with "hooklog" or "go run ./cmd/hooklog".
func TestReadmeQuickStart(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "<!-- tested: TestReadmeQuickStart"
	i := strings.Index(string(raw), marker)
	if i < 0 {
		t.Fatal("README.md has no tested quick start block")
	}
	block := string(raw[i:])
	start := strings.Index(block, "```sh\n")
	end := strings.Index(block[start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatal("README.md: the tested quick start block is not a ```sh block")
	}
	var cmds [][]string
	for _, line := range strings.Split(block[start+6:start+6+end], "\n") {
		var rest string
		switch {
		case strings.HasPrefix(line, "go run ./cmd/hooklog "):
			rest = strings.TrimPrefix(line, "go run ./cmd/hooklog ")
		case strings.HasPrefix(line, "hooklog "):
			rest = strings.TrimPrefix(line, "hooklog ")
		default:
			continue
		}
		args, err := shellWords(rest)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		cmds = append(cmds, args)
	}
	if len(cmds) != 3 || cmds[0][0] != "listen" || cmds[1][0] != "subs" || cmds[2][0] != "events" {
		t.Fatalf("the quick start should be listen, subs create, events append; found %v", cmds)
	}

	srv := testServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, append(cmds[0], "--addr", "127.0.0.1:0"), &out, &errb) }()
	addrRE := regexp.MustCompile(`receiving webhooks at http://(127\.0\.0\.1:\d+)/`)
	deadline := time.Now().Add(10 * time.Second)
	var addr string
	for addr == "" {
		if m := addrRE.FindStringSubmatch(errb.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("listen did not start: %q", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, args := range cmds[1:] {
		for j := range args {
			args[j] = strings.ReplaceAll(args[j], "127.0.0.1:9000", addr)
		}
		mustCLI(t, srv, testAdminKey, args...)
	}
	for !strings.Contains(out.String(), "→ 200") {
		if time.Now().After(deadline) {
			t.Fatalf("listen printed no delivery; stdout %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("listen printed:\n%s%s", errb.String(), out.String())
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("listen exit %d: %s", code, errb.String())
	}
}
