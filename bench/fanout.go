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
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/esdb"
	"github.com/hooklog/hooklog/eventstore/esdb/esdbtest"
	"github.com/hooklog/hooklog/projector"
	"github.com/hooklog/hooklog/subscriptions"
)

// FanoutOptions configures RunFanout. Zero fields take the documented
// defaults.
type FanoutOptions struct {
	// Driver is the store: "embedded" (default, with fsync), "postgres", or
	// "esdb" on the in-process KurrentDB test server (esdbtest) with side
	// state in PostgreSQL: a stand-in, not a KurrentDB server's figures.
	Driver string
	// Dir is where the embedded stores are created (fresh sub-directories,
	// removed afterwards). Default os.TempDir().
	Dir string
	// PostgresURL is the database of the postgres and esdb drivers; each
	// run uses a fresh schema, dropped afterwards.
	PostgresURL string
	// Events is the number of events of the throughput scenario. Default 20,000.
	Events int
	// Subscriptions is how many subscriptions every event fans out to.
	// Default 10.
	Subscriptions int
	// MaxInFlight is each subscription's max_in_flight; the raw baseline
	// runs Subscriptions*MaxInFlight concurrent clients. Default 16 (the
	// subscriptions' default).
	MaxInFlight int
	// Rounds is how many times each side of the throughput comparison runs,
	// alternating (baseline first). Default 2.
	Rounds int
	// LatencyRate is the append rate of the latency scenario, events/s.
	// Default 500; negative skips the scenario.
	LatencyRate int
	// LatencyDuration is how long the latency scenario appends. Default 10s.
	LatencyDuration time.Duration
	// LatencySplit adds a plain tailing reader (eventstore.Follow) on the
	// same store to the latency scenario and reports when each event became
	// readable, next to when it was received: the store's share of the
	// append-to-receipt latency (the commit, and on PostgreSQL the wait for
	// older transactions) apart from the projector's. The reader costs one
	// more read per event, so the receipt figures of a split run are not the
	// scenario's own.
	LatencySplit bool
	// Projector configures the projector as `hooklog serve` would;
	// Delivery.AllowPrivateNetworks is forced on (the receiver is on
	// 127.0.0.1).
	Projector projector.Config
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

func (o *FanoutOptions) defaults() {
	if o.Driver == "" {
		o.Driver = "embedded"
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.Events <= 0 {
		o.Events = 20000
	}
	if o.Subscriptions <= 0 {
		o.Subscriptions = 10
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = subscriptions.DefaultMaxInFlight
	}
	if o.Rounds <= 0 {
		o.Rounds = 2
	}
	if o.LatencyRate == 0 {
		o.LatencyRate = 500
	}
	if o.LatencyDuration <= 0 {
		o.LatencyDuration = 10 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	o.Projector.Delivery.AllowPrivateNetworks = true
}

func checkDriver(driver, pgURL string) error {
	switch driver {
	case "embedded":
	case "postgres", "esdb":
		if pgURL == "" {
			return fmt.Errorf("bench: the %s driver needs a PostgreSQL URL", driver)
		}
	default:
		return fmt.Errorf("bench: unknown driver %q (want embedded, postgres or esdb)", driver)
	}
	return nil
}

// fanoutData is the data of every benchmark event: a small order, as a
// producer would append.
var fanoutData = json.RawMessage(`{"order_id":"order-000123","customer":"cus_8fj2k3","amount_cents":129900,"currency":"EUR","items":3}`)

// RunFanout measures the projector end to end on a real store: deliveries/s
// of Events events to Subscriptions subscriptions whose endpoint (a server on
// 127.0.0.1 in this process) answers 200 at once, against plain net/http
// POSTs of the same bodies to the same receiver at the same concurrency,
// alternating in rounds; then append-to-receipt latency at LatencyRate.
func RunFanout(ctx context.Context, o FanoutOptions) (results []Result, err error) {
	o.defaults()
	if err := checkDriver(o.Driver, o.PostgresURL); err != nil {
		return nil, err
	}
	rcv, err := startReceiver()
	if err != nil {
		return nil, err
	}
	defer rcv.close()
	opener, closeOpener, err := newOpener(ctx, o.Driver, o.Dir, o.PostgresURL)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeOpener()) }()

	// The bodies of the raw baseline: events of the same shape as the
	// appended ones, encoded exactly as deliveries are.
	bodies := make([][]byte, o.Events)
	now := time.Now()
	for i := range bodies {
		e := eventstore.Event{ID: uuid.New(), Stream: "bench-fanout", Type: "order.created", Data: fanoutData,
			Position: eventstore.Position{Lo: uint64(i + 1)}, Version: int64(i), RecordedAt: now}
		if bodies[i], err = projector.Body(e); err != nil {
			return nil, err
		}
	}
	workers := o.Subscriptions * o.MaxInFlight
	var raw, fast, proj side
	for round := 1; round <= o.Rounds; round++ {
		fmt.Fprintf(o.Progress, "fanout round %d/%d: raw baseline, %d bodies x %d copies, %d clients...\n", round, o.Rounds, len(bodies), o.Subscriptions, workers)
		if err := raw.run(ctx, "raw", func(ctx context.Context) (tally, error) {
			return rawPosts(ctx, rcv.url, bodies, o.Subscriptions, workers)
		}); err != nil {
			return nil, fmt.Errorf("bench: raw baseline: %w", err)
		}
		fmt.Fprintf(o.Progress, "  raw: %s\n", postsText(raw.last.rate()))

		// The reference: plain POSTs written and read with fasthttp, whose
		// codec hooklog's transport uses, so the ratio to it is what
		// hooklog's own work (store, attempt log, signing, routing) costs.
		fmt.Fprintf(o.Progress, "fanout round %d/%d: reference, the same POSTs with fasthttp's client...\n", round, o.Rounds)
		if err := fast.run(ctx, "raw-fasthttp", func(ctx context.Context) (tally, error) {
			return rawFastPosts(ctx, rcv.url, bodies, o.Subscriptions, workers)
		}); err != nil {
			return nil, fmt.Errorf("bench: reference: %w", err)
		}
		fmt.Fprintf(o.Progress, "  raw, fasthttp: %s\n", postsText(fast.last.rate()))

		fmt.Fprintf(o.Progress, "fanout round %d/%d: hooklog, %d events x %d subscriptions on %s...\n", round, o.Rounds, o.Events, o.Subscriptions, o.Driver)
		if err := proj.run(ctx, "hooklog", func(ctx context.Context) (tally, error) {
			return projectorFanout(ctx, o, opener, rcv)
		}); err != nil {
			return nil, err
		}
		fmt.Fprintf(o.Progress, "  hooklog: %s\n", deliveriesText(proj.last.rate()))
	}
	ratio := proj.total.rate() / raw.total.rate()
	results = append(results, Result{
		Driver: o.Driver, Scenario: fmt.Sprintf("fan-out %d events x %d subscriptions", o.Events, o.Subscriptions),
		Value: proj.total.rate(), Text: deliveriesText(proj.total.rate()),
		Baseline:      fmt.Sprintf("plain net/http POSTs of the same bodies to the same receiver, %d clients (%d subscriptions x max_in_flight %d)", workers, o.Subscriptions, o.MaxInFlight),
		BaselineValue: raw.total.rate(), BaselineText: postsText(raw.total.rate()), Ratio: ratio, Target: ">= 0.70 of baseline", Met: ptr(ratio >= 0.7),
		Note: fmt.Sprintf("CPU per delivery %.1f µs (hooklog) vs %.1f µs per raw POST; receiver in the same process; %d rounds",
			proj.cpuPer(), raw.cpuPer(), o.Rounds),
	}, Result{
		Driver: o.Driver, Scenario: fmt.Sprintf("fan-out %d events x %d subscriptions, vs the same transport (reference)", o.Events, o.Subscriptions),
		Value: proj.total.rate(), Text: deliveriesText(proj.total.rate()),
		Baseline:      "plain POSTs of the same bodies with fasthttp's client (hooklog's transport writes and reads HTTP with fasthttp's codec): the ratio is the cost of hooklog's own work",
		BaselineValue: fast.total.rate(), BaselineText: postsText(fast.total.rate()), Ratio: proj.total.rate() / fast.total.rate(), Target: "- (reference)",
		Note: fmt.Sprintf("CPU per delivery %.1f µs (hooklog) vs %.1f µs per raw fasthttp POST",
			proj.cpuPer(), fast.cpuPer()),
	})

	if o.LatencyRate > 0 {
		fmt.Fprintf(o.Progress, "latency: %d events/s to %d subscriptions for %s on %s...\n", o.LatencyRate, o.Subscriptions, o.LatencyDuration, o.Driver)
		r, err := fanoutLatency(ctx, o, opener, rcv)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	return results, nil
}

// side is one side of the fan-out comparison over the rounds: its tally and
// CPU time in all, and its last round's tally.
type side struct {
	total, last tally
	cpu         time.Duration
}

// run runs one round of the side under a pprof label (go tool pprof
// -tagfocus side=<label> shows one side; the receiver's goroutines carry
// none) and adds it up.
func (s *side) run(ctx context.Context, label string, f func(context.Context) (tally, error)) (err error) {
	c0 := cpuTime()
	pprof.Do(ctx, pprof.Labels("side", label), func(ctx context.Context) {
		s.last, err = f(ctx)
	})
	if err != nil {
		return err
	}
	s.cpu += cpuTime() - c0
	s.total.events += s.last.events
	s.total.elapsed += s.last.elapsed
	return nil
}

// cpuPer is the side's CPU time per event (delivery or POST), in µs.
func (s *side) cpuPer() float64 {
	return float64(s.cpu.Microseconds()) / float64(s.total.events)
}

func deliveriesText(v float64) string {
	s := rateText(v)
	return s[:len(s)-len(" ev/s")] + " deliveries/s"
}

func postsText(v float64) string {
	s := rateText(v)
	return s[:len(s)-len(" ev/s")] + " POSTs/s"
}

// storeOpener opens a fresh, empty store; the returned function closes it
// and removes its data.
type storeOpener func(ctx context.Context) (eventstore.Store, eventstore.StateStore, func() error, error)

func newOpener(ctx context.Context, driver, dir, pgURL string) (storeOpener, func() error, error) {
	switch driver {
	case "esdb":
		// The in-process KurrentDB test server (esdbtest), a fresh one per
		// store, with side state in a fresh PostgreSQL schema.
		env, err := newPGEnv(ctx, pgURL)
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context) (eventstore.Store, eventstore.StateStore, func() error, error) {
			pg, err := env.openStore(ctx, 16)
			if err != nil {
				return nil, nil, nil, err
			}
			srv, err := esdbtest.New()
			if err != nil {
				_ = pg.Close()
				return nil, nil, nil, fmt.Errorf("bench: esdb test server: %w", err)
			}
			s, err := esdb.Open(ctx, esdb.Config{URL: srv.URL(), Postgres: pg, Schema: env.storeSchema})
			if err != nil {
				srv.Stop()
				_ = pg.Close()
				return nil, nil, nil, fmt.Errorf("bench: open esdb store: %w", err)
			}
			return s, s, func() error {
				err := errors.Join(s.Close(), pg.Close())
				srv.Stop()
				return err
			}, nil
		}, env.close, nil
	case "postgres":
		env, err := newPGEnv(ctx, pgURL)
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context) (eventstore.Store, eventstore.StateStore, func() error, error) {
			s, err := env.openStore(ctx, 16)
			if err != nil {
				return nil, nil, nil, err
			}
			return s, s, s.Close, nil
		}, env.close, nil
	default:
		work, err := os.MkdirTemp(dir, "hooklog-bench-fanout-")
		if err != nil {
			return nil, nil, fmt.Errorf("bench: %w", err)
		}
		n := 0
		return func(ctx context.Context) (eventstore.Store, eventstore.StateStore, func() error, error) {
			n++
			path := filepath.Join(work, fmt.Sprintf("store-%d", n))
			s, err := embedded.Open(embedded.Config{Path: path}) // fsync on: durability is part of the cost
			if err != nil {
				return nil, nil, nil, fmt.Errorf("bench: open embedded store: %w", err)
			}
			return s, s, func() error { return errors.Join(s.Close(), os.RemoveAll(path)) }, nil
		}, func() error { return os.RemoveAll(work) }, nil
	}
}

