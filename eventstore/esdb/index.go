package esdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hooklog/hooklog/eventstore"
)

// The PostgreSQL side of the store: three tables in Config.Schema, all
// derived from the log and rebuildable by following it from the start.
//
//	esdb_ids     event id -> stream, version, position; a row without a
//	             position is an append's reservation of the id (owner set)
//	esdb_times   a time-to-position sample every TimeIndexInterval of
//	             recorded time, for PositionAt
//	esdb_follow  how far the indexer has followed the log (per StreamPrefix)
var migrations = []string{
	`CREATE TABLE {{schema}}.esdb_ids (
		id          uuid        PRIMARY KEY,
		stream      text        NOT NULL,
		version     bigint,
		commit_pos  bigint,
		prepare_pos bigint,
		owner       uuid,
		reserved_at timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE {{schema}}.esdb_times (
		recorded_at timestamptz NOT NULL,
		commit_pos  bigint      NOT NULL,
		prepare_pos bigint      NOT NULL,
		PRIMARY KEY (commit_pos, prepare_pos)
	);
	CREATE INDEX esdb_times_recorded_at ON {{schema}}.esdb_times (recorded_at);
	CREATE TABLE {{schema}}.esdb_follow (
		prefix          text        PRIMARY KEY,
		commit_pos      bigint      NOT NULL,
		prepare_pos     bigint      NOT NULL,
		max_recorded_at timestamptz,
		last_sample_at  timestamptz
	);`,
}

// migrate applies the esdb migrations not yet applied, under an advisory
// lock, recording them in esdb_schema_migrations (apart from the postgres
// store's own schema_migrations in the same schema).
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	q := pgx.Identifier{schema}.Sanitize()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "hooklog.esdb.migrate."+schema); err != nil {
			return fmt.Errorf("esdb: migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+q); err != nil {
			return fmt.Errorf("esdb: create schema %s: %w", q, err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+q+`.esdb_schema_migrations (
			version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("esdb: create esdb_schema_migrations: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+q+`.esdb_schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("esdb: read esdb_schema_migrations: %w", err)
		}
		if current > len(migrations) {
			return fmt.Errorf("esdb: schema %s is at esdb migration %d, newer than this binary's %d", q, current, len(migrations))
		}
		for i := current; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, strings.ReplaceAll(migrations[i], "{{schema}}", q)); err != nil {
				return fmt.Errorf("esdb: migration %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+q+`.esdb_schema_migrations (version) VALUES ($1)`, i+1); err != nil {
				return fmt.Errorf("esdb: record migration %d: %w", i+1, err)
			}
		}
		return nil
	})
}

// sqlText holds the statements of one schema.
type sqlText struct {
	reserve, lookup, unreserve, takeover, settle string
	indexIDs, indexTimes, follow, loadFollow     string
	positionAt                                   string
}

func newSQL(schema string) sqlText {
	r := strings.NewReplacer("{{s}}", pgx.Identifier{schema}.Sanitize())
	return sqlText{
		reserve: r.Replace(`INSERT INTO {{s}}.esdb_ids (id, stream, owner)
			SELECT u, $2, $3 FROM unnest($1::uuid[]) AS u
			ON CONFLICT (id) DO NOTHING RETURNING id`),
		lookup: r.Replace(`SELECT id, stream, version, commit_pos, prepare_pos,
				commit_pos IS NULL AND reserved_at < now() - $2::interval
			FROM {{s}}.esdb_ids WHERE id = ANY($1)`),
		unreserve: r.Replace(`DELETE FROM {{s}}.esdb_ids
			WHERE id = ANY($1) AND owner = $2 AND commit_pos IS NULL`),
		takeover: r.Replace(`UPDATE {{s}}.esdb_ids SET owner = $2, reserved_at = now()
			WHERE id = ANY($1) AND commit_pos IS NULL AND reserved_at < now() - $3::interval
			RETURNING id`),
		settle: r.Replace(`UPDATE {{s}}.esdb_ids AS t
			SET version = u.version, commit_pos = u.c, prepare_pos = u.p, owner = NULL
			FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(id, version, c, p)
			WHERE t.id = u.id`),
		// A reservation is settled by the indexer too (its append's process
		// may have died after writing); a settled row is never changed.
		indexIDs: r.Replace(`INSERT INTO {{s}}.esdb_ids AS t (id, stream, version, commit_pos, prepare_pos)
			SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
			ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, commit_pos = EXCLUDED.commit_pos,
				prepare_pos = EXCLUDED.prepare_pos, owner = NULL
			WHERE t.commit_pos IS NULL AND t.stream = EXCLUDED.stream`),
		indexTimes: r.Replace(`INSERT INTO {{s}}.esdb_times (recorded_at, commit_pos, prepare_pos)
			SELECT * FROM unnest($1::timestamptz[], $2::bigint[], $3::bigint[])
			ON CONFLICT DO NOTHING`),
		follow: r.Replace(`INSERT INTO {{s}}.esdb_follow AS f (prefix, commit_pos, prepare_pos, max_recorded_at, last_sample_at)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (prefix) DO UPDATE SET commit_pos = EXCLUDED.commit_pos, prepare_pos = EXCLUDED.prepare_pos,
				max_recorded_at = greatest(f.max_recorded_at, EXCLUDED.max_recorded_at),
				last_sample_at = greatest(f.last_sample_at, EXCLUDED.last_sample_at)
			WHERE (f.commit_pos, f.prepare_pos) < (EXCLUDED.commit_pos, EXCLUDED.prepare_pos)`),
		loadFollow: r.Replace(`SELECT commit_pos, prepare_pos, max_recorded_at, last_sample_at
			FROM {{s}}.esdb_follow WHERE prefix = $1`),
		positionAt: r.Replace(`SELECT commit_pos, prepare_pos FROM {{s}}.esdb_times
			WHERE recorded_at < $1 ORDER BY recorded_at DESC LIMIT 1`),
	}
}

