package esdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kdb "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"

	"github.com/hooklog/hooklog/eventstore"
	"github.com/hooklog/hooklog/eventstore/postgres"
)

// Store is the KurrentDB/EventStoreDB eventstore.Store and
// eventstore.StateStore. Open it with Open; it is safe for concurrent use.
type Store struct {
	cfg     Config
	conns   *conns
	pg      *postgres.Store
	ownPG   bool
	pool    *pgxpool.Pool
	sql     sqlText
	watch   *eventstore.HeadWatch // the last event the subscription delivered
	indexed *eventstore.HeadWatch // the last event the indexer recorded
	queue   chan indexEntry       // subscription -> indexer

	// Indexer state: where it resumes, its last time sample and the largest
	// recorded time it saw. Written by the indexer (and Open) only.
	followFrom    eventstore.Position
	idxMu         sync.Mutex
	lastSampleAt  time.Time
	maxRecordedAt time.Time

	closed    atomic.Bool
	closeOnce sync.Once
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

var (
	_ eventstore.Store      = (*Store)(nil)
	_ eventstore.StateStore = (*Store)(nil)
)

// Open connects to KurrentDB and PostgreSQL, applies the esdb migrations and
// starts the subscription that feeds Wait and the indexes. ctx bounds the
// connection and migrations only. The server must answer at Open; later
// outages are ridden out with reconnects.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	kc, err := cfg.clientConfig()
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, pg: cfg.Postgres, sql: newSQL(cfg.Schema), queue: make(chan indexEntry, 4096)}
	if s.pg == nil {
		s.pg, err = postgres.Open(ctx, postgres.Config{URL: cfg.PostgresURL, Schema: cfg.Schema})
		if err != nil {
			return nil, fmt.Errorf("esdb: side state: %w", err)
		}
		s.ownPG = true
	}
	fail := func(err error) (*Store, error) {
		if s.ownPG {
			_ = s.pg.Close()
		}
		return nil, err
	}
	s.pool = s.pg.Pool()
	if err := migrate(ctx, s.pool, cfg.Schema); err != nil {
		return fail(err)
	}
	if err := s.loadFollow(ctx); err != nil {
		return fail(err)
	}
	s.conns = newConns(kc, cfg.Logger, cfg.ReconnectMin, cfg.ReconnectMax)
	head, err := s.head(ctx)
	if err != nil {
		s.conns.close()
		return fail(fmt.Errorf("esdb: open: %w", err))
	}
	s.watch = eventstore.NewHeadWatch(head)
	s.indexed = eventstore.NewHeadWatch(s.followFrom)
	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go s.subscribeLoop(bg)
	go s.indexLoop(bg)
	return s, nil
}

// Close stops the subscription and indexer, wakes waiters with ErrClosed,
// waits for calls in flight on the client, then closes it (and the
// PostgreSQL store opened from Config.PostgresURL). It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
		s.wg.Wait()
		s.watch.Close()
		s.indexed.Close()
		s.conns.close()
		if s.ownPG {
			_ = s.pg.Close()
		}
	})
	return nil
}

// Ping checks that KurrentDB answers a read and PostgreSQL a ping. While the
// server is away it fails (ErrUnavailable during the backoff), so /readyz
// reports not ready.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return eventstore.ErrClosed
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := s.with(pctx, func(c *kdb.Client) error {
		_, err := lastEvent(pctx, c, kdb.End{})
		return err
	})
	if err != nil {
		return s.translate(err, "ping")
	}
	return s.translate(s.pool.Ping(ctx), "ping postgres")
}

// with runs fn with the current client, counting the call in flight and
// judging its error for the connection's health.
func (s *Store) with(ctx context.Context, fn func(c *kdb.Client) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l, err := s.conns.acquire()
	if err != nil {
		return err
	}
	err = s.conns.call(ctx, l, fn)
	s.conns.release(ctx, l, err)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		// The client reports an ended context as a gRPC status: say which.
		if c := grpcCode(err); c == codes.Canceled || c == codes.DeadlineExceeded {
			return ctx.Err()
		}
	}
	return err
}

