package projector

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/idna"
)

// The delivery transport: HTTP/1.1 over kept-alive connections, each carrying
// one attempt at a time. The attempt's own goroutine writes the request and
// reads the response with fasthttp's codec. net/http's client hands every
// request to a connection's writer goroutine and the response back from its
// reader goroutine, and builds a header map per response. That was about a
// third of a delivery's CPU in `hooklog bench fanout`. Owning the connection
// for the attempt also makes cancelling exactly one attempt simple: close its
// connection.
//
// Endpoints get HTTP/1.1 (TLS with ALPN "http/1.1"), as from most webhook
// senders; redirects are never followed (a 3xx is the outcome).

// Buffers of an exchange, pooled (an idle connection holds none). A
// response whose header block does not fit in respHeaderMax fails the
// attempt ("response headers over 32 KiB").
const (
	respHeaderMax   = 32 << 10
	reqWriteBuffer  = 4 << 10
	idleConnTimeout = 90 * time.Second // closed by a sweep every 30s, so idle 90-120s at most
)

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, respHeaderMax) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, reqWriteBuffer) }}
)

// target is a subscription URL parsed once for the transport.
type target struct {
	key        string // scheme://host:port: connections are pooled by it
	addr       string // host:port to dial
	tls        bool
	serverName string // for SNI and certificate verification
	host       string // the Host header: the URL's host as written (a name in its ASCII form)
	requestURI string // path?query as sent
}

// parseTarget checks and splits a webhook URL. The subscriptions package has
// already refused anything but absolute http(s) URLs without credentials;
// this is the transport's own check.
func parseTarget(raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	hostname, err := asciiHost(u.Hostname())
	if err != nil {
		return nil, err
	}
	t := &target{host: u.Host, requestURI: u.RequestURI(), serverName: hostname}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		t.tls = true
		if port == "" {
			port = "443"
		}
	default:
		return nil, fmt.Errorf("unsupported scheme %q (want http or https)", u.Scheme)
	}
	if t.serverName == "" {
		return nil, errors.New("no host")
	}
	if u.User != nil {
		return nil, errors.New("credentials in the URL are not sent; use headers")
	}
	t.addr = net.JoinHostPort(t.serverName, port)
	if t.serverName != u.Hostname() { // an internationalized name: its ASCII form everywhere
		t.host = t.addr
		if u.Port() == "" {
			t.host = t.serverName
		}
	}
	t.key = u.Scheme + "://" + strings.ToLower(t.addr)
	return t, nil
}

// asciiHost is a host name in the form DNS and TLS want: an
// internationalized name in its ASCII (punycode) form, as net/http sends it.
func asciiHost(h string) (string, error) {
	for i := 0; i < len(h); i++ {
		if h[i] >= utf8.RuneSelf {
			a, err := idna.Lookup.ToASCII(h)
			if err != nil {
				return "", fmt.Errorf("host %q: %w", h, err)
			}
			return a, nil
		}
	}
	return h, nil
}

// conn is one kept-alive connection to an endpoint.
type conn struct {
	key   string
	nc    net.Conn  // what requests are written to: raw, or TLS over raw
	raw   net.Conn  // the TCP connection
	used  bool      // has carried an exchange: it may have been closed by the endpoint since
	since time.Time // idle since (in the pool)
}

// close closes the TCP connection. A TLS connection is not sent a
// close_notify: that write has a deadline of its own, and an endpoint that
// stopped reading would hold the attempt past its timeout.
func (c *conn) close() { _ = c.raw.Close() }

// connPool keeps idle connections per target key, most recently used last;
// connections idle for idleConnTimeout are closed by a sweep.
type connPool struct {
	maxPerKey int

	mu    sync.Mutex
	idle  map[string][]*conn
	n     int // idle connections in all
	sweep *time.Timer
}

// get takes the most recently used idle connection to key, or nil.
func (p *connPool) get(key string) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.idle[key]
	if len(cs) == 0 {
		return nil
	}
	c := cs[len(cs)-1]
	cs[len(cs)-1] = nil
	if len(cs) == 1 {
		delete(p.idle, key)
	} else {
		p.idle[key] = cs[:len(cs)-1]
	}
	p.n--
	return c
}

// put returns c to the pool, or closes it when the key already has
// maxPerKey idle connections.
func (p *connPool) put(c *conn) {
	c.used, c.since = true, time.Now()
	p.mu.Lock()
	cs := p.idle[c.key]
	if len(cs) >= p.maxPerKey {
		p.mu.Unlock()
		c.close()
		return
	}
	if p.idle == nil {
		p.idle = map[string][]*conn{}
	}
	p.idle[c.key] = append(cs, c)
	p.n++
	if p.sweep == nil {
		p.sweep = time.AfterFunc(idleConnTimeout, p.sweepIdle)
	}
	p.mu.Unlock()
}

// sweepIdle closes the connections idle for idleConnTimeout, and runs again
// while any stay idle.
func (p *connPool) sweepIdle() {
	cutoff := time.Now().Add(-idleConnTimeout)
	var stale []*conn
	p.mu.Lock()
	for key, cs := range p.idle {
		i := 0
		for i < len(cs) && cs[i].since.Before(cutoff) { // oldest first
			i++
		}
		if i == 0 {
			continue
		}
		stale = append(stale, cs[:i]...)
		p.n -= i
		if i == len(cs) {
			delete(p.idle, key)
		} else {
			p.idle[key] = append(cs[:0], cs[i:]...)
		}
	}
	if p.n > 0 {
		p.sweep.Reset(idleConnTimeout / 3)
	} else {
		p.sweep = nil
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// closeIdle closes every idle connection.
func (p *connPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.n = nil, 0
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweep = nil
	}
	p.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.close()
		}
	}
}

