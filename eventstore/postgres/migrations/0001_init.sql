-- 0001: the log and the append function.
-- {{schema}} is replaced by the quoted Config.Schema before this runs.

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

-- append_events appends one batch to one stream in the caller's transaction.
-- Store.AppendTx calls it inside the application's transaction; Store.Append
-- tries a single-statement fast path first (see append.go) and calls it when
-- the stream is busy or the fast path did not append.
--
-- Appends to one stream are serialized by a transaction-scoped advisory lock
-- keyed on the stream. The stream's current version is its last row's
-- version (events_stream_version_key), read after the lock is held, in a
-- statement snapshot that sees the previous holder's commit (READ COMMITTED).
--
-- p_kind: 0 any, 1 no stream, 2 exists, 3 exact (p_expected).
-- Rows returned, r_status:
--   0  appended: one row per event, in input order
--   1  duplicate: every id was already in this stream; the original rows
--   2  id conflict: some ids exist, or exist in another stream; one row
--   3  wrong version: one row, r_version = the stream's current version (-1: none)
-- Statuses 1-3 write nothing. Races that the stream lock cannot serialize (the
-- same id appended to two streams at once) surface as unique_violation. A
-- stream whose last event came from a transaction with a later txid than ours
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
    -- An advisory lock, not a row lock: taking it does not assign a
    -- transaction id, so in a fresh transaction the txid (the log order) is
    -- assigned after the previous appender of the stream committed, and the
    -- stream's versions follow log order. (A row lock would assign the txid
    -- before waiting.)
    PERFORM pg_advisory_xact_lock(hashtextextended('hooklog.stream.{{schema}}.' || p_stream, 0));

    SELECT coalesce(l.version, -1), coalesce(l.txid, 0), d.found, d.same
      INTO v_cur, v_last, v_found, v_same
      FROM (SELECT count(*) AS found, count(*) FILTER (WHERE e.stream = p_stream) AS same
              FROM {{schema}}.events e WHERE e.id = ANY (p_ids)) AS d
      LEFT JOIN LATERAL (SELECT e.version, e.txid FROM {{schema}}.events e
                          WHERE e.stream = p_stream ORDER BY e.version DESC LIMIT 1) AS l ON true;

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

    -- The snapshot xmin is taken before the rows' clock_timestamp(), which is
    -- all PositionAt relies on (an earlier, smaller xmin is still valid).
    SELECT pg_current_xact_id()::text::bigint,
           pg_snapshot_xmin(pg_current_snapshot())::text::bigint
      INTO v_txid, v_xmin;
    IF v_last > v_txid THEN
        RAISE EXCEPTION 'hooklog: stream % was last appended by a later transaction (%), retry', p_stream, v_last
            USING ERRCODE = 'serialization_failure';
    END IF;

    RETURN QUERY
        INSERT INTO {{schema}}.events AS e (txid, xmin_at_insert, id, stream, version, type, tenant, data, metadata)
        SELECT v_txid, v_xmin, u.id, p_stream, v_cur + u.ord, u.type, u.tenant, u.data, u.metadata
          FROM unnest(p_ids, p_types, p_tenants, p_data, p_metadata)
               WITH ORDINALITY AS u(id, type, tenant, data, metadata, ord)
         ORDER BY u.ord
        RETURNING 0, e.id, e.txid, e.seq, e.version;
END
$fn$;
