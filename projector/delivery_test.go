package projector_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

func dlEvent() eventstore.Event {
	return eventstore.Event{
		ID:         uuid.Must(uuid.NewV7()),
		Stream:     "order-1",
		Type:       "order.created",
		Tenant:     "acme",
		Data:       json.RawMessage(`{"amount":100,"note":"<b>&"}`),
		Position:   eventstore.Position{Lo: 42},
		Version:    3,
		RecordedAt: time.Date(2026, 11, 1, 13, 0, 0, 123456789, time.FixedZone("CET", 3600)),
	}
}

func dlSub(url string, secrets ...subscriptions.Secret) subscriptions.Subscription {
	return subscriptions.Subscription{
		ID:      uuid.NewString(),
		URL:     url,
		Retry:   subscriptions.DefaultRetryPolicy(),
		State:   subscriptions.StateActive,
		Secrets: secrets,
		Headers: map[string]string{"X-Team": "ops", "Authorization": "Bearer t0k"},
	}
}

func dlDeliverer(t testing.TB, cfg projector.DelivererConfig) *projector.Deliverer {
	t.Helper()
	d, err := projector.NewDeliverer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// dlReceived is one request as a test receiver saw it.
type dlReceived struct {
	header http.Header
	body   []byte
}

// dlReceiver is a real HTTP server on 127.0.0.1 that records requests and
// counts connections.
type dlReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	got   []dlReceived
	conns atomic.Int64
}

func newDLReceiver(t testing.TB, answer func(w http.ResponseWriter, r *http.Request)) *dlReceiver {
	t.Helper()
	rc := &dlReceiver{}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, dlReceived{r.Header.Clone(), body})
		rc.mu.Unlock()
		if answer != nil {
			answer(w, r)
		}
	}))
	rc.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rc.conns.Add(1)
		}
	}
	rc.Start()
	t.Cleanup(rc.Close)
	return rc
}

func (rc *dlReceiver) received() []dlReceived {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]dlReceived(nil), rc.got...)
}

