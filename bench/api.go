package bench

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
	"path/filepath"
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
	base := "http://" + ln.Addr().String()
	maxConns := max(o.Concurrency, o.BatchClients)
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     time.Minute,
	}}
	defer client.CloseIdleConnections()

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
	post := func(ctx context.Context, stream string, b []byte) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/streams/"+stream+"/events", bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("POST %s: %d %s", stream, resp.StatusCode, rb)
		}
		return nil
	}
	// Warm up: one request per client connection, so connecting is not measured.
	one := body(1)
	if err := runWarm(ctx, maxConns, func(ctx context.Context, w int) error {
		return post(ctx, fmt.Sprintf("bench-warm-%d", w), one)
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
				return sc.n, post(ctx, fmt.Sprintf("bench-http-%d", w), b)
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
