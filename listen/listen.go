package listen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Config configures a Handler. The zero value answers 200 at "/" and prints
// to standard output without checking signatures.
type Config struct {
	// Secret is the subscription's signing secret ("whsec_…"). Empty: every
	// delivery is printed with "signature unchecked".
	Secret string
	// Status is the HTTP status answered to every delivery, 200 to 599.
	// Default 200. Try 500 to watch retries, 429 or 503 with RetryAfter, 410
	// to have the subscription disabled.
	Status int
	// RetryAfter, when positive, is sent as Retry-After (whole seconds) with
	// the answer. Default none.
	RetryAfter time.Duration
	// Path is where deliveries are accepted; other paths get 404. Default "/".
	Path string
	// Out receives the printed lines. Default os.Stdout.
	Out io.Writer
	// Now stamps the printed lines. Default time.Now.
	Now func() time.Time
	// MaxBody bounds a request body; a larger one gets 413. Default 10 MiB.
	MaxBody int64
}

// ErrInvalidConfig is wrapped by New's errors, which name the setting.
var ErrInvalidConfig = errors.New("listen: invalid config")

// DefaultMaxBody is the default Config.MaxBody.
const DefaultMaxBody = 10 << 20

// maxRemembered bounds the webhook-ids whose attempts are counted; the
// oldest is forgotten first.
const maxRemembered = 100_000

// Handler receives deliveries, prints them and answers Config.Status. It is
// safe for concurrent use; lines of concurrent deliveries do not interleave.
type Handler struct {
	cfg Config
	wh  *standardwebhooks.Webhook // nil: signatures unchecked

	mu       sync.Mutex // guards seen, order, next and writes to cfg.Out
	seen     map[string]int
	order    []string // ring of remembered ids, for eviction
	next     int
	remember int
}