func TestBody(t *testing.T) {
	t.Parallel()
	e := dlEvent()
	b, err := projector.Body(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"` + e.ID.String() + `","type":"order.created","timestamp":"2026-11-01T12:00:00.123456Z",` +
		`"stream":"order-1","position":"0000000000000000000000000000002a","tenant":"acme","data":{"amount":100,"note":"<b>&"}}`
	if string(b) != want {
		t.Fatalf("Body =\n%s\nwant\n%s", b, want)
	}
	// No tenant: null. Exactly these keys, nothing else.
	e.Tenant = ""
	e.RecordedAt = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	b, _ = projector.Body(e)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 7 || string(m["tenant"]) != "null" || string(m["timestamp"]) != `"2026-11-01T12:00:00.000000Z"` {
		t.Errorf("Body without tenant = %s", b)
	}
	e.Data = nil
	if b, _ = projector.Body(e); !bytes.HasSuffix(b, []byte(`"data":{}}`)) {
		t.Errorf("Body with no data = %s, want data {}", b)
	}
	// Strings outside what validation lets in still make valid JSON.
	e.Stream, e.Type, e.Tenant = "a\"b\\c\n", "typé.<x>", "t\u2028"
	e.Data = json.RawMessage(" {\"k\": [1, 2]}\n")
	b, err = projector.Body(e)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ID, Type, Timestamp, Stream, Position string
		Tenant                                *string
		Data                                  json.RawMessage
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("Body %s: %v", b, err)
	}
	if got.ID != e.ID.String() || got.Stream != e.Stream || got.Type != e.Type || got.Tenant == nil || *got.Tenant != e.Tenant ||
		got.Position != e.Position.String() || string(got.Data) != `{"k": [1, 2]}` {
		t.Errorf("Body %s read back as %+v", b, got)
	}
}

// Body and headers as the receiver gets them, and the signature checked by the
// official verifier.
func TestDeliverHeadersBodyAndSignature(t *testing.T) {
	t.Parallel()
	rc := newDLReceiver(t, nil)
	secret := dlSecret(t)
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true, UserAgent: "hooklog/test"})
	e := dlEvent()
	before := time.Now().Unix()
	o := d.Deliver(context.Background(), projector.Request{Sub: dlSub(rc.URL+"/hooks?x=1", subscriptions.Secret{Value: secret}), Event: e, Attempt: 1})
	if o.Kind != projector.Succeeded || o.StatusCode != 200 || o.Err != "" || o.At.IsZero() || o.Duration <= 0 {
		t.Fatalf("Deliver = %+v, want succeeded 200", o)
	}
	got := rc.received()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests", len(got))
	}
	h, body := got[0].header, got[0].body
	wantBody, _ := projector.Body(e)
	if !bytes.Equal(body, wantBody) {
		t.Errorf("body %s, want %s", body, wantBody)
	}
	ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("webhook-timestamp %q, want the unix seconds of the attempt", h.Get("webhook-timestamp"))
	}
	for name, want := range map[string]string{
		"Content-Type":  "application/json",
		"Webhook-Id":    e.ID.String(),
		"User-Agent":    "hooklog/test",
		"X-Team":        "ops",
		"Authorization": "Bearer t0k",
	} {
		if v := h.Values(name); len(v) != 1 || v[0] != want {
			t.Errorf("header %s = %q, want [%q]", name, v, want)
		}
	}
	if v := h.Values("Webhook-Replay"); v != nil {
		t.Errorf("webhook-replay %q on a live delivery", v)
	}
	if sig := h.Get("webhook-signature"); strings.Count(sig, "v1,") != 1 || strings.Contains(sig, " ") {
		t.Errorf("webhook-signature %q, want one v1 signature", sig)
	}
	wh, _ := standardwebhooks.NewWebhook(secret)
	if err := wh.Verify(body, h); err != nil {
		t.Errorf("official verifier: %v", err)
	}
}

// During a rotation's grace period both secrets sign and each verifies alone;
// after it only the new one signs.
func TestDeliverSignsWithBothSecretsDuringRotation(t *testing.T) {
	t.Parallel()
	rc := newDLReceiver(t, nil)
	newSecret, oldSecret := dlSecret(t), dlSecret(t)
	graceEnd := time.Now().Add(time.Hour)
	sub := dlSub(rc.URL, subscriptions.Secret{Value: newSecret}, subscriptions.Secret{Value: oldSecret, ExpiresAt: &graceEnd})

	var now atomic.Pointer[time.Time]
	setNow := func(t time.Time) { now.Store(&t) }
	setNow(time.Now())
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true, Now: func() time.Time { return *now.Load() }})

	if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Succeeded {
		t.Fatal(o)
	}
	setNow(graceEnd.Add(time.Second))
	if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Succeeded {
		t.Fatal(o)
	}
	got := rc.received()
	during, after := got[0], got[1]
	if n := len(strings.Fields(during.header.Get("webhook-signature"))); n != 2 {
		t.Fatalf("during the grace period: %d signatures, want 2", n)
	}
	if n := len(strings.Fields(after.header.Get("webhook-signature"))); n != 1 {
		t.Fatalf("after the grace period: %d signatures, want 1", n)
	}
	for _, s := range []struct {
		name, secret string
		r            dlReceived
		ok           bool
	}{
		{"new secret, grace period", newSecret, during, true},
		{"old secret, grace period", oldSecret, during, true},
		{"new secret, after", newSecret, after, true},
		{"old secret, after", oldSecret, after, false},
	} {
		wh, _ := standardwebhooks.NewWebhook(s.secret)
		// The fake clock is an hour ahead after the grace period: skip the
		// tolerance check there, the signature is what is tested.
		if err := wh.VerifyIgnoringTimestamp(s.r.body, s.r.header); (err == nil) != s.ok {
			t.Errorf("%s: verify = %v, want ok=%v", s.name, err, s.ok)
		}
	}
}

// The wire form: header names exactly as API.md spells them.
func TestDeliverWireHeaders(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	head := make(chan []string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			head <- nil
			return
		}
		defer c.Close()
		r := textproto.NewReader(bufio.NewReader(c))
		var lines []string
		for {
			l, err := r.ReadLine()
			if err != nil || l == "" {
				break
			}
			lines = append(lines, l)
		}
		head <- lines
		_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
	}()
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	e := dlEvent()
	o := d.Deliver(context.Background(), projector.Request{
		Sub: dlSub("http://"+ln.Addr().String()+"/in", subscriptions.Secret{Value: dlSecret(t)}), Event: e, Attempt: 2, ReplayID: "rpl_1",
	})
	if o.Kind != projector.Succeeded || o.StatusCode != 204 {
		t.Fatalf("Deliver = %+v", o)
	}
	lines := <-head
	if len(lines) == 0 || lines[0] != "POST /in HTTP/1.1" {
		t.Fatalf("request head %q", lines)
	}
	has := map[string]bool{}
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(l, ":")
		has[name] = true
	}
	for _, name := range []string{"content-type", "webhook-id", "webhook-timestamp", "webhook-signature", "webhook-replay", "User-Agent", "X-Team", "Authorization", "Content-Length"} {
		if !has[name] {
			t.Errorf("header %q missing from the request head %q", name, lines)
		}
	}
	if has["Idempotency-Key"] {
		t.Errorf("Idempotency-Key (only a marker for net/http) was sent: %q", lines)
	}
	if !slicesContains(lines, "webhook-id: "+e.ID.String()) || !slicesContains(lines, "webhook-replay: rpl_1") || !slicesContains(lines, "User-Agent: "+projector.DefaultUserAgent()) {
		t.Errorf("request head %q", lines)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Every attempt and replay of a pair carries the same webhook-id, and each is
// signed for its own timestamp.
func TestDeliverSameWebhookIDAcrossAttempts(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	rc := newDLReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			w.WriteHeader(500)
		}
	})
	secret := dlSecret(t)
	sub := dlSub(rc.URL, subscriptions.Secret{Value: secret})
	e := dlEvent()
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	wantKinds := []projector.OutcomeKind{projector.Failed, projector.Failed, projector.Succeeded, projector.Succeeded}
	for i, want := range wantKinds {
		r := projector.Request{Sub: sub, Event: e, Attempt: i + 1}
		if i == 3 {
			r = projector.Request{Sub: sub, Event: e, Attempt: 1, ReplayID: "rpl_7"}
		}
		if o := d.Deliver(context.Background(), r); o.Kind != want {
			t.Fatalf("attempt %d: %+v, want %s", i+1, o, want)
		}
	}
	wh, _ := standardwebhooks.NewWebhook(secret)
	for i, r := range rc.received() {
		if id := r.header.Get("webhook-id"); id != e.ID.String() {
			t.Errorf("request %d: webhook-id %q, want %s", i, id, e.ID)
		}
		if err := wh.Verify(r.body, r.header); err != nil {
			t.Errorf("request %d: %v", i, err)
		}
		if replay, want := r.header.Get("webhook-replay"), map[bool]string{true: "rpl_7"}[i == 3]; replay != want {
			t.Errorf("request %d: webhook-replay %q, want %q", i, replay, want)
		}
	}
}

// The classification table against a real server on 127.0.0.1.
func TestDeliverClassification(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var followed atomic.Int64
	mux := http.NewServeMux()
	status := func(code int, kv ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i+1 < len(kv); i += 2 {
				w.Header().Set(kv[i], kv[i+1])
			}
			w.WriteHeader(code)
		}
	}
	mux.Handle("/200", status(200))
	mux.Handle("/204", status(204))
	mux.Handle("/301", status(301, "Location", "/followed"))
	mux.HandleFunc("/followed", func(http.ResponseWriter, *http.Request) { followed.Add(1) })
	mux.Handle("/400", status(400))
	mux.Handle("/410", status(410))
	mux.Handle("/429", status(429, "Retry-After", "30"))
	mux.HandleFunc("/503", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(2*time.Minute).UTC().Format(http.TimeFormat))
		w.WriteHeader(503)
	})
	mux.Handle("/500", status(500))
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + closed.Addr().String() + "/"
	closed.Close()

	const timeout = 300 * time.Millisecond
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true, Timeout: timeout})
	cases := []struct {
		url        string
		kind       projector.OutcomeKind
		code       int
		err        string
		retryAfter time.Duration // checked to within 2s
	}{
		{srv.URL + "/200", projector.Succeeded, 200, "", 0},
		{srv.URL + "/204", projector.Succeeded, 204, "", 0},
		{srv.URL + "/301", projector.Failed, 301, "HTTP 301 redirect (not followed)", 0},
		{srv.URL + "/400", projector.Failed, 400, "HTTP 400", 0},
		{srv.URL + "/410", projector.Gone, 410, "HTTP 410 (endpoint gone)", 0},
		{srv.URL + "/429", projector.Failed, 429, "HTTP 429 (retry after 30s)", 30 * time.Second},
		{srv.URL + "/503", projector.Failed, 503, "HTTP 503 (retry after ", 2 * time.Minute},
		{srv.URL + "/500", projector.Failed, 500, "HTTP 500", 0},
		{srv.URL + "/hang", projector.Failed, 0, "timeout after 300ms", 0},
		{refusedURL, projector.Failed, 0, "connection refused", 0},
	}
	for _, tc := range cases {
		start := time.Now()
		o := d.Deliver(context.Background(), projector.Request{Sub: dlSub(tc.url, subscriptions.Secret{Value: dlSecret(t)}), Event: dlEvent(), Attempt: 1})
		took := time.Since(start)
		okErr := o.Err == tc.err || strings.HasSuffix(tc.err, " ") && strings.HasPrefix(o.Err, tc.err)
		okRA := o.RetryAfter >= tc.retryAfter-2*time.Second && o.RetryAfter <= tc.retryAfter
		if o.Kind != tc.kind || o.StatusCode != tc.code || !okErr || !okRA {
			t.Errorf("%s: {%s %d %q %s}, want {%s %d %q %s}", tc.url, o.Kind, o.StatusCode, o.Err, o.RetryAfter, tc.kind, tc.code, tc.err, tc.retryAfter)
		}
		if took > timeout+time.Second {
			t.Errorf("%s took %s with a %s timeout", tc.url, took, timeout)
		}
		if tc.err == "timeout after 300ms" && o.Duration < timeout {
			t.Errorf("timeout outcome Duration %s, want at least %s", o.Duration, timeout)
		}
	}
	if n := followed.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}

// Without AllowPrivateNetworks the dialer refuses 127.0.0.1 before connecting,
// whether the URL names the address or a name resolving to it.
func TestDeliverRefusesPrivateAddressAtConnectTime(t *testing.T) {
	t.Parallel()
	rc := newDLReceiver(t, nil)
	_, port, _ := net.SplitHostPort(rc.Listener.Addr().String())
	strict := dlDeliverer(t, projector.DelivererConfig{})
	for _, url := range []string{rc.URL + "/", "http://localhost:" + port + "/"} {
		o := strict.Deliver(context.Background(), projector.Request{Sub: dlSub(url, subscriptions.Secret{Value: dlSecret(t)}), Event: dlEvent(), Attempt: 1})
		if o.Kind != projector.Failed || o.StatusCode != 0 || !strings.HasPrefix(o.Err, "refused by URL policy at connect time: ") ||
			!strings.Contains(o.Err, "loopback") {
			t.Errorf("%s with private networks not allowed: %+v, want refused by the URL policy", url, o)
		}
	}
	if n := rc.conns.Load(); n != 0 {
		t.Fatalf("the receiver saw %d connections, want none (refused before connect)", n)
	}
	open := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	o := open.Deliver(context.Background(), projector.Request{Sub: dlSub(rc.URL+"/", subscriptions.Secret{Value: dlSecret(t)}), Event: dlEvent(), Attempt: 1})
	if o.Kind != projector.Succeeded || len(rc.received()) != 1 {
		t.Fatalf("with private networks allowed: %+v, %d requests", o, len(rc.received()))
	}
}

// Responses are drained so one connection carries many deliveries; a body
// over MaxResponseRead costs its connection, not the outcome.
func TestDeliverReusesConnections(t *testing.T) {
	t.Parallel()
	big := atomic.Bool{}
	rc := newDLReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		n := 1 << 10
		if big.Load() {
			n = projector.MaxResponseRead + 1<<10
		}
		_, _ = w.Write(bytes.Repeat([]byte("x"), n))
	})
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	sub := dlSub(rc.URL, subscriptions.Secret{Value: dlSecret(t)})
	for range 20 {
		if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Succeeded {
			t.Fatal(o)
		}
	}
	if n := rc.conns.Load(); n != 1 {
		t.Fatalf("20 sequential deliveries used %d connections, want 1", n)
	}
	big.Store(true)
	for range 2 {
		if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Succeeded {
			t.Fatal(o)
		}
	}
	if n := rc.conns.Load(); n != 2 {
		t.Errorf("after responses over %d bytes: %d connections, want 2 (the oversized one closed)", projector.MaxResponseRead, n)
	}
}

func TestDeliverRespectsContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	rc := newDLReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	sub := dlSub(rc.URL, subscriptions.Secret{Value: dlSecret(t)})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if o := d.Deliver(ctx, projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Failed || o.Err != "canceled" {
		t.Errorf("canceled context: %+v", o)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	o := d.Deliver(ctx, projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1})
	if o.Kind != projector.Failed || o.Err != "canceled" || time.Since(start) > 5*time.Second {
		t.Errorf("context canceled in flight: %+v after %s", o, time.Since(start))
	}
}

func TestDeliverBadInput(t *testing.T) {
	t.Parallel()
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	o := d.Deliver(context.Background(), projector.Request{Sub: dlSub("://no-scheme"), Event: dlEvent(), Attempt: 1})
	if o.Kind != projector.Failed || !strings.HasPrefix(o.Err, "invalid url: ") || o.At.IsZero() {
		t.Errorf("bad URL: %+v", o)
	}
	e := dlEvent()
	e.Data = json.RawMessage(`{not json`)
	o = d.Deliver(context.Background(), projector.Request{Sub: dlSub("http://127.0.0.1:1/"), Event: e, Attempt: 1})
	if o.Kind != projector.Failed || !strings.HasPrefix(o.Err, "encoding the body: ") {
		t.Errorf("bad data: %+v", o)
	}
}

func TestNewDelivererValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg   projector.DelivererConfig
		field string
	}{
		{projector.DelivererConfig{Timeout: -time.Second}, "Timeout"},
		{projector.DelivererConfig{MaxIdleConnsPerHost: -1}, "MaxIdleConnsPerHost"},
	} {
		_, err := projector.NewDeliverer(tc.cfg)
		if !errors.Is(err, projector.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("NewDeliverer(%+v) = %v, want ErrInvalidConfig naming %s", tc.cfg, err, tc.field)
		}
	}
	if !strings.HasPrefix(projector.DefaultUserAgent(), "hooklog/") {
		t.Errorf("DefaultUserAgent() = %q", projector.DefaultUserAgent())
	}
}

// BenchmarkDeliver compares Deliver (body, signature, headers, classification)
// with plain http.Client POSTs of the same bodies to the same local receiver
// at the same concurrency, both measured in the same run. Metrics:
// deliveries/s, raw_posts/s and ratio (deliveries/s over raw_posts/s).
func BenchmarkDeliver(b *testing.B) {
	const workers = 32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	d := dlDeliverer(b, projector.DelivererConfig{AllowPrivateNetworks: true})
	rawTr := &http.Transport{MaxIdleConnsPerHost: projector.DefaultMaxIdleConnsPerHost}
	defer rawTr.CloseIdleConnections()
	raw := &http.Client{Transport: rawTr}

	sub := dlSub(srv.URL+"/hook", subscriptions.Secret{Value: dlSecret(b)})
	sub.Headers = nil // only what every delivery carries
	events := make([]eventstore.Event, 256)
	bodies := make([][]byte, len(events))
	for i := range events {
		events[i] = dlEvent()
		events[i].Data = json.RawMessage(`{"order_id":"` + strconv.Itoa(i) + `","amount":1999,"currency":"EUR","items":[{"sku":"A-1","qty":2}]}`)
		bodies[i], _ = projector.Body(events[i])
	}
	var failures atomic.Int64
	deliver := func(i int) {
		if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: events[i%len(events)], Attempt: 1}); o.Kind != projector.Succeeded {
			failures.Add(1)
		}
	}
	post := func(i int) {
		resp, err := raw.Post(srv.URL+"/hook", "application/json", bytes.NewReader(bodies[i%len(bodies)]))
		if err != nil {
			failures.Add(1)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// run returns the wall time and the process's CPU time (client and
	// receiver: both live here) of n calls of f on the workers. The CPU ratio
	// is the steadier figure when other work shares the machine.
	var cpu time.Duration
	run := func(n int, f func(int)) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		cpu0 := dlCPUTime()
		defer func() { cpu = dlCPUTime() - cpu0 }()
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					f(i)
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	run(workers*4, post) // open the connections of both before timing
	run(workers*4, deliver)
	b.ResetTimer()
	// Alternate halves so drift in the machine's load hits both alike.
	half := max(b.N/2, 1)
	var rawT, delT, rawCPU, delCPU time.Duration
	for range 2 {
		rawT += run(half, post)
		rawCPU += cpu
		delT += run(half, deliver)
		delCPU += cpu
	}
	b.StopTimer()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d requests failed", n)
	}
	n := float64(2 * half)
	b.ReportMetric(n/delT.Seconds(), "deliveries/s")
	b.ReportMetric(n/rawT.Seconds(), "raw_posts/s")
	b.ReportMetric(rawT.Seconds()/delT.Seconds(), "ratio")
	b.ReportMetric(rawCPU.Seconds()/delCPU.Seconds(), "cpu_ratio")
}

// dlCPUTime is the user+system CPU time of this process so far.
func dlCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkBody(b *testing.B) {
	e := dlEvent()
	e.Data = json.RawMessage(`{"order_id":"o-1","amount":1999,"currency":"EUR","items":[{"sku":"A-1","qty":2}]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := projector.Body(e); err != nil {
			b.Fatal(err)
		}
	}
}

