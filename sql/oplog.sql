-- Row changes become ops in the right bucket instances, only when a client
-- would see a difference.
CREATE TABLE items (id int PRIMARY KEY, owner text, val int, note text);
SELECT syncline.create_bucket('by_owner', 'SELECT syncline.user_id() AS owner',
  ARRAY['SELECT id, owner, val FROM items WHERE owner = bucket.owner AND val >= 0']);
SELECT syncline.create_bucket('big_items', NULL, ARRAY['SELECT id, val FROM items WHERE val > 100']);
CREATE VIEW oplog AS
  SELECT bucket, op_id, CASE op WHEN 1 THEN 'PUT' WHEN 2 THEN 'REMOVE' WHEN 3 THEN 'MOVE' ELSE 'CLEAR' END AS op,
         object_type, object_id, data
    FROM syncline_internal.ops;
CREATE TABLE seen (op_id bigint);
CREATE FUNCTION new_ops() RETURNS SETOF oplog LANGUAGE sql AS $$
  SELECT * FROM oplog WHERE op_id > coalesce((SELECT max(op_id) FROM seen), 0) ORDER BY op_id $$;
CREATE FUNCTION show() RETURNS SETOF oplog LANGUAGE plpgsql AS $$
BEGIN
  PERFORM syncline.flush();
  RETURN QUERY SELECT * FROM new_ops();
  INSERT INTO seen SELECT max(op_id) FROM oplog;
END $$;
SELECT syncline.flush();

INSERT INTO items VALUES (1, 'a', 1, 'x'), (2, 'a', 2, 'y'), (3, 'b', 300, 'z');
SELECT * FROM show();
-- A column no data query selects: nothing to send.
UPDATE items SET note = 'changed' WHERE id = 1;
SELECT * FROM show();
-- An update that rewrites the same values: nothing to send.
UPDATE items SET val = val;
SELECT * FROM show();
UPDATE items SET val = 10 WHERE id = 1;
SELECT * FROM show();
-- Moving to another instance: REMOVE from the old, PUT into the new.
UPDATE items SET owner = 'b' WHERE id = 2;
SELECT * FROM show();
-- Leaving through the filter, coming back, crossing into a second bucket.
UPDATE items SET val = -1 WHERE id = 1;
SELECT * FROM show();
UPDATE items SET val = 500 WHERE id = 1;
SELECT * FROM show();
-- A new primary key is a different object.
UPDATE items SET id = 11 WHERE id = 1;
SELECT * FROM show();
-- NULL parameter columns put a row in no instance, as NULL = x is never true.
UPDATE items SET owner = NULL WHERE id = 11;
SELECT * FROM show();
DELETE FROM items WHERE id = 3;
SELECT * FROM show();
-- Rolled back work leaves nothing.
BEGIN;
INSERT INTO items VALUES (50, 'a', 5);
UPDATE items SET val = 7 WHERE id = 2;
ROLLBACK;
SELECT * FROM show();
-- Savepoints: only what was kept.
BEGIN;
INSERT INTO items VALUES (60, 'a', 6);
SAVEPOINT s;
INSERT INTO items VALUES (61, 'a', 6);
ROLLBACK TO s;
COMMIT;
SELECT * FROM show();
-- Several changes of one row in one transaction keep their order.
BEGIN;
UPDATE items SET val = 1 WHERE id = 60;
UPDATE items SET val = 2 WHERE id = 60;
DELETE FROM items WHERE id = 60;
INSERT INTO items VALUES (60, 'a', 3);
COMMIT;
SELECT * FROM show();
-- TRUNCATE removes every row from every instance.
TRUNCATE items;
SELECT * FROM show();

-- Composite primary keys are JSON arrays, so they cannot collide.
CREATE TABLE pairs (a text, b text, v int, PRIMARY KEY (a, b));
SELECT syncline.create_bucket('all_pairs', NULL, ARRAY['SELECT * FROM pairs']);
INSERT INTO pairs VALUES ('x,y', 'z', 1), ('x', 'y,z', 2);
SELECT * FROM show();

-- The per-bucket running state matches the ops.
SELECT s.bucket, s.checksum = (SELECT sum(checksum) % 4294967296 FROM syncline_internal.ops o WHERE o.bucket = s.bucket) AS checksum_ok,
       s.count = (SELECT count(*) FROM syncline_internal.ops o WHERE o.bucket = s.bucket) AS count_ok,
       s.last_op_id = (SELECT max(op_id) FROM syncline_internal.ops o WHERE o.bucket = s.bucket) AS last_ok
  FROM syncline_internal.bucket_state s ORDER BY 1;

-- Paging through one bucket.
SELECT op_id, op, object_id FROM syncline.bucket_data('by_owner["a"]', 0);
SELECT op_id, op, object_id FROM syncline.bucket_data('by_owner["a"]', 0, NULL, 2);
SELECT op_id, op, object_id FROM syncline.bucket_data('by_owner["a"]', 2, 9);
SELECT op_id, op, object_id FROM syncline.bucket_data('nosuch[]', 0);

-- Dropping a bucket drops its ops and state; other buckets keep theirs.
SELECT syncline.drop_bucket('big_items');
SELECT DISTINCT bucket FROM syncline_internal.ops ORDER BY 1;
SELECT bucket FROM syncline_internal.bucket_state ORDER BY 1;
SELECT syncline.drop_bucket('by_owner');
SELECT syncline.drop_bucket('all_pairs');
DROP TABLE items, pairs;
DROP VIEW oplog CASCADE;
DROP TABLE seen;
