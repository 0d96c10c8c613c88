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
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
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

// Buffer sizes of one connection. A response whose header block does not
// fit in respHeaderMax fails the attempt ("response headers over 8 KiB").
const (
	respHeaderMax   = 8 << 10
	reqWriteBuffer  = 4 << 10
	idleConnTimeout = 90 * time.Second
)

// target is a subscription URL parsed once for the transport.
type target struct {
	key        string // scheme://host:port: connections are pooled by it
	addr       string // host:port to dial
	tls        bool
	serverName string // for SNI and certificate verification
	host       string // the Host header: the URL's host as written
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
	t := &target{host: u.Host, requestURI: u.RequestURI(), serverName: u.Hostname()}
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
	t.key = u.Scheme + "://" + t.addr
	return t, nil
}

// conn is one kept-alive connection to an endpoint.
type conn struct {
	key   string
	nc    net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	used  bool      // has carried an exchange: it may have been closed by the endpoint since
	since time.Time // idle since (in the pool)
}

// connPool keeps idle connections per target key, most recently used last;
// connections idle for idleConnTimeout are closed by a sweep.
type connPool struct {
	maxPerKey int

	mu     sync.Mutex
	idle   map[string][]*conn
	n      int // idle connections in all
	sweep  *time.Timer
	closed atomic.Bool
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
		_ = c.nc.Close()
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
		_ = c.nc.Close()
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
			_ = c.nc.Close()
		}
	}
}

// attemptCtx ties the attempts of one delivery worker to their context: it
// registers once per parent context (not per attempt) a function that closes
// the connection of the attempt under way when the context ends. Only the
// worker calls begin, use and close.
type attemptCtx struct {
	mu     sync.Mutex
	parent context.Context
	stop   func() bool
	cur    net.Conn // the connection of the attempt under way
}

func (d *Deliverer) newAttemptCtx() *attemptCtx { return &attemptCtx{} }

// begin readies an attempt under parent and returns parent.
func (a *attemptCtx) begin(parent context.Context) context.Context {
	if parent == a.parent {
		return parent
	}
	if a.stop != nil {
		a.stop()
	}
	a.parent = parent
	a.stop = context.AfterFunc(parent, a.abort)
	return parent
}

// use makes nc the connection of the attempt under way (nil: none).
func (a *attemptCtx) use(nc net.Conn) {
	a.mu.Lock()
	a.cur = nc
	a.mu.Unlock()
}

func (a *attemptCtx) abort() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur != nil {
		_ = a.cur.Close()
	}
}

// close releases the registration (the worker exits).
func (a *attemptCtx) close() {
	if a.stop != nil {
		a.stop()
		a.stop, a.parent = nil, nil
	}
}

// dial connects to t before deadline, checking the address with the URL
// policy (the dialer's Control), and shakes hands for https.
func (d *Deliverer) dial(ctx context.Context, t *target, deadline time.Time) (*conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	nc, err := d.dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	if t.tls {
		cfg := d.tlsConfig(t.serverName)
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, err
		}
		nc = tc
	}
	return &conn{key: t.key, nc: nc, br: bufio.NewReaderSize(nc, respHeaderMax), bw: bufio.NewWriterSize(nc, reqWriteBuffer)}, nil
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
var errRespHeaderTooLarge = errors.New("response headers over 8 KiB")

// exchange sends req to t and reads the response into resp (its body up to
// MaxResponseRead; a longer one is left unread and closes the connection),
// on a pooled connection or a new one, before deadline. A pooled
// connection that fails before any byte of the response (the endpoint
// closed it while it was idle) is replaced by a new one once: the request
// is sent again with the same webhook-id, which delivery at least once
// allows. The error is ctx's when ctx ended meanwhile.
func (d *Deliverer) exchange(ctx context.Context, a *attemptCtx, t *target, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) error {
	for {
		c := d.pool.get(t.key)
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
			if c.used && time.Now().Before(deadline) {
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

// roundTrip is one exchange on c. It closes c on any error, or when either
// side asked to; otherwise it returns c to the pool.
func (d *Deliverer) roundTrip(ctx context.Context, a *attemptCtx, c *conn, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time) (err error) {
	keep := false
	if a != nil {
		a.use(c.nc)
		defer a.use(nil)
	}
	defer func() {
		if keep {
			d.pool.put(c)
		} else {
			_ = c.nc.Close()
		}
	}()
	if err := ctx.Err(); err != nil { // ended before a.use: no abort closes c
		return err
	}
	if c.br.Buffered() > 0 { // bytes after the last response: out of step
		return staleErr(errors.New("unexpected data on an idle connection"))
	}
	if err := c.nc.SetDeadline(deadline); err != nil {
		return staleErr(err)
	}
	if err := req.Write(c.bw); err != nil {
		return staleErr(err)
	}
	if err := c.bw.Flush(); err != nil {
		return staleErr(err)
	}
	err = resp.ReadLimitBody(c.br, MaxResponseRead)
	switch {
	case err == nil:
		keep = !resp.ConnectionClose() && !req.ConnectionClose()
		return nil
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return nil // the status line and headers were read: they are the outcome
	case errors.Is(err, io.EOF):
		return staleErr(io.EOF)
	}
	var small *fasthttp.ErrSmallBuffer
	if errors.As(err, &small) {
		return errRespHeaderTooLarge
	}
	return err
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
