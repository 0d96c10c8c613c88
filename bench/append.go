package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
)

// AppendOptions configures RunAppend. Zero fields take the documented defaults.
type AppendOptions struct {
	// Drivers to measure: "embedded", "postgres". Default: both.
	Drivers []string
	// Duration each side (hooklog and baseline) of a throughput comparison
	// runs, and the length of the latency run. Default 5s.
	Duration time.Duration
	// Dir is where embedded stores and plain baseline files are created (in a
	// fresh sub-directory, removed afterwards). It should be on the disk you
	// care about: a tmpfs makes fsync free. Default os.TempDir().
	Dir string
	// PostgresURL is required for the postgres driver. A fresh schema is
	// created for the store and another for the baseline table; both are
	// dropped afterwards.
	PostgresURL string
	// EventSize is the approximate size of one event in bytes. Default 500.
	EventSize int
	// Batch is the events per append of the batch scenario. Default 100.
	Batch int
	// BatchWriters is how many appenders (and PostgreSQL connections) the
	// batch scenario uses, on both sides. Default 1.
	BatchWriters int
	// Concurrency is how many single-event appenders (and PostgreSQL
	// connections) run at once. Default 32.
	Concurrency int
	// TailRate is the append rate of the latency scenario, events/s.
	// Default 1000.
	TailRate int
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

func (o *AppendOptions) defaults() {
	if len(o.Drivers) == 0 {
		o.Drivers = []string{"embedded", "postgres"}
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	if o.EventSize <= 0 {
		o.EventSize = 500
	}
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.BatchWriters <= 0 {
		o.BatchWriters = 1
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.TailRate <= 0 {
		o.TailRate = 1000
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

func (o *AppendOptions) validate() error {
	for _, d := range o.Drivers {
		switch d {
		case "embedded":
		case "postgres":
			if o.PostgresURL == "" {
				return errors.New("bench: the postgres driver needs a PostgreSQL URL")
			}
		default:
			return fmt.Errorf("bench: unknown driver %q (want embedded or postgres)", d)
		}
	}
	if o.Batch > eventstore.MaxEventsPerAppend {
		return fmt.Errorf("bench: batch %d is over the store's limit of %d events per append", o.Batch, eventstore.MaxEventsPerAppend)
	}
	return nil
}

// RunAppend runs the store-level scenarios for each driver and returns one
// result per scenario.
func RunAppend(ctx context.Context, o AppendOptions) ([]Result, error) {
	o.defaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.Dir, "hooklog-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(work)

	var results []Result
	if slices.Contains(o.Drivers, "embedded") {
		rs, err := embeddedAppend(ctx, o, work)
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
	}
	if slices.Contains(o.Drivers, "postgres") {
		rs, err := postgresAppend(ctx, o)
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

func embeddedAppend(ctx context.Context, o AppendOptions, work string) ([]Result, error) {
	var results []Result
	data := payload(o.EventSize)

	open := func(name string) (*embedded.Store, error) {
		s, err := embedded.Open(embedded.Config{Path: filepath.Join(work, name)})
		if err != nil {
			return nil, fmt.Errorf("bench: open embedded store: %w", err)
		}
		return s, nil
	}

	// 1. Batches of o.Batch events vs the same bytes to a plain file, one
	// fsync per batch.
	fmt.Fprintf(o.Progress, "embedded: batch-%d appends, %d writer(s), vs plain file write+fsync per batch...\n", o.Batch, o.BatchWriters)
	s, err := open("batch")
	if err != nil {
		return nil, err
	}
	batchBytes := make([][]byte, o.BatchWriters)
	for w := range batchBytes {
		for i := 0; i < o.Batch; i++ {
			batchBytes[w] = append(batchBytes[w], line(fmt.Sprintf("bench-w-%02d", w), data)...)
		}
	}
	raw, err := newRawFile(filepath.Join(work, "raw-batch.log"))
	if err != nil {
		s.Close()
		return nil, err
	}
	// Checkpoint after each turn: the store's rate includes moving what it
	// appended from its WAL into bbolt.
	store, base, err := compareSettled(ctx, o.Duration, o.BatchWriters,
		func(ctx context.Context, w int) (int, error) {
			_, err := s.Append(ctx, eventstore.AppendParams{Stream: fmt.Sprintf("bench-batch-%d", w), Events: proposed(o.Batch, data)})
			return o.Batch, err
		},
		func(_ context.Context, w int) (int, error) {
			return o.Batch, raw.writeSync(batchBytes[w])
		}, s.Checkpoint)
	err = errors.Join(err, s.Close(), raw.close())
	if err != nil {
		return results, err
	}
	avg := len(batchBytes[0]) / o.Batch
	results = append(results, Result{
		Scenario: fmt.Sprintf("batch-%d, %d writer", o.Batch, o.BatchWriters),
		Driver:   "embedded", Value: store, Text: rateText(store),
		Baseline: fmt.Sprintf("the same bytes (%d B/event) appended to a plain file, one fsync per batch", avg), BaselineValue: base, Ratio: store / base,
		Target: ">= 0.50 of baseline", Met: ptr(store/base >= 0.5),
	})

	// 1b. A reference: the same batches put into a bare bbolt file with the
	// store's keys, one transaction per batch, against the plain file again:
	// what the store would reach if bbolt were in the append's path (it is
	// not: appends go to the WAL and a flusher moves them into bbolt). With
	// one writer only (bbolt serializes its write transactions).
	if o.BatchWriters == 1 {
		fmt.Fprintf(o.Progress, "embedded: batch-%d into a bare bbolt file (engine reference) vs plain file write+fsync per batch...\n", o.Batch)
		bb, err := newBareBolt(filepath.Join(work, "bare.bolt"), "bench-batch-0")
		if err != nil {
			return results, err
		}
		raw, err := newRawFile(filepath.Join(work, "raw-batch-2.log"))
		if err != nil {
			bb.close()
			return results, err
		}
		value := batchBytes[0][:avg]
		engine, base, err := compare(ctx, o.Duration, 1,
			func(_ context.Context, _ int) (int, error) { return o.Batch, bb.putBatch(o.Batch, value) },
			func(_ context.Context, w int) (int, error) { return o.Batch, raw.writeSync(batchBytes[w]) })
		err = errors.Join(err, bb.close(), raw.close())
		if err != nil {
			return results, err
		}
		results = append(results, Result{
			Scenario: fmt.Sprintf("batch-%d, bare bbolt (reference)", o.Batch),
			Driver:   "embedded", Value: engine, Text: rateText(engine),
			Baseline:      fmt.Sprintf("the same plain file; bbolt alone with the store's keys per event (record, id, stream version), one transaction per batch: bbolt in the append's path; hooklog (WAL in front of bbolt) reaches %.2fx this", store/engine),
			BaselineValue: base, Ratio: engine / base,
			Target: "- (reference)",
		})
	}

	// 2. Concurrent single-event appends (group commit) vs a plain file with
	// the same number of writers, each write followed by its own fsync.
	fmt.Fprintf(o.Progress, "embedded: %d concurrent single-event appenders vs plain file write+fsync per event...\n", o.Concurrency)
	s, err = open("single")
	if err != nil {
		return results, err
	}
	raw, err = newRawFile(filepath.Join(work, "raw-single.log"))
	if err != nil {
		s.Close()
		return results, err
	}
	one := line("bench-w-00", data)
	store, base, err = compareSettled(ctx, o.Duration, o.Concurrency,
		func(ctx context.Context, w int) (int, error) {
			_, err := s.Append(ctx, eventstore.AppendParams{Stream: fmt.Sprintf("bench-single-%d", w), Events: proposed(1, data)})
			return 1, err
		},
		func(_ context.Context, _ int) (int, error) {
			return 1, raw.writeSync(one)
		}, s.Checkpoint)
	err = errors.Join(err, s.Close(), raw.close())
	if err != nil {
		return results, err
	}
	results = append(results, Result{
		Scenario: fmt.Sprintf("single-event, %d concurrent", o.Concurrency),
		Driver:   "embedded", Value: store, Text: rateText(store),
		Baseline: fmt.Sprintf("a plain file with %d writers, one fsync per event", o.Concurrency), BaselineValue: base, Ratio: store / base,
		Target: ">= 10,000 ev/s", Met: ptr(store >= 10000),
	})

	// 3. Append -> visible to a Follow reader, next to its floor: the
	// latency of one event's write+fsync to a plain file at the same rate,
	// paced the same way, measured just before.
	fmt.Fprintf(o.Progress, "embedded: plain file write+fsync latency at %d/s for %s, then tail latency...\n", o.TailRate, o.Duration)
	raw, err = newRawFile(filepath.Join(work, "raw-tail.log"))
	if err != nil {
		return results, err
	}
	floor, _, err := paced(ctx, o.TailRate, max(int(float64(o.TailRate)*o.Duration.Seconds()), 1), func(int, time.Time) error {
		return raw.writeSync(one)
	})
	err = errors.Join(err, raw.close())
	if err != nil {
		return results, fmt.Errorf("bench: baseline fsync latency: %w", err)
	}
	sortDurations(floor)
	s, err = open("tail")
	if err != nil {
		return results, err
	}
	lat, err := tailLatency(ctx, s, o.TailRate, o.Duration, data)
	err = errors.Join(err, s.Close())
	if err != nil {
		return results, err
	}
	lat.floorP50, lat.floorP99 = percentile(floor, 0.50), percentile(floor, 0.99)
	lat.floor = fmt.Sprintf("one event's write+fsync to a plain file at the same rate from %d writers, measured just before", tailAppenders)
	results = append(results, lat.result("embedded"))
	return results, nil
}

// rawFile is the plain-file baseline: appends then fsync. Concurrent writers
// share one descriptor opened with O_APPEND, as a log file would be.
type rawFile struct {
	mu sync.Mutex // serializes writes so lines do not interleave; fsyncs run concurrently
	f  *os.File
}

func newRawFile(path string) (*rawFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return &rawFile{f: f}, nil
}

func (r *rawFile) writeSync(b []byte) error {
	r.mu.Lock()
	_, err := r.f.Write(b)
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.f.Sync()
}

func (r *rawFile) close() error { return r.f.Close() }

// latency is the outcome of tailLatency.
type latency struct {
	rate           int
	achieved       float64
	n              int
	p50, p99, max  time.Duration // append call start -> reader has the event
	ackP50, ackP99 time.Duration // append call start -> Append returned
	// The raw floor, when measured: at the same rate, a plain file's
	// write+fsync (embedded) or a single-row INSERT commit into a bare table
	// (postgres), call start -> returned.
	floorP50, floorP99 time.Duration
	floor              string // what the floor is; "" = none
}

func (l latency) result(driver string) Result {
	r := l.resultNoFloor(driver)
	if l.floor != "" {
		r.Baseline = l.floor
		r.BaselineText = fmt.Sprintf("p50 %s p99 %s", ms(l.floorP50), ms(l.floorP99))
		r.BaselineValue = float64(l.floorP99) / float64(time.Millisecond)
		r.Ratio = float64(l.p99) / float64(l.floorP99) // the p99s: >1 is slower than the floor
		r.Note += fmt.Sprintf("; RATIO = p99 / the baseline's p99 (%s over it)", ms(l.p99-l.floorP99))
	}
	return r
}

func (l latency) resultNoFloor(driver string) Result {
	return Result{
		Scenario: fmt.Sprintf("append->Follow latency @%d ev/s", l.rate),
		Driver:   driver,
		Value:    float64(l.p99) / float64(time.Millisecond),
		Text:     fmt.Sprintf("p50 %s p99 %s", ms(l.p50), ms(l.p99)),
		Note: fmt.Sprintf("latency from the Append call to the reader: %d events at %.0f ev/s achieved, max %s; Append returned after p50 %s, p99 %s",
			l.n, l.achieved, ms(l.max), ms(l.ackP50), ms(l.ackP99)),
		Target: "p99 < 10ms",
		Met:    ptr(l.p99 < 10*time.Millisecond),
	}
}

// tailLatency appends single events at a steady rate for d while a reader
// tails the log with eventstore.Follow, and measures the time from the start of
// each Append call to the reader receiving the event. The send time travels in
// the event data.
func tailLatency(ctx context.Context, s eventstore.Store, rate int, d time.Duration, data json.RawMessage) (latency, error) {
	head, err := s.Head(ctx)
	if err != nil {
		return latency{}, err
	}
	total := int(float64(rate) * d.Seconds())
	if total < 1 {
		total = 1
	}
	var body map[string]any
	if err := json.Unmarshal(data, &body); err != nil {
		return latency{}, err
	}

	readCtx, stopReader := context.WithCancel(ctx)
	defer stopReader()
	seen := make(chan time.Duration, total)
	readerDone := make(chan error, 1)
	go func() {
		readerDone <- eventstore.Follow(readCtx, s, eventstore.FollowParams{
			After:  head,
			Filter: eventstore.Filter{Streams: []string{"bench-tail-*"}},
		}, func(_ context.Context, evs []eventstore.Event) error {
			now := time.Now()
			for _, e := range evs {
				var v struct {
					T int64 `json:"sent_unix_nano"`
				}
				if err := json.Unmarshal(e.Data, &v); err != nil {
					return err
				}
				seen <- now.Sub(time.Unix(0, v.T))
			}
			return nil
		}, nil)
	}()

	acks, elapsed, err := paced(ctx, rate, total, func(w int, t0 time.Time) error {
		ev := make(map[string]any, len(body)+1)
		for k, v := range body {
			ev[k] = v
		}
		ev["sent_unix_nano"] = t0.UnixNano()
		b, _ := json.Marshal(ev)
		_, err := s.Append(ctx, eventstore.AppendParams{
			Stream: fmt.Sprintf("bench-tail-%d", w),
			Events: []eventstore.ProposedEvent{{Type: "order.paid", Data: b}},
		})
		return err
	})
	if err != nil {
		return latency{}, fmt.Errorf("tail latency: append: %w", err)
	}

	var lat []time.Duration
	timeout := time.After(30 * time.Second)
	for len(lat) < total {
		select {
		case l := <-seen:
			lat = append(lat, l)
		case err := <-readerDone:
			return latency{}, fmt.Errorf("tail latency: reader stopped: %v", err)
		case <-timeout:
			return latency{}, fmt.Errorf("tail latency: reader saw %d of %d events after 30s", len(lat), total)
		}
	}
	stopReader()
	<-readerDone

	sortDurations(lat)
	sortDurations(acks)
	return latency{
		rate: rate, achieved: float64(total) / elapsed.Seconds(), n: total,
		p50: percentile(lat, 0.50), p99: percentile(lat, 0.99), max: lat[len(lat)-1],
		ackP50: percentile(acks, 0.50), ackP99: percentile(acks, 0.99),
	}, nil
}

// tailAppenders is how many goroutines take the paced send slots.
const tailAppenders = 16

// paced calls op total times at rate calls/s, paced by the clock: a pacer
// hands out send slots and tailAppenders goroutines take them, so one slow
// call does not stall the schedule. op gets its worker number and the slot's
// start time. It returns each call's duration (unsorted) and the elapsed time.
func paced(ctx context.Context, rate, total int, op func(w int, t0 time.Time) error) ([]time.Duration, time.Duration, error) {
	slots := make(chan struct{})
	durs := make(chan time.Duration, total)
	errc := make(chan error, tailAppenders)
	var wg sync.WaitGroup
	for w := 0; w < tailAppenders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range slots {
				t0 := time.Now()
				if err := op(w, t0); err != nil {
					errc <- err
					return
				}
				durs <- time.Since(t0)
			}
		}()
	}
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var err error
pace:
	for i := 0; i < total; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		select {
		case slots <- struct{}{}:
		case err = <-errc:
			break pace
		case <-ctx.Done():
			err = ctx.Err()
			break pace
		}
	}
	close(slots)
	wg.Wait()
	elapsed := time.Since(start)
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	close(durs)
	out := make([]time.Duration, 0, total)
	for d := range durs {
		out = append(out, d)
	}
	return out, elapsed, err
}
