package main

import (
	"context"
	"log/slog"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/esdb"
	"github.com/hooklog/hooklog/eventstore/postgres"
)

// appendGroups maps store.postgres.append_groups (0 = off) to
// postgres.Config.AppendGroups (0 = default, negative = off).
func appendGroups(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// openStore opens the backend named by store.driver (validated already).
// A backend is chosen only here. Every backend is also the
// eventstore.StateStore the projector keeps its state in.
func openStore(ctx context.Context, cfg *config, log *slog.Logger) (eventstore.Store, error) {
	switch cfg.Store.Driver {
	case "postgres":
		s, err := postgres.Open(ctx, postgres.Config{
			URL:          cfg.Store.Postgres.URL,
			Schema:       cfg.Store.Postgres.Schema,
			MaxConns:     cfg.Store.Postgres.MaxConns,
			AppendGroups: appendGroups(cfg.Store.Postgres.AppendGroups),
		})
		if err != nil {
			return nil, err
		}
		return s, nil
	case "esdb":
		// The log lives in KurrentDB; checkpoints, the attempts index and
		// the id and time indexes live in PostgreSQL (store.postgres.*).
		s, err := esdb.Open(ctx, esdb.Config{
			URL:         cfg.Store.ESDB.URL,
			PostgresURL: cfg.Store.Postgres.URL,
			Schema:      cfg.Store.Postgres.Schema,
			Logger:      log,
		})
		if err != nil {
			return nil, err
		}
		return s, nil
	default:
		s, err := embedded.Open(embedded.Config{Path: cfg.Store.Path})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}
