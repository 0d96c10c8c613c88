package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hooklog/hooklog/projector"
)

// MemoryOptions configures RunMemory. Zero fields take the documented
// defaults.
type MemoryOptions struct {
	// Driver is the store: "embedded" (default, with fsync) or "postgres".
	Driver      string
	Dir         string // where the embedded store is created; default os.TempDir()
	PostgresURL string // the postgres driver's database (a fresh schema)
	// Events is how many events are appended while every endpoint is down.
	// Default 1,000,000.
	Events int
	// Subscriptions is how many subscriptions (all to the same receiver).
	// Default 10.
	Subscriptions int
	// Batch is the events per append. Default 1000.
	Batch int
	// Down is how the endpoints are down: "503" (default; the receiver
	// answers 503 Service Unavailable) or "refused" (nothing listens).
	Down string
	// ResumeTimeout bounds the wait for the first delivery once the
	// endpoints are back. Default 6m: an open circuit's next probe can be up
	// to 5m away (delivery.circuit_cooldown doubling).
	ResumeTimeout time.Duration
	// Watch is how long deliveries are counted after the first one. Default 10s.
	Watch time.Duration
	// Projector configures the projector as `hooklog serve` would;
	// Delivery.AllowPrivateNetworks is forced on.
	Projector projector.Config
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

func (o *MemoryOptions) defaults() {
	if o.Driver == "" {
		o.Driver = "embedded"
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.Events <= 0 {
		o.Events = 1_000_000
	}
	if o.Subscriptions <= 0 {
		o.Subscriptions = 10
	}
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	if o.Down == "" {
		o.Down = "503"
	}
	if o.ResumeTimeout <= 0 {
		o.ResumeTimeout = 6 * time.Minute
	}
	if o.Watch <= 0 {
		o.Watch = 10 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	o.Projector.Delivery.AllowPrivateNetworks = true
}

// procStatus reads the memory lines of /proc/self/status, in kB.
type procStatus struct {
	VmHWM, VmRSS, RssAnon, RssFile int64
}

func readProcStatus() (procStatus, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return procStatus{}, err
	}
	defer f.Close()
	var s procStatus
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmHWM":
			s.VmHWM = v
		case "VmRSS":
			s.VmRSS = v
		case "RssAnon":
			s.RssAnon = v
		case "RssFile":
			s.RssFile = v
		}
	}
	if s.VmHWM == 0 {
		return s, errors.New("bench: /proc/self/status has no VmHWM")
	}
	return s, sc.Err()
}

func mb(kb int64) string { return fmt.Sprintf("%.0f MB", float64(kb)/1024) }

// memSampler keeps the largest RssAnon and Go heap seen.
type memSampler struct {
	maxAnon, maxHeap atomic.Int64
	stop             chan struct{}
	done             sync.WaitGroup
}

func startSampler() *memSampler {
	m := &memSampler{stop: make(chan struct{})}
	m.done.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if s, err := readProcStatus(); err == nil && s.RssAnon > m.maxAnon.Load() {
				m.maxAnon.Store(s.RssAnon)
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if h := int64(ms.HeapInuse / 1024); h > m.maxHeap.Load() {
				m.maxHeap.Store(h)
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	})
	return m
}

func (m *memSampler) close() {
	close(m.stop)
	m.done.Wait()
}

