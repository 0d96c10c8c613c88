package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
)

// APIOptions configures RunAPI. Zero fields take the documented defaults.
type APIOptions struct {
	// Duration each side (HTTP and store-only) of a comparison runs. Default 5s.
	Duration time.Duration
	// Dir is where the embedded store is created (in a fresh sub-directory,
	// removed afterwards). Default os.TempDir().
	Dir string
	// EventSize is the approximate size of one event in bytes. Default 500.
	EventSize int
	// Concurrency is how many clients send single-event requests at once,
	// and how many goroutines append directly for the baseline. Default 32.
	Concurrency int
	// Batch is the events per request of the batch scenario. Default 100.
	Batch int
	// BatchClients is how many clients send batch requests at once (and
	// direct batch appenders for the baseline). Default 1.
	BatchClients int
	// Server builds the system under test on an open store, with the same
	// wiring `hooklog serve` uses, and returns its HTTP handler, an API key
	// that may append events, and a function that stops what it started.
	// Required.
	Server func(ctx context.Context, s eventstore.Store) (h http.Handler, key string, stop func() error, err error)
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

func (o *APIOptions) defaults() {
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.EventSize <= 0 {
		o.EventSize = 500
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.BatchClients <= 0 {
		o.BatchClients = 1
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// RunAPI measures appends through real HTTP on loopback (a server on
// 127.0.0.1, clients with keep-alive connections, the embedded store with
// fsync) against the same store's own append rate, measured in the same run.
func RunAPI(ctx context.Context, o APIOptions) (results []Result, err error) {
	o.defaults()
	if o.Server == nil {
		return nil, errors.New("bench: APIOptions.Server is required")
	}
	if o.Batch > eventstore.MaxEventsPerAppend {
		return nil, fmt.Errorf("bench: batch %d is over the limit of %d events per append", o.Batch, eventstore.MaxEventsPerAppend)
	}
	work, err := os.MkdirTemp(o.Dir, "hooklog-bench-api-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(work)

	store, err := embedded.Open(embedded.Config{Path: filepath.Join(work, "store")})
	if err != nil {
		return nil, fmt.Errorf("bench: open embedded store: %w", err)
	}
	defer func() { err = errors.Join(err, store.Close()) }()

	h, key, stop, err := o.Server(ctx, store)
	if err != nil {
		return nil, fmt.Errorf("bench: build server: %w", err)
	}
	defer func() { err = errors.Join(err, stop()) }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, srv.Shutdown(sctx))
	}()
	addr := ln.Addr().String()
	maxConns := max(o.Concurrency, o.BatchClients)
	clients := make([]*rawClient, maxConns)
	for i := range clients {
		clients[i] = &rawClient{addr: addr, key: key}
	}
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()

	data := payload(o.EventSize)
	body := func(n int) []byte {
		type ev struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		evs := make([]ev, n)
		for i := range evs {
			evs[i] = ev{"order.paid", data}
		}
		b, _ := json.Marshal(map[string]any{"events": evs})
		return b
	}
	post := func(_ context.Context, w int, stream string, b []byte) error {
		return clients[w].post("/v1/streams/"+stream+"/events", b)
	}
	// Warm up: one request per client connection, so connecting is not measured.
	one := body(1)
	if err := runWarm(ctx, maxConns, func(ctx context.Context, w int) error {
		return post(ctx, w, fmt.Sprintf("bench-warm-%d", w), one)
	}); err != nil {
		return nil, fmt.Errorf("bench: warm up: %w", err)
	}

	scen := []struct {
		name    string
		clients int
		n       int
		target  string
		min     float64
	}{
		{fmt.Sprintf("single-event requests, %d clients", o.Concurrency), o.Concurrency, 1, ">= 0.70 of store-only", 0.7},
		{fmt.Sprintf("%d-event requests, %d client", o.Batch, o.BatchClients), o.BatchClients, o.Batch, "", 0},
	}
	for _, sc := range scen {
		fmt.Fprintf(o.Progress, "api: %s vs the store's own appends...\n", sc.name)
		b := body(sc.n)
		httpRate, storeRate, err := compare(ctx, o.Duration, sc.clients,
			func(ctx context.Context, w int) (int, error) {
				return sc.n, post(ctx, w, fmt.Sprintf("bench-http-%d", w), b)
			},
			func(ctx context.Context, w int) (int, error) {
				_, err := store.Append(ctx, eventstore.AppendParams{Stream: fmt.Sprintf("bench-direct-%d", w), Events: proposed(sc.n, data)})
				return sc.n, err
			})
		if err != nil {
			return results, err
		}
		r := Result{
			Driver: "http+embedded", Scenario: sc.name, Value: httpRate, Text: rateText(httpRate),
			Baseline:      fmt.Sprintf("the same appends straight to the store (Store.Append, %d goroutines), no HTTP", sc.clients),
			BaselineValue: storeRate, Ratio: httpRate / storeRate,
		}
		if sc.target != "" {
			r.Target, r.Met = sc.target, ptr(r.Ratio >= sc.min)
		}
		results = append(results, r)
	}
	return results, nil
}

// runWarm runs f once in each of n goroutines.
func runWarm(ctx context.Context, n int, f func(ctx context.Context, w int) error) error {
	errc := make(chan error, n)
	for w := 0; w < n; w++ {
		go func() { errc <- f(ctx, w) }()
	}
	var err error
	for w := 0; w < n; w++ {
		err = errors.Join(err, <-errc)
	}
	return err
}

// rawClient is a lean HTTP/1.1 keep-alive client, one connection, one request
// at a time, in the way of load generators such as wrk: it writes a
// pre-built request and parses just enough of the answer to check the status
// and find the end of the body. net/http's client costs several times the
// CPU per request, and on a small machine that CPU would be taken from the
// server being measured.
type rawClient struct {
	addr, key string
	conn      net.Conn
	r         *bufio.Reader
	buf       []byte
}

func (c *rawClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

func (c *rawClient) post(path string, body []byte) error {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			return err
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 16<<10)
	}
	c.buf = c.buf[:0]
	c.buf = append(c.buf, "POST "...)
	c.buf = append(c.buf, path...)
	c.buf = append(c.buf, " HTTP/1.1\r\nHost: "...)
	c.buf = append(c.buf, c.addr...)
	c.buf = append(c.buf, "\r\nAuthorization: Bearer "...)
	c.buf = append(c.buf, c.key...)
	c.buf = append(c.buf, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	c.buf = strconv.AppendInt(c.buf, int64(len(body)), 10)
	c.buf = append(c.buf, "\r\n\r\n"...)
	c.buf = append(c.buf, body...)
	if _, err := c.conn.Write(c.buf); err != nil {
		c.close()
		return err
	}
	status, err := c.readResponse()
	if err != nil {
		c.close()
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if status != http.StatusCreated {
		return fmt.Errorf("POST %s: status %d", path, status)
	}
	return nil
}

// readResponse reads one response and returns its status code.
func (c *rawClient) readResponse() (int, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, closeConn := -1, false, false
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, _ := bytes.Cut(h, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closeConn = bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		_, err = io.Copy(io.Discard, httputil.NewChunkedReader(c.r))
		if err == nil {
			_, err = c.r.Discard(2) // the CRLF after the last chunk
		}
	case length >= 0:
		_, err = c.r.Discard(length)
	default:
		return 0, errors.New("response without a length")
	}
	if err != nil {
		return 0, err
	}
	if closeConn {
		c.close()
	}
	return status, nil
}
