-- Syncline 0.3: sync rules, commit-ordered bucket op log, checkpoints, client writes.
\echo Use "CREATE EXTENSION syncline" to load this file. \quit

-- Roles (cluster-wide; created when missing, never dropped by the extension).
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'syncline_admin') THEN
    CREATE ROLE syncline_admin NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'syncline_gateway') THEN
    CREATE ROLE syncline_gateway NOLOGIN;
  END IF;
  -- Client writes run as this role (or the one syncline.write_role names):
  -- grant it exactly what clients may do, and write RLS policies for it.
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'syncline_writer') THEN
    CREATE ROLE syncline_writer NOLOGIN;
  END IF;
  -- Syncline's own statements (the rules catalog, the op log, write
  -- bookkeeping) run as this role, which holds nothing but the internal
  -- tables: never as the caller, never as a superuser.
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'syncline_engine') THEN
    CREATE ROLE syncline_engine NOLOGIN NOINHERIT;
  END IF;
END
$roles$;

CREATE SCHEMA syncline;
CREATE SCHEMA syncline_internal;
GRANT USAGE ON SCHEMA syncline TO PUBLIC;
GRANT USAGE ON SCHEMA syncline_internal TO syncline_engine;
COMMENT ON SCHEMA syncline IS 'Syncline public API';
COMMENT ON SCHEMA syncline_internal IS 'Syncline internals: rules catalog and op log (do not write directly)';

