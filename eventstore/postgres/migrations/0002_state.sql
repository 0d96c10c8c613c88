-- 0002: derived projector state (eventstore.StateStore) and the strict append
-- that CommitState pipelines with the state writes.
-- {{schema}} is replaced by the quoted Config.Schema before this runs.

-- Flat namespaces of ordered byte keys. bytea compares as bytes (a shorter
-- prefix first), the order ScanState promises. Sizes are bounded by
-- eventstore.StateCommit.Validate (bucket <= 200, key <= 1024 bytes), well
-- inside a B-tree entry.
CREATE TABLE {{schema}}.state (
    bucket text  NOT NULL,
    key    bytea NOT NULL,
    value  bytea NOT NULL,
    PRIMARY KEY (bucket, key)
);

-- append_events_strict is append_events for CommitState, which sends its
-- appends and state writes as one pipeline in one implicit transaction: the
-- client cannot roll back after reading a status, so the answers that must
-- write nothing raise instead, aborting the whole transaction.
--   HL409  id conflict (append_events status 2)
--   HL412  wrong version (status 3); DETAIL = the stream's current version
-- Appended (0) and duplicate (1) rows are returned as append_events returns them.
CREATE FUNCTION {{schema}}.append_events_strict(
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
    r record;
BEGIN
    FOR r IN SELECT * FROM {{schema}}.append_events(p_stream, p_kind, p_expected, p_ids, p_types, p_tenants, p_data, p_metadata) LOOP
        IF r.r_status = 2 THEN
            RAISE EXCEPTION 'hooklog: stream %: event id already used', p_stream
                USING ERRCODE = 'HL409';
        ELSIF r.r_status = 3 THEN
            RAISE EXCEPTION 'hooklog: stream %: wrong expected version', p_stream
                USING ERRCODE = 'HL412', DETAIL = r.r_version::text;
        END IF;
        r_status := r.r_status;
        r_id := r.r_id;
        r_txid := r.r_txid;
        r_seq := r.r_seq;
        r_version := r.r_version;
        RETURN NEXT;
    END LOOP;
END
$fn$;