// RunMemory appends o.Events events while every endpoint of o.Subscriptions
// subscriptions is down, and reports the process's peak resident memory
// (VmHWM of /proc/self/status: the store, the projector, the appender and
// the receiver all run in this process). Then the endpoints come back and it
// reports how soon delivery resumed and how many deliveries followed in
// o.Watch.
func RunMemory(ctx context.Context, o MemoryOptions) (results []Result, err error) {
	o.defaults()
	if err := checkDriver(o.Driver, o.PostgresURL); err != nil {
		return nil, err
	}
	if o.Driver == "esdb" {
		return nil, errors.New("bench: no memory figure on esdb: the in-process test server would hold the whole log in this process's memory")
	}
	if o.Down != "503" && o.Down != "refused" {
		return nil, fmt.Errorf("bench: down mode %q (want 503 or refused)", o.Down)
	}
	if _, err := readProcStatus(); err != nil {
		return nil, err
	}
	rcv, err := startReceiver()
	if err != nil {
		return nil, err
	}
	defer func() { rcv.close() }()
	var failed atomic.Int64
	rcv.down.Store(true)
	rcv.onDown = func() { failed.Add(1) }
	addr := strings.TrimSuffix(strings.TrimPrefix(rcv.url, "http://"), "/hook")
	if o.Down == "refused" {
		rcv.close() // nothing listens on the port until the endpoints return
	}

	opener, closeOpener, err := newOpener(ctx, o.Driver, o.Dir, o.PostgresURL)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeOpener()) }()
	sys, err := startSystem(ctx, opener, o.Projector, rcv.url, o.Subscriptions, 0, nil)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, sys.close()) }()

	sampler := startSampler()
	defer sampler.close()
	before, _ := readProcStatus()
	fmt.Fprintf(o.Progress, "memory: appending %d events in batches of %d to %d subscriptions whose endpoint is down (%s) on %s; RSS now %s...\n",
		o.Events, o.Batch, o.Subscriptions, o.Down, o.Driver, mb(before.VmRSS))
	start := time.Now()
	step := max(o.Events/10, o.Batch)
	err = appendBatches(ctx, sys.store, "bench-memory", o.Events, o.Batch, func(n int) {
		if n%step < o.Batch || n == o.Events {
			s, _ := readProcStatus()
			fmt.Fprintf(o.Progress, "  %d events, %s, RSS %s (peak %s), failed attempts so far %d\n", n, time.Since(start).Round(time.Second), mb(s.VmRSS), mb(s.VmHWM), failed.Load())
		}
	})
	if err != nil {
		return nil, err
	}
	appendTook := time.Since(start)
	time.Sleep(2 * time.Second) // let the tail and the routes take in the last appends
	down, _ := readProcStatus()
	heapDown, anonDown := sampler.maxHeap.Load(), sampler.maxAnon.Load()
	results = append(results, Result{
		Driver: o.Driver, Scenario: fmt.Sprintf("%d events appended, %d endpoints down (%s)", o.Events, o.Subscriptions, o.Down),
		Value: float64(down.VmHWM) / 1024, Text: "peak RSS " + mb(down.VmHWM),
		Target: "< 256 MB", Met: ptr(down.VmHWM < 256*1024),
		Note: fmt.Sprintf("VmHWM of the whole bench process (store, projector, appender, receiver); peak anonymous RSS %s, peak Go heap in use %s; appended in %s (%.0f ev/s); %d failed attempts while down",
			mb(anonDown), mb(heapDown), appendTook.Round(time.Second), float64(o.Events)/appendTook.Seconds(), failed.Load()),
	})

	// The endpoints return.
	fmt.Fprintf(o.Progress, "memory: endpoints back; waiting for deliveries (up to %s: an open circuit probes on its own schedule)...\n", o.ResumeTimeout)
	if o.Down == "refused" {
		if err := rcv.listenAgain(addr); err != nil {
			return results, err
		}
	}
	back := time.Now()
	base := rcv.count.Load()
	rcv.down.Store(false)
	if err := rcv.waitFor(ctx, base+1, o.ResumeTimeout, nil); err != nil {
		results = append(results, Result{Driver: o.Driver, Scenario: "delivery resumes when the endpoints return",
			Text: "no delivery within " + o.ResumeTimeout.String(), Target: "resumes", Met: ptr(false)})
		return results, nil
	}
	first := time.Since(back)
	c0 := rcv.count.Load()
	time.Sleep(o.Watch)
	n := rcv.count.Load() - c0
	end, _ := readProcStatus()
	results = append(results, Result{
		Driver: o.Driver, Scenario: "delivery resumes when the endpoints return",
		Value:  float64(n) / o.Watch.Seconds(),
		Text:   fmt.Sprintf("first after %s; %s in the next %s", first.Round(100*time.Millisecond), deliveriesText(float64(n)/o.Watch.Seconds()), o.Watch),
		Target: "resumes", Met: ptr(n > 0),
		Note: fmt.Sprintf("peak RSS by the end of the catch-up window %s (anonymous %s, file-backed now %s); the backlog is %d deliveries",
			mb(end.VmHWM), mb(sampler.maxAnon.Load()), mb(end.RssFile), int64(o.Events)*int64(o.Subscriptions)),
	})
	return results, nil
}

// listenAgain serves the receiver again on addr (the refused mode's return).
func (r *receiver) listenAgain(addr string) error {
	var ln net.Listener
	var err error
	for range 50 { // the port was ours a moment ago; retry briefly if it lingers
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("bench: receiver: listen again on %s: %w", addr, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: r.srv.Handler}
	r.srv = srv
	go func() { _ = srv.Serve(ln) }()
	return nil
}