// system is a running projector with its subscriptions on a fresh store.
type system struct {
	store eventstore.Store
	subs  *subscriptions.Service
	proj  *projector.Projector
	close func() error
}

// startSystem opens a store, creates n subscriptions to url with
// maxInFlight and retry, and starts the projector.
func startSystem(ctx context.Context, open storeOpener, pcfg projector.Config, url string, n, maxInFlight int, retry *subscriptions.RetryPolicy) (sys *system, err error) {
	store, state, closeStore, err := open(ctx)
	if err != nil {
		return nil, err
	}
	sys = &system{store: store}
	var stops []func() error
	sys.close = func() error {
		var err error
		for i := len(stops) - 1; i >= 0; i-- {
			err = errors.Join(err, stops[i]())
		}
		return errors.Join(err, closeStore())
	}
	defer func() {
		if err != nil {
			_ = sys.close()
		}
	}()
	sys.subs, err = subscriptions.New(store, subscriptions.Config{AllowPrivateNetworks: true, Logger: pcfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := sys.subs.Start(ctx); err != nil {
		return nil, err
	}
	stops = append(stops, func() error { sys.subs.Stop(); return nil })
	for range n {
		p := subscriptions.CreateParams{URL: url, Retry: retry}
		if maxInFlight > 0 {
			p.MaxInFlight = &maxInFlight
		}
		if _, err := sys.subs.Create(ctx, p); err != nil {
			return nil, fmt.Errorf("bench: create subscription: %w", err)
		}
	}
	sys.proj, err = projector.New(pcfg, projector.Deps{Store: store, State: state, Subs: sys.subs})
	if err != nil {
		return nil, err
	}
	if err := sys.proj.Start(ctx); err != nil {
		return nil, err
	}
	stops = append(stops, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return sys.proj.Stop(sctx)
	})
	return sys, nil
}

// projectorFanout appends o.Events events (batches of 100) to a fresh
// system and times it from the first append until the receiver has every
// delivery.
func projectorFanout(ctx context.Context, o FanoutOptions, open storeOpener, rcv *receiver) (tally, error) {
	sys, err := startSystem(ctx, open, o.Projector, rcv.url, o.Subscriptions, o.MaxInFlight, nil)
	if err != nil {
		return tally{}, err
	}
	defer sys.close()
	want := int64(o.Events * o.Subscriptions)
	base := rcv.count.Load()
	start := time.Now()
	appendErr := make(chan error, 1)
	go func() { appendErr <- appendBatches(ctx, sys.store, "bench-fanout", o.Events, 100, nil) }()
	if err := rcv.waitFor(ctx, base+want, 5*time.Minute, appendErr); err != nil {
		return tally{}, err
	}
	return tally{events: want, elapsed: time.Since(start)}, nil
}

// appendBatches appends n events to stream in batches; progress, if set, is
// called after each batch with the number appended so far.
func appendBatches(ctx context.Context, s eventstore.Store, stream string, n, batch int, progress func(int)) error {
	done := 0
	for done < n {
		k := min(batch, n-done)
		if _, err := s.Append(ctx, eventstore.AppendParams{Stream: stream, Events: proposedType(k, "order.created", fanoutData)}); err != nil {
			return fmt.Errorf("bench: append: %w", err)
		}
		done += k
		if progress != nil {
			progress(done)
		}
	}
	return nil
}

func proposedType(n int, typ string, data json.RawMessage) []eventstore.ProposedEvent {
	evs := make([]eventstore.ProposedEvent, n)
	for i := range evs {
		evs[i] = eventstore.ProposedEvent{Type: typ, Data: data}
	}
	return evs
}

// rawPosts sends every body copies times from workers concurrent net/http
// clients with keep-alive, as the projector's deliveries would be sent
// without a projector.
func rawPosts(ctx context.Context, url string, bodies [][]byte, copies, workers int) (tally, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, MaxIdleConns: workers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	return postAll(ctx, bodies, copies, workers, func() (func([]byte) error, func()) {
		return func(body []byte) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("content-type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			return okStatus(resp.StatusCode)
		}, func() {}
	})
}

// rawFastPosts is rawPosts with fasthttp's client.
func rawFastPosts(ctx context.Context, url string, bodies [][]byte, copies, workers int) (tally, error) {
	client := &fasthttp.Client{MaxConnsPerHost: workers, NoDefaultUserAgentHeader: true, DisableHeaderNamesNormalizing: true}
	defer client.CloseIdleConnections()
	return postAll(ctx, bodies, copies, workers, func() (func([]byte) error, func()) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		return func(body []byte) error {
				req.Reset()
				req.SetRequestURI(url)
				req.Header.SetMethod(fasthttp.MethodPost)
				req.Header.SetContentType("application/json")
				req.SetBodyRaw(body)
				if err := client.DoTimeout(req, resp, time.Minute); err != nil {
					return err
				}
				return okStatus(resp.StatusCode())
			}, func() {
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
			}
	})
}

