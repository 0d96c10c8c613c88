package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// replayRecv records the event ids of replayed deliveries (webhook-replay
// set) and counts live ones.
type replayRecv struct {
	mu       sync.Mutex
	replayed map[string]int // event id -> copies
	live     int
	delay    time.Duration
}

func newReplayRecv(t *testing.T, delay time.Duration) (*replayRecv, string) {
	rc := &replayRecv{replayed: map[string]int{}, delay: delay}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(rc.delay)
		rc.mu.Lock()
		if r.Header.Get("webhook-replay") != "" {
			rc.replayed[r.Header.Get("webhook-id")]++
		} else {
			rc.live++
		}
		rc.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return rc, srv.URL + "/hook"
}

func (rc *replayRecv) counts() (distinct, copies, live int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, n := range rc.replayed {
		distinct++
		copies += n
	}
	return distinct, copies, rc.live
}

// appendEvents appends n events over HTTP (one request) and returns their ids.
func appendEvents(t *testing.T, server, stream string, n int) []string {
	t.Helper()
	evs := make([]map[string]any, n)
	for i := range evs {
		evs[i] = map[string]any{"type": "order.created", "data": map[string]any{"n": i}}
	}
	raw, _ := json.Marshal(map[string]any{"events": evs})
	req, _ := http.NewRequest(http.MethodPost, server+"/v1/streams/"+stream+"/events", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Events []struct{ ID string } }
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("append: %d", resp.StatusCode)
	}
	ids := make([]string, len(out.Events))
	for i, e := range out.Events {
		ids[i] = e.ID
	}
	return ids
}

func rfcNow() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func TestCLIReplay(t *testing.T) {
	t.Parallel()
	srv := testServer(t)
	rc, url := newReplayRecv(t, 0)
	var sub struct{ ID string }
	if err := json.Unmarshal([]byte(mustCLI(t, srv, testAdminKey, "subs", "create", url)), &sub); err != nil {
		t.Fatal(err)
	}
	from := rfcNow()
	appendEvents(t, srv, "order-1", 30)
	to := rfcNow()

	stdout, stderr, code := cli(t, srv, testAdminKey, "replay", "create", "--subscription", sub.ID, "--from", from, "--to", to, "--follow", "--interval", "50ms")
	if code != 0 || !strings.Contains(stdout, "completed: 30 delivered, 0 failed of 30") {
		t.Fatalf("replay create --follow: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "100%") || !strings.Contains(stderr, "deliveries/s") {
		t.Errorf("no progress bar with a rate on stderr:\n%s", stderr)
	}
	id := strings.Fields(stdout)[1]
	if distinct, copies, _ := rc.counts(); distinct != 30 || copies != 30 {
		t.Errorf("receiver: %d replayed events in %d copies, want 30", distinct, copies)
	}
	if out := mustCLI(t, srv, testAdminKey, "replay", "list"); !strings.Contains(out, id) || !strings.Contains(out, "completed") || !strings.HasPrefix(out, "ID") {
		t.Errorf("replay list:\n%s", out)
	}
	if out := mustCLI(t, srv, testAdminKey, "replay", "show", id); !strings.Contains(out, `"status": "completed"`) || !strings.Contains(out, `"delivered": 30`) {
		t.Errorf("replay show:\n%s", out)
	}
	if _, stderr, code := cli(t, srv, testAdminKey, "replay", "cancel", id); code != 1 || !strings.Contains(stderr, "409") {
		t.Errorf("cancel a completed replay: exit %d, %s", code, stderr)
	}

	// A window that reaches into the future runs until cancelled.
	out := mustCLI(t, srv, testAdminKey, "replay", "create", "--all", "--from", "1h", "--to", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	var r struct{ ID, Status string }
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Status != "running" {
		t.Fatalf("create: %v\n%s", err, out)
	}
	if out := mustCLI(t, srv, testAdminKey, "replay", "cancel", r.ID); !strings.Contains(out, `"status": "cancelled"`) {
		t.Errorf("cancel:\n%s", out)
	}

	for _, args := range [][]string{
		{"replay", "create", "--all", "--subscription", sub.ID, "--from", "1h", "--to", "now"},
		{"replay", "create", "--from", "1h", "--to", "now"},
		{"replay", "create", "--all", "--from", "yesterday", "--to", "now"},
		{"replay", "create", "--all", "--to", "now"},
	} {
		if _, stderr, code := cli(t, srv, testAdminKey, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, stderr)
		}
	}
	if _, stderr, code := cli(t, srv, testAdminKey, "replay", "create", "--all", "--from", "now", "--to", "1h"); code != 1 || !strings.Contains(stderr, "to: must be after from") {
		t.Errorf("to before from: exit %d, %s", code, stderr)
	}
}

// TestReplayResumesAfterKill: `hooklog serve` is killed with SIGKILL in the
// middle of a replay; restarted on the same store, it resumes the replay
// and finishes it, every event of the window delivered at least once.
func TestReplayResumesAfterKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := []string{"HOOKLOG_AUTH_ADMIN_KEY=" + testAdminKey, "HOOKLOG_DELIVERY_ALLOW_PRIVATE_NETWORKS=true",
		"HOOKLOG_STORE_PATH=" + filepath.Join(dir, "data")}
	start := func() *proc {
		p := startServe(t, dir, env, "--http.addr", "127.0.0.1:0")
		p.waitReady()
		return p
	}
	p := start()
	server := "http://" + p.addr
	const n = 2000
	from := rfcNow()
	var ids []string
	for range n / 500 {
		ids = append(ids, appendEvents(t, server, "order-1", 500)...)
	}
	to := rfcNow()
	rc, url := newReplayRecv(t, time.Millisecond)
	var sub struct{ ID string }
	if err := json.Unmarshal([]byte(mustCLI(t, server, testAdminKey, "subs", "create", url)), &sub); err != nil {
		t.Fatal(err)
	}
	var r struct{ ID string }
	if err := json.Unmarshal([]byte(mustCLI(t, server, testAdminKey, "replay", "create", "--subscription", sub.ID, "--from", from, "--to", to)), &r); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d, _, _ := rc.counts(); d >= n/4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replay progress in 30s\n%s", p.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.stop(syscall.SIGKILL)
	before, _, _ := rc.counts()
	if before >= n {
		t.Fatalf("the replay finished before the kill")
	}
	p = start()
	server = "http://" + p.addr
	var got struct {
		Status    string
		Delivered int
	}
	for {
		if err := json.Unmarshal([]byte(mustCLI(t, server, testAdminKey, "replay", "show", r.ID)), &got); err != nil {
			t.Fatal(err)
		}
		if got.Status != "running" {
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("the replay did not finish after the restart\n%s", p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	distinct, copies, live := rc.counts()
	if got.Status != "completed" || got.Delivered != n || distinct != n || live != 0 {
		t.Fatalf("after the restart: %+v; receiver %d distinct events (%d copies), %d live", got, distinct, copies, live)
	}
	rc.mu.Lock()
	for _, id := range ids {
		if rc.replayed[id] == 0 {
			t.Errorf("event %s was never replayed", id)
		}
	}
	rc.mu.Unlock()
	t.Logf("%d events: %d replayed before the kill, %d copies in all", n, before, copies)
}
