package listen_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/listen"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is an io.Writer safe for the handler's goroutines and the test.
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

func newSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// receiver runs listen's handler behind a real server on 127.0.0.1.
func receiver(t *testing.T, cfg listen.Config) (*httptest.Server, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	cfg.Out = out
	h, err := listen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, out
}

func deliverer(t *testing.T) *projector.Deliverer {
	t.Helper()
	d, err := projector.NewDeliverer(projector.DelivererConfig{AllowPrivateNetworks: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func event() eventstore.Event {
	return eventstore.Event{
		ID:         uuid.Must(uuid.NewV7()),
		Stream:     "order-1",
		Type:       "order.created",
		Tenant:     "acme",
		Data:       json.RawMessage(`{"amount": 100}`),
		Position:   eventstore.Position{Lo: 7},
		RecordedAt: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC),
	}
}

func sub(url string, secrets ...subscriptions.Secret) subscriptions.Subscription {
	return subscriptions.Subscription{ID: uuid.NewString(), URL: url, State: subscriptions.StateActive, Secrets: secrets}
}

// Deliveries from the real Deliverer are printed readably: type, id, the
// attempt count per id, the replay marker, a valid signature, the status.
func TestListenPrintsAndVerifies(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	srv, out := receiver(t, listen.Config{Secret: secret})
	d := deliverer(t)
	s := sub(srv.URL+"/", subscriptions.Secret{Value: secret})
	e, other := event(), event()
	other.Type, other.Tenant = "payment.succeeded", ""
	for i, r := range []projector.Request{
		{Sub: s, Event: e, Attempt: 1},
		{Sub: s, Event: e, Attempt: 2},
		{Sub: s, Event: other, Attempt: 1},
		{Sub: s, Event: e, Attempt: 1, ReplayID: "rpl_42"},
	} {
		if o := d.Deliver(context.Background(), r); o.Kind != projector.Succeeded || o.StatusCode != 200 {
			t.Fatalf("delivery %d: %+v", i, o)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8 {
		t.Fatalf("got %d lines, want two per delivery:\n%s", len(lines), out)
	}
	first := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}  (\S+)  (\S+)  attempt (\d+)(  replay (\S+))?  signature (.+?)  → 200 OK$`)
	want := []struct{ typ, id, attempt, replay string }{
		{"order.created", e.ID.String(), "1", ""},
		{"order.created", e.ID.String(), "2", ""},
		{"payment.succeeded", other.ID.String(), "1", ""},
		{"order.created", e.ID.String(), "3", "rpl_42"},
	}
	for i, w := range want {
		m := first.FindStringSubmatch(lines[2*i])
		if m == nil {
			t.Errorf("line %q does not match %s", lines[2*i], first)
			continue
		}
		if m[1] != w.typ || m[2] != w.id || m[3] != w.attempt || m[5] != w.replay || m[6] != "valid" {
			t.Errorf("delivery %d printed %q; want type %s id %s attempt %s replay %q, signature valid", i, lines[2*i], w.typ, w.id, w.attempt, w.replay)
		}
	}
	if l := lines[1]; !strings.Contains(l, "stream order-1  tenant acme  position 00000000000000000000000000000007") || !strings.HasSuffix(l, `data {"amount":100}`) {
		t.Errorf("second line %q", l)
	}
	if l := lines[5]; !strings.Contains(l, "tenant -") {
		t.Errorf("second line without a tenant: %q", l)
	}
}

// A rotation: the listener holds either secret and the delivery, signed with
// both, is valid; a wrong secret shows INVALID; no secret shows unchecked.
func TestListenSignatureStates(t *testing.T) {
	t.Parallel()
	newS, oldS := newSecret(t), newSecret(t)
	grace := time.Now().Add(time.Hour)
	s := func(url string) subscriptions.Subscription {
		return sub(url, subscriptions.Secret{Value: newS}, subscriptions.Secret{Value: oldS, ExpiresAt: &grace})
	}
	d := deliverer(t)
	for _, tc := range []struct {
		name, secret, want string
	}{
		{"new secret", newS, "signature valid"},
		{"old secret in grace", oldS, "signature valid"},
		{"wrong secret", newSecret(t), "signature INVALID (no signature matches the secret)"},
		{"no secret", "", "signature unchecked (no --secret)"},
	} {
		srv, out := receiver(t, listen.Config{Secret: tc.secret})
		if o := d.Deliver(context.Background(), projector.Request{Sub: s(srv.URL), Event: event(), Attempt: 1}); o.Kind != projector.Succeeded {
			t.Fatalf("%s: %+v", tc.name, o)
		}
		if !strings.Contains(out.String(), "  "+tc.want+"  ") {
			t.Errorf("%s: printed %q, want %q", tc.name, out, tc.want)
		}
	}
}

// --status and --retry-after are what the Deliverer sees.
func TestListenAnswersStatus(t *testing.T) {
	t.Parallel()
	d := deliverer(t)
	for _, tc := range []struct {
		cfg        listen.Config
		kind       projector.OutcomeKind
		retryAfter time.Duration
		printed    string
	}{
		{listen.Config{Status: 204}, projector.Succeeded, 0, "→ 204 No Content"},
		{listen.Config{Status: 500}, projector.Failed, 0, "→ 500 Internal Server Error"},
		{listen.Config{Status: 429, RetryAfter: 1500 * time.Millisecond}, projector.Failed, 2 * time.Second, "→ 429 Too Many Requests"},
		{listen.Config{Status: 410}, projector.Gone, 0, "→ 410 Gone"},
	} {
		srv, out := receiver(t, tc.cfg)
		o := d.Deliver(context.Background(), projector.Request{Sub: sub(srv.URL), Event: event(), Attempt: 1})
		if o.Kind != tc.kind || o.StatusCode != tc.cfg.Status || o.RetryAfter != tc.retryAfter {
			t.Errorf("status %d: outcome %+v", tc.cfg.Status, o)
		}
		if !strings.Contains(out.String(), tc.printed) {
			t.Errorf("status %d: printed %q", tc.cfg.Status, out)
		}
	}
}

func TestListenOtherRequests(t *testing.T) {
	t.Parallel()
	srv, out := receiver(t, listen.Config{Path: "/hooks", MaxBody: 100})
	post := func(path, body string, hdr map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/hooks", `{"hello": "world"}`, nil); code != 200 {
		t.Errorf("a POST without webhook headers: %d, want the configured 200", code)
	}
	if code := post("/hooks", `not json`, map[string]string{"webhook-id": "msg_1"}); code != 200 {
		t.Errorf("a webhook with a foreign body: %d", code)
	}
	if code := post("/elsewhere", `{}`, nil); code != 404 {
		t.Errorf("another path: %d, want 404", code)
	}
	if code := post("/hooks", strings.Repeat("x", 101), nil); code != 413 {
		t.Errorf("a body over MaxBody: %d, want 413", code)
	}
	resp, err := srv.Client().Get(srv.URL + "/hooks")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d, want 405", resp.StatusCode)
	}
	for _, want := range []string{
		"POST /hooks: not a Standard Webhooks delivery (no webhook-id header), 18 bytes  → 200 OK",
		`{"hello":"world"}`,
		"(unknown type)  msg_1  attempt 1  signature unchecked (no --secret)  → 200 OK",
		`body is not hooklog's JSON (8 bytes): "not json"`,
		"ignored POST /elsewhere: not the listening path /hooks  → 404",
		"→ 413",
		"ignored GET /hooks: deliveries are POSTs  → 405",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  listen.Config
		flag string
	}{
		{listen.Config{Status: 199}, "--status"},
		{listen.Config{Status: 600}, "--status"},
		{listen.Config{Path: "hooks"}, "--path"},
		{listen.Config{Secret: "sk_123"}, "--secret"},
		{listen.Config{Secret: "whsec_not base64!"}, "--secret"},
		{listen.Config{RetryAfter: -time.Second}, "--retry-after"},
	} {
		_, err := listen.New(tc.cfg)
		if !errors.Is(err, listen.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig naming %s", tc.cfg, err, tc.flag)
		}
	}
}

// Serve answers until its context ends, then returns nil and leaves nothing
// running (goleak checks the package).
func TestServeStopsWithContext(t *testing.T) {
	t.Parallel()
	out := &syncBuffer{}
	h, _ := listen.New(listen.Config{Out: out})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- listen.Serve(ctx, ln, h) }()
	d := deliverer(t)
	if o := d.Deliver(context.Background(), projector.Request{Sub: sub("http://" + ln.Addr().String() + "/"), Event: event(), Attempt: 1}); o.Kind != projector.Succeeded {
		t.Fatalf("%+v", o)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(listen.ShutdownTimeout + 2*time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("still accepting connections after Serve returned")
	}
}
