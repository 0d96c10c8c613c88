package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// Crash safety (DESIGN.md invariant 4): `hooklog serve` runs as a child
// process delivering to a receiver on 127.0.0.1 while events are appended
// over HTTP; it is killed with SIGKILL at random moments and restarted on the
// same store. In the end every (event, subscription) pair has arrived at
// least once, and every copy of a pair carried the event id as webhook-id.

func TestCrashSafetyEmbedded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	crashTest(t, []string{"HOOKLOG_STORE_PATH=" + filepath.Join(dir, "data")})
}

func TestCrashSafetyPostgres(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	crashTest(t, []string{"HOOKLOG_STORE_DRIVER=postgres", "HOOKLOG_STORE_POSTGRES_URL=" + url,
		"HOOKLOG_STORE_POSTGRES_SCHEMA=" + pgtest.Schema(t)})
}

// On esdb the KurrentDB test server lives in this test process, so it
// outlives every kill of hooklog; the side state is in PostgreSQL.
func TestCrashSafetyESDB(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := pgtest.Schema(t)
	srv := esdbtest.Start(t)
	crashTest(t, []string{"HOOKLOG_STORE_DRIVER=esdb", "HOOKLOG_STORE_ESDB_URL=" + srv.URL(),
		"HOOKLOG_STORE_POSTGRES_URL=" + url, "HOOKLOG_STORE_POSTGRES_SCHEMA=" + schema})
}

// crashReceiver records every delivery: per subscription (the URL path) and
// event (the body's id), the webhook-id of each copy.
type crashReceiver struct {
	mu  sync.Mutex
	got map[string]map[string][]string // path -> event id -> webhook-ids
	n   int
}

func (rc *crashReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ID string `json:"id"`
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil || json.Unmarshal(raw, &body) != nil || body.ID == "" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	// A little work per delivery keeps some in flight when the kill comes.
	time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
	rc.mu.Lock()
	m := rc.got[r.URL.Path]
	if m == nil {
		m = map[string][]string{}
		rc.got[r.URL.Path] = m
	}
	m[body.ID] = append(m[body.ID], r.Header.Get("webhook-id"))
	rc.n++
	rc.mu.Unlock()
}

// crashSub is one subscription of the test and which events it matches.
type crashSub struct {
	path  string
	body  string
	match func(typ string) bool
}