func okStatus(code int) error {
	if code != http.StatusOK {
		return fmt.Errorf("receiver answered %d", code)
	}
	return nil
}

// postAll sends every body copies times from workers goroutines, each with
// the poster newPoster gives it (and its release), until all are sent or one
// fails.
func postAll(ctx context.Context, bodies [][]byte, copies, workers int, newPoster func() (post func([]byte) error, release func())) (tally, error) {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	total := int64(len(bodies) * copies)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			post, release := newPoster()
			defer release()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				if err := post(bodies[i%int64(len(bodies))]); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return tally{events: total, elapsed: time.Since(start)}, firstErr
}

// receiver is the endpoint of every benchmark subscription: a server on
// 127.0.0.1 that answers at once (200, or 503 while down) and counts the
// deliveries it accepted. With onID set it reports each webhook-id.
type receiver struct {
	url   string
	srv   *http.Server
	count atomic.Int64
	down  atomic.Bool
	onID  atomic.Pointer[func(id string, at time.Time)]
	// onDown, if set before the first request, counts answers while down.
	onDown func()
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: receiver: %w", err)
	}
	r := &receiver{url: "http://" + ln.Addr().String() + "/hook"}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		if r.down.Load() {
			if r.onDown != nil {
				r.onDown()
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if f := r.onID.Load(); f != nil {
			(*f)(req.Header.Get("webhook-id"), time.Now())
		}
		r.count.Add(1)
	})}
	srv := r.srv // listenAgain replaces r.srv while this goroutine may start
	go func() { _ = srv.Serve(ln) }()
	return r, nil
}

