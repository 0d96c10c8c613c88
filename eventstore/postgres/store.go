package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hooklog/hooklog/eventstore"
)

// Store is the PostgreSQL eventstore.Store. Open it with Open; it is safe for
// concurrent use.
type Store struct {
	cfg     Config
	pool    *pgxpool.Pool
	q       sqlText
	channel string // LISTEN/NOTIFY channel of this schema
	self    string // NOTIFY payload naming this Store, so it ignores its own

	watch      *eventstore.HeadWatch
	targetMu   sync.Mutex
	target     eventstore.Position // last position committed by Append
	stuckSince atomic.Int64        // unix ns since rows are held back, 0 = not
	localKick  chan struct{}       // an Append of this Store committed
	remoteKick chan struct{}       // a notification arrived
	listenPID  atomic.Uint32       // backend pid of this Store's LISTEN connection, 0 while it has none

	verMu    sync.Mutex
	versions map[string]int64 // stream -> last version committed by Append (a lower bound)
	inflight map[string]int   // stream -> Appends of this Store running on it
	group    *appendGroup     // nil: Config.AppendGroups < 0

	closed    atomic.Bool
	closeOnce sync.Once
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

var _ eventstore.Store = (*Store)(nil)

// Open connects, applies pending migrations and starts the watcher. ctx bounds
// the connection and migrations only.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: Config.URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := migrate(ctx, pool, cfg.Schema); err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{
		cfg:        cfg,
		pool:       pool,
		q:          newSQLText(pgx.Identifier{cfg.Schema}.Sanitize()),
		channel:    channelName(cfg.Schema),
		self:       uuid.NewString(),
		localKick:  make(chan struct{}, 1),
		remoteKick: make(chan struct{}, 1),
	}
	if cfg.AppendGroups > 0 {
		s.group = &appendGroup{max: cfg.AppendGroups}
	}
	head, err := s.Head(ctx)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.watch = eventstore.NewHeadWatch(head)
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go s.watcher(wctx)
	go s.listener(wctx)
	return s, nil
}

// channelName is the NOTIFY channel of schema, kept within PostgreSQL's 63-byte
// identifier limit.
func channelName(schema string) string {
	c := "hooklog_events_" + schema
	if len(c) > 63 {
		h := sha256.Sum256([]byte(schema))
		c = "hooklog_events_" + hex.EncodeToString(h[:16])
	}
	return c
}

// Pool is the store's connection pool, for the application's own queries and
// for transactions passed to AppendTx. Do not close it; Close does.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	return s.translate(s.pool.Ping(ctx), "ping")
}

// Close stops the watcher and listener, wakes waiters with ErrClosed and closes
// the pool (waiting for connections in use to be released). It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
		s.wg.Wait()
		s.watch.Close()
		s.pool.Close()
	})
	return nil
}

// translate maps pgx errors to eventstore errors at the boundary; what is not
// mapped is wrapped with the operation name.
func (s *Store) translate(err error, op string) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() {
		return fmt.Errorf("postgres: %s: %w", op, eventstore.ErrClosed)
	}
	if errors.Is(err, eventstore.ErrWrongVersion) || errors.Is(err, eventstore.ErrIDConflict) {
		return err // already typed
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: %s: %w", op, eventstore.ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_id_key" {
		return fmt.Errorf("postgres: %s: %w: %s", op, eventstore.ErrIDConflict, pgErr.Message)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// isRetryable reports whether an append that failed with err may simply be
// run again in a new transaction: a race the database detected (the same id
// appended to another stream at once, a serialization failure, a deadlock).
// The rerun sees the winner's commit and answers with the right typed result.
func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "23505", "40001", "40P01":
		return true
	}
	return false
}
