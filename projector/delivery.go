package projector

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

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
	// MaxIdleConnsPerHost bounds the kept-alive idle connections to one
	// endpoint (scheme, host and port). Default 100.
	MaxIdleConnsPerHost int
	// TLSConfig, if set, is cloned for https endpoints: a private CA in
	// RootCAs, client certificates. ServerName and NextProtos are set per
	// endpoint. Default: the system roots, TLS 1.2 or later.
	TLSConfig *tls.Config
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
// deliveries share one pool of kept-alive connections (see transport.go).
type Deliverer struct {
	cfg     DelivererConfig
	dialer  *net.Dialer
	pool    connPool
	timeout *timeoutError // the error of an attempt that timed out
	targets targetCache
	bodies  bodyCache
	macs    macCache
	unix    unixCache
}

// unixCache keeps the text of the latest second seen, for webhook-timestamp.
type unixCache struct{ p atomic.Pointer[unixText] }

type unixText struct {
	sec  int64
	text string
}

func (c *unixCache) text(sec int64) string {
	if t := c.p.Load(); t != nil && t.sec == sec {
		return t.text
	}
	t := &unixText{sec: sec, text: strconv.FormatInt(sec, 10)}
	c.p.Store(t)
	return t.text
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
	// No proxy: a proxy would make the dialer check the proxy's address, not
	// the endpoint's.
	return &Deliverer{cfg: cfg, dialer: dialer, pool: connPool{maxPerKey: cfg.MaxIdleConnsPerHost}, timeout: &timeoutError{after: cfg.Timeout}}, nil
}

// Close closes idle connections. In-flight deliveries finish (or are
// canceled by their contexts); the Deliverer stays usable.
func (d *Deliverer) Close() { d.pool.closeIdle() }

// Deliver makes one attempt to deliver r.Event to r.Sub and classifies it.
// The attempt is bounded by the configured timeout and by ctx. It never
// panics: an unexpected failure is a Failed outcome. Redirects are never
// followed (a 3xx is the outcome).
func (d *Deliverer) Deliver(ctx context.Context, r Request) Outcome {
	a := d.newAttemptCtx()
	defer a.close()
	return d.deliver(ctx, r, a)
}

// deliver is one attempt under ctx; a aborts it when ctx ends.
func (d *Deliverer) deliver(ctx context.Context, r Request, a *attemptCtx) (o Outcome) {
	at := d.cfg.Now()
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			o = Outcome{Kind: Failed, Err: short(fmt.Sprintf("internal error: %v", p))}
		}
		o.At = at
		o.Duration = time.Since(start)
	}()
	deadline := start.Add(d.cfg.Timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	b, err := d.bodies.get(&r.Event)
	if err != nil {
		return Outcome{Kind: Failed, Err: short("encoding the body: " + err.Error())}
	}
	t, err := d.targets.get(r.Sub.URL)
	if err != nil {
		return Outcome{Kind: Failed, Err: short("invalid url: " + err.Error())}
	}
	unix := d.unix.text(at.Unix())
	// r.Sub.ActiveSecrets(at), without copying the subscription or
	// allocating (there are one or two).
	var active [2]string
	secrets := active[:0]
	for i := range r.Sub.Secrets {
		if sec := &r.Sub.Secrets[i]; sec.ExpiresAt == nil || at.Before(*sec.ExpiresAt) {
			secrets = append(secrets, sec.Value)
		}
	}
	sig := sign(&d.macs, secrets, b.id, unix, b.body)

	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer func() {
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}()
	// Every header as a plain one, written as set, names as given: the
	// Standard Webhooks ones lower case, as in the spec. Content-Length is
	// added on writing.
	h := &req.Header
	h.DisableSpecialHeader()
	h.DisableNormalizing()
	h.SetMethod(http.MethodPost)
	h.SetRequestURI(t.requestURI)
	h.Set("Host", t.host)
	h.Set("User-Agent", d.cfg.UserAgent)
	h.Set("content-type", "application/json")
	h.Set("webhook-id", b.id)
	h.Set("webhook-timestamp", unix)
	if sig != "" {
		h.Set("webhook-signature", sig)
	}
	if r.ReplayID != "" {
		h.Set("webhook-replay", r.ReplayID)
	}
	// The subscription's own headers, in name order (as net/http wrote
	// them); the subscriptions package refuses names that collide with the
	// ones above.
	switch len(r.Sub.Headers) {
	case 0:
	case 1:
		for k, v := range r.Sub.Headers {
			h.Set(k, v)
		}
	default:
		for _, k := range slices.Sorted(maps.Keys(r.Sub.Headers)) {
			h.Set(k, r.Sub.Headers[k])
		}
	}
	req.SetBodyRaw(b.body)

	a.begin(ctx)
	err = d.exchange(ctx, a, t, req, resp, deadline)
	now := d.cfg.Now()
	if err != nil {
		if ctx.Err() == nil && isTimeout(err) {
			err = d.timeout // "timeout after 15s"
		}
		return classify(nil, err, now)
	}
	return classifyStatus(resp.StatusCode(), string(resp.Header.Peek("Retry-After")), string(resp.Header.Peek("Date")), now)
}