// An endpoint that closes a kept-alive connection as the next delivery
// arrives (its idle timeout racing ours) does not fail that delivery: it is
// re-sent once on a new connection, with the same webhook-id.
func TestDeliverResendsOnStaleConnection(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)               // last: after the listener and the client's connections closed
	t.Cleanup(func() { ln.Close() }) // (cleanups run last-registered first)
	var mu sync.Mutex
	var ids []string
	wg.Go(func() {
		for conn := 0; ; conn++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			for n := 0; ; n++ {
				req, err := http.ReadRequest(br)
				if err != nil {
					break
				}
				_, _ = io.Copy(io.Discard, req.Body)
				mu.Lock()
				ids = append(ids, req.Header.Get("webhook-id"))
				mu.Unlock()
				if conn == 0 && n == 1 {
					break // the second request on the first connection: hang up
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			}
			c.Close()
		}
	})
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	sub := dlSub("http://"+ln.Addr().String()+"/", subscriptions.Secret{Value: dlSecret(t)})
	e1, e2 := dlEvent(), dlEvent()
	for _, e := range []eventstore.Event{e1, e2} {
		if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: e, Attempt: 1}); o.Kind != projector.Succeeded {
			t.Fatalf("delivery of %s: %+v", e.ID, o)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{e1.ID.String(), e2.ID.String(), e2.ID.String()}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("the endpoint saw webhook-ids %q, want %q", ids, want)
	}
}

