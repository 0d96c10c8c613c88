package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/hooklog/hooklog/api"
	"github.com/hooklog/hooklog/apikeys"
	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

// app is everything serve runs behind the HTTP server.
type app struct {
	handler http.Handler
	// drain is called when shutdown starts: long-polls in flight end (with
	// 503 and Retry-After) instead of holding the shutdown for their wait.
	drain func()
	// close stops the components after the HTTP server has stopped: first
	// the projector (deliveries in flight get delivery.drain_timeout to
	// finish), then the services.
	close func() error
}

// projectorConfig is the projector's configuration from delivery.*.
func projectorConfig(cfg *config, log *slog.Logger) projector.Config {
	return projector.Config{
		Delivery: projector.DelivererConfig{
			Timeout:              cfg.Delivery.Timeout,
			AllowPrivateNetworks: cfg.Delivery.AllowPrivateNetworks,
			MaxIdleConnsPerHost:  cfg.Delivery.MaxIdleConnsPerHost,
		},
		AttemptRetention: cfg.Delivery.AttemptRetention,
		CircuitFailures:  cfg.Delivery.CircuitFailures,
		CircuitCooldown:  cfg.Delivery.CircuitCooldown,
		Logger:           log,
		Replay:           projector.ReplayConfig{MaxWindow: cfg.Replay.MaxWindow},
	}
}

// defaultDrainTimeout bounds the projector's stop when the configuration
// has none (callers that build a config by hand, like the benchmarks).
const defaultDrainTimeout = 10 * time.Second

// newApp wires the services and the API on top of an open store. out
// receives what a person must see once (a generated admin key).
func newApp(ctx context.Context, cfg *config, store eventstore.Store, log *slog.Logger, out io.Writer) (a *app, err error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stopAll()
		}
	}()

	subs, err := subscriptions.New(store, subscriptions.Config{
		AllowPrivateNetworks: cfg.Delivery.AllowPrivateNetworks,
		Logger:               log,
	})
	if err != nil {
		return nil, fmt.Errorf("subscriptions: %w", err)
	}
	if err := subs.Start(ctx); err != nil {
		return nil, fmt.Errorf("subscriptions: start: %w", err)
	}
	stops = append(stops, subs.Stop)

	keys, err := apikeys.New(store, apikeys.Config{AdminKey: cfg.Auth.AdminKey, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("apikeys: %w", err)
	}
	if err := keys.Start(ctx); err != nil {
		return nil, fmt.Errorf("apikeys: start: %w", err)
	}
	stops = append(stops, keys.Stop)
	plaintext, created, err := keys.EnsureAdmin(ctx)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("generated an admin API key; it is printed once on stdout and kept only as a hash")
		fmt.Fprintf(out, "\nhooklog: generated an admin API key, shown only this once (the log keeps only its hash).\n"+
			"Send it as \"Authorization: Bearer <key>\"; for the hooklog CLI:\n\n    export %s=%s\n\n", envKey, plaintext)
	}

	state, ok := store.(eventstore.StateStore)
	if !ok {
		return nil, fmt.Errorf("projector: the %s store does not implement eventstore.StateStore", cfg.Store.Driver)
	}
	proj, err := projector.New(projectorConfig(cfg, log), projector.Deps{Store: store, State: state, Subs: subs})
	if err != nil {
		return nil, fmt.Errorf("projector: %w", err)
	}
	if err := proj.Start(ctx); err != nil {
		return nil, fmt.Errorf("projector: start: %w", err)
	}
	drainTimeout := cfg.Delivery.DrainTimeout
	if drainTimeout <= 0 {
		drainTimeout = defaultDrainTimeout
	}
	var projErr error
	stops = append(stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		start := time.Now()
		projErr = proj.Stop(ctx)
		log.Info("projector stopped", "took", time.Since(start).Round(time.Millisecond).String())
	})

	srv, err := api.New(api.Config{MaxBody: cfg.HTTP.MaxBody, Logger: log}, api.Deps{
		Store:         store,
		Subscriptions: subs,
		Keys:          keys,
		Projector:     proj,
	})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	d := newDrainer(srv)
	var closeOnce sync.Once
	return &app{
		handler: d,
		drain:   d.drain,
		close: func() error {
			closeOnce.Do(stopAll)
			if projErr != nil {
				return fmt.Errorf("projector: stop: %w", projErr)
			}
			return nil
		},
	}, nil
}

// drainer cancels in-flight long-polls (GET requests with a wait) when
// shutdown starts, and turns their answer into 503 with Retry-After, so a
// client reconnects to a server that is up instead of seeing an error.
type drainer struct {
	next http.Handler

	mu       sync.Mutex
	draining bool
	polls    map[*http.Request]context.CancelFunc
}

func newDrainer(next http.Handler) *drainer {
	return &drainer{next: next, polls: map[*http.Request]context.CancelFunc{}}
}

func (d *drainer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Query().Get("wait") == "" {
		d.next.ServeHTTP(w, r)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	r = r.WithContext(ctx)
	d.mu.Lock()
	if d.draining {
		d.mu.Unlock()
		shuttingDown(w)
		return
	}
	d.polls[r] = cancel
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.polls, r)
		d.mu.Unlock()
	}()
	d.next.ServeHTTP(&drainWriter{ResponseWriter: w, d: d}, r)
}

func (d *drainer) drain() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.draining = true
	for _, cancel := range d.polls {
		cancel()
	}
}

func (d *drainer) isDraining() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining
}

func shuttingDown(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, `{"type":"urn:hooklog:problem:unavailable","title":"Service Unavailable","status":503,"detail":"the server is shutting down; retry"}`+"\n")
}

// drainWriter replaces the 499 the API records for a cancelled request with
// a 503 the client can act on, when the cancellation was ours.
type drainWriter struct {
	http.ResponseWriter
	d       *drainer
	swapped bool
}

func (w *drainWriter) WriteHeader(code int) {
	if code == 499 && w.d.isDraining() {
		w.swapped = true
		shuttingDown(w.ResponseWriter)
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *drainWriter) Write(b []byte) (int, error) {
	if w.swapped {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *drainWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// redactURL hides the password of a connection URL for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}
