package projector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/subscriptions"
)

// Request is one delivery attempt of an event to a subscription.
type Request struct {
	Sub      subscriptions.Subscription
	Event    eventstore.Event
	Attempt  int    // 1-based number of this attempt of the (event, subscription) pair
	ReplayID string // set on replayed deliveries: sent as webhook-replay
}

// DelivererConfig configures a Deliverer. The zero value is usable.
type DelivererConfig struct {
	// Timeout bounds one attempt: connecting, sending, the response and
	// reading (at most MaxResponseRead of) its body. Default 15s.
	Timeout time.Duration
	// AllowPrivateNetworks turns the connect-time address check off. Default
	// false: every connection is checked with Policy.DialControl on the
	// address really dialed, so DNS rebinding cannot reach a private address.
	AllowPrivateNetworks bool
	// Policy is the URL policy whose DialControl checks connections.
	Policy subscriptions.URLPolicy
	// MaxIdleConnsPerHost bounds the kept-alive connections to one endpoint.
	// Default 100.
	MaxIdleConnsPerHost int
	// UserAgent is sent on every delivery. Default DefaultUserAgent().
	UserAgent string
	// Now is the clock of webhook-timestamp, active secrets and Outcome.At.
	// Default time.Now.
	Now func() time.Time
}

// Defaults of DelivererConfig.
const (
	DefaultDeliveryTimeout     = 15 * time.Second
	DefaultMaxIdleConnsPerHost = 100
)

// MaxResponseRead is how much of a response body is read (and discarded) so
// the connection can be reused; a longer body closes the connection instead.
const MaxResponseRead = 64 << 10

// ErrInvalidConfig is wrapped by NewDeliverer's errors.
var ErrInvalidConfig = errors.New("projector: invalid delivery config")

func (c DelivererConfig) withDefaults() DelivererConfig {
	if c.Timeout == 0 {
		c.Timeout = DefaultDeliveryTimeout
	}
	if c.MaxIdleConnsPerHost == 0 {
		c.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if c.UserAgent == "" {
		c.UserAgent = DefaultUserAgent()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c DelivererConfig) validate() error {
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("%w: Timeout must not be negative (0 = 15s), got %s", ErrInvalidConfig, c.Timeout)
	case c.MaxIdleConnsPerHost < 0:
		return fmt.Errorf("%w: MaxIdleConnsPerHost must not be negative (0 = 100), got %d", ErrInvalidConfig, c.MaxIdleConnsPerHost)
	}
	return nil
}

var userAgent = sync.OnceValue(func() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "hooklog/" + v
})

// DefaultUserAgent is "hooklog/<module version>", or "hooklog/dev" for a
// build from a work tree.
func DefaultUserAgent() string { return userAgent() }

// Deliverer sends signed webhooks. It is safe for concurrent use; all
// deliveries share one connection pool.
type Deliverer struct {
	cfg       DelivererConfig
	transport *http.Transport
	client    *http.Client
}

// NewDeliverer builds a Deliverer. Errors wrap ErrInvalidConfig and name the field.
func NewDeliverer(cfg DelivererConfig) (*Deliverer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	if !cfg.AllowPrivateNetworks {
		dialer.Control = cfg.Policy.DialControl
	}
	tr := &http.Transport{
		// No proxy: a proxy would make the dialer check the proxy's address,
		// not the endpoint's.
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          0, // bounded per host instead
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   min(cfg.Timeout, 10*time.Second),
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a 3xx is the outcome, not followed
		},
	}
	return &Deliverer{cfg: cfg, transport: tr, client: client}, nil
}

// Close closes idle connections. In-flight deliveries finish (or are
// canceled by their contexts); the Deliverer stays usable.
func (d *Deliverer) Close() { d.transport.CloseIdleConnections() }