-- Bucket definitions: one row per syncline.create_bucket().
-- Catalog references are regclass/regrole/regtype, so they survive pg_dump and
-- restore; rule text is stored twice: as declared (for people) and as Postgres
-- deparsed it with every name schema-qualified (what runs), so no later
-- search_path or new object can change what a rule means.
CREATE TABLE syncline_internal.bucket_definitions (
  name text PRIMARY KEY,
  parameter_query text,                 -- canonical; NULL: one global instance name[]
  parameter_query_source text,          -- as declared
  parameter_names text[] NOT NULL,
  parameter_types regtype[] NOT NULL,
  definer regrole NOT NULL,             -- parameter queries run as this role
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Data queries: which rows of which table land in which bucket instance.
CREATE TABLE syncline_internal.data_queries (
  bucket_name text NOT NULL REFERENCES syncline_internal.bucket_definitions ON DELETE CASCADE,
  position int NOT NULL,
  relation regclass NOT NULL,
  object_type text NOT NULL,
  query text NOT NULL,                  -- as declared
  filter text,                          -- canonical row-local condition; NULL: every row
  key_columns text[] NOT NULL,          -- the table's primary key when declared
  PRIMARY KEY (bucket_name, position)
);
CREATE INDEX ON syncline_internal.data_queries (relation);

-- Tables read by parameter queries: a change there may change who gets which bucket.
CREATE TABLE syncline_internal.parameter_tables (
  bucket_name text NOT NULL REFERENCES syncline_internal.bucket_definitions ON DELETE CASCADE,
  relation regclass NOT NULL,
  PRIMARY KEY (bucket_name, relation)
);

-- Initial copies of rows that existed when a data query was declared (or of
-- every synced table after a restore: `reset` starts each bucket instance it
-- finds with a CLEAR), made by the flusher in block ranges without blocking
-- writers.
CREATE TABLE syncline_internal.snapshot_jobs (
  bucket_name text NOT NULL,
  position int NOT NULL,
  next_block bigint NOT NULL,
  end_block bigint NOT NULL,
  reset boolean NOT NULL DEFAULT false,
  PRIMARY KEY (bucket_name, position),
  FOREIGN KEY (bucket_name, position) REFERENCES syncline_internal.data_queries ON DELETE CASCADE
);

-- Ops written by transactions, not yet given their final op id. A
-- transaction's ops are staged when it is about to commit: one row each, or
-- for many (a bulk load) chunk rows of thousands in order (op 20, `chunk`).
-- `seq` orders them: the WAL insert position when staged (before the commit,
-- so after any earlier writer of the same rows committed) or, for an initial
-- copy, a negative number that sorts before it. op: 1 PUT, 2 REMOVE, 4 CLEAR;
-- 10 parameter-input change (object_id = table oid); 11 write marker; 12
-- rules changed; 20 chunk.
CREATE TABLE syncline_internal.pending (
  seq bigint NOT NULL,
  op smallint NOT NULL,
  bucket text COLLATE "C",
  object_type text,
  object_id text,
  data text,
  checksum bigint,
  chunk bytea
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
-- Chunks are compressed and kept inside their page (see staging.cpp).
ALTER TABLE syncline_internal.pending ALTER COLUMN chunk SET STORAGE MAIN;
DO $lz4$
BEGIN
  ALTER TABLE syncline_internal.pending ALTER COLUMN chunk SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  NULL;  -- a server built without lz4 compresses chunks with pglz
END
$lz4$;

-- The op log. op_id is assigned by the flusher, one flush at a time, so op ids
-- increase in the order ops become visible.
CREATE TABLE syncline_internal.ops (
  bucket text COLLATE "C" NOT NULL,
  op_id bigint NOT NULL,
  op smallint NOT NULL,                 -- 1 PUT, 2 REMOVE, 3 MOVE, 4 CLEAR
  object_type text,
  object_id text,
  data text,
  checksum bigint NOT NULL,
  PRIMARY KEY (bucket, op_id)
);

-- Running state of every bucket instance, so a checkpoint is O(buckets).
-- compacted_op_id: the worker's incremental compaction has seen ops up to it.
-- Only the key is indexed and pages keep room, so the flusher's updates are
-- HOT: no index entries, little WAL.
CREATE TABLE syncline_internal.bucket_state (
  bucket text COLLATE "C" PRIMARY KEY,
  checksum bigint NOT NULL,
  count bigint NOT NULL,
  last_op_id bigint NOT NULL,
  compacted_op_id bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 50);

-- One row per flush that published ops: the bucket instances it changed.
-- syncline.changes(after) reads these instead of scanning bucket_state; the
-- worker drops rows older than an hour (changes() then scans).
CREATE TABLE syncline_internal.flushes (
  last_op_id bigint PRIMARY KEY,
  from_op_id bigint NOT NULL,           -- the op id counter before the flush
  buckets text[] COLLATE "C" NOT NULL,
  flushed_at timestamptz NOT NULL DEFAULT now()
);

-- Client write batches already applied (write path): (client_id, seq) is
-- applied once. A client id belongs to the token subject of its first batch.
-- A client's newest row is its last seq; batches of one client are
-- serialized by a transaction advisory lock on (1398361668, hash of
-- client_id). txid is the transaction that applied the batch: its write
-- checkpoint is resolved from it when asked (published_write_checkpoint);
-- write_checkpoint holds the op id a flusher before 0.3 stamped instead.
CREATE TABLE syncline_internal.client_batches (
  client_id text NOT NULL,
  seq bigint NOT NULL,
  subject text NOT NULL,
  outcome jsonb NOT NULL,
  write_checkpoint bigint,
  applied_at timestamptz NOT NULL DEFAULT now(),
  txid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
  PRIMARY KEY (client_id, seq)
);

-- Tables no bucket syncs that clients may still write (explicit opt-in).
CREATE TABLE syncline_internal.writable_tables (
  relation regclass PRIMARY KEY,
  object_type text NOT NULL UNIQUE
);

-- How writes of clients built for an older schema version are applied.
CREATE TABLE syncline_internal.write_handlers (
  object_type text NOT NULL,
  schema_version text NOT NULL,
  handler regprocedure NOT NULL,
  PRIMARY KEY (object_type, schema_version)
);

-- apply_writes caches what these tables say per backend; any change to them
-- invalidates that cache everywhere when it commits.
CREATE FUNCTION syncline_internal.invalidate_write_catalog() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'syncline_invalidate_write_catalog';
CREATE TRIGGER invalidate_write_catalog
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON syncline_internal.writable_tables
  FOR EACH STATEMENT EXECUTE FUNCTION syncline_internal.invalidate_write_catalog();
CREATE TRIGGER invalidate_write_catalog
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON syncline_internal.write_handlers
  FOR EACH STATEMENT EXECUTE FUNCTION syncline_internal.invalidate_write_catalog();

-- The op id counter (at most one row; the first flush that publishes an op
-- or a client batch creates it). Flushes serialize on the transaction
-- advisory lock (1398361667, 1), held until their commit is visible.
-- flushed_snapshot: the snapshot in which the last flush that published
-- anything took the staged rows; every transaction it sees as committed had
-- its ops and write markers published by then.
CREATE TABLE syncline_internal.state (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  last_op_id bigint NOT NULL DEFAULT 0,
  origin text,                          -- "<system identifier>:<database oid>" it belongs to
  flushed_snapshot pg_snapshot
);

-- pg_dump carries the rules, the write bookkeeping and the op id counter.
-- The op log itself is not dumped: a restore rebuilds it from the restored
-- tables (see syncline_internal.guard_ddl), numbered after every op id the
-- original database can have handed out, each bucket starting with a CLEAR,
-- so clients that synced against the original converge without a checksum
-- failure.
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.bucket_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.data_queries', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.parameter_tables', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.writable_tables', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.write_handlers', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.client_batches', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.state', '');

REVOKE ALL ON ALL TABLES IN SCHEMA syncline_internal FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA syncline_internal TO syncline_engine;

-- Claims of the current request ---------------------------------------------

CREATE FUNCTION syncline.claims() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('syncline.claims', true), '')::jsonb $$;
COMMENT ON FUNCTION syncline.claims() IS
  'Verified token claims of the current sync or write request (NULL outside one)';

