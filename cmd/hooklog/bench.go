package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hooklog/hooklog/bench"
	"github.com/hooklog/hooklog/eventstore"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Whole-system benchmarks, each next to a raw baseline measured in the same run",
	}
	cmd.AddCommand(newBenchAppendCmd(), newBenchAPICmd(), newBenchFanoutCmd())
	return cmd
}

func newBenchAppendCmd() *cobra.Command {
	var (
		o          bench.AppendOptions
		driver     string
		cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "append",
		Short: "Event store append throughput and append-to-tail latency",
		Long: `Measure the event store on its own, next to raw baselines run in the same process:

  embedded  batch appends        vs the same bytes appended to a plain file, one fsync per batch
  embedded  concurrent appends   vs a plain file with as many writers, one fsync per event
  postgres  batch appends        vs one multi-row INSERT of the same rows into a bare table
  postgres  concurrent appends   vs single-row INSERT commits on as many connections
  both      append -> Follow reader latency (p50/p99) at a steady rate

The PostgreSQL scenarios use fresh schemas that are dropped afterwards; the URL
comes from --postgres-url, else HOOKLOG_TEST_POSTGRES_URL, else
HOOKLOG_STORE_POSTGRES_URL. With --driver all and no URL they are skipped.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			switch driver {
			case "all":
				o.Drivers = []string{"embedded"}
				if o.PostgresURL != "" {
					o.Drivers = append(o.Drivers, "postgres")
				} else {
					fmt.Fprintln(cmd.ErrOrStderr(), "no PostgreSQL URL (--postgres-url or HOOKLOG_TEST_POSTGRES_URL): skipping the postgres scenarios")
				}
			case "embedded", "postgres":
				o.Drivers = []string{driver}
			default:
				return &ConfigError{Key: "--driver", Problem: fmt.Sprintf("unknown driver %q (want embedded, postgres or all)", driver)}
			}
			o.Progress = cmd.ErrOrStderr()
			stopProfile, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			start := time.Now()
			results, err := bench.RunAppend(cmd.Context(), o)
			stopProfile()
			title := fmt.Sprintf("hooklog bench append: %s per side, GOMAXPROCS=%d, %s/%s, dir %s",
				o.Duration, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, o.Dir)
			if len(results) > 0 {
				fmt.Fprintln(cmd.OutOrStdout())
				_ = bench.Print(cmd.OutOrStdout(), title, results)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "total time %s\n", time.Since(start).Round(time.Second))
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&driver, "driver", "all", "embedded, postgres or all")
	f.DurationVar(&o.Duration, "duration", 5*time.Second, "time per measured side (hooklog and baseline each), and of the latency run")
	f.StringVar(&o.Dir, "dir", os.TempDir(), "directory for the embedded stores and baseline files (use the disk you care about, not a tmpfs)")
	f.StringVar(&o.PostgresURL, "postgres-url", firstEnv("HOOKLOG_TEST_POSTGRES_URL", "HOOKLOG_STORE_POSTGRES_URL"), "PostgreSQL URL for the postgres scenarios")
	f.IntVar(&o.EventSize, "event-size", 500, "approximate bytes per event")
	f.IntVar(&o.Batch, "batch", 100, "events per append in the batch scenarios")
	f.IntVar(&o.BatchWriters, "batch-writers", 1, "concurrent batch appenders (PostgreSQL connections) on both sides")
	f.IntVar(&o.Concurrency, "concurrency", 32, "concurrent single-event appenders (PostgreSQL connections) on both sides")
	f.IntVar(&o.TailRate, "tail-rate", 1000, "append rate of the latency scenario, events/s")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	return cmd
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(os.Getenv(n)); v != "" {
			return v
		}
	}
	return ""
}

func newBenchAPICmd() *cobra.Command {
	var (
		o          bench.APIOptions
		cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Appends through real HTTP on loopback, as a ratio to the store's own append rate",
		Long: `Run the same server "hooklog serve" wires (API, API keys, subscriptions) on an
embedded store with fsync, on 127.0.0.1, and measure appends through HTTP with
keep-alive clients: single-event requests from --concurrency clients, and
--batch-event requests from --batch-clients clients. Each is compared with the
same appends made straight to the same store (Store.Append, as many goroutines),
alternating in rounds within this run. Clients and server share this machine.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			o.Progress = cmd.ErrOrStderr()
			o.Server = benchServer(cmd.ErrOrStderr())
			stopProfile, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			results, err := bench.RunAPI(cmd.Context(), o)
			stopProfile()
			if len(results) > 0 {
				title := fmt.Sprintf("hooklog bench api: %s per side, GOMAXPROCS=%d, %s/%s, dir %s",
					o.Duration, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, o.Dir)
				fmt.Fprintln(cmd.OutOrStdout())
				_ = bench.Print(cmd.OutOrStdout(), title, results)
			}
			return err
		}),
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 5*time.Second, "time per measured side (HTTP and store-only each)")
	f.StringVar(&o.Dir, "dir", os.TempDir(), "directory for the embedded store (use the disk you care about, not a tmpfs)")
	f.IntVar(&o.EventSize, "event-size", 500, "approximate bytes per event")
	f.IntVar(&o.Concurrency, "concurrency", 32, "concurrent single-event clients (and direct appenders)")
	f.IntVar(&o.Batch, "batch", 100, "events per request in the batch scenario")
	f.IntVar(&o.BatchClients, "batch-clients", 1, "concurrent batch clients (and direct batch appenders)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	return cmd
}