// Deliver makes one attempt to deliver r.Event to r.Sub and classifies it.
// The attempt is bounded by the configured timeout and by ctx. It never
// panics: an unexpected failure is a Failed outcome.
func (d *Deliverer) Deliver(ctx context.Context, r Request) (o Outcome) {
	at := d.cfg.Now()
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			o = Outcome{Kind: Failed, Err: short(fmt.Sprintf("internal error: %v", p))}
		}
		o.At = at
		o.Duration = time.Since(start)
	}()
	body, err := Body(r.Event)
	if err != nil {
		return Outcome{Kind: Failed, Err: short("encoding the body: " + err.Error())}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, d.cfg.Timeout, &timeoutError{after: d.cfg.Timeout})
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.Sub.URL, bytes.NewReader(body))
	if err != nil {
		return Outcome{Kind: Failed, Err: short("invalid url: " + err.Error())}
	}
	id := r.Event.ID.String()
	h := req.Header
	for k, v := range r.Sub.Headers {
		h.Set(k, v)
	}
	// Lower-case names as in the Standard Webhooks spec (and HTTP/2). The
	// subscriptions package refuses custom headers that collide with these.
	h["content-type"] = []string{"application/json"}
	h["webhook-id"] = []string{id}
	h["webhook-timestamp"] = []string{strconv.FormatInt(at.Unix(), 10)}
	if sig := Sign(r.Sub.ActiveSecrets(at), id, at, body); sig != "" {
		h["webhook-signature"] = []string{sig}
	}
	if r.ReplayID != "" {
		h["webhook-replay"] = []string{r.ReplayID}
	}
	h["User-Agent"] = []string{d.cfg.UserAgent} // canonical: net/http looks it up so
	// An empty Idempotency-Key (not sent) lets net/http re-send the POST when
	// a kept-alive connection turns out to be closed by the endpoint. That is
	// safe: delivery is at least once and the copy has the same webhook-id;
	// without it the race with an endpoint's idle timeout fails the attempt.
	h["Idempotency-Key"] = []string{}

	resp, err := d.client.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil {
			var te *timeoutError
			if errors.As(cause, &te) {
				err = te
			}
		}
		return classify(nil, err, d.cfg.Now())
	}
	_, _ = io.CopyN(io.Discard, resp.Body, MaxResponseRead)
	_ = resp.Body.Close()
	return classify(resp, nil, d.cfg.Now())
}

// Body is the JSON body of a delivery:
// {"id","type","timestamp","stream","position","tenant","data"}, where
// timestamp is the event's recorded_at in RFC 3339 UTC with microseconds,
// position its cursor, tenant null when it has none, and data the event's
// data as stored (an empty one is {}).
func Body(e eventstore.Event) ([]byte, error) {
	data := bytes.TrimSpace(e.Data)
	if len(data) == 0 {
		data = []byte("{}")
	} else if !json.Valid(data) {
		return nil, fmt.Errorf("projector: event %s: data is not valid JSON", e.ID)
	}
	var tenant *string
	if e.Tenant != "" {
		tenant = &e.Tenant
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the data goes out as stored
	err := enc.Encode(webhookBody{
		ID:        e.ID.String(),
		Type:      e.Type,
		Timestamp: e.RecordedAt.UTC().Format(timestampFormat),
		Stream:    e.Stream,
		Position:  e.Position.String(),
		Tenant:    tenant,
	})
	if err != nil {
		return nil, fmt.Errorf("projector: event %s: %w", e.ID, err)
	}
	// The data goes out exactly as stored, appended as the last member.
	b := bytes.TrimSuffix(buf.Bytes(), []byte("}\n"))
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}'), nil
}

// webhookBody is the wire shape of Body, in API.md's field order.
type webhookBody struct {
	ID        string  `json:"id"`
	Type      string  `json:"type"`
	Timestamp string  `json:"timestamp"`
	Stream    string  `json:"stream"`
	Position  string  `json:"position"`
	Tenant    *string `json:"tenant"`
	// data follows, verbatim (see Body)
}

// timestampFormat is RFC 3339 with exactly six fractional digits.
const timestampFormat = "2006-01-02T15:04:05.000000Z07:00"
