-- Syncline 0.1: sync rules, commit-ordered bucket op log, checkpoints.
\echo Use "CREATE EXTENSION syncline" to load this file. \quit

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
END
$roles$;

CREATE SCHEMA syncline;
CREATE SCHEMA syncline_internal;
GRANT USAGE ON SCHEMA syncline TO PUBLIC;
COMMENT ON SCHEMA syncline IS 'Syncline public API';
COMMENT ON SCHEMA syncline_internal IS 'Syncline internals: rules catalog and op log (do not write directly)';

-- Bucket definitions: one row per syncline.create_bucket().
CREATE TABLE syncline_internal.bucket_definitions (
  name text PRIMARY KEY,
  parameter_query text,                 -- NULL: one global instance name[]
  parameter_names text[] NOT NULL,
  parameter_types regtype[] NOT NULL,
  definer oid NOT NULL,                 -- parameter queries run as this role
  search_path text,                     -- names in rules resolve as when declared
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Data queries: which rows of which table land in which bucket instance.
CREATE TABLE syncline_internal.data_queries (
  bucket_name text NOT NULL REFERENCES syncline_internal.bucket_definitions ON DELETE CASCADE,
  position int NOT NULL,
  table_oid oid NOT NULL,
  object_type text NOT NULL,
  query text NOT NULL,
  PRIMARY KEY (bucket_name, position)
);
CREATE INDEX ON syncline_internal.data_queries (table_oid);

-- Tables read by parameter queries: a change there may change who gets which bucket.
CREATE TABLE syncline_internal.parameter_tables (
  bucket_name text NOT NULL REFERENCES syncline_internal.bucket_definitions ON DELETE CASCADE,
  table_oid oid NOT NULL,
  PRIMARY KEY (bucket_name, table_oid)
);

-- Initial snapshot of rows that existed when a data query was declared,
-- copied in block ranges by the flusher without blocking writers.
CREATE TABLE syncline_internal.snapshot_jobs (
  bucket_name text NOT NULL,
  position int NOT NULL,
  next_block bigint NOT NULL,
  end_block bigint NOT NULL,
  PRIMARY KEY (bucket_name, position),
  FOREIGN KEY (bucket_name, position) REFERENCES syncline_internal.data_queries ON DELETE CASCADE
);

-- Ops written by row triggers, not yet given their final op id. `seq` orders
-- ops of one row across transactions (taken under the row lock). op: 1 PUT,
-- 2 REMOVE; 10 parameter-input change (object_id = table oid); 11 write marker.
CREATE TABLE syncline_internal.pending (
  seq bigint NOT NULL,
  op smallint NOT NULL,
  bucket text COLLATE "C",
  object_type text,
  object_id text,
  data text,
  checksum bigint
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
CREATE SEQUENCE syncline_internal.pending_seq CACHE 1;

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
CREATE TABLE syncline_internal.bucket_state (
  bucket text COLLATE "C" PRIMARY KEY,
  checksum bigint NOT NULL,
  count bigint NOT NULL,
  last_op_id bigint NOT NULL
);
CREATE INDEX ON syncline_internal.bucket_state (last_op_id);

-- Client write batches already applied (write path): (client_id, seq) is
-- applied once; write_checkpoint is the first op id that includes it. A
-- client's newest row is its last seq; batches of one client are serialized
-- by a transaction advisory lock on (1398361668, hash of client_id).
CREATE TABLE syncline_internal.client_batches (
  client_id text NOT NULL,
  seq bigint NOT NULL,
  outcome jsonb NOT NULL,
  write_checkpoint bigint,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (client_id, seq)
);

-- Tables no bucket syncs that clients may still write (explicit opt-in).
CREATE TABLE syncline_internal.writable_tables (
  table_oid oid PRIMARY KEY,
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

-- The op id counter (a single row). Flushes serialize on the transaction
-- advisory lock (1398361667, 1), held until their commit is visible.
CREATE TABLE syncline_internal.state (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  last_op_id bigint NOT NULL DEFAULT 0
);
INSERT INTO syncline_internal.state DEFAULT VALUES;

SELECT pg_catalog.pg_extension_config_dump('syncline_internal.bucket_definitions', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.data_queries', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.parameter_tables', '');

REVOKE ALL ON ALL TABLES IN SCHEMA syncline_internal FROM PUBLIC;

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

-- No SET search_path here: rules resolve names with the caller's search_path,
-- which is recorded with the bucket.
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

CREATE FUNCTION syncline.flush() RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_flush';
COMMENT ON FUNCTION syncline.flush() IS
  'Gives committed staged ops their final op ids now (the background worker does this continuously); returns how many';

CREATE FUNCTION syncline.checkpoint(claims jsonb) RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_checkpoint';
COMMENT ON FUNCTION syncline.checkpoint(jsonb) IS
  'The bucket instances the claims give access to, with checksum and op count, and the last op id';

CREATE FUNCTION syncline.bucket_data(bucket text, after bigint, upto bigint DEFAULT NULL,
                                     max_ops int DEFAULT 1000)
RETURNS TABLE (op_id bigint, op text, object_type text, object_id text, data text, checksum bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT o.op_id,
         CASE o.op WHEN 1 THEN 'PUT' WHEN 2 THEN 'REMOVE' WHEN 3 THEN 'MOVE' ELSE 'CLEAR' END,
         o.object_type, o.object_id, o.data, o.checksum
    FROM syncline_internal.ops o
   WHERE o.bucket = $1 AND o.op_id > $2 AND ($3 IS NULL OR o.op_id <= $3)
   ORDER BY o.op_id
   LIMIT $4
$$;
COMMENT ON FUNCTION syncline.bucket_data(text, bigint, bigint, int) IS
  'Ops of one bucket instance with after < op_id <= upto, in op id order, at most max_ops';

CREATE FUNCTION syncline.changes(after bigint)
RETURNS TABLE (bucket text, checksum bigint, count bigint, last_op_id bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
  SELECT s.bucket, s.checksum, s.count, s.last_op_id
    FROM syncline_internal.bucket_state s
   WHERE s.last_op_id > $1
   ORDER BY s.bucket
$$;
COMMENT ON FUNCTION syncline.changes(bigint) IS
  'Bucket instances with ops newer than the given op id, with their current checksum and count';

CREATE FUNCTION syncline.compact() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  moved bigint;
  cleared bigint;
BEGIN
  -- The flush lock (see flush.cpp): no flush changes bucket_state while we do.
  PERFORM pg_catalog.pg_advisory_xact_lock(1398361667, 1);

  -- A PUT or REMOVE followed by a later op on the same object carries nothing
  -- a client needs: keep its place and checksum, drop its data.
  WITH superseded AS (
    SELECT bucket, op_id
      FROM (SELECT o.bucket, o.op_id,
                   row_number() OVER (PARTITION BY o.bucket, o.object_type, o.object_id
                                      ORDER BY o.op_id DESC) AS newer
              FROM syncline_internal.ops o
             WHERE o.op IN (1, 2, 3)) x
     WHERE x.newer > 1)
  UPDATE syncline_internal.ops o SET op = 3, data = NULL
    FROM superseded s
   WHERE o.bucket = s.bucket AND o.op_id = s.op_id AND o.op <> 3;
  GET DIAGNOSTICS moved = ROW_COUNT;

  -- A bucket's leading run of REMOVE/MOVE/CLEAR ops becomes one CLEAR at the
  -- run's last op id that carries the run's checksum.
  WITH first_put AS (
    SELECT o.bucket, min(o.op_id) FILTER (WHERE o.op = 1) AS op_id
      FROM syncline_internal.ops o GROUP BY o.bucket),
  runs AS (
    SELECT o.bucket, max(o.op_id) AS last_op, sum(o.checksum) % 4294967296 AS checksum,
           count(*) AS n
      FROM syncline_internal.ops o JOIN first_put f USING (bucket)
     WHERE f.op_id IS NULL OR o.op_id < f.op_id
     GROUP BY o.bucket
    HAVING count(*) > 1 OR bool_or(o.op <> 4)),
  removed AS (
    DELETE FROM syncline_internal.ops o USING runs r
     WHERE o.bucket = r.bucket AND o.op_id < r.last_op
    RETURNING o.bucket),
  cleared AS (
    UPDATE syncline_internal.ops o
       SET op = 4, object_type = NULL, object_id = NULL, data = NULL, checksum = r.checksum
      FROM runs r
     WHERE o.bucket = r.bucket AND o.op_id = r.last_op
    RETURNING o.bucket)
  UPDATE syncline_internal.bucket_state s SET count = s.count - r.n + 1
    FROM runs r WHERE s.bucket = r.bucket;
  GET DIAGNOSTICS cleared = ROW_COUNT;
  RETURN moved + cleared;
END
$$;
COMMENT ON FUNCTION syncline.compact() IS
  'Turns superseded ops into MOVE and leading REMOVE/MOVE runs into one CLEAR; checksums are unchanged';

-- Writes -----------------------------------------------------------------------

CREATE FUNCTION syncline.apply_writes(claims jsonb, client_id text, batch jsonb) RETURNS jsonb
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'syncline_apply_writes';
COMMENT ON FUNCTION syncline.apply_writes(jsonb, text, jsonb) IS
  'Applies one client transaction atomically as syncline.write_role with the claims in scope, once per (client_id, seq); returns applied, rejected (with the failing op), a duplicate''s first outcome, or out_of_order';

CREATE FUNCTION syncline.write_checkpoint(client_id text, seq bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  checkpoint bigint;
BEGIN
  IF seq IS NULL THEN
    SELECT b.write_checkpoint INTO checkpoint FROM syncline_internal.client_batches b
     WHERE b.client_id = $1 AND b.write_checkpoint IS NOT NULL
     ORDER BY b.seq DESC LIMIT 1;
    RETURN checkpoint;
  END IF;
  SELECT b.write_checkpoint INTO checkpoint FROM syncline_internal.client_batches b
   WHERE b.client_id = $1 AND b.seq = $2;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF checkpoint IS NULL THEN
    -- Not flushed yet. Wait for a flush in progress (the flush lock), which
    -- often publishes it; flush ourselves only if it still has no checkpoint.
    -- Many callers at once thus share flushes instead of queueing one each.
    PERFORM pg_catalog.pg_advisory_xact_lock(1398361667, 1);
    SELECT b.write_checkpoint INTO checkpoint FROM syncline_internal.client_batches b
     WHERE b.client_id = $1 AND b.seq = $2;
    IF checkpoint IS NULL THEN
      PERFORM syncline.flush();
      SELECT b.write_checkpoint INTO checkpoint FROM syncline_internal.client_batches b
       WHERE b.client_id = $1 AND b.seq = $2;
    END IF;
  END IF;
  RETURN checkpoint;
END
$$;
COMMENT ON FUNCTION syncline.write_checkpoint(text, bigint) IS
  'The first op id whose checkpoint includes the client''s batch seq (or its latest batch); NULL for an unknown batch';

-- Many acks at once, for a gateway: the write checkpoints the flusher has
-- already recorded for these batches. Batches not yet flushed are left out
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
       WHERE (SELECT b.write_checkpoint FROM syncline_internal.client_batches b
               WHERE b.client_id = w.client_id AND b.seq = w.seq) IS NULL) THEN
    PERFORM pg_catalog.pg_advisory_xact_lock(1398361667, 1);
    PERFORM syncline.flush();
  END IF;
  RETURN QUERY
    SELECT c.client_id, c.seq, c.write_checkpoint
      FROM (SELECT w.client_id, w.seq,
                   (SELECT b.write_checkpoint FROM syncline_internal.client_batches b
                     WHERE b.client_id = w.client_id AND b.seq = w.seq) AS write_checkpoint
              FROM unnest(client_ids, seqs) AS w(client_id, seq)) c
     WHERE c.write_checkpoint IS NOT NULL;
END
$$;
COMMENT ON FUNCTION syncline.write_checkpoints(text[], bigint[], boolean) IS
  'The write checkpoints already recorded for these (client_id, seq) batches; with force, flushes first so every applied batch has one';

CREATE FUNCTION syncline.allow_writes(target regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT (pg_has_role(session_user, 'syncline_admin', 'USAGE')
          OR (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)) THEN
    RAISE EXCEPTION 'permission denied to open % for client writes', target
      USING ERRCODE = '42501', HINT = 'Only superusers and members of syncline_admin may.';
  END IF;
  INSERT INTO syncline_internal.writable_tables (table_oid, object_type)
  SELECT target, c.relname FROM pg_class c WHERE c.oid = target
  ON CONFLICT (table_oid) DO NOTHING;
END
$$;
COMMENT ON FUNCTION syncline.allow_writes(regclass) IS
  'Lets clients write a table that no bucket syncs (still subject to GRANTs and RLS for syncline.write_role)';

CREATE FUNCTION syncline.disallow_writes(target regclass) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ DELETE FROM syncline_internal.writable_tables WHERE table_oid = $1 $$;
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

REVOKE ALL ON FUNCTION syncline.apply_writes(jsonb, text, jsonb),
  syncline.write_checkpoint(text, bigint),
  syncline.write_checkpoints(text[], bigint[], boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.apply_writes(jsonb, text, jsonb),
  syncline.write_checkpoint(text, bigint),
  syncline.write_checkpoints(text[], bigint[], boolean) TO syncline_gateway;
REVOKE ALL ON FUNCTION syncline.allow_writes(regclass), syncline.disallow_writes(regclass),
  syncline.set_write_handler(text, text, regprocedure) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.allow_writes(regclass), syncline.disallow_writes(regclass),
  syncline.set_write_handler(text, text, regprocedure) TO syncline_admin;

REVOKE ALL ON FUNCTION syncline.flush(), syncline.checkpoint(jsonb),
  syncline.bucket_data(text, bigint, bigint, int), syncline.changes(bigint), syncline.compact()
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.flush(), syncline.checkpoint(jsonb),
  syncline.bucket_data(text, bigint, bigint, int), syncline.changes(bigint)
  TO syncline_gateway;
GRANT EXECUTE ON FUNCTION syncline.compact() TO syncline_admin;
REVOKE ALL ON FUNCTION syncline.create_bucket(text, text, text[]), syncline.drop_bucket(text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.create_bucket(text, text, text[]), syncline.drop_bucket(text)
  TO syncline_admin;

-- Schema changes that would break a rule --------------------------------------
-- A data query names columns; dropping or retyping one (or dropping a synced
-- table) would make every later write to the table fail in the row trigger.
-- Such DDL is refused instead, naming the rule, until the bucket is changed.

CREATE FUNCTION syncline_internal.check_rules(table_oid oid) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'syncline_check_rules';

CREATE FUNCTION syncline_internal.guard_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cmd record;
BEGIN
  FOR cmd IN SELECT DISTINCT c.objid FROM pg_event_trigger_ddl_commands() c
              WHERE c.classid = 'pg_class'::regclass
                AND c.objid IN (SELECT table_oid FROM syncline_internal.data_queries)
  LOOP
    PERFORM syncline_internal.check_rules(cmd.objid);
  END LOOP;
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
      JOIN syncline_internal.data_queries q ON q.table_oid = d.objid
     WHERE d.object_type = 'table'
    UNION
    SELECT d.object_identity, p.bucket_name FROM pg_event_trigger_dropped_objects() d
      JOIN syncline_internal.parameter_tables p ON p.table_oid = d.objid
     WHERE d.object_type = 'table'
  LOOP
    RAISE EXCEPTION 'table % is used by sync rule "%"', dropped.object_identity, dropped.bucket_name
      USING ERRCODE = '2BP01',
            HINT = format('Drop the bucket first: SELECT syncline.drop_bucket(%L);', dropped.bucket_name);
  END LOOP;
END
$$;

CREATE EVENT TRIGGER syncline_guard_ddl ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION syncline_internal.guard_ddl();
CREATE EVENT TRIGGER syncline_guard_drop ON sql_drop
  EXECUTE FUNCTION syncline_internal.guard_drop();