// attemptCtx ties the attempts of one delivery worker to their context: it
// registers once per parent context (not per attempt) a function that closes
// the connection of the attempt under way when that context ends. Only the
// worker calls begin, use and close.
type attemptCtx struct {
	stop func() bool // the registration for parent

	mu     sync.Mutex
	parent context.Context
	cur    *conn // the connection of the attempt under way
}

func (d *Deliverer) newAttemptCtx() *attemptCtx { return &attemptCtx{} }

// begin readies an attempt under parent.
func (a *attemptCtx) begin(parent context.Context) {
	a.mu.Lock()
	same := parent == a.parent
	a.parent = parent
	a.mu.Unlock()
	if same {
		return
	}
	if a.stop != nil {
		a.stop()
	}
	a.stop = context.AfterFunc(parent, func() { a.abort(parent) })
}

// use makes c the connection of the attempt under way (nil: none).
func (a *attemptCtx) use(c *conn) {
	a.mu.Lock()
	a.cur = c
	a.mu.Unlock()
}

// abort closes the connection of the attempt under way if that attempt runs
// under parent (a late call, for a parent the worker has left since, closes
// nothing).
func (a *attemptCtx) abort(parent context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur != nil && a.parent == parent {
		a.cur.close()
	}
}

// close releases the registration (the worker exits).
func (a *attemptCtx) close() {
	if a.stop != nil {
		a.stop()
		a.stop = nil
	}
	a.mu.Lock()
	a.parent = nil
	a.mu.Unlock()
}

// dial connects to t before deadline, checking the address with the URL
// policy (the dialer's Control), and shakes hands for https.
func (d *Deliverer) dial(ctx context.Context, t *target, deadline time.Time) (*conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	raw, err := d.dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	c := &conn{key: t.key, nc: raw, raw: raw}
	if t.tls {
		tc := tls.Client(raw, d.tlsConfig(t.serverName))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.close()
			return nil, err
		}
		c.nc = tc
	}
	return c, nil
}

// tlsConfig is the configured TLS settings (or the defaults) for one server
// name, over HTTP/1.1.
func (d *Deliverer) tlsConfig(serverName string) *tls.Config {
	var cfg *tls.Config
	if d.cfg.TLSConfig != nil {
		cfg = d.cfg.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg.ServerName = serverName
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

// errRespHeaderTooLarge is an attempt whose response header block is over
// respHeaderMax.
var errRespHeaderTooLarge = errors.New("response headers over 32 KiB")

// exchange sends req to t and reads the response into resp (its body up to
// MaxResponseRead; a longer one is left unread and closes the connection),
// on a pooled connection or a new one, before deadline. A pooled connection
// that fails before any byte of the response arrived (the endpoint closed it
// while it was idle) is replaced by a new one, once: the request is sent
// again with the same webhook-id, which delivery at least once allows. The
// error is ctx's when ctx ended meanwhile.
func (d *Deliverer) exchange(ctx context.Context, a *attemptCtx, t *target, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	fresh := false // after a stale pooled connection: dial
	for {
		var c *conn
		if !fresh {
			c = d.pool.get(t.key)
		}
		if c == nil {
			var err error
			if c, err = d.dial(ctx, t, deadline); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			}
		}
		err := d.roundTrip(ctx, a, c, req, resp, deadline)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var stale *staleError
		if errors.As(err, &stale) {
			if c.used && !fresh && time.Now().Before(deadline) {
				fresh = true
				continue
			}
			err = stale.err
		}
		return err
	}
}

// staleError is the error of an exchange that failed before any byte of the
// response was read: on a connection that had been idle, it is worth
// another.
type staleError struct{ err error }

func (e *staleError) Error() string { return e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

func staleErr(err error) error {
	if isTimeout(err) {
		return err
	}
	return &staleError{err}
}

// roundTrip is one exchange on c. It returns c to the pool when the
// exchange completed and both sides keep the connection; otherwise it closes
// c.
func (d *Deliverer) roundTrip(ctx context.Context, a *attemptCtx, c *conn, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) (err error) {
	keep := false
	bw := writers.Get().(*bufio.Writer)
	br := readers.Get().(*bufio.Reader)
	bw.Reset(c.nc)
	br.Reset(c.nc)
	if a != nil {
		a.use(c)
	}
	defer func() {
		if a != nil {
			a.use(nil) // before c can be pooled: no abort closes it afterwards
		}
		// Bytes after the response: the endpoint is out of step.
		if keep && br.Buffered() == 0 && ctx.Err() == nil {
			d.pool.put(c)
		} else {
			c.close()
		}
		bw.Reset(nil)
		br.Reset(nil)
		writers.Put(bw)
		readers.Put(br)
	}()
	if err := ctx.Err(); err != nil { // ended before a.use: no abort closes c
		return err
	}
	if err := c.nc.SetDeadline(deadline); err != nil {
		return staleErr(err)
	}
	if err := req.Write(bw); err != nil {
		return staleErr(err)
	}
	if err := bw.Flush(); err != nil {
		return staleErr(err)
	}
	// The first byte of the response, on its own: a connection that fails
	// before it is stale; after it, every error is the attempt's (fasthttp
	// reports a response cut short as io.EOF too).
	if _, err := br.Peek(1); err != nil {
		return staleErr(err)
	}
	err = resp.ReadLimitBody(br, MaxResponseRead)
	switch {
	case err == nil:
		keep = resp.StatusCode() >= 200 && !resp.ConnectionClose() && !req.ConnectionClose()
		return nil
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return nil // the status line and headers were read: they are the outcome
	}
	var small *fasthttp.ErrSmallBuffer
	if errors.As(err, &small) {
		return errRespHeaderTooLarge
	}
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF // "connection closed before a response"
	}
	return err
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
