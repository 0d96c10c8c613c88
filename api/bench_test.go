package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
)

// BenchmarkHTTPAppend measures appends through the HTTP API on loopback and,
// in the same run, the store's own append rate with the same events and the
// same concurrency, each on a fresh store. It reports events/s (HTTP),
// store-events/s and their ratio http/store (target for single events:
// >= 0.7). The embedded store runs with fsync, as in production. One op is
// one request. The load generator is a minimal keep-alive HTTP/1.1 client
// (loadConn), so that its CPU does not come out of the server's share of
// this 2-core machine.
//
//	go test ./api -run '^$' -bench BenchmarkHTTPAppend -benchtime 20000x
func BenchmarkHTTPAppend(b *testing.B) {
	backends := []struct {
		name string
		open func(testing.TB) eventstore.Store
	}{
		{"embedded", func(tb testing.TB) eventstore.Store {
			s, err := embedded.Open(embedded.Config{Path: tb.TempDir()}) // fsync on
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"postgres", func(tb testing.TB) eventstore.Store { return pgtest.NewStore(tb) }},
	}
	shapes := []struct {
		name            string
		clients, perReq int
	}{
		{"single-event/32-clients", 32, 1},
		{"100-events/4-clients", 4, 100},
	}
	for _, be := range backends {
		for _, sh := range shapes {
			b.Run(be.name+"/"+sh.name, func(b *testing.B) {
				benchAppend(b, be.open, sh.clients, sh.perReq)
			})
		}
	}
}

// benchData is ~500 bytes of event data, like a typical domain event.
var benchData = json.RawMessage(`{"order_id":"ord_8f14e45fceea167a5a36dedd4bea2543","customer":"cus_45c48cce2e2d7fbdea1afc51c7c6ad26",` +
	`"amount":12999,"currency":"EUR","items":[{"sku":"sku_6512bd43d9caa6e02c990b0a82652dca","qty":2,"price":4999},` +
	`{"sku":"sku_c20ad4d76fe97759aa27a0c99bff6710","qty":1,"price":3001}],"shipping":{"method":"express",` +
	`"address":{"line1":"1 Example Street","city":"Amsterdam","postcode":"1011AB","country":"NL"}},` +
	`"note":"` + strings.Repeat("x", 60) + `"}`)

func benchAppend(b *testing.B, open func(testing.TB) eventstore.Store, clients, perReq int) {
	events := make([]eventstore.ProposedEvent, perReq)
	reqEvents := make([]map[string]any, perReq)
	for i := range events {
		events[i] = eventstore.ProposedEvent{Type: "order.created", Tenant: "acme", Data: benchData}
		reqEvents[i] = map[string]any{"type": "order.created", "tenant": "acme", "data": benchData}
	}
	body, err := json.Marshal(map[string]any{"events": reqEvents})
	if err != nil {
		b.Fatal(err)
	}
	n := b.N

	// Store only, with the same events and concurrency.
	storeRun := func() float64 {
		store := open(b)
		ctx := context.Background()
		return run(b, n, clients, perReq, func(i int) error {
			p := eventstore.AppendParams{Stream: fmt.Sprintf("order-%d", i), Events: append([]eventstore.ProposedEvent(nil), events...)}
			_, err := store.Append(ctx, p)
			return err
		})
	}

	// Through HTTP on loopback: one keep-alive connection per client.
	store := open(b)
	deps, keys := testDeps(b, store)
	s, err := New(Config{Logger: quietLogger(), Registry: prometheus.NewRegistry()}, deps)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	conns := make(chan *loadConn, clients)
	for range clients {
		c, err := dialLoad(srv.Listener.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns <- c
	}
	httpRun := func() float64 {
		return run(b, n, clients, perReq, func(i int) error {
			c := <-conns
			defer func() { conns <- c }()
			req := fmt.Appendf(c.buf[:0], "POST /v1/streams/order-%d/events HTTP/1.1\r\nHost: bench\r\n"+
				"Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", i, keys.producer, len(body))
			c.buf = append(req, body...)
			status, err := c.do(c.buf)
			if err != nil {
				return err
			}
			if status != http.StatusCreated {
				return fmt.Errorf("status %d", status)
			}
			return nil
		})
	}

	b.StopTimer()
	cpu0 := cpuTime()
	before := storeRun()
	cpu1 := cpuTime()
	b.StartTimer()
	b.ResetTimer()
	httpRate := httpRun()
	b.StopTimer()
	cpu2 := cpuTime()
	after := storeRun() // again after, so drift on a shared machine evens out
	storeRate := (before + after) / 2
	total := float64(n * perReq)
	b.ReportMetric(httpRate, "events/s")
	b.ReportMetric(storeRate, "store-events/s")
	b.ReportMetric(httpRate/storeRate, "http/store")
	// CPU (user+system, this process: load generator included) per event,
	// which says more than rates on a busy shared machine.
	b.ReportMetric(float64((cpu2-cpu1).Microseconds())/total, "http-cpu-µs/event")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/total, "store-cpu-µs/event")
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// run performs n operations from `clients` goroutines and returns events/s.
func run(b *testing.B, n, clients, perReq int, op func(i int) error) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	return float64(n*perReq) / elapsed.Seconds()
}

// loadConn is a minimal HTTP/1.1 keep-alive client for the load generator,
// in the spirit of wrk: the requests and the server are real, but the client
// spends little CPU, since on a 2-core machine the generator's CPU is taken
// from the server it measures.
type loadConn struct {
	c   net.Conn
	br  *bufio.Reader
	buf []byte
}

func dialLoad(addr string) (*loadConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &loadConn{c: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

func (c *loadConn) Close() error { return c.c.Close() }

// do writes one request and reads its response, returning the status code.
// It understands Content-Length and chunked bodies, which is all the server
// sends.
func (c *loadConn) do(req []byte) (int, error) {
	if _, err := c.c.Write(req); err != nil {
		return 0, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, chunked := -1, false
	for {
		h, err := c.br.ReadSlice('\n')
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
				return 0, err
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		}
	}
	switch {
	case chunked:
		for {
			l, err := c.br.ReadSlice('\n')
			if err != nil {
				return 0, err
			}
			size, err := strconv.ParseInt(string(bytes.TrimRight(l, "\r\n")), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("bad chunk size %q", l)
			}
			if _, err := c.br.Discard(int(size) + 2); err != nil {
				return 0, err
			}
			if size == 0 {
				return status, nil
			}
		}
	case length >= 0:
		_, err = c.br.Discard(length)
		return status, err
	}
	return 0, errors.New("response without a length")
}
