package bench

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/projector"
)

// The fan-out scenarios run end to end (small) on each store and report a
// row each; the figures themselves are for `hooklog bench fanout`.
func TestRunFanout(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	for _, driver := range []string{"embedded", "postgres", "esdb"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			url := ""
			if driver != "embedded" {
				url = pgtest.URL(t)
			}
			res, err := RunFanout(context.Background(), FanoutOptions{
				Driver: driver, Dir: t.TempDir(), PostgresURL: url, Events: 300, Subscriptions: 3, Rounds: 1,
				LatencyRate: 100, LatencyDuration: 500 * time.Millisecond, LatencySplit: true, Projector: projector.Config{Logger: quiet()},
			})
			if err != nil {
				t.Fatal(err)
			}
			checkResults(t, res, 3)
			// The reference row: the same deliveries against fasthttp's client.
			if ref := res[1]; ref.Value != res[0].Value || ref.BaselineValue <= 0 || ref.Met != nil || !strings.Contains(ref.Baseline, "fasthttp") {
				t.Errorf("reference row: %+v", ref)
			}
			lat := res[2]
			if lat.Met == nil || !strings.Contains(lat.Note, "150 of 150 deliveries") {
				t.Errorf("latency row: %+v", lat)
			}
			// The split reader saw each of the 50 events once.
			if !strings.Contains(lat.Note, "split: readable by a plain tailing reader (50 events)") {
				t.Errorf("latency row without the split: %s", lat.Note)
			}
		})
	}
}

// The memory scenario appends while the endpoints are down (both ways of
// being down), then sees delivery resume once they return.
func TestRunMemory(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("short")
	}
	for _, down := range []string{"503", "refused"} {
		t.Run(down, func(t *testing.T) {
			t.Parallel()
			res, err := RunMemory(context.Background(), MemoryOptions{
				Dir: t.TempDir(), Events: 3000, Subscriptions: 3, Batch: 500, Down: down, Watch: 300 * time.Millisecond,
				ResumeTimeout: 30 * time.Second,
				Projector:     projector.Config{Logger: quiet(), CircuitCooldown: 100 * time.Millisecond},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 2 || res[0].Value <= 0 || res[1].Met == nil || !*res[1].Met {
				t.Fatalf("results %+v", res)
			}
		})
	}
}

func TestFanoutOptionErrors(t *testing.T) {
	t.Parallel()
	if _, err := RunFanout(context.Background(), FanoutOptions{Driver: "mysql"}); err == nil || !strings.Contains(err.Error(), "mysql") {
		t.Fatalf("unknown driver: %v", err)
	}
	if _, err := RunFanout(context.Background(), FanoutOptions{Driver: "postgres"}); err == nil || !strings.Contains(err.Error(), "URL") {
		t.Fatalf("postgres without URL: %v", err)
	}
	if _, err := RunMemory(context.Background(), MemoryOptions{Driver: "esdb", PostgresURL: "postgres://x/y"}); err == nil || !strings.Contains(err.Error(), "esdb") {
		t.Fatalf("memory on esdb: %v", err)
	}
	if _, err := RunMemory(context.Background(), MemoryOptions{Down: "slow"}); err == nil || !strings.Contains(err.Error(), "slow") {
		t.Fatalf("down mode: %v", err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