// HTTPS endpoints: the handshake verifies the certificate against the
// configured roots (or the system's), with the URL's host as server name.
func TestDeliverOverTLS(t *testing.T) {
	t.Parallel()
	var got atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.ProtoMajor != 1 || r.Header.Get("webhook-id") == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got.Add(1)
	}))
	t.Cleanup(srv.Close)
	url := srv.URL // https://127.0.0.1:port; the test certificate has that IP address
	sub := dlSub(url+"/hooks", subscriptions.Secret{Value: dlSecret(t)})

	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true, TLSConfig: &tls.Config{RootCAs: roots}})
	for range 3 {
		if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Succeeded {
			t.Fatalf("with the test CA: %+v", o)
		}
	}
	if got.Load() != 3 {
		t.Fatalf("the endpoint accepted %d deliveries, want 3", got.Load())
	}

	untrusting := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	o := untrusting.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1})
	if o.Kind != projector.Failed || o.Err != "tls: certificate signed by unknown authority" {
		t.Errorf("with the system roots: %+v", o)
	}
	plain := dlSub(strings.Replace(url, "https://", "http://", 1), subscriptions.Secret{Value: dlSecret(t)})
	if o := d.Deliver(context.Background(), projector.Request{Sub: plain, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Failed || o.StatusCode != http.StatusBadRequest {
		t.Errorf("http to a TLS port: %+v", o)
	}
}

// A response cut short after its first bytes is the attempt's failure, not a
// stale connection: it is not sent again, even on a kept-alive connection.
func TestDeliverDoesNotResendAfterPartialResponse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var requests atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(r)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					requests.Add(1)
					if n == 0 {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						continue
					}
					// The head and part of the body, then the connection ends.
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
					return
				}
			}()
		}
	}()
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	sub := dlSub("http://"+ln.Addr().String()+"/", subscriptions.Secret{Value: dlSecret(t)})
	if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Succeeded {
		t.Fatalf("first delivery: %+v", o)
	}
	o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1})
	if o.Kind != projector.Failed || o.Err != "connection closed before a response" {
		t.Errorf("response cut short: %+v", o)
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("the endpoint got %d requests, want 2 (the cut-short one not sent again)", n)
	}
}

// A response whose header block is larger than the transport reads fails
// the attempt with a clear error; the next attempt gets a new connection.
func TestDeliverResponseHeadersTooLarge(t *testing.T) {
	t.Parallel()
	var big atomic.Bool
	big.Store(true)
	rc := newDLReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		if big.Load() {
			w.Header().Set("X-Padding", strings.Repeat("p", 33<<10))
		}
	})
	d := dlDeliverer(t, projector.DelivererConfig{AllowPrivateNetworks: true})
	sub := dlSub(rc.URL, subscriptions.Secret{Value: dlSecret(t)})
	if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Failed || o.Err != "response headers over 32 KiB" {
		t.Errorf("33 KiB header: %+v", o)
	}
	big.Store(false)
	if o := d.Deliver(context.Background(), projector.Request{Sub: sub, Event: dlEvent(), Attempt: 1}); o.Kind != projector.Succeeded {
		t.Errorf("after it: %+v", o)
	}
}