// idRow is one row of esdb_ids.
type idRow struct {
	id      uuid.UUID
	stream  string // the KurrentDB stream name (with StreamPrefix)
	settled bool
	version int64
	pos     eventstore.Position
	stale   bool // an unsettled reservation older than ReservationTTL
}

func (s *Store) lookupIDs(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]idRow, error) {
	rows, err := s.pool.Query(ctx, s.sql.lookup, ids, s.cfg.ReservationTTL)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]idRow, len(ids))
	for rows.Next() {
		var r idRow
		var version, c, p *int64
		if err := rows.Scan(&r.id, &r.stream, &version, &c, &p, &r.stale); err != nil {
			rows.Close()
			return nil, err
		}
		if c != nil && p != nil && version != nil {
			r.settled, r.version, r.pos = true, *version, eventstore.Position{Hi: uint64(*c), Lo: uint64(*p)}
		}
		out[r.id] = r
	}
	return out, rows.Err()
}

// indexEntry is what the indexer keeps of one followed event.
type indexEntry struct {
	id      uuid.UUID
	stream  string
	version int64
	pos     eventstore.Position
	at      time.Time
}

// writeIndex records a batch of followed events in one transaction: their
// ids, the time samples due, and the indexer's new position.
func (s *Store) writeIndex(ctx context.Context, batch []indexEntry) error {
	n := len(batch)
	ids := make([]uuid.UUID, 0, n)
	streams := make([]string, 0, n)
	versions := make([]int64, 0, n)
	cs := make([]int64, 0, n)
	ps := make([]int64, 0, n)
	seen := make(map[uuid.UUID]bool, n)
	var atS []time.Time
	var cS, pS []int64
	lastSample, maxAt := s.lastSampleAt, s.maxRecordedAt
	for _, e := range batch {
		if !seen[e.id] { // one row per id per statement
			seen[e.id] = true
			ids, streams, versions = append(ids, e.id), append(streams, e.stream), append(versions, e.version)
			cs, ps = append(cs, int64(e.pos.Hi)), append(ps, int64(e.pos.Lo))
		}
		if lastSample.IsZero() || e.at.Sub(lastSample) >= s.cfg.TimeIndexInterval {
			lastSample = e.at
			atS, cS, pS = append(atS, e.at), append(cS, int64(e.pos.Hi)), append(pS, int64(e.pos.Lo))
		}
		if e.at.After(maxAt) {
			maxAt = e.at
		}
	}
	last := batch[n-1].pos
	var sampleArg any
	if !lastSample.IsZero() {
		sampleArg = lastSample
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(s.sql.indexIDs, ids, streams, versions, cs, ps)
		if len(atS) > 0 {
			b.Queue(s.sql.indexTimes, atS, cS, pS)
		}
		b.Queue(s.sql.follow, s.cfg.StreamPrefix, int64(last.Hi), int64(last.Lo), maxAt, sampleArg)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("esdb: write index: %w", err)
	}
	s.idxMu.Lock()
	s.lastSampleAt = lastSample
	if maxAt.After(s.maxRecordedAt) {
		s.maxRecordedAt = maxAt
	}
	s.idxMu.Unlock()
	return nil
}

// loadFollow reads where the indexer stopped (Start when it never ran).
func (s *Store) loadFollow(ctx context.Context) error {
	var c, p int64
	var maxAt, lastSample *time.Time
	err := s.pool.QueryRow(ctx, s.sql.loadFollow, s.cfg.StreamPrefix).Scan(&c, &p, &maxAt, &lastSample)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("esdb: read index position: %w", err)
	}
	s.followFrom = eventstore.Position{Hi: uint64(c), Lo: uint64(p)}
	if maxAt != nil {
		s.maxRecordedAt = *maxAt
	}
	if lastSample != nil {
		s.lastSampleAt = *lastSample
	}
	return nil
}