func crashTest(t *testing.T, storeEnv []string) {
	const (
		kills    = 4
		perBatch = 3
		pace     = 40 * time.Millisecond // one batch per pace: ~75 events/s
	)
	rc := &crashReceiver{got: map[string]map[string][]string{}}
	recv := httptest.NewServer(rc)
	t.Cleanup(recv.Close)

	env := append([]string{"HOOKLOG_AUTH_ADMIN_KEY=" + testAdminKey, "HOOKLOG_DELIVERY_ALLOW_PRIVATE_NETWORKS=true",
		"HOOKLOG_DELIVERY_DRAIN_TIMEOUT=2s"}, storeEnv...)
	dir := t.TempDir()
	start := func() *proc {
		t.Helper()
		p := startServe(t, dir, env, "--http.addr", "127.0.0.1:0")
		p.waitReady()
		return p
	}
	p := start()
	var addr atomic.Value
	addr.Store(p.addr)

	retry := `"retry":{"schedule":["50ms","100ms","200ms","400ms","800ms","1s","1s","1s","1s","1s"],"max_age":"1h"}`
	subs := []crashSub{
		{"/all", `{"url":%q,` + retry + `}`, func(string) bool { return true }},
		{"/ordered", `{"url":%q,"ordered":true,` + retry + `}`, func(string) bool { return true }},
		{"/orders", `{"url":%q,"event_types":["order.*"],"max_in_flight":4,` + retry + `}`, func(typ string) bool { return strings.HasPrefix(typ, "order.") }},
	}
	for _, s := range subs {
		status, body := apiCall(t, p.addr, "POST", "/v1/subscriptions", fmt.Sprintf(s.body, recv.URL+s.path))
		if status != http.StatusCreated {
			t.Fatalf("create subscription: %d %s", status, body)
		}
	}

	// The appender sends batches with ids of its own and retries a batch
	// (same ids: an idempotent retry) until it is acknowledged, so the
	// acknowledged events are exactly the events in the log.
	type acked struct{ id, typ string }
	var (
		ackMu    sync.Mutex
		ack      []acked
		retries  atomic.Int64
		retryMu  sync.Mutex
		retryWhy = map[string]int{}
		stop     = make(chan struct{})
		stopped  = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		client := &http.Client{Timeout: 5 * time.Second}
		tick := time.NewTicker(pace)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			batch := make([]acked, perBatch)
			evs := make([]map[string]any, perBatch)
			for i := range batch {
				typ := "order.created"
				if (n*perBatch+i)%2 == 1 {
					typ = "payment.succeeded"
				}
				batch[i] = acked{uuid.NewString(), typ}
				evs[i] = map[string]any{"id": batch[i].id, "type": typ, "data": map[string]int{"n": n*perBatch + i}}
			}
			raw, _ := json.Marshal(map[string]any{"events": evs})
			for {
				req, _ := http.NewRequest("POST", "http://"+addr.Load().(string)+fmt.Sprintf("/v1/streams/crash-%d/events", n%7), bytes.NewReader(raw))
				req.Header.Set("Authorization", "Bearer "+testAdminKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				why := ""
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
						break
					}
					if resp.StatusCode < 500 {
						t.Errorf("append answered %d", resp.StatusCode)
						return
					}
					why = fmt.Sprintf("%d %.120s", resp.StatusCode, b)
				} else {
					why = err.Error()
					if i := strings.LastIndex(why, ": "); i >= 0 {
						why = why[i+2:] // the cause, without the address
					}
				}
				retryMu.Lock()
				retryWhy[why]++
				retryMu.Unlock()
				retries.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
			ackMu.Lock()
			ack = append(ack, batch...)
			ackMu.Unlock()
		}
	}()

	// Kill at random moments, restart on the same store each time.
	began := time.Now()
	for i := 0; i < kills; i++ {
		time.Sleep(300*time.Millisecond + time.Duration(rand.Int64N(int64(1200*time.Millisecond))))
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		p = start()
		addr.Store(p.addr)
	}
	// Deliveries and appends after the last restart: half a second, and on
	// a loaded machine (restarts are slow there) until 100 are acknowledged.
	time.Sleep(500 * time.Millisecond)
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ackMu.Lock()
		n := len(ack)
		ackMu.Unlock()
		if n >= 100 {
			break
		}
	}
	close(stop)
	<-stopped
	ackMu.Lock()
	events := append([]acked(nil), ack...)
	ackMu.Unlock()
	if len(events) < 100 {
		t.Fatalf("only %d events were appended in %s (%d append retries: %v); the last serve's log:\n%s", len(events), time.Since(began).Round(time.Millisecond), retries.Load(), retryWhy, p.log())
	}

	// Every pair arrives.
	missing := func() (n int, example string) {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, s := range subs {
			for _, e := range events {
				if s.match(e.typ) && len(rc.got[s.path][e.id]) == 0 {
					n++
					example = s.path + " " + e.id
				}
			}
		}
		return n, example
	}
	deadline := time.Now().Add(25 * time.Second)
	for {
		n, ex := missing()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d (event, subscription) pairs never arrived, e.g. %s\nlast run's log:\n%s", n, ex, p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Copies share the webhook-id (the event id); nothing arrives that
	// should not; count the duplicates for the log.
	types := map[string]string{}
	for _, e := range events {
		types[e.id] = e.typ
	}
	rc.mu.Lock()
	dups, total := 0, rc.n
	var bad []string
	for _, s := range subs {
		for id, wids := range rc.got[s.path] {
			typ, known := types[id]
			if !known || !s.match(typ) {
				bad = append(bad, fmt.Sprintf("%s got event %s (known %v, type %s)", s.path, id, known, typ))
			}
			for _, w := range wids {
				if w != id {
					bad = append(bad, fmt.Sprintf("%s: event %s arrived with webhook-id %s", s.path, id, w))
				}
			}
			dups += len(wids) - 1
		}
	}
	rc.mu.Unlock()
	sort.Strings(bad)
	for i, b := range bad {
		if i == 10 {
			t.Errorf("... and %d more", len(bad)-10)
			break
		}
		t.Error(b)
	}
	t.Logf("%d events, %d kills in %s, %d deliveries, %d duplicates (same webhook-id), %d append retries",
		len(events), kills, time.Since(began).Round(time.Millisecond), total, dups, retries.Load())

	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.log())
	}
}

// apiCall sends one request with the admin key and returns status and body.
func apiCall(t *testing.T, addr, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}