CREATE FUNCTION syncline.user_id() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT syncline.claims() OPERATOR(pg_catalog.->>) 'sub' $$;
COMMENT ON FUNCTION syncline.user_id() IS 'The ''sub'' claim of the current request';

-- Rules -----------------------------------------------------------------------

-- No SET search_path here: the caller's search_path resolves the names in a
-- rule once, when it is declared; what is stored is schema-qualified.
CREATE FUNCTION syncline.create_bucket(name text, parameters text, data text[]) RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'syncline_create_bucket';
COMMENT ON FUNCTION syncline.create_bucket(text, text, text[]) IS
  'Declares a bucket: a parameter query (NULL for one global instance) naming the instances a user gets, and data queries mapping rows to instances';

CREATE FUNCTION syncline.drop_bucket(name text) RETURNS void
LANGUAGE c VOLATILE SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_drop_bucket';
COMMENT ON FUNCTION syncline.drop_bucket(text) IS
  'Removes a bucket definition, its ops, and triggers no other bucket needs';

-- Op log ----------------------------------------------------------------------

CREATE FUNCTION syncline_internal.row_trigger() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'syncline_row_trigger';
CREATE FUNCTION syncline_internal.truncate_trigger() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'syncline_truncate_trigger';
CREATE FUNCTION syncline_internal.parameter_trigger() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'syncline_parameter_trigger';
-- Declaring a rule creates these triggers as the declarer, who needs the
-- TRIGGER privilege on the table and EXECUTE on them (granted to
-- syncline_admin at the end); they only run as triggers.

