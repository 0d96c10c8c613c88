package subscriptions

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
)

// BenchmarkStart measures a restart: folding the subscription stream of n
// subscriptions (each created, then updated once) on the embedded store.
func BenchmarkStart(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			store, err := embedded.Open(embedded.Config{Path: b.TempDir(), NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			ctx := context.Background()
			batch := make([]eventstore.ProposedEvent, 0, 1000)
			flush := func() {
				if _, err := store.Append(ctx, eventstore.AppendParams{Stream: Stream, Events: batch}); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
			at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			for i := range n {
				id := uuid.Must(uuid.NewV7()).String()
				c, _ := proposed(TypeCreated, createdData{ID: id, URL: fmt.Sprintf("https://h%d.example/hook", i), EventTypes: []string{"order.*"},
					Retry: DefaultRetryPolicy(), MaxInFlight: 16, Secret: newSecret(), At: at})
				u, _ := proposed(TypeUpdated, updatedData{ID: id, Description: ptr("updated"), At: at})
				batch = append(batch, c, u)
				if len(batch) >= 1000 {
					flush()
				}
			}
			if len(batch) > 0 {
				flush()
			}
			b.ResetTimer()
			for b.Loop() {
				s, err := New(store, Config{Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Start(ctx); err != nil {
					b.Fatal(err)
				}
				if got := len(s.List(ctx, nil)); got != n {
					b.Fatalf("folded %d subscriptions", got)
				}
				s.Stop()
			}
			b.ReportMetric(float64(2*n), "events/op")
		})
	}
}