// New validates cfg and returns a Handler. Errors wrap ErrInvalidConfig and
// name the setting as the command line spells it (--status, --secret, --path).
func New(cfg Config) (*Handler, error) {
	if cfg.Status == 0 {
		cfg.Status = http.StatusOK
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Status < 200 || cfg.Status > 599 {
		return nil, fmt.Errorf("%w: --status must be an HTTP status from 200 to 599, got %d", ErrInvalidConfig, cfg.Status)
	}
	if !strings.HasPrefix(cfg.Path, "/") {
		return nil, fmt.Errorf("%w: --path must start with /, got %q", ErrInvalidConfig, cfg.Path)
	}
	if cfg.RetryAfter < 0 {
		return nil, fmt.Errorf("%w: --retry-after must not be negative, got %s", ErrInvalidConfig, cfg.RetryAfter)
	}
	h := &Handler{cfg: cfg, seen: map[string]int{}, remember: maxRemembered}
	if cfg.Secret != "" {
		if !strings.HasPrefix(cfg.Secret, "whsec_") {
			return nil, fmt.Errorf(`%w: --secret must be the subscription's secret, starting with "whsec_"`, ErrInvalidConfig)
		}
		wh, err := standardwebhooks.NewWebhook(cfg.Secret)
		if err != nil {
			return nil, fmt.Errorf("%w: --secret is not whsec_ followed by base64", ErrInvalidConfig)
		}
		h.wh = wh
	}
	return h, nil
}

// ServeHTTP receives one request at Config.Path: a POST is printed and
// answered with Config.Status; other methods get 405, other paths 404 (both
// printed, so a misconfigured URL shows up).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := h.cfg.Now()
	if r.URL.Path != h.cfg.Path {
		h.printf("%s  ignored %s %s: not the listening path %s  → 404\n", clock(at), r.Method, r.URL.Path, h.cfg.Path)
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		h.printf("%s  ignored %s %s: deliveries are POSTs  → 405\n", clock(at), r.Method, r.URL.Path)
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		code := http.StatusBadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			code = http.StatusRequestEntityTooLarge
		}
		h.printf("%s  could not read the body: %v  → %d\n", clock(at), err, code)
		http.Error(w, http.StatusText(code), code)
		return
	}
	h.print(at, r.Header, body)
	if h.cfg.RetryAfter > 0 {
		secs := int64((h.cfg.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.WriteHeader(h.cfg.Status)
}

// delivery is the body hooklog sends.
type delivery struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Stream    string          `json:"stream"`
	Position  string          `json:"position"`
	Tenant    *string         `json:"tenant"`
	Data      json.RawMessage `json:"data"`
}

// indent lines the second line up under the first's event type.
const indent = "              "

func (h *Handler) print(at time.Time, hdr http.Header, body []byte) {
	status := strconv.Itoa(h.cfg.Status) + " " + http.StatusText(h.cfg.Status)
	id := hdr.Get("webhook-id")
	var d delivery
	parsed := json.Unmarshal(body, &d) == nil && d.Type != ""
	if id == "" {
		h.printf("%s  POST %s: not a Standard Webhooks delivery (no webhook-id header), %d bytes  → %s\n%s%s\n",
			clock(at), h.cfg.Path, len(body), status, indent, preview(body))
		return
	}
	var line strings.Builder
	typ := "(unknown type)"
	if parsed {
		typ = d.Type
	}
	fmt.Fprintf(&line, "%s  %s  %s", clock(at), typ, id)
	// The count and the signature are decided under the lock so that
	// concurrent attempts of one id print in the order they are counted.
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(&line, "  attempt %d", h.count(id))
	if replay := hdr.Get("webhook-replay"); replay != "" {
		fmt.Fprintf(&line, "  replay %s", replay)
	}
	fmt.Fprintf(&line, "  signature %s  → %s\n", h.verify(body, hdr), status)
	line.WriteString(indent)
	if parsed {
		tenant := "-"
		if d.Tenant != nil {
			tenant = *d.Tenant
		}
		fmt.Fprintf(&line, "stream %s  tenant %s  position %s  recorded %s  data %s\n", d.Stream, tenant, d.Position, d.Timestamp, preview(d.Data))
	} else {
		fmt.Fprintf(&line, "body is not hooklog's JSON (%d bytes): %s\n", len(body), preview(body))
	}
	_, _ = io.WriteString(h.cfg.Out, line.String())
}

// count records one more attempt of id and returns how many were seen. The
// caller holds h.mu.
func (h *Handler) count(id string) int {
	n, ok := h.seen[id]
	if !ok {
		if len(h.order) < h.remember {
			h.order = append(h.order, id)
		} else {
			delete(h.seen, h.order[h.next])
			h.order[h.next] = id
			h.next = (h.next + 1) % h.remember
		}
	}
	h.seen[id] = n + 1
	return n + 1
}

// verify checks the signature with the official verifier.
func (h *Handler) verify(body []byte, hdr http.Header) string {
	if h.wh == nil {
		return "unchecked (no --secret)"
	}
	err := h.wh.Verify(body, hdr)
	switch {
	case err == nil:
		return "valid"
	case errors.Is(err, standardwebhooks.ErrNoMatchingSignature):
		return "INVALID (no signature matches the secret)"
	case errors.Is(err, standardwebhooks.ErrMessageTooOld):
		return "INVALID (webhook-timestamp more than 5 minutes old)"
	case errors.Is(err, standardwebhooks.ErrMessageTooNew):
		return "INVALID (webhook-timestamp more than 5 minutes ahead)"
	case errors.Is(err, standardwebhooks.ErrRequiredHeaders):
		return "INVALID (webhook-timestamp or webhook-signature missing)"
	case errors.Is(err, standardwebhooks.ErrInvalidHeaders):
		return "INVALID (webhook-timestamp is not unix seconds)"
	}
	return "INVALID (" + err.Error() + ")"
}

func (h *Handler) printf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.cfg.Out, format, args...)
}

func clock(t time.Time) string { return t.Format("15:04:05.000") }

// maxPreview bounds the data shown on the second line.
const maxPreview = 300

// preview is b on one line: compacted when it is JSON, quoted when it is not,
// cut at maxPreview bytes.
func preview(b []byte) string {
	var s string
	var buf bytes.Buffer
	if json.Compact(&buf, b) == nil {
		s = buf.String()
	} else {
		s = strconv.Quote(string(b))
	}
	if len(s) <= maxPreview {
		return s
	}
	cut := maxPreview
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("… (%d bytes)", len(b))
}

// ShutdownTimeout is how long Serve waits for requests being answered when
// its context ends.
const ShutdownTimeout = 2 * time.Second

// Serve serves h on ln until ctx ends, then shuts the server down, waiting
// up to ShutdownTimeout for requests being answered. It returns nil after a
// shutdown, or the error that stopped the server.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("listen: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-done
	return nil
}
