-- 0001: the log, the per-stream head rows and the append function.
-- {{schema}} is replaced by the quoted Config.Schema before this runs.

-- One row per stream: its last version and the transaction that wrote it.
-- Appenders hold a per-stream advisory lock while they read and update it, so
-- versions of one stream are assigned, and committed, one transaction at a time.
CREATE TABLE {{schema}}.streams (
    stream    text   PRIMARY KEY,
    version   bigint NOT NULL, -- version of the stream's last event (0-based)
    last_txid bigint NOT NULL  -- txid of the transaction that appended it
);

-- The log. Log order is (txid, seq): txid is the writing transaction's
-- pg_current_xact_id() (64 bits, epoch included), seq orders rows within it.
-- Readers only return rows with txid below the xmin of their snapshot, so a
-- row never becomes visible "behind" a cursor that has already passed it.
CREATE TABLE {{schema}}.events (
    txid           bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    id             uuid        NOT NULL,
    stream         text        NOT NULL,
    version        bigint      NOT NULL,
    type           text        NOT NULL,
    tenant         text        NOT NULL DEFAULT '', -- '' = no tenant
    data           jsonb       NOT NULL,
    metadata       jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- xmin of the inserting statement's snapshot: every transaction with a
    -- smaller txid had finished before this row was recorded (see PositionAt).
    xmin_at_insert bigint      NOT NULL DEFAULT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint),
    PRIMARY KEY (txid, seq)
);

CREATE UNIQUE INDEX events_id_key ON {{schema}}.events (id);
CREATE UNIQUE INDEX events_stream_version_key ON {{schema}}.events (stream, version);
CREATE INDEX events_recorded_at_idx ON {{schema}}.events (recorded_at, txid, seq);

-- append_events appends one batch to one stream in the caller's transaction
-- (Store.Append calls it as a single statement, so it is its own transaction;
-- Store.AppendTx calls it inside the application's transaction).
--
-- p_kind: 0 any, 1 no stream, 2 exists, 3 exact (p_expected).
-- Rows returned, r_status:
--   0  appended: one row per event, in input order
--   1  duplicate: every id was already in this stream; the original rows
--   2  id conflict: some ids exist, or exist in another stream; one row
--   3  wrong version: one row, r_version = the stream's current version (-1: none)
-- Statuses 1-3 write nothing. Races that the stream lock cannot serialize (the
-- same id appended to two streams at once) surface as unique_violation. A
-- stream whose last append came from a transaction with a later txid than ours
-- (possible only when the caller's transaction had a txid before it called
-- us) raises serialization_failure, so a stream's versions follow log order.
CREATE FUNCTION {{schema}}.append_events(
    p_stream   text,
    p_kind     int,
    p_expected bigint,
    p_ids      uuid[],
    p_types    text[],
    p_tenants  text[],
    p_data     jsonb[],
    p_metadata jsonb[]
) RETURNS TABLE (r_status int, r_id uuid, r_txid bigint, r_seq bigint, r_version bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_n     int := cardinality(p_ids);
    v_cur   bigint;
    v_last  bigint;
    v_txid  bigint;
    v_xmin  bigint;
    v_found int;
    v_same  int;
BEGIN
    -- Serialize appends to this stream until commit. An advisory lock, not a
    -- row lock: taking it does not assign a transaction id, so in a fresh
    -- transaction the txid (the log order) is assigned after the previous
    -- appender of the stream committed, and the stream's versions follow log
    -- order. (A row lock would assign the txid before waiting.)
    PERFORM pg_advisory_xact_lock(hashtextextended('hooklog.stream.{{schema}}.' || p_stream, 0));

    FOR attempt IN 1..3 LOOP
        SELECT s.version, s.last_txid INTO v_cur, v_last
          FROM {{schema}}.streams s WHERE s.stream = p_stream;
        IF NOT FOUND THEN
            v_cur := -1;
            v_last := 0;
        END IF;

        -- Idempotency, checked under the lock: an append of the same ids to
        -- this stream that raced us has committed by now and is visible to
        -- this new statement snapshot (READ COMMITTED).
        SELECT count(*), count(*) FILTER (WHERE e.stream = p_stream)
          INTO v_found, v_same
          FROM {{schema}}.events e WHERE e.id = ANY (p_ids);
        IF v_found > 0 THEN
            IF v_same = v_n THEN
                RETURN QUERY
                    SELECT 1, e.id, e.txid, e.seq, e.version
                      FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
                      JOIN {{schema}}.events e ON e.id = u.id
                     ORDER BY u.ord;
            ELSE
                RETURN QUERY SELECT 2, NULL::uuid, NULL::bigint, NULL::bigint, NULL::bigint;
            END IF;
            RETURN;
        END IF;

        IF NOT (p_kind = 0
                OR (p_kind = 1 AND v_cur = -1)
                OR (p_kind = 2 AND v_cur >= 0)
                OR (p_kind = 3 AND v_cur = p_expected)) THEN
            RETURN QUERY SELECT 3, NULL::uuid, NULL::bigint, NULL::bigint, v_cur;
            RETURN;
        END IF;

        -- The snapshot xmin is taken before the rows' clock_timestamp(), which
        -- is all PositionAt relies on (an earlier, smaller xmin is still valid).
        SELECT pg_current_xact_id()::text::bigint,
               pg_snapshot_xmin(pg_current_snapshot())::text::bigint
          INTO v_txid, v_xmin;
        IF v_last > v_txid THEN
            RAISE EXCEPTION 'hooklog: stream % was last appended by a later transaction (%), retry', p_stream, v_last
                USING ERRCODE = 'serialization_failure';
        END IF;

        IF v_cur = -1 THEN
            INSERT INTO {{schema}}.streams (stream, version, last_txid)
                 VALUES (p_stream, v_n - 1, v_txid)
            ON CONFLICT DO NOTHING;
            CONTINUE WHEN NOT FOUND; -- created concurrently (REPEATABLE READ caller?): recheck
        ELSE
            UPDATE {{schema}}.streams SET version = v_cur + v_n, last_txid = v_txid
             WHERE stream = p_stream;
        END IF;

        RETURN QUERY
            INSERT INTO {{schema}}.events AS e (txid, xmin_at_insert, id, stream, version, type, tenant, data, metadata)
            SELECT v_txid, v_xmin, u.id, p_stream, v_cur + u.ord, u.type, u.tenant, u.data, u.metadata
              FROM unnest(p_ids, p_types, p_tenants, p_data, p_metadata)
                   WITH ORDINALITY AS u(id, type, tenant, data, metadata, ord)
             ORDER BY u.ord
            RETURNING 0, e.id, e.txid, e.seq, e.version;
        RETURN;
    END LOOP;
    RAISE EXCEPTION 'hooklog: stream % is being created concurrently, retry', p_stream
        USING ERRCODE = 'serialization_failure';
END
$fn$;