func (r *receiver) close() { _ = r.srv.Close() }

// waitFor waits until count reaches n, or fails after timeout or when
// background work reports an error.
func (r *receiver) waitFor(ctx context.Context, n int64, timeout time.Duration, errc <-chan error) error {
	deadline := time.Now().Add(timeout)
	for r.count.Load() < n {
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
			errc = nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: only %d of %d deliveries after %s", r.count.Load(), n, timeout)
		}
	}
	return nil
}

// fanoutLatency appends one event at a time at o.LatencyRate (16
// appenders take the paced slots, so a slow fsync does not slow the rate
// down) and measures, per delivery, the time from the start of the event's append to
// its receipt.
func fanoutLatency(ctx context.Context, o FanoutOptions, open storeOpener, rcv *receiver) (Result, error) {
	sys, err := startSystem(ctx, open, o.Projector, rcv.url, o.Subscriptions, o.MaxInFlight, nil)
	if err != nil {
		return Result{}, err
	}
	defer sys.close()
	var (
		mu       sync.Mutex
		appended = map[string]time.Time{}
		acked    = map[string]time.Time{}
		lat      []time.Duration
		fromAck  []time.Duration
	)
	rec := func(id string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if t0, ok := appended[id]; ok {
			lat = append(lat, at.Sub(t0))
			if t1, ok := acked[id]; ok {
				fromAck = append(fromAck, at.Sub(t1))
			}
		}
	}
	rcv.onID.Store(&rec)
	defer rcv.onID.Store(nil)
	seen := map[string]time.Time{} // event id → when the split reader got it
	again := 0                     // events the split reader got twice (Follow must not)
	if o.LatencySplit {
		// Started before the first append, after the head: it sees each
		// event of the scenario once.
		head, err := sys.store.Head(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("bench: latency: head: %w", err)
		}
		fctx, stop := context.WithCancel(ctx)
		followed := make(chan struct{})
		defer func() { stop(); <-followed }()
		go func() {
			defer close(followed)
			_ = eventstore.Follow(fctx, sys.store, eventstore.FollowParams{After: head, Filter: eventstore.Filter{NoInternal: true}},
				func(_ context.Context, evs []eventstore.Event) error {
					now := time.Now()
					mu.Lock()
					defer mu.Unlock()
					for i := range evs {
						id := evs[i].ID.String()
						if _, ok := appended[id]; !ok {
							continue
						}
						if _, dup := seen[id]; dup {
							again++
							continue
						}
						seen[id] = now
					}
					return nil
				}, nil)
		}()
	}

	// A pacer hands out send slots at the rate; a pool of appenders takes
	// them (as bench append's tail latency does), so one slow commit does
	// not stall the schedule. Each appender writes its own stream, as
	// services append each entity's events to its stream: appends to one
	// stream are serialized by every backend (versions follow log order),
	// which on PostgreSQL queues all 16 behind each commit.
	const appenders = 16
	n := int(o.LatencyDuration.Seconds() * float64(o.LatencyRate))
	interval := time.Second / time.Duration(o.LatencyRate)
	slots := make(chan struct{})
	var wg sync.WaitGroup
	var appendErr atomic.Pointer[error]
	for w := range appenders {
		stream := fmt.Sprintf("bench-latency-%d", w)
		wg.Go(func() {
			for range slots {
				id := uuid.New()
				t0 := time.Now()
				mu.Lock()
				appended[id.String()] = t0
				mu.Unlock()
				_, err := sys.store.Append(ctx, eventstore.AppendParams{Stream: stream, Events: []eventstore.ProposedEvent{{ID: id, Type: "order.created", Data: fanoutData}}})
				if err != nil {
					appendErr.CompareAndSwap(nil, &err)
					continue
				}
				mu.Lock()
				acked[id.String()] = time.Now()
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil || appendErr.Load() != nil {
			break
		}
		slots <- struct{}{}
	}
	close(slots)
	wg.Wait()
	if p := appendErr.Load(); p != nil {
		return Result{}, fmt.Errorf("bench: append: %w", *p)
	}
	achieved := float64(n) / time.Since(start).Seconds()
	want := n * o.Subscriptions
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(lat)
		// With the split, also until its reader has seen every event: it
		// usually has before the last delivery arrives, but need not.
		behind := o.LatencySplit && len(seen) < len(appended)
		mu.Unlock()
		if (got >= want && !behind) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lat) == 0 {
		return Result{}, errors.New("bench: latency: no deliveries")
	}
	sortDurations(lat)
	sortDurations(fromAck)
	p99 := percentile(lat, 0.99)
	split := ""
	if o.LatencySplit {
		if len(seen) == 0 {
			return Result{}, errors.New("bench: latency: the split reader saw no event")
		}
		if again > 0 {
			return Result{}, fmt.Errorf("bench: latency: the split reader got %d events twice", again)
		}
		// From the append's return: 0 when the event was readable before
		// Append returned (a store may acknowledge after it is readable).
		var readable, readableAck []time.Duration
		for id, at := range seen {
			readable = append(readable, at.Sub(appended[id]))
			if t1, ok := acked[id]; ok {
				readableAck = append(readableAck, max(at.Sub(t1), 0))
			}
		}
		sortDurations(readable)
		sortDurations(readableAck)
		split = fmt.Sprintf("; split: readable by a plain tailing reader (%d events) p50 %s, p99 %s from the append's start, p50 %s, p99 %s from its return (the store's share; the rest is the projector's)",
			len(readable), ms(percentile(readable, 0.5)), ms(percentile(readable, 0.99)), ms(percentile(readableAck, 0.5)), ms(percentile(readableAck, 0.99)))
	}
	return Result{
		Driver: o.Driver, Scenario: fmt.Sprintf("append -> receipt at %d ev/s x %d subscriptions", o.LatencyRate, o.Subscriptions),
		Value:  float64(p99) / float64(time.Millisecond),
		Text:   fmt.Sprintf("p50 %s, p99 %s", ms(percentile(lat, 0.5)), ms(p99)),
		Target: "p99 < 20ms", Met: ptr(p99 < 20*time.Millisecond),
		Note: fmt.Sprintf("%d of %d deliveries in %s at %.0f appends/s, timed from the start of each append (one event per append, fsync included); from the append's return: p50 %s, p99 %s",
			len(lat), want, o.LatencyDuration, achieved, ms(percentile(fromAck, 0.5)), ms(percentile(fromAck, 0.99))) + split,
	}, nil
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