// maxTargets bounds targetCache; past it the cache starts over.
const maxTargets = 4096

// targetCache keeps each subscription URL parsed (see parseTarget).
type targetCache struct {
	m sync.Map // url → *target or error
	n atomic.Int64
}

func (c *targetCache) get(url string) (*target, error) {
	v, ok := c.m.Load(url)
	if !ok {
		t, err := parseTarget(url)
		if err != nil {
			v = err
		} else {
			v = t
		}
		if c.n.Add(1) > maxTargets {
			c.m.Clear()
			c.n.Store(1)
		}
		c.m.Store(url, v)
	}
	if err, ok := v.(error); ok {
		return nil, err
	}
	return v.(*target), nil
}

// cachedBody is the body of one event and what it was made of.
type cachedBody struct {
	ev   eventstore.Event // the fields Body reads; Data shares the event's array
	id   string           // the event id, as webhook-id
	body []byte
}

func (b *cachedBody) matches(e *eventstore.Event) bool {
	c := &b.ev
	return c.ID == e.ID && c.Position == e.Position && c.Type == e.Type && c.Stream == e.Stream &&
		c.Tenant == e.Tenant && c.RecordedAt.Equal(e.RecordedAt) && bytes.Equal(c.Data, e.Data)
}

// Bounds of bodyCache. Routes that read the log on their own drift
// thousands of events apart, so the cache has many slots; its memory is
// bounded by bytes (bodies and the data they share with their events).
const (
	bodySlots      = 1 << 16
	bodyWays       = 4 // slots per set
	bodyCacheBytes = 16 << 20
	maxCachedBody  = 64 << 10
)

// bodyCache remembers the bodies of recent events, so an event delivered to
// several subscriptions is encoded (and its data checked) once. It is
// set-associative on the event id (four slots per set: with one, events
// whose ids share a slot, nearly half of a 20,000-event burst, evicted each
// other back and forth as the routes reached them); a body is reused only
// for an event equal in every field Body reads (the data compared bytewise,
// which is quick when the routes share the event's array, as attached routes
// do).
type bodyCache struct {
	slots [bodySlots]atomic.Pointer[cachedBody]
	bytes atomic.Int64
}

func (c *bodyCache) get(e *eventstore.Event) (*cachedBody, error) {
	h := binary.LittleEndian.Uint64(e.ID[8:])
	set := h % (bodySlots / bodyWays) * bodyWays
	free := -1
	for w := range uint64(bodyWays) {
		b := c.slots[set+w].Load()
		if b == nil {
			if free < 0 {
				free = int(w)
			}
			continue
		}
		if b.matches(e) {
			return b, nil
		}
	}
	body, err := Body(*e)
	if err != nil {
		return nil, err
	}
	b := &cachedBody{id: e.ID.String(), body: body, ev: eventstore.Event{
		ID: e.ID, Position: e.Position, Type: e.Type, Stream: e.Stream, Tenant: e.Tenant, RecordedAt: e.RecordedAt, Data: e.Data,
	}}
	if b.size() <= maxCachedBody {
		if free < 0 {
			free = int(h >> 32 % bodyWays) // a full set: replace one at random
		}
		c.store(set+uint64(free), b)
	}
	return b, nil
}

// store puts b in slot i; past the byte budget it empties the slots that
// follow until a quarter of the budget is free.
func (c *bodyCache) store(i uint64, b *cachedBody) {
	n := b.size()
	if old := c.slots[i].Swap(b); old != nil {
		n -= old.size()
	}
	if c.bytes.Add(n) <= bodyCacheBytes {
		return
	}
	for j := uint64(1); j < bodySlots && c.bytes.Load() > bodyCacheBytes*3/4; j++ {
		if old := c.slots[(i+j)%bodySlots].Swap(nil); old != nil {
			c.bytes.Add(-old.size())
		}
	}
}

func (b *cachedBody) size() int64 { return int64(len(b.body) + len(b.ev.Data)) }

// Body is the JSON body of a delivery:
// {"id","type","timestamp","stream","position","tenant","data"}, where
// timestamp is the event's recorded_at in RFC 3339 UTC with microseconds,
// position its cursor, tenant null when it has none, and data the event's
// data as stored (an empty one is {}).
func Body(e eventstore.Event) ([]byte, error) {
	data := bytes.TrimSpace(e.Data)
	if len(data) == 0 {
		data = []byte("{}")
	} else if !eventstore.ValidJSON(data) {
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