// benchServer builds the system under test with serve's own wiring (newApp),
// authenticated by a random admin key.
func benchServer(logw io.Writer) func(ctx context.Context, s eventstore.Store) (http.Handler, string, func() error, error) {
	return func(ctx context.Context, s eventstore.Store) (http.Handler, string, func() error, error) {
		var b [24]byte
		_, _ = rand.Read(b[:])
		cfg := &config{}
		cfg.HTTP.MaxBody = 8 << 20
		cfg.Auth.AdminKey = "bench-" + hex.EncodeToString(b[:])
		log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))
		a, err := newApp(ctx, cfg, s, log, io.Discard)
		if err != nil {
			return nil, "", nil, err
		}
		return a.handler, cfg.Auth.AdminKey, a.close, nil
	}
}

// startCPUProfile profiles into file until the returned function is called;
// "" profiles nothing.
func startCPUProfile(file string) (func(), error) {
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func newBenchFanoutCmd() *cobra.Command {
	var (
		o          bench.FanoutOptions
		m          bench.MemoryOptions
		memory     bool
		cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Webhook fan-out: deliveries/s against raw HTTP POSTs, append-to-receipt latency, memory with endpoints down",
		Long: `Run the projector (with the subscriptions service, on a real store with fsync or
commit) against a receiver on 127.0.0.1 in this process that answers 200 at once:

  throughput  --events events x --subscriptions subscriptions (max_in_flight 16
              each), from the first append until the receiver has every delivery,
              against plain net/http POSTs of the same bodies to the same receiver
              from subscriptions x 16 clients, alternating in --rounds rounds
  latency     one event per append at --latency-rate events/s for
              --latency-duration; append-to-receipt p50/p99 over every delivery

With --memory, instead: append --memory-events events while every endpoint is
down (503, or --down refused), report the process's peak resident memory
(VmHWM of /proc/self/status), then bring the endpoints back and count the
deliveries in the next --watch.

The projector runs with the built-in defaults of delivery.* (as "hooklog serve"
without configuration). PostgreSQL runs use fresh schemas, dropped afterwards;
the URL comes from --postgres-url, else HOOKLOG_TEST_POSTGRES_URL, else
HOOKLOG_STORE_POSTGRES_URL. --driver esdb runs on the in-process KurrentDB test
server (the one the esdb tests use, in this process) with side state in
PostgreSQL: figures of the backend's code path, not of a KurrentDB server.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if o.Driver != "embedded" && o.Driver != "postgres" && o.Driver != "esdb" {
				return &ConfigError{Key: "--driver", Problem: fmt.Sprintf("unknown driver %q (want embedded, postgres or esdb)", o.Driver)}
			}
			if o.Driver != "embedded" && o.PostgresURL == "" {
				return &ConfigError{Key: "--postgres-url", Problem: fmt.Sprintf("is required for --driver %s (or set HOOKLOG_TEST_POSTGRES_URL)", o.Driver)}
			}
			if o.Driver == "esdb" && memory {
				return &ConfigError{Key: "--memory", Problem: "not with --driver esdb: the in-process test server would hold the log in this process's memory"}
			}
			if m.Down != "503" && m.Down != "refused" {
				return &ConfigError{Key: "--down", Problem: fmt.Sprintf("unknown mode %q (want 503 or refused)", m.Down)}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelError}))
			pcfg := projectorConfig(defaultConfig(), log)
			o.Projector, m.Projector = pcfg, pcfg
			o.Progress, m.Progress = cmd.ErrOrStderr(), cmd.ErrOrStderr()
			m.Driver, m.Dir, m.PostgresURL, m.Subscriptions = o.Driver, o.Dir, o.PostgresURL, o.Subscriptions
			stopProfile, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			var results []bench.Result
			var title string
			if memory {
				results, err = bench.RunMemory(cmd.Context(), m)
				title = fmt.Sprintf("hooklog bench fanout --memory: %d events, %d subscriptions, endpoints down (%s), GOMAXPROCS=%d, %s/%s",
					m.Events, m.Subscriptions, m.Down, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
			} else {
				results, err = bench.RunFanout(cmd.Context(), o)
				title = fmt.Sprintf("hooklog bench fanout: %d events x %d subscriptions, %d rounds, GOMAXPROCS=%d, %s/%s",
					o.Events, o.Subscriptions, o.Rounds, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
			}
			stopProfile()
			if len(results) > 0 {
				fmt.Fprintln(cmd.OutOrStdout())
				_ = bench.Print(cmd.OutOrStdout(), title, results)
			}
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&o.Driver, "driver", "embedded", "store: embedded, postgres or esdb (in-process test server)")
	f.StringVar(&o.Dir, "dir", os.TempDir(), "directory for the embedded stores (use the disk you care about, not a tmpfs)")
	f.StringVar(&o.PostgresURL, "postgres-url", firstEnv("HOOKLOG_TEST_POSTGRES_URL", "HOOKLOG_STORE_POSTGRES_URL"), "PostgreSQL URL for --driver postgres")
	f.IntVar(&o.Events, "events", 20000, "events of the throughput scenario")
	f.IntVar(&o.Subscriptions, "subscriptions", 10, "subscriptions every event fans out to")
	f.IntVar(&o.Rounds, "rounds", 2, "rounds of the throughput comparison (baseline and hooklog alternate)")
	f.IntVar(&o.LatencyRate, "latency-rate", 500, "events/s of the latency scenario (negative skips it)")
	f.DurationVar(&o.LatencyDuration, "latency-duration", 10*time.Second, "how long the latency scenario appends")
	f.BoolVar(&o.LatencySplit, "latency-split", false, "also time when each event became readable to a plain tailing reader (the store's share of the latency; adds a reader)")
	f.BoolVar(&memory, "memory", false, "run the memory scenario instead (endpoints down while --memory-events are appended)")
	f.IntVar(&m.Events, "memory-events", 1_000_000, "events appended while the endpoints are down")
	f.StringVar(&m.Down, "down", "503", "how the endpoints are down: 503 or refused")
	f.DurationVar(&m.Watch, "watch", 10*time.Second, "how long deliveries are counted once the endpoints are back")
	f.DurationVar(&m.ResumeTimeout, "resume-timeout", 6*time.Minute, "how long to wait for the first delivery once the endpoints are back")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	return cmd
}