-- The ops of a staged chunk, in order (the flusher's).
CREATE FUNCTION syncline_internal.chunk_ops(chunk bytea)
RETURNS TABLE (ord int, op smallint, bucket text, object_type text, object_id text, data text,
               checksum bigint)
LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'syncline_chunk_ops';

CREATE FUNCTION syncline.flush() RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_flush';
COMMENT ON FUNCTION syncline.flush() IS
  'Gives committed staged ops their final op ids now (the background worker does this continuously); returns how many';

CREATE FUNCTION syncline.wait_for_initial_copy(timeout_ms int DEFAULT 30000) RETURNS boolean
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_wait_for_initial_copy';
COMMENT ON FUNCTION syncline.wait_for_initial_copy(int) IS
  'Waits until every declared bucket''s initial copy is published (true) or the timeout passes (false)';

CREATE FUNCTION syncline.checkpoint(claims jsonb) RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_checkpoint';
COMMENT ON FUNCTION syncline.checkpoint(jsonb) IS
  'The bucket instances the claims give access to, with checksum and op count, and the last op id';

CREATE FUNCTION syncline.checkpoint(claims jsonb, client_id text) RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_checkpoint';
COMMENT ON FUNCTION syncline.checkpoint(jsonb, text) IS
  'checkpoint(claims), plus "write_checkpoint": the newest write checkpoint of that client of the claims'' subject published in the same snapshot (0 when none)';

CREATE FUNCTION syncline.bucket_data(bucket text, after bigint, upto bigint DEFAULT NULL,
                                     max_ops int DEFAULT 1000, max_bytes int DEFAULT NULL)
RETURNS TABLE (op_id bigint, op text, object_type text, object_id text, data text, checksum bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT p.op_id,
         CASE p.op WHEN 1 THEN 'PUT' WHEN 2 THEN 'REMOVE' WHEN 3 THEN 'MOVE' ELSE 'CLEAR' END,
         p.object_type, p.object_id, p.data, p.checksum
    FROM (SELECT o.*,
                 sum(32 + coalesce(octet_length(o.data), 0) + coalesce(octet_length(o.object_id), 0)
                        + coalesce(octet_length(o.object_type), 0))
                   OVER (ORDER BY o.op_id ROWS UNBOUNDED PRECEDING) AS running
            FROM (SELECT * FROM syncline_internal.ops o
                   WHERE o.bucket = $1 AND o.op_id > $2 AND ($3 IS NULL OR o.op_id <= $3)
                   ORDER BY o.op_id
                   LIMIT $4) o) p
   WHERE $5 IS NULL OR p.running - (32 + coalesce(octet_length(p.data), 0)
                                    + coalesce(octet_length(p.object_id), 0)
                                    + coalesce(octet_length(p.object_type), 0)) < $5
   ORDER BY p.op_id
$$;
COMMENT ON FUNCTION syncline.bucket_data(text, bigint, bigint, int, int) IS
  'Ops of one bucket instance with after < op_id <= upto, in op id order, at most max_ops and (past the first) about max_bytes';

CREATE FUNCTION syncline.changes(after bigint)
RETURNS TABLE (bucket text, checksum bigint, count bigint, last_op_id bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- The flushes since `after` name the changed buckets, unless `after` is
  -- older than the flushes kept: then every bucket is looked at.
  IF EXISTS (SELECT FROM syncline_internal.flushes f
              WHERE f.from_op_id <= $1 AND f.last_op_id > $1)
     OR NOT EXISTS (SELECT FROM syncline_internal.flushes f WHERE f.last_op_id > $1) THEN
    RETURN QUERY
      SELECT s.bucket, s.checksum, s.count, s.last_op_id
        FROM syncline_internal.bucket_state s
       WHERE s.bucket IN (SELECT DISTINCT unnest(f.buckets) FROM syncline_internal.flushes f
                           WHERE f.last_op_id > $1)
         AND s.last_op_id > $1
       ORDER BY s.bucket;
  ELSE
    RETURN QUERY
      SELECT s.bucket, s.checksum, s.count, s.last_op_id
        FROM syncline_internal.bucket_state s
       WHERE s.last_op_id > $1
       ORDER BY s.bucket;
  END IF;
END
$$;
COMMENT ON FUNCTION syncline.changes(bigint) IS
  'Bucket instances with ops newer than the given op id, with their current checksum and count';

CREATE FUNCTION syncline.compact() RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_compact';
COMMENT ON FUNCTION syncline.compact() IS
  'Turns superseded ops into MOVE and leading REMOVE/MOVE runs into one CLEAR in every bucket (the worker does this incrementally); checksums are unchanged';

CREATE FUNCTION syncline.prune_client_batches(older_than interval) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_prune_client_batches';
COMMENT ON FUNCTION syncline.prune_client_batches(interval) IS
  'Forgets the outcomes of client write batches older than this, keeping every client''s newest (the worker does this every syncline.compact_interval, keeping syncline.client_batch_retention)';

-- Writes -----------------------------------------------------------------------

CREATE FUNCTION syncline.apply_writes(claims jsonb, client_id text, batch jsonb) RETURNS jsonb
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'syncline_apply_writes';
COMMENT ON FUNCTION syncline.apply_writes(jsonb, text, jsonb) IS
  'Applies one client transaction atomically as syncline.write_role with the claims in scope, once per (client_id, seq); returns applied, rejected (with the failing op), a duplicate''s first outcome, or out_of_order';

-- A client batch's write checkpoint: NULL until a flush has published it;
-- then the op log's head in the caller's snapshot (any op id at or past the
-- flush that published the batch is one: its effects are in every checkpoint
-- from there on), or the op id a flusher before 0.3 stamped on the record.
-- A flush publishes every transaction committed in its snapshot, write
-- marker included, so no per-batch write is needed to know.
CREATE FUNCTION syncline_internal.published_write_checkpoint(recorded bigint, txid xid8)
RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce($1, (SELECT s.last_op_id FROM syncline_internal.state s
                        WHERE pg_catalog.pg_visible_in_snapshot($2, s.flushed_snapshot)))
$$;

CREATE FUNCTION syncline.write_checkpoint(client_id text, seq bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  checkpoint bigint;
BEGIN
  IF seq IS NULL THEN
    -- The newest published batch's (all unstamped ones resolve to the head).
    SELECT n.w INTO checkpoint
      FROM (SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid) AS w
              FROM syncline_internal.client_batches b
             WHERE b.client_id = $1 ORDER BY b.seq DESC) n
     WHERE n.w IS NOT NULL LIMIT 1;
    RETURN checkpoint;
  END IF;
  SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid) INTO checkpoint
    FROM syncline_internal.client_batches b
   WHERE b.client_id = $1 AND b.seq = $2;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF checkpoint IS NULL THEN
    -- Not flushed yet. Wait for a flush in progress (the flush lock), which
    -- often publishes it; flush ourselves only if it still has no checkpoint.
    -- Many callers at once thus share flushes instead of queueing one each.
    PERFORM pg_catalog.pg_advisory_xact_lock(1398361667, 1);
    SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid) INTO checkpoint
      FROM syncline_internal.client_batches b
     WHERE b.client_id = $1 AND b.seq = $2;
    IF checkpoint IS NULL THEN
      PERFORM syncline.flush();
      SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid) INTO checkpoint
        FROM syncline_internal.client_batches b
       WHERE b.client_id = $1 AND b.seq = $2;
    END IF;
  END IF;
  RETURN checkpoint;
