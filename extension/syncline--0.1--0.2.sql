-- Syncline 0.1 -> 0.2: least privilege (the syncline_engine role, pinned
-- search_path, canonical rules), client ids bound to users, catalog
-- references that survive pg_dump, incremental compaction.
\echo Use "ALTER EXTENSION syncline UPDATE TO '0.2'" to load this file. \quit

-- The DDL guards of 0.1 read columns renamed below: off while we change them.
DROP EVENT TRIGGER syncline_guard_ddl;
DROP EVENT TRIGGER syncline_guard_drop;
DROP FUNCTION syncline_internal.guard_ddl();
DROP FUNCTION syncline_internal.guard_drop();

DO $roles$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'syncline_engine') THEN
    CREATE ROLE syncline_engine NOLOGIN NOINHERIT;
  END IF;
END
$roles$;
GRANT USAGE ON SCHEMA syncline_internal TO syncline_engine;

-- Catalog references by type, so pg_dump writes names and restore finds them.
ALTER TABLE syncline_internal.bucket_definitions
  ADD COLUMN parameter_query_source text,
  ALTER COLUMN definer TYPE regrole USING definer::regrole;
ALTER TABLE syncline_internal.data_queries RENAME COLUMN table_oid TO relation;
ALTER TABLE syncline_internal.data_queries
  ALTER COLUMN relation TYPE regclass USING relation::regclass,
  ADD COLUMN filter text,
  ADD COLUMN key_columns text[];
ALTER TABLE syncline_internal.parameter_tables RENAME COLUMN table_oid TO relation;
ALTER TABLE syncline_internal.parameter_tables
  ALTER COLUMN relation TYPE regclass USING relation::regclass;
ALTER TABLE syncline_internal.writable_tables RENAME COLUMN table_oid TO relation;
ALTER TABLE syncline_internal.writable_tables
  ALTER COLUMN relation TYPE regclass USING relation::regclass;
ALTER TABLE syncline_internal.snapshot_jobs ADD COLUMN reset boolean NOT NULL DEFAULT false;
ALTER TABLE syncline_internal.bucket_state ADD COLUMN compacted_op_id bigint NOT NULL DEFAULT 0;
-- Batches recorded by 0.1 have no subject: each client's next batch binds it.
ALTER TABLE syncline_internal.client_batches ADD COLUMN subject text NOT NULL DEFAULT '';
ALTER TABLE syncline_internal.client_batches ALTER COLUMN subject DROP DEFAULT;
ALTER TABLE syncline_internal.state ADD COLUMN origin text;
UPDATE syncline_internal.state
   SET origin = (SELECT system_identifier FROM pg_catalog.pg_control_system())::text || ':' ||
                (SELECT oid FROM pg_catalog.pg_database
                  WHERE datname = pg_catalog.current_database())::text;

-- Staged ops are ordered by the WAL insert position now: no sequence; a
-- transaction stages many ops as chunk rows.
DROP SEQUENCE syncline_internal.pending_seq;
ALTER TABLE syncline_internal.pending ADD COLUMN chunk bytea;
-- Chunks are compressed and kept inside their page (see staging.cpp).
ALTER TABLE syncline_internal.pending ALTER COLUMN chunk SET STORAGE MAIN;
DO $lz4$
BEGIN
  ALTER TABLE syncline_internal.pending ALTER COLUMN chunk SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  NULL;
END
$lz4$;
CREATE FUNCTION syncline_internal.chunk_ops(chunk bytea)
RETURNS TABLE (ord int, op smallint, bucket text, object_type text, object_id text, data text,
               checksum bigint)
LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'syncline_chunk_ops';
-- Flusher updates of bucket state are HOT: only the key is indexed.
DROP INDEX syncline_internal.bucket_state_last_op_id_idx;
ALTER TABLE syncline_internal.bucket_state SET (fillfactor = 50);
CREATE TABLE syncline_internal.flushes (
  last_op_id bigint PRIMARY KEY,
  from_op_id bigint NOT NULL,
  buckets text[] COLLATE "C" NOT NULL,
  flushed_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON syncline_internal.flushes FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA syncline_internal TO syncline_engine;

-- Rules in canonical form, and 0.2's triggers.
CREATE FUNCTION syncline_internal.upgrade_rules_0_2() RETURNS void
LANGUAGE c AS 'MODULE_PATHNAME', 'syncline_upgrade_rules_0_2';
SELECT syncline_internal.upgrade_rules_0_2();
DROP FUNCTION syncline_internal.upgrade_rules_0_2();
ALTER TABLE syncline_internal.data_queries ALTER COLUMN key_columns SET NOT NULL;
ALTER INDEX syncline_internal.data_queries_table_oid_idx RENAME TO data_queries_relation_idx;
ALTER TABLE syncline_internal.bucket_definitions DROP COLUMN search_path;

SELECT pg_catalog.pg_extension_config_dump('syncline_internal.writable_tables', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.write_handlers', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.client_batches', '');
SELECT pg_catalog.pg_extension_config_dump('syncline_internal.state', '');

-- Functions -------------------------------------------------------------------

COMMENT ON FUNCTION syncline.claims() IS
  'Verified token claims of the current sync or write request (NULL outside one)';

CREATE OR REPLACE FUNCTION syncline.create_bucket(name text, parameters text, data text[]) RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'syncline_create_bucket';

CREATE FUNCTION syncline.wait_for_initial_copy(timeout_ms int DEFAULT 30000) RETURNS boolean
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_wait_for_initial_copy';
COMMENT ON FUNCTION syncline.wait_for_initial_copy(int) IS
  'Waits until every declared bucket''s initial copy is published (true) or the timeout passes (false)';

DROP FUNCTION syncline.bucket_data(text, bigint, bigint, int);
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

DROP FUNCTION syncline.compact();
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

DROP FUNCTION syncline.changes(bigint);
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
REVOKE ALL ON FUNCTION syncline.changes(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.changes(bigint) TO syncline_gateway;

CREATE OR REPLACE FUNCTION syncline.allow_writes(target regclass) RETURNS void
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

CREATE OR REPLACE FUNCTION syncline.disallow_writes(target regclass) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ DELETE FROM syncline_internal.writable_tables WHERE relation = $1 $$;

CREATE FUNCTION syncline.checkpoint(claims jsonb, client_id text) RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'syncline_checkpoint';
COMMENT ON FUNCTION syncline.checkpoint(jsonb, text) IS
  'checkpoint(claims), plus "write_checkpoint": the newest write checkpoint of that client of the claims'' subject recorded in the same snapshot (0 when none)';

-- Owners, grants -------------------------------------------------------------

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
ALTER FUNCTION syncline.allow_writes(regclass) OWNER TO syncline_engine;
ALTER FUNCTION syncline.disallow_writes(regclass) OWNER TO syncline_engine;
ALTER FUNCTION syncline.set_write_handler(text, text, regprocedure) OWNER TO syncline_engine;

REVOKE ALL ON FUNCTION syncline.client_write_checkpoint(jsonb, text),
  syncline.checkpoint(jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.client_write_checkpoint(jsonb, text),
  syncline.checkpoint(jsonb, text) TO syncline_gateway;
REVOKE ALL ON FUNCTION syncline.bucket_data(text, bigint, bigint, int, int), syncline.compact(),
  syncline.wait_for_initial_copy(int), syncline.prune_client_batches(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION syncline.bucket_data(text, bigint, bigint, int, int) TO syncline_gateway;
GRANT EXECUTE ON FUNCTION syncline.compact(), syncline.wait_for_initial_copy(int),
  syncline.prune_client_batches(interval) TO syncline_admin;

-- Schema changes that would break a rule (see syncline--0.2.sql) --------------

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