// translate maps errors to eventstore errors at the boundary.
func (s *Store) translate(err error, op string) error {
	if err == nil {
		return nil
	}
	var wv *eventstore.WrongVersionError
	var ve *eventstore.ValidationError
	switch {
	case errors.As(err, &wv), errors.As(err, &ve), errors.Is(err, eventstore.ErrIDConflict),
		errors.Is(err, eventstore.ErrNotFound), errors.Is(err, eventstore.ErrBadPosition):
		return err
	case s.closed.Load() || errors.Is(err, eventstore.ErrClosed):
		return fmt.Errorf("esdb: %s: %w", op, eventstore.ErrClosed)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrUnavailable):
		return fmt.Errorf("esdb: %s: %w", op, err)
	case isConnError(err):
		return fmt.Errorf("esdb: %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("esdb: %s: %w", op, err)
}

// Positions: Hi is the commit position, Lo the prepare position, so that
// Position.Compare is the log's order.
func toPos(p kdb.Position) eventstore.Position {
	return eventstore.Position{Hi: p.Commit, Lo: p.Prepare}
}
func fromPos(p eventstore.Position) kdb.Position {
	return kdb.Position{Commit: p.Hi, Prepare: p.Lo}
}

// validPos reports whether a read returned a real position (some servers
// send -1, as the largest uint64, for events read from a stream).
func validPos(p kdb.Position) bool {
	return p.Commit < math.MaxInt64 && p.Prepare < math.MaxInt64 && (p.Commit != 0 || p.Prepare != 0)
}

// foreign reports whether a recorded event is not hooklog's: a system event
// ($-prefixed stream or type) or, with a StreamPrefix, another stream.
func (s *Store) foreign(stream, typ string) bool {
	return strings.HasPrefix(stream, "$") || strings.HasPrefix(typ, "$") || !strings.HasPrefix(stream, s.cfg.StreamPrefix)
}

func (s *Store) esdbStream(stream string) string { return s.cfg.StreamPrefix + stream }

// userMeta is the ESDB event's user metadata: what the event type and data
// do not carry.
type userMeta struct {
	Tenant   string          `json:"tenant,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

func encode(e eventstore.ProposedEvent) (kdb.EventData, error) {
	d := kdb.EventData{EventID: e.ID, EventType: e.Type, ContentType: kdb.ContentTypeJson, Data: e.Data}
	if e.Tenant != "" || len(e.Metadata) > 0 {
		m, err := json.Marshal(userMeta{Tenant: e.Tenant, Metadata: e.Metadata})
		if err != nil {
			return d, fmt.Errorf("esdb: encode metadata of %s: %w", e.ID, err)
		}
		d.Metadata = m
	}
	return d, nil
}

// decode turns a recorded event into an eventstore.Event; ok is false for
// foreign events.
func (s *Store) decode(r *kdb.RecordedEvent) (eventstore.Event, bool) {
	if r == nil || s.foreign(r.StreamID, r.EventType) {
		return eventstore.Event{}, false
	}
	e := eventstore.Event{
		ID:         r.EventID,
		Stream:     strings.TrimPrefix(r.StreamID, s.cfg.StreamPrefix),
		Type:       r.EventType,
		Data:       r.Data,
		Position:   toPos(r.Position),
		Version:    int64(r.EventNumber),
		RecordedAt: r.CreatedDate,
	}
	if len(r.UserMetadata) > 0 {
		var m userMeta
		if json.Unmarshal(r.UserMetadata, &m) == nil {
			e.Tenant, e.Metadata = m.Tenant, m.Metadata
		}
	}
	return e, true
}

// recv reads every event of a read stream, calling fn for each until fn
// returns false. A missing stream reads as empty.
func recv(rs *kdb.ReadStream, fn func(*kdb.ResolvedEvent) bool) error {
	defer rs.Close()
	for {
		e, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			var ee *kdb.Error
			if errors.As(err, &ee) && ee.Code() == kdb.ErrorCodeResourceNotFound {
				return nil
			}
			return err
		}
		if !fn(e) {
			return nil
		}
	}
}

// lastEvent reads the last event of $all before `from` (End for the very
// last), foreign or not; nil when there is none.
func lastEvent(ctx context.Context, c *kdb.Client, from kdb.AllPosition) (*kdb.RecordedEvent, error) {
	rs, err := c.ReadAll(ctx, kdb.ReadAllOptions{Direction: kdb.Backwards, From: from}, 1)
	if err != nil {
		return nil, err
	}
	var last *kdb.RecordedEvent
	err = recv(rs, func(e *kdb.ResolvedEvent) bool { last = e.OriginalEvent(); return false })
	return last, err
}

// Head is the position of the last hooklog event of $all, read backwards
// past foreign events.
func (s *Store) Head(ctx context.Context) (eventstore.Position, error) {
	if s.closed.Load() {
		return eventstore.Position{}, eventstore.ErrClosed
	}
	p, err := s.head(ctx)
	return p, s.translate(err, "head")
}

func (s *Store) head(ctx context.Context) (eventstore.Position, error) {
	var head eventstore.Position
	err := s.with(ctx, func(c *kdb.Client) error {
		var from kdb.AllPosition = kdb.End{}
		var cursor *eventstore.Position
		for {
			rs, err := c.ReadAll(ctx, kdb.ReadAllOptions{Direction: kdb.Backwards, From: from}, 64)
			if err != nil {
				return err
			}
			n, found := 0, false
			err = recv(rs, func(e *kdb.ResolvedEvent) bool {
				r := e.OriginalEvent()
				p := toPos(r.Position)
				if cursor != nil && !p.Less(*cursor) {
					return true // a server that includes the start of a backwards read
				}
				n++
				cursor = &p
				if !s.foreign(r.StreamID, r.EventType) {
					head, found = p, true
					return false
				}
				return true
			})
			if err != nil || found || n == 0 {
				return err
			}
			from = fromPos(*cursor)
		}
	})
	return head, err
}
