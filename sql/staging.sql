-- A transaction's ops are buffered and staged when it commits: one row for a
-- single op, chunk rows for more. Subtransactions that roll back take their ops
-- along, ops keep their order across chunks and early staging, and the op
-- log ends equal to the table.
CREATE TABLE s (id int PRIMARY KEY, v text);
SELECT syncline.create_bucket('all_s', NULL, ARRAY['SELECT * FROM s']);
CREATE FUNCTION s_replica() RETURNS TABLE (id int, v text) LANGUAGE sql AS $$
  SELECT object_id::int, data::jsonb ->> 'v' FROM (
    SELECT DISTINCT ON (object_id) object_id, op, data
      FROM syncline.bucket_data('all_s[]', 0, NULL, 1000000) ORDER BY object_id, op_id DESC) x
   WHERE op = 'PUT' $$;

BEGIN;
INSERT INTO s VALUES (1, 'top');
-- Nothing is staged before the transaction commits.
SELECT count(*) AS staged_before_commit FROM syncline_internal.pending WHERE op <> 12;
SAVEPOINT a;
INSERT INTO s VALUES (2, 'rolled back');
ROLLBACK TO a;
SAVEPOINT b;
INSERT INTO s VALUES (3, 'released');
SAVEPOINT c;
UPDATE s SET v = 'inner, rolled back' WHERE id = 3;
ROLLBACK TO c;
RELEASE b;
UPDATE s SET v = 'top, updated' WHERE id = 1;
COMMIT;
-- Its three ops, in order, in one chunk row.
SELECT c.ord, c.op, c.object_id
  FROM syncline_internal.pending p, syncline_internal.chunk_ops(p.chunk) c
 WHERE p.op = 20 ORDER BY p.seq, c.ord;
SELECT count(*) AS single_op_rows FROM syncline_internal.pending WHERE op < 10;
DO $$
BEGIN
  BEGIN
    INSERT INTO s VALUES (4, 'in a failed block');
    RAISE EXCEPTION 'no';
  EXCEPTION WHEN others THEN NULL;
  END;
  INSERT INTO s VALUES (5, 'after the failed block');
END $$;
SELECT syncline.flush() AS published;
SELECT * FROM s_replica() ORDER BY id;

-- Nested subtransactions interleaved with their parents' ops: a release hands
-- the child's ops (and those of its released children) to the parent, a
-- rollback drops exactly its own subtree's, never an ancestor's.
BEGIN;
INSERT INTO s VALUES (10, 'top');
SAVEPOINT a;
INSERT INTO s VALUES (11, 'a, released');
RELEASE a;
INSERT INTO s VALUES (12, 'top after a');
SAVEPOINT b;
INSERT INTO s VALUES (13, 'b, rolled back');
SAVEPOINT c;
INSERT INTO s VALUES (14, 'c, released into b, rolled back with it');
RELEASE c;
INSERT INTO s VALUES (15, 'b after c, rolled back');
ROLLBACK TO b;
INSERT INTO s VALUES (16, 'b again, kept');
SAVEPOINT d;
INSERT INTO s VALUES (17, 'd, released');
SAVEPOINT e;
INSERT INTO s VALUES (18, 'e, rolled back');
ROLLBACK TO e;
RELEASE d;
COMMIT;
SELECT syncline.flush() AS published;
SELECT * FROM s_replica() WHERE id >= 10 ORDER BY id;

-- A bulk transaction (about 20 MB of ops) is staged as chunk rows, the first
-- ones while it still runs; the update after it wins.
BEGIN;
INSERT INTO s SELECT g, repeat('x', 500) FROM generate_series(100, 40099) g;
SELECT count(*) > 0 AS chunks_staged_early FROM syncline_internal.pending WHERE op = 20;
UPDATE s SET v = 'updated after the bulk' WHERE id = 100;
DELETE FROM s WHERE id = 101;
COMMIT;
SELECT count(*) > 1 AS chunk_rows, sum(pg_column_size(chunk)) < sum(octet_length(chunk)) / 4 AS compressed
  FROM syncline_internal.pending WHERE op = 20;
SELECT syncline.flush() AS published;
SELECT count(*) AS replica_rows,
       (SELECT count(*) FROM s) AS table_rows,
       NOT EXISTS (SELECT * FROM s_replica() EXCEPT SELECT * FROM s) AS same_rows
  FROM s_replica();
SELECT v FROM s_replica() WHERE id IN (100, 101);
-- A value too large to stay in its row: its staged row keeps it out of line
-- (TOAST), and the flush that deletes the row still reads it whole.
INSERT INTO s SELECT 99, string_agg(md5(g::text), '') FROM generate_series(1, 3000) g;
\set ECHO none
SELECT format('SELECT count(*) > 0 AS staged_out_of_line FROM %s', reltoastrelid::regclass)
  FROM pg_class WHERE oid = 'syncline_internal.pending'::regclass \gexec
\set ECHO all
SELECT syncline.flush() AS published;
SELECT length(v) AS published_length, v = (SELECT v FROM s WHERE id = 99) AS same_value
  FROM s_replica() WHERE id = 99;
-- Checksums: the running bucket state is the sum of the published ops.
SELECT (SELECT checksum FROM syncline.changes(0) WHERE bucket = 'all_s[]') =
       (SELECT sum(checksum) % 4294967296 FROM syncline.bucket_data('all_s[]', 0, NULL, 1000000))
       AS checksum_matches;


