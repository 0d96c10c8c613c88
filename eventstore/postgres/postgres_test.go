package postgres_test

import (
	"context"
	"testing"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres"
	"github.com/hooklog/hooklog/eventstore/postgres/pgtest"
	"github.com/hooklog/hooklog/eventstore/storetest"
)

// harness runs the conformance suite on a fresh schema per test; reopen opens
// a second Store on the same schema. BeginHeld is the transactional outbox:
// pool.Begin + AppendTx, committed or rolled back later.
func harness() storetest.Harness {
	return storetest.Harness{
		Open: func(t *testing.T) (eventstore.Store, func(t *testing.T) eventstore.Store) {
			schema := pgtest.Schema(t)
			s := pgtest.Open(t, schema)
			return s, func(t *testing.T) eventstore.Store { return pgtest.Open(t, schema) }
		},
		BeginHeld: func(ctx context.Context, t *testing.T, s eventstore.Store, p eventstore.AppendParams) (eventstore.AppendResult, func() error, func() error, error) {
			ps := s.(*postgres.Store)
			tx, err := ps.Pool().Begin(ctx)
			if err != nil {
				return eventstore.AppendResult{}, nil, nil, err
			}
			res, err := ps.AppendTx(ctx, tx, p)
			if err != nil {
				_ = tx.Rollback(context.Background())
				return eventstore.AppendResult{}, nil, nil, err
			}
			// The suite may commit after its own ctx ended; don't tie the
			// transaction's end to it.
			commit := func() error { return tx.Commit(context.Background()) }
			rollback := func() error { return tx.Rollback(context.Background()) }
			return res, commit, rollback, nil
		},
	}
}

func TestConformance(t *testing.T) {
	pgtest.URL(t)
	storetest.Run(t, harness())
}
