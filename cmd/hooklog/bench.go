package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hooklog/hooklog/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Whole-system benchmarks, each next to a raw baseline measured in the same run",
	}
	cmd.AddCommand(newBenchAppendCmd())
	return cmd
}

func newBenchAppendCmd() *cobra.Command {
	var (
		o      bench.AppendOptions
		driver string
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
			start := time.Now()
			results, err := bench.RunAppend(cmd.Context(), o)
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