END
$$;
COMMENT ON FUNCTION syncline.write_checkpoint(text, bigint) IS
  'An op id whose checkpoint includes the client''s batch seq (or its newest published batch): the op log''s head once the batch is published; NULL for an unknown batch';

-- What a gateway asks for a connection: the write checkpoint of the newest
-- batch of a client that belongs to the token's subject (NULL for an unknown
-- client or someone else's), flushing when that batch is not published yet.
CREATE FUNCTION syncline.client_write_checkpoint(claims jsonb, client_id text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  newest record;
BEGIN
  SELECT b.seq, b.subject INTO newest FROM syncline_internal.client_batches b
   WHERE b.client_id = $2 ORDER BY b.seq DESC LIMIT 1;
  IF NOT FOUND OR newest.subject IS DISTINCT FROM ($1 ->> 'sub') THEN
    RETURN NULL;
  END IF;
  RETURN syncline.write_checkpoint($2, newest.seq);
END
$$;
COMMENT ON FUNCTION syncline.client_write_checkpoint(jsonb, text) IS
  'The write checkpoint of the newest batch of a client owned by the claims'' subject (NULL otherwise); flushes if needed';

-- Many acks at once, for a gateway: the write checkpoints of these batches
-- that a flush has already published. Batches not yet flushed are left out
-- (the caller asks again after the next NOTIFY syncline) unless force is set,
-- which flushes once for all of them, as write_checkpoint does.
CREATE FUNCTION syncline.write_checkpoints(client_ids text[], seqs bigint[],
                                           force boolean DEFAULT false)
RETURNS TABLE (client_id text, seq bigint, write_checkpoint bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF pg_catalog.cardinality(client_ids) IS DISTINCT FROM pg_catalog.cardinality(seqs) THEN
    RAISE EXCEPTION 'client_ids and seqs must have the same length'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Correlated lookups, one primary-key probe per batch: a join's cached
  -- plan could be a scan of the whole table.
  IF force AND EXISTS (
      SELECT FROM unnest(client_ids, seqs) AS w(client_id, seq)
       WHERE (SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid)
                FROM syncline_internal.client_batches b
               WHERE b.client_id = w.client_id AND b.seq = w.seq) IS NULL) THEN
    PERFORM pg_catalog.pg_advisory_xact_lock(1398361667, 1);
    PERFORM syncline.flush();
  END IF;
  RETURN QUERY
    SELECT c.client_id, c.seq, c.write_checkpoint
      FROM (SELECT w.client_id, w.seq,
                   (SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid)
                      FROM syncline_internal.client_batches b
                     WHERE b.client_id = w.client_id AND b.seq = w.seq) AS write_checkpoint
              FROM unnest(client_ids, seqs) AS w(client_id, seq)) c
     WHERE c.write_checkpoint IS NOT NULL;
