-- ALTER EXTENSION syncline UPDATE from 0.1 through 0.2 to 0.3 gives exactly
-- what a fresh install has (which, as in contrib modules, runs 0.2's script
-- and then the 0.2 -> 0.3 update), and carries a 0.1 database's rules,
-- triggers and write bookkeeping over into 0.2's form, then 0.3's. In
-- between, this build's library serves the 0.2 SQL (as it does until a
-- database is updated).
CREATE FUNCTION pg_temp.extension_shape() RETURNS TABLE (kind text, name text, detail text)
LANGUAGE sql AS $$
  SELECT 'member', pg_describe_object(d.classid, d.objid, 0), NULL
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
   WHERE e.extname = 'syncline' AND d.deptype = 'e'
  UNION ALL
  SELECT 'column', c.relname || '.' || a.attname,
         format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
         || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
         || coalesce(' collate ' || co.collname, '')
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
    LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
   WHERE c.relnamespace = 'syncline_internal'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'relation', c.relname, c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' '
         || coalesce(array_to_string(c.reloptions, ','), '')
    FROM pg_class c WHERE c.relnamespace = 'syncline_internal'::regnamespace
  UNION ALL
  SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
   WHERE c.relnamespace = 'syncline_internal'::regnamespace
  UNION ALL
  SELECT 'constraint', conrelid::regclass || '.' || conname, pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'syncline_internal'::regnamespace
  UNION ALL
  SELECT 'function', p.oid::regprocedure::text,
         concat_ws(' ', p.prosecdef, p.provolatile, p.proowner::regrole, p.proconfig::text,
                   p.proacl::text, md5(p.prosrc), obj_description(p.oid, 'pg_proc'),
                   pg_get_function_arguments(p.oid), pg_get_function_result(p.oid))
    FROM pg_proc p WHERE p.pronamespace IN ('syncline'::regnamespace, 'syncline_internal'::regnamespace)
  UNION ALL
  SELECT 'event trigger', evtname, evtevent || ' ' || evttags::text || ' ' || evtfoid::regproc
    FROM pg_event_trigger WHERE evtname LIKE 'syncline%'
  UNION ALL
  SELECT 'config table', unnest(extconfig)::regclass::text, NULL
    FROM pg_extension WHERE extname = 'syncline'
  UNION ALL
  SELECT 'schema', nspname, nspacl::text FROM pg_namespace WHERE nspname LIKE 'syncline%'
$$;
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.extension_shape();
SELECT kind, count(*) FROM fresh GROUP BY kind ORDER BY kind;
SELECT extversion FROM pg_extension WHERE extname = 'syncline';

-- A database as 0.1 left it: rules, triggers, ops, write bookkeeping.
DROP EXTENSION syncline;
CREATE EXTENSION syncline VERSION '0.1';
CREATE SCHEMA app;
CREATE TABLE app.lists (id text PRIMARY KEY, owner text NOT NULL, archived bool DEFAULT false);
CREATE TABLE app.todos (id int PRIMARY KEY, list_id text NOT NULL, title text, done bool DEFAULT false);
GRANT USAGE ON SCHEMA app TO syncline_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON app.todos TO syncline_writer;
INSERT INTO app.lists VALUES ('L1', 'alice'), ('L2', 'bob');
INSERT INTO app.todos VALUES (1, 'L1', 'milk'), (2, 'L1', 'eggs'), (3, 'L2', 'rake');
INSERT INTO syncline_internal.bucket_definitions
  (name, parameter_query, parameter_names, parameter_types, definer, search_path)
VALUES ('by_list', 'SELECT id AS list_id FROM lists WHERE owner = syncline.user_id() AND NOT archived',
        '{list_id}', '{text}', 'postgres'::regrole, 'app, public');
