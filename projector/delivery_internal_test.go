package projector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
)

func cacheEvent() eventstore.Event {
	return eventstore.Event{
		ID: uuid.Must(uuid.NewV7()), Stream: "s-1", Type: "t.1", Tenant: "acme",
		Data: json.RawMessage(`{"a":1}`), Position: eventstore.Position{Lo: 7},
		RecordedAt: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC),
	}
}

// TestBodyCache: a body is reused only for an event equal in every field
// Body reads; anything else is encoded afresh.
func TestBodyCache(t *testing.T) {
	t.Parallel()
	var c bodyCache
	e := cacheEvent()
	b1, err := c.get(&e)
	if err != nil {
		t.Fatal(err)
	}
	same := e
	same.Data = json.RawMessage(`{"a":1}`) // equal bytes, another array
	if b2, _ := c.get(&same); b2 != b1 {
		t.Error("an equal event was encoded again")
	}
	for name, change := range map[string]func(*eventstore.Event){
		"data":        func(e *eventstore.Event) { e.Data = json.RawMessage(`{"a":2}`) },
		"type":        func(e *eventstore.Event) { e.Type = "t.2" },
		"stream":      func(e *eventstore.Event) { e.Stream = "s-2" },
		"tenant":      func(e *eventstore.Event) { e.Tenant = "" },
		"position":    func(e *eventstore.Event) { e.Position.Lo++ },
		"recorded_at": func(e *eventstore.Event) { e.RecordedAt = e.RecordedAt.Add(time.Microsecond) },
	} {
		o := e
		change(&o)
		got, err := c.get(&o)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := Body(o)
		if !bytes.Equal(got.body, want) {
			t.Errorf("%s changed: body %s, want %s", name, got.body, want)
		}
		c.get(&e) // put the original back
	}
	bad := cacheEvent()
	bad.Data = json.RawMessage(`{not json`)
	if _, err := c.get(&bad); err == nil {
		t.Error("invalid data was not refused")
	}
}

// TestBodyCacheBudget: the cache's bytes stay within its budget, and large
// bodies are not kept.
func TestBodyCacheBudget(t *testing.T) {
	t.Parallel()
	var c bodyCache
	data := json.RawMessage(`{"pad":"` + strings.Repeat("x", 4000) + `"}`)
	for range 3 * bodyCacheBytes / 8000 {
		e := cacheEvent()
		e.Data = data
		if _, err := c.get(&e); err != nil {
			t.Fatal(err)
		}
		if n := c.bytes.Load(); n > bodyCacheBytes+2*maxCachedBody {
			t.Fatalf("cache holds %d bytes, budget %d", n, bodyCacheBytes)
		}
	}
	var sum int64
	for i := range c.slots {
		if b := c.slots[i].Load(); b != nil {
			sum += b.size()
		}
	}
	if sum != c.bytes.Load() {
		t.Errorf("slots hold %d bytes, the count says %d", sum, c.bytes.Load())
	}
	big := cacheEvent()
	big.Data = json.RawMessage(`{"pad":"` + strings.Repeat("x", maxCachedBody) + `"}`)
	b1, _ := c.get(&big)
	if b2, _ := c.get(&big); b1 == b2 {
		t.Error("a body larger than maxCachedBody was kept")
	}
}

// TestSignReusesMACs: signatures made with reused HMAC states are those of
// fresh ones, secret after secret.
func TestSignReusesMACs(t *testing.T) {
	t.Parallel()
	var c macCache
	secrets := []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + strings.Repeat("QUJD", 30)}
	for i := range 20 {
		id := uuid.NewString()
		body := []byte(strings.Repeat("b", i*37))
		ts := time.Unix(1_700_000_000+int64(i), 0)
		ss := secrets[i%len(secrets):]
		want := Sign(ss, id, ts, body)
		if got := sign(&c, ss, id, strconv.FormatInt(ts.Unix(), 10), body); got != want {
			t.Fatalf("reused: %q, want %q", got, want)
		}
	}
}

