package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/hooklog/hooklog/eventstore"
)

// Result is one row of a benchmark report.
type Result struct {
	Driver   string // "embedded", "postgres", "http+embedded"
	Scenario string // short name, e.g. "batch-100, 1 writer"
	// Value is the measured figure: events/s for throughput rows, the p99 in
	// milliseconds for latency rows.
	Value float64
	// Text is Value formatted for people, with units.
	Text string
	// Baseline describes the raw comparison measured in the same run; "" if none.
	Baseline      string
	BaselineValue float64 // events/s
	// BaselineText is BaselineValue for people when it is not events/s
	// ("" prints BaselineValue as events/s).
	BaselineText string
	// Ratio is Value/BaselineValue (0 without a baseline).
	Ratio  float64
	Target string // e.g. ">= 0.50 of baseline", "" if none
	// Met reports whether Target was reached; nil without a target.
	Met *bool
	// Note adds detail printed under the table.
	Note string
}

// Print writes results as an aligned table followed by what each baseline is.
func Print(w io.Writer, title string, results []Result) error {
	if title != "" {
		if _, err := fmt.Fprintln(w, title); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DRIVER\tSCENARIO\tHOOKLOG\tBASELINE\tRATIO\tTARGET\tMET")
	for _, r := range results {
		ratio, baseline := "-", "-"
		if r.Baseline != "" {
			baseline = rateText(r.BaselineValue)
			if r.BaselineText != "" {
				baseline = r.BaselineText
			}
			ratio = fmt.Sprintf("%.2f", r.Ratio)
		}
		target, met := "-", "-"
		if r.Target != "" {
			target = r.Target
		}
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Driver, r.Scenario, r.Text, baseline, ratio, target, met)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if r.Baseline != "" {
			fmt.Fprintf(w, "  %s %s: baseline = %s\n", r.Driver, r.Scenario, r.Baseline)
		}
		if r.Note != "" {
			fmt.Fprintf(w, "  %s %s: %s\n", r.Driver, r.Scenario, r.Note)
		}
	}
	return nil
}

func rateText(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	// thousands separators for readability
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String() + " ev/s"
}

func ptr(b bool) *bool { return &b }

// op performs one unit of work for worker w and returns how many events it
// wrote.
type op func(ctx context.Context, w int) (int, error)

// tally is the count and elapsed time of one side of a comparison.
type tally struct {
	events  int64
	elapsed time.Duration
}

func (t tally) rate() float64 {
	if t.elapsed <= 0 {
		return 0
	}
	return float64(t.events) / t.elapsed.Seconds()
}

// runFor runs f in `workers` goroutines until d has passed, and adds the
// events written and the wall time (including the last operations' tail) to t.
func runFor(ctx context.Context, d time.Duration, workers int, f op, t *tally) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		n        atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	deadline := start.Add(d)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				k, err := f(ctx, w)
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				n.Add(int64(k))
			}
		}()
	}
	wg.Wait()
	t.events += n.Load()
	t.elapsed += time.Since(start)
	return firstErr
}

// compare measures a (hooklog) and b (the baseline) alternately in rounds,
// b first, each side getting d in total. It returns events/s of each side.
func compare(ctx context.Context, d time.Duration, workers int, a, b op) (ra, rb float64, err error) {
	return compareSettled(ctx, d, workers, a, b, nil)
}

// compareSettled is compare for a store that defers work past its
// acknowledgements (the embedded store's flush into bbolt): settle runs
// after each of a's turns, and its time counts as a's, so a is charged for
// the work it left behind and b's turn does not share the disk with it.
func compareSettled(ctx context.Context, d time.Duration, workers int, a, b op, settle func(context.Context) error) (ra, rb float64, err error) {
	const rounds = 2
	var ta, tb tally
	for i := 0; i < rounds; i++ {
		if err := runFor(ctx, d/rounds, workers, b, &tb); err != nil {
			return 0, 0, fmt.Errorf("baseline: %w", err)
		}
		if err := runFor(ctx, d/rounds, workers, a, &ta); err != nil {
			return 0, 0, fmt.Errorf("hooklog: %w", err)
		}
		if settle != nil {
			start := time.Now()
			if err := settle(ctx); err != nil {
				return 0, 0, fmt.Errorf("hooklog: settle: %w", err)
			}
			ta.elapsed += time.Since(start)
		}
	}
	return ta.rate(), tb.rate(), nil
}

// payload builds event data of about size bytes once encoded as a JSON line
// {"id":…,"stream":…,"type":…,"data":…} (what the raw baselines write).
func payload(size int) json.RawMessage {
	const overhead = len(`{"id":"01234567-89ab-cdef-0123-456789abcdef","stream":"bench-w-00","type":"order.paid","data":}` + "\n")
	base := `{"order_id":"order-000123","customer":"cus_8fj2k3","amount_cents":129900,"currency":"EUR","pad":""}`
	pad := size - overhead - len(base)
	if pad < 0 {
		pad = 0
	}
	return json.RawMessage(strings.Replace(base, `"pad":""`, `"pad":"`+strings.Repeat("x", pad)+`"`, 1))
}

// line is the raw-baseline encoding of one event: the same fields and data
// the store is given.
func line(stream string, data json.RawMessage) []byte {
	b, _ := json.Marshal(struct {
		ID     string          `json:"id"`
		Stream string          `json:"stream"`
		Type   string          `json:"type"`
		Data   json.RawMessage `json:"data"`
	}{"01234567-89ab-cdef-0123-456789abcdef", stream, "order.paid", data})
	return append(b, '\n')
}

func proposed(n int, data json.RawMessage) []eventstore.ProposedEvent {
	evs := make([]eventstore.ProposedEvent, n)
	for i := range evs {
		evs[i] = eventstore.ProposedEvent{Type: "order.paid", Data: data}
	}
	return evs
}

// percentile returns the q-quantile (0..1) of sorted.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