INSERT INTO syncline_internal.data_queries (bucket_name, position, table_oid, object_type, query)
VALUES ('by_list', 1, 'app.todos'::regclass, 'todos',
        'SELECT * FROM todos WHERE list_id = bucket.list_id AND NOT done AND title <> ''''');
INSERT INTO syncline_internal.parameter_tables VALUES ('by_list', 'app.lists'::regclass);
CREATE TRIGGER syncline_row AFTER INSERT OR UPDATE OR DELETE ON app.todos
  FOR EACH ROW EXECUTE FUNCTION syncline_internal.row_trigger();
CREATE TRIGGER syncline_truncate BEFORE TRUNCATE ON app.todos
  FOR EACH STATEMENT EXECUTE FUNCTION syncline_internal.truncate_trigger();
CREATE TRIGGER syncline_parameters AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON app.lists
  FOR EACH STATEMENT EXECUTE FUNCTION syncline_internal.parameter_trigger();
INSERT INTO syncline_internal.ops VALUES ('by_list["L1"]', 1, 1, 'todos', '1', '{"id":1}', 17),
  ('by_list["L1"]', 2, 1, 'todos', '2', '{"id":2}', 19);
INSERT INTO syncline_internal.bucket_state VALUES ('by_list["L1"]', 36, 2, 2);
UPDATE syncline_internal.state SET last_op_id = 2;
INSERT INTO syncline_internal.client_batches (client_id, seq, outcome, write_checkpoint)
VALUES ('phone-1', 1, '{"status": "applied", "seq": 1, "ops": 1}', 2);

ALTER EXTENSION syncline UPDATE TO '0.2';
SELECT extversion FROM pg_extension WHERE extname = 'syncline';

-- The rule, resolved under the search_path it was declared with, now stored
-- schema-qualified; the triggers in 0.2's form.
SELECT name, parameter_query, parameter_query_source, definer FROM syncline_internal.bucket_definitions;
SELECT relation, filter, key_columns FROM syncline_internal.data_queries;
SELECT tgrelid::regclass, tgname, tgenabled, tgtype FROM pg_trigger
 WHERE tgrelid IN ('app.todos'::regclass, 'app.lists'::regclass) ORDER BY 1, 2;
SELECT last_op_id, origin IS NOT NULL AS has_origin FROM syncline_internal.state;

-- It works: writes reach the op log after the ops 0.1 published, the
-- parameter trigger marks changes, and the 0.1 client binds to its user.
INSERT INTO app.todos VALUES (4, 'L1', 'bread');
UPDATE app.lists SET archived = false WHERE id = 'L1';
SELECT syncline.flush() AS published;
SELECT op_id, op, object_id FROM syncline.bucket_data('by_list["L1"]', 0) ORDER BY op_id;
SELECT syncline.checkpoint('{"sub": "alice"}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1',
  '{"seq": 2, "ops": [{"op": "PUT", "type": "todos", "id": 5, "data": {"list_id": "L1", "title": "jam"}}]}') ->> 'status' AS status;
SELECT syncline.apply_writes('{"sub": "bob"}', 'phone-1',
  '{"seq": 3, "ops": [{"op": "PUT", "type": "todos", "id": 6, "data": {"list_id": "L2", "title": "x"}}]}') ->> 'code' AS bob_code;
-- Under 0.2's SQL the flusher stamps each published batch on its record.
SELECT syncline.flush() > 0 AS published;
SELECT seq, write_checkpoint, (SELECT last_op_id FROM syncline_internal.state) AS head
  FROM syncline_internal.client_batches WHERE client_id = 'phone-1' ORDER BY seq;
-- A batch applied but not yet published when the database is updated.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1',
  '{"seq": 3, "ops": [{"op": "PUT", "type": "todos", "id": 7, "data": {"list_id": "L1", "title": "tea"}}]}') ->> 'status' AS status;
SELECT syncline.write_checkpoint('phone-1') AS newest_stamped;

ALTER EXTENSION syncline UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'syncline';
-- Exactly a fresh install's objects, columns, grants, owners and bodies.
SELECT 'only after a fresh install' AS "where", * FROM (TABLE fresh EXCEPT SELECT * FROM pg_temp.extension_shape()) f
UNION ALL
SELECT 'only after the upgrade', * FROM (SELECT * FROM pg_temp.extension_shape() EXCEPT TABLE fresh) u
ORDER BY 1, 2, 3;

-- The stamped batch keeps its op id; the one still staged has none until the
-- flush that publishes it, and then resolves to the op log's head (no stamp).
SELECT syncline.write_checkpoint('phone-1', 2) = syncline.write_checkpoint('phone-1') AS newest_is_stamped,
       syncline.write_checkpoint('phone-1', 2) IS NOT NULL AS stamped_kept;
SELECT write_checkpoint IS NULL AS unstamped,
       syncline_internal.published_write_checkpoint(write_checkpoint, txid) AS before_flush
  FROM syncline_internal.client_batches WHERE client_id = 'phone-1' AND seq = 3;
SELECT syncline.flush() > 0 AS published;
SELECT write_checkpoint IS NULL AS unstamped,
       syncline_internal.published_write_checkpoint(write_checkpoint, txid)
         = (SELECT last_op_id FROM syncline_internal.state) AS at_head,
       syncline.write_checkpoint('phone-1') = (SELECT last_op_id FROM syncline_internal.state) AS newest
  FROM syncline_internal.client_batches WHERE client_id = 'phone-1' AND seq = 3;
SELECT (syncline.checkpoint('{"sub": "alice"}', 'phone-1') ->> 'write_checkpoint')::bigint
         = (SELECT last_op_id FROM syncline_internal.state) AS checkpoint_carries_it;

SELECT syncline.drop_bucket('by_list');
DROP SCHEMA app CASCADE;