// TestTargetCache: a URL is parsed once; a bad one keeps its error.
func TestTargetCache(t *testing.T) {
	t.Parallel()
	var c targetCache
	r1, err := c.get("http://127.0.0.1:8080/hooks?x=1")
	if err != nil {
		t.Fatal(err)
	}
	if r2, _ := c.get("http://127.0.0.1:8080/hooks?x=1"); r2 != r1 {
		t.Error("the URL was parsed again")
	}
	if want := (target{key: "http://127.0.0.1:8080", addr: "127.0.0.1:8080", serverName: "127.0.0.1", host: "127.0.0.1:8080", requestURI: "/hooks?x=1"}); *r1 != want {
		t.Errorf("target %+v, want %+v", *r1, want)
	}
	for url, want := range map[string]target{
		"https://hooks.example.com":             {key: "https://hooks.example.com:443", addr: "hooks.example.com:443", tls: true, serverName: "hooks.example.com", host: "hooks.example.com", requestURI: "/"},
		"http://[::1]/a%2Fb/c?q=%20":            {key: "http://[::1]:80", addr: "[::1]:80", serverName: "::1", host: "[::1]", requestURI: "/a%2Fb/c?q=%20"},
		"HTTPS://Hooks.Example.com:8443/x#frag": {key: "https://hooks.example.com:8443", addr: "Hooks.Example.com:8443", tls: true, serverName: "Hooks.Example.com", host: "Hooks.Example.com:8443", requestURI: "/x"},
		"https://bücher.example/in":             {key: "https://xn--bcher-kva.example:443", addr: "xn--bcher-kva.example:443", tls: true, serverName: "xn--bcher-kva.example", host: "xn--bcher-kva.example", requestURI: "/in"},
		"http://bücher.example:8080/":           {key: "http://xn--bcher-kva.example:8080", addr: "xn--bcher-kva.example:8080", serverName: "xn--bcher-kva.example", host: "xn--bcher-kva.example:8080", requestURI: "/"},
	} {
		got, err := c.get(url)
		if err != nil || *got != want {
			t.Errorf("%s: %+v, %v; want %+v", url, got, err, want)
		}
	}
	for _, bad := range []string{"://no-scheme", "ftp://example.com/", "http:///path", "http://u:p@example.com/"} {
		for range 2 {
			if _, err := c.get(bad); err == nil {
				t.Errorf("%s was accepted", bad)
			}
		}
	}
}

// TestConnPoolSweepsIdle: connections idle for idleConnTimeout are closed,
// newer ones stay pooled; at most maxPerKey idle ones are kept per key.
func TestConnPoolSweepsIdle(t *testing.T) {
	t.Parallel()
	p := &connPool{maxPerKey: 2}
	t.Cleanup(p.closeIdle)
	newConn := func(key string) (*conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = b.Close() })
		return &conn{key: key, nc: a, raw: a}, b
	}
	closed := func(peer net.Conn) bool {
		_ = peer.SetReadDeadline(time.Now().Add(time.Second))
		_, err := peer.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	old, oldPeer := newConn("http://a:80")
	p.put(old)
	old.since = time.Now().Add(-idleConnTimeout - time.Second)
	fresh, _ := newConn("http://a:80")
	p.put(fresh)
	extra, extraPeer := newConn("http://a:80")
	p.put(extra) // a third idle one to the same key: closed
	if !closed(extraPeer) {
		t.Error("a connection over maxPerKey was kept")
	}
	p.sweepIdle()
	if !closed(oldPeer) {
		t.Error("the idle connection was not closed")
	}
	if got := p.get("http://a:80"); got != fresh {
		t.Errorf("get = %p, want the fresh connection %p", got, fresh)
	}
	if got := p.get("http://a:80"); got != nil {
		t.Errorf("get = %p, want none left", got)
	}
}

// TestAttemptCtxAbortsOnlyItsOwnAttempt: cancelling the parent context closes
// the connection of the attempt under way; a late abort for a parent the
// worker has left (a cancelled replay, the worker now on route work) closes
// nothing; after close, nothing is registered.
func TestAttemptCtxAbortsOnlyItsOwnAttempt(t *testing.T) {
	t.Parallel()
	pipe := func() (*conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		return &conn{nc: a, raw: a}, b
	}
	closed := func(peer net.Conn, within time.Duration) bool {
		_ = peer.SetReadDeadline(time.Now().Add(within))
		_, err := peer.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	a := (&Deliverer{}).newAttemptCtx()
	defer a.close()

	replay, cancelReplay := context.WithCancel(context.Background())
	c1, peer1 := pipe()
	a.begin(replay)
	a.use(c1)
	cancelReplay()
	if !closed(peer1, 5*time.Second) { // abort runs in its own goroutine
		t.Fatal("cancelling the attempt's context left its connection open")
	}
	a.use(nil)

	route, cancelRoute := context.WithCancel(context.Background())
	defer cancelRoute()
	c2, peer2 := pipe()
	a.begin(route)
	a.use(c2)
	a.abort(replay) // late: the worker has moved on
	if closed(peer2, 200*time.Millisecond) {
		t.Fatal("a late abort for another context closed the attempt's connection")
	}
	a.use(nil)
}
