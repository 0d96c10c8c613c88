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
	cmd.AddCommand(newBenchAppendCmd(), newBenchAPICmd())
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
