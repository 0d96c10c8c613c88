package main

import (
	"context"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/embedded"
	"github.com/hooklog/hooklog/eventstore/postgres"
)

// openStore opens the backend named by store.driver (validated already).
// A backend is chosen only here.
func openStore(ctx context.Context, cfg *config) (eventstore.Store, error) {
	switch cfg.Store.Driver {
	case "postgres":
		s, err := postgres.Open(ctx, postgres.Config{
			URL:      cfg.Store.Postgres.URL,
			Schema:   cfg.Store.Postgres.Schema,
			MaxConns: cfg.Store.Postgres.MaxConns,
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