-- Ops made inside exception blocks (PL/pgSQL subtransactions) while the
-- transaction itself has ops cannot be staged early: past 8 MB they go to a
-- temporary file instead of piling up in memory. Blocks that fail, and a
-- savepoint rolled back after more of them were spilled, cut the file back;
-- once the transaction is at its top level again, an UPDATE stages the file
-- and the buffer early, in order, and the commit stages the rest.
TRUNCATE s;
SELECT syncline.flush() >= 0 AS flushed;
BEGIN;
INSERT INTO s VALUES (0, 'top');
DO $$ BEGIN FOR g IN 1..20000 LOOP BEGIN
  INSERT INTO s VALUES (g, repeat('a', 600));
  IF g % 7 = 0 THEN RAISE EXCEPTION 'undo %', g; END IF;
EXCEPTION WHEN raise_exception THEN NULL; END; END LOOP; END $$;
SELECT count(*) > 0 AS spilled, (SELECT count(*) FROM syncline_internal.pending WHERE op <> 12) AS staged
  FROM pg_ls_tmpdir() WHERE name LIKE 'pgsql_tmp' || pg_backend_pid() || '.%';
SAVEPOINT s1;
DO $$ BEGIN FOR g IN 20001..35000 LOOP BEGIN
  INSERT INTO s VALUES (g, repeat('b', 600));
EXCEPTION WHEN raise_exception THEN NULL; END; END LOOP; END $$;
UPDATE s SET v = 'changed in s1, rolled back' WHERE id = 1;
ROLLBACK TO s1;
RELEASE s1;
DO $$ BEGIN FOR g IN 1..20000 LOOP BEGIN
  UPDATE s SET v = repeat('c', 600) WHERE id = g AND g % 3 = 0;
  IF g % 11 = 0 THEN RAISE EXCEPTION 'undo %', g; END IF;
EXCEPTION WHEN raise_exception THEN NULL; END; END LOOP; END $$;
UPDATE s SET v = repeat('d', 1000) WHERE id % 2 = 0;
SELECT count(*) > 0 AS staged_early FROM syncline_internal.pending WHERE op <> 12;
UPDATE s SET v = 'last' WHERE id IN (2, 3, 4);
DELETE FROM s WHERE id % 5 = 0;
COMMIT;
SELECT syncline.flush() > 0 AS published;
SELECT count(*) AS replica_rows,
       (SELECT count(*) FROM s) AS table_rows,
       NOT EXISTS (SELECT * FROM s_replica() EXCEPT SELECT * FROM s) AS same_rows,
       NOT EXISTS (SELECT * FROM s EXCEPT SELECT * FROM s_replica()) AS no_row_missing
  FROM s_replica();
SELECT id, left(v, 4) AS v FROM s_replica() WHERE id <= 7 ORDER BY id;

SELECT syncline.drop_bucket('all_s');
DROP TABLE s;
DROP FUNCTION s_replica();

-- A bucket dropped and declared again under the same name before the flush:
-- nothing staged under the old definition may reach the new one, whether it
-- was staged as a row of its own or inside a chunk (where the ops of other
-- buckets stay).
CREATE TABLE r (id int PRIMARY KEY, v int);
SELECT syncline.create_bucket('redef', NULL, ARRAY['SELECT * FROM r WHERE v = 1']);
SELECT syncline.create_bucket('r_all', NULL, ARRAY['SELECT * FROM r']);
SELECT syncline.flush() >= 0 AS flushed;
INSERT INTO r SELECT g, 1 FROM generate_series(1, 20) g;  -- one chunk
INSERT INTO r VALUES (21, 1);                              -- a row of its own
-- 100 more transactions of two rows: 100 more chunk rows, more than
-- drop_bucket reads at once.
\set ECHO none
SELECT format('INSERT INTO r VALUES (%s, 1), (%s, 1)', g, g + 1000)
  FROM generate_series(101, 200) g \gexec
\set ECHO all
SELECT count(*) AS chunk_rows FROM syncline_internal.pending WHERE op = 20;
SELECT sum(CASE WHEN p.op = 20 THEN (SELECT count(*) FROM syncline_internal.chunk_ops(p.chunk)) ELSE 1 END)
       AS staged_ops
  FROM syncline_internal.pending p WHERE p.op < 10 OR p.op = 20;
SELECT syncline.drop_bucket('redef');
SELECT sum(CASE WHEN p.op = 20 THEN (SELECT count(*) FROM syncline_internal.chunk_ops(p.chunk)) ELSE 1 END)
       AS staged_ops_left
  FROM syncline_internal.pending p WHERE p.op < 10 OR p.op = 20;
SELECT syncline.create_bucket('redef', NULL, ARRAY['SELECT * FROM r WHERE v = 2']);
INSERT INTO r VALUES (22, 2);
SELECT syncline.flush() AS published;
SELECT object_id FROM syncline.bucket_data('redef[]', 0, NULL, 1000) ORDER BY op_id;
SELECT count(*) AS all_rows_ops FROM syncline.bucket_data('r_all[]', 0, NULL, 1000);
SELECT syncline.drop_bucket('redef');
SELECT syncline.drop_bucket('r_all');
DROP TABLE r;
