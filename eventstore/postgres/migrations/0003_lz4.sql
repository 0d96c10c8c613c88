-- 0003: lz4 for the large columns, where the server has it.
-- {{schema}} is replaced by the quoted Config.Schema before this runs.
--
-- Values over about 2 kB are compressed before they are stored. The default
-- method, pglz, is slow, and slowest on data that does not compress (it
-- tries, then stores the original): the projector's delivery.attempts events
-- carry tens of kB of base64 attempt records per batch, and pglz spent more
-- time on them than the rest of the insert. lz4 (PostgreSQL 14+, when the
-- server is built with it, as Debian's and the official images are) is
-- several times faster at a similar ratio on JSON. Existing rows keep their
-- method; a server without lz4 keeps pglz.
DO $mig$
BEGIN
    EXECUTE 'ALTER TABLE {{schema}}.events ALTER COLUMN data SET COMPRESSION lz4, ALTER COLUMN metadata SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE {{schema}}.state ALTER COLUMN value SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
    RAISE NOTICE 'hooklog: lz4 compression not available (%), keeping the default', SQLERRM;
END
$mig$;