END
$$;
COMMENT ON FUNCTION syncline.write_checkpoints(text[], bigint[], boolean) IS
  'The write checkpoints of these (client_id, seq) batches that are published; with force, flushes first so every applied batch has one';

CREATE FUNCTION syncline.allow_writes(target regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT (pg_has_role(session_user, 'syncline_admin', 'USAGE')
          OR (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)) THEN
    RAISE EXCEPTION 'permission denied to open % for client writes', target
      USING ERRCODE = '42501', HINT = 'Only superusers and members of syncline_admin may.';
  END IF;
  INSERT INTO syncline_internal.writable_tables (relation, object_type)
  SELECT target, c.relname FROM pg_class c WHERE c.oid = target
  ON CONFLICT (relation) DO NOTHING;
END
$$;
COMMENT ON FUNCTION syncline.allow_writes(regclass) IS
  'Lets clients write a table that no bucket syncs (still subject to GRANTs and RLS for syncline.write_role)';

CREATE FUNCTION syncline.disallow_writes(target regclass) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ DELETE FROM syncline_internal.writable_tables WHERE relation = $1 $$;
COMMENT ON FUNCTION syncline.disallow_writes(regclass) IS
  'Withdraws syncline.allow_writes for a table';

CREATE FUNCTION syncline.set_write_handler(type text, schema_version text, handler regprocedure)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  fn pg_proc;
BEGIN
  SELECT * INTO fn FROM pg_proc WHERE oid = handler;
  IF fn.pronargs <> 1 OR fn.proargtypes[0] <> 'jsonb'::regtype OR fn.prorettype <> 'jsonb'::regtype THEN
    RAISE EXCEPTION 'write handler % must take one jsonb (the op) and return jsonb', handler
      USING ERRCODE = '42P13',
            HINT = 'Return the op to apply (rewritten for the current schema), or NULL when the handler applied it itself.';
  END IF;
  IF handler IS NULL THEN
    DELETE FROM syncline_internal.write_handlers w
     WHERE w.object_type = set_write_handler.type
       AND w.schema_version = set_write_handler.schema_version;
    RETURN;
  END IF;
  INSERT INTO syncline_internal.write_handlers (object_type, schema_version, handler)
  VALUES (set_write_handler.type, set_write_handler.schema_version, set_write_handler.handler)
  ON CONFLICT (object_type, schema_version) DO UPDATE SET handler = EXCLUDED.handler;
END
$$;
COMMENT ON FUNCTION syncline.set_write_handler(text, text, regprocedure) IS
  'Declares how ops of a type from clients built for an older schema version are applied';

-- SECURITY DEFINER functions run as the engine role, not as the superuser
-- that installed the extension: they touch only the internal tables (and
-- run parameter queries as their declarers).
ALTER FUNCTION syncline.flush() OWNER TO syncline_engine;
ALTER FUNCTION syncline.checkpoint(jsonb) OWNER TO syncline_engine;
ALTER FUNCTION syncline.checkpoint(jsonb, text) OWNER TO syncline_engine;
ALTER FUNCTION syncline.compact() OWNER TO syncline_engine;
ALTER FUNCTION syncline.prune_client_batches(interval) OWNER TO syncline_engine;
ALTER FUNCTION syncline.wait_for_initial_copy(int) OWNER TO syncline_engine;
ALTER FUNCTION syncline.bucket_data(text, bigint, bigint, int, int) OWNER TO syncline_engine;
ALTER FUNCTION syncline.changes(bigint) OWNER TO syncline_engine;
ALTER FUNCTION syncline.write_checkpoints(text[], bigint[], boolean) OWNER TO syncline_engine;
ALTER FUNCTION syncline.write_checkpoint(text, bigint) OWNER TO syncline_engine;
ALTER FUNCTION syncline.client_write_checkpoint(jsonb, text) OWNER TO syncline_engine;
ALTER FUNCTION syncline_internal.published_write_checkpoint(bigint, xid8) OWNER TO syncline_engine;
REVOKE ALL ON FUNCTION syncline_internal.published_write_checkpoint(bigint, xid8) FROM PUBLIC;
ALTER FUNCTION syncline.allow_writes(regclass) OWNER TO syncline_engine;
ALTER FUNCTION syncline.disallow_writes(regclass) OWNER TO syncline_engine;
ALTER FUNCTION syncline.set_write_handler(text, text, regprocedure) OWNER TO syncline_engine;

REVOKE ALL ON FUNCTION syncline.apply_writes(jsonb, text, jsonb),
  syncline.write_checkpoint(text, bigint), syncline.client_write_checkpoint(jsonb, text),
  syncline.write_checkpoints(text[], bigint[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.apply_writes(jsonb, text, jsonb),
  syncline.write_checkpoint(text, bigint), syncline.client_write_checkpoint(jsonb, text),
  syncline.write_checkpoints(text[], bigint[], boolean) TO syncline_gateway;
REVOKE ALL ON FUNCTION syncline.allow_writes(regclass), syncline.disallow_writes(regclass),
  syncline.set_write_handler(text, text, regprocedure) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.allow_writes(regclass), syncline.disallow_writes(regclass),
  syncline.set_write_handler(text, text, regprocedure) TO syncline_admin;

REVOKE ALL ON FUNCTION syncline.flush(), syncline.checkpoint(jsonb), syncline.checkpoint(jsonb, text),
  syncline.bucket_data(text, bigint, bigint, int, int), syncline.changes(bigint),
  syncline.compact(), syncline.wait_for_initial_copy(int),
  syncline.prune_client_batches(interval)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.flush(), syncline.checkpoint(jsonb), syncline.checkpoint(jsonb, text),
  syncline.bucket_data(text, bigint, bigint, int, int), syncline.changes(bigint)
  TO syncline_gateway;
GRANT EXECUTE ON FUNCTION syncline.compact(), syncline.wait_for_initial_copy(int),
  syncline.prune_client_batches(interval) TO syncline_admin;
REVOKE ALL ON FUNCTION syncline.create_bucket(text, text, text[]), syncline.drop_bucket(text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.create_bucket(text, text, text[]), syncline.drop_bucket(text)
  TO syncline_admin;

-- Schema changes that would break a rule --------------------------------------
-- A data query names columns and a primary key; dropping or retyping one, or
-- dropping a synced table, would make every later write to the table fail in
-- the row trigger or change every row's id. Such DDL is refused instead,
-- naming the rule, until the bucket is changed. Syncline's triggers cannot be
-- dropped or disabled behind its back (their ops would be lost silently); a
-- trigger of Syncline created by a plain CREATE TRIGGER (pg_restore does this)
-- rebuilds the op log of the table from its rows.

CREATE FUNCTION syncline_internal.check_rules(table_oid oid) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'syncline_check_rules';

CREATE FUNCTION syncline_internal.check_parameter_queries(relation regclass) RETURNS void
LANGUAGE c AS 'MODULE_PATHNAME', 'syncline_check_parameter_queries';

CREATE FUNCTION syncline_internal.attach_trigger(trigger_oid oid) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'syncline_attach_trigger';

CREATE FUNCTION syncline_internal.guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cmd record;
  others boolean := false;
BEGIN
  FOR cmd IN SELECT DISTINCT c.classid, c.objid, c.command_tag FROM pg_event_trigger_ddl_commands() c
  LOOP
    IF cmd.classid = 'pg_class'::regclass THEN
      IF EXISTS (SELECT FROM syncline_internal.data_queries q WHERE q.relation = cmd.objid) THEN
        PERFORM syncline_internal.check_rules(cmd.objid);
      END IF;
      IF EXISTS (SELECT FROM syncline_internal.parameter_tables p WHERE p.relation = cmd.objid) THEN
        PERFORM syncline_internal.check_parameter_queries(cmd.objid);
      END IF;
      IF EXISTS (SELECT FROM pg_trigger t
                  WHERE t.tgrelid = cmd.objid AND t.tgenabled <> 'A'
                    AND t.tgfoid IN ('syncline_internal.row_trigger'::regproc,
                                     'syncline_internal.truncate_trigger'::regproc,
                                     'syncline_internal.parameter_trigger'::regproc)) THEN
        RAISE EXCEPTION 'the sync triggers of table % must stay enabled', cmd.objid::regclass
          USING ERRCODE = '55000',
                DETAIL = 'Writes made while they are disabled would never reach clients.',
                HINT = 'Drop the buckets that use the table instead (syncline.drop_bucket).';
      END IF;
      IF cmd.command_tag = 'ALTER VIEW' THEN
        others := true;
      END IF;
    ELSIF cmd.classid = 'pg_trigger'::regclass THEN
      PERFORM syncline_internal.attach_trigger(cmd.objid);
    ELSE
      others := true;  -- a function, type or schema some parameter query may use
    END IF;
  END LOOP;
  IF others THEN
    PERFORM syncline_internal.check_parameter_queries(NULL);
  END IF;
END
$$;

CREATE FUNCTION syncline_internal.guard_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  dropped record;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() d
              WHERE d.object_type = 'extension' OR d.objid = 'syncline_internal.data_queries'::regclass) THEN
    RETURN;  -- the extension itself is going away
  END IF;
  FOR dropped IN
    SELECT d.object_identity, q.bucket_name FROM pg_event_trigger_dropped_objects() d
      JOIN syncline_internal.data_queries q ON q.relation = d.objid
     WHERE d.object_type = 'table'
    UNION
    SELECT d.object_identity, p.bucket_name FROM pg_event_trigger_dropped_objects() d
      JOIN syncline_internal.parameter_tables p ON p.relation = d.objid
     WHERE d.object_type = 'table'
  LOOP
    RAISE EXCEPTION 'table % is used by sync rule "%"', dropped.object_identity, dropped.bucket_name
      USING ERRCODE = '2BP01',
            HINT = format('Drop the bucket first: SELECT syncline.drop_bucket(%L);', dropped.bucket_name);
  END LOOP;
  FOR dropped IN
    SELECT d.object_identity FROM pg_event_trigger_dropped_objects() d
     WHERE d.object_type = 'trigger' AND d.original
       AND d.object_identity ~ '^syncline_(row|truncate|parameters|parameters_truncate) on '
  LOOP
    RAISE EXCEPTION 'trigger % belongs to Syncline', dropped.object_identity
      USING ERRCODE = '2BP01',
            DETAIL = 'Writes made without it would never reach clients.',
            HINT = 'Drop the buckets that use the table instead (syncline.drop_bucket).';
  END LOOP;
  IF EXISTS (SELECT FROM pg_event_trigger_dropped_objects() d
              WHERE d.object_type NOT IN ('trigger', 'index', 'sequence', 'table constraint',
                                          'default value', 'policy', 'rule', 'toast table')) THEN
    PERFORM syncline_internal.check_parameter_queries(NULL);
  END IF;
END
$$;

CREATE EVENT TRIGGER syncline_guard_ddl ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER FUNCTION', 'ALTER SCHEMA', 'ALTER TYPE',
               'ALTER DOMAIN', 'CREATE TRIGGER', 'ALTER TRIGGER')
  EXECUTE FUNCTION syncline_internal.guard_ddl();
CREATE EVENT TRIGGER syncline_guard_drop ON sql_drop
  EXECUTE FUNCTION syncline_internal.guard_drop();

ALTER FUNCTION syncline_internal.guard_ddl() OWNER TO syncline_engine;
ALTER FUNCTION syncline_internal.guard_drop() OWNER TO syncline_engine;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA syncline_internal FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA syncline_internal TO syncline_engine;
GRANT EXECUTE ON FUNCTION syncline_internal.row_trigger(), syncline_internal.truncate_trigger(),
  syncline_internal.parameter_trigger() TO syncline_admin;
