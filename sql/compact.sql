-- Compaction keeps every bucket's checksum and every client's final state.
CREATE TABLE notes (id int PRIMARY KEY, owner text, body text);
SELECT syncline.create_bucket('notes_by_owner', 'SELECT syncline.user_id() AS owner',
  ARRAY['SELECT * FROM notes WHERE owner = bucket.owner']);
-- What a client that downloads the bucket from scratch ends up holding.
CREATE FUNCTION replica(b text) RETURNS TABLE (object_id text, data text) LANGUAGE sql AS $$
  WITH o AS (SELECT * FROM syncline.bucket_data(b, 0, NULL, 1000000)),
  cleared AS (SELECT coalesce(max(op_id), 0) AS upto FROM o WHERE op = 'CLEAR'),
  latest AS (SELECT DISTINCT ON (object_type, object_id) * FROM o
              WHERE op IN ('PUT', 'REMOVE') ORDER BY object_type, object_id, op_id DESC)
  SELECT l.object_id, l.data FROM latest l, cleared c WHERE l.op = 'PUT' AND l.op_id > c.upto
   ORDER BY 1 $$;
CREATE FUNCTION replica_checksum(b text) RETURNS bigint LANGUAGE sql AS $$
  WITH o AS (SELECT * FROM syncline.bucket_data(b, 0, NULL, 1000000)),
  cleared AS (SELECT coalesce(max(op_id), 0) AS upto FROM o WHERE op = 'CLEAR')
  SELECT sum(checksum) % 4294967296 FROM o, cleared WHERE op_id >= upto $$;

INSERT INTO notes SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'v1' FROM generate_series(1, 10) g;
UPDATE notes SET body = 'v2' WHERE id <= 6;
UPDATE notes SET body = 'v3' WHERE id <= 3;
DELETE FROM notes WHERE id IN (1, 2);
UPDATE notes SET owner = 'a' WHERE id = 5;
SELECT syncline.flush();
CREATE TABLE before AS
  SELECT b ->> 'bucket' AS bucket, (b ->> 'checksum')::bigint AS checksum, (b ->> 'count')::int AS count
    FROM jsonb_array_elements(syncline.checkpoint('{"sub": "a"}') -> 'buckets') b
  UNION ALL
  SELECT b ->> 'bucket', (b ->> 'checksum')::bigint, (b ->> 'count')::int
    FROM jsonb_array_elements(syncline.checkpoint('{"sub": "b"}') -> 'buckets') b;
CREATE TABLE replica_before AS
  SELECT bucket, r.* FROM before, replica(bucket) r;
SELECT * FROM before ORDER BY bucket;

SELECT syncline.compact() > 0 AS compacted;
SELECT op_id, op, object_id FROM syncline.bucket_data('notes_by_owner["b"]', 0);
-- Same checksums, fewer ops, same replica, and the checksum a client
-- computes (CLEAR resets it) is the bucket's.
SELECT b.bucket, b.checksum = (s.checksum) AS same_checksum, s.count < b.count AS fewer_ops,
       replica_checksum(b.bucket) = b.checksum AS client_checksum_ok
  FROM before b JOIN syncline_internal.bucket_state s USING (bucket) ORDER BY 1;
(SELECT bucket, r.* FROM before, replica(bucket) r EXCEPT SELECT * FROM replica_before)
UNION ALL
(SELECT * FROM replica_before EXCEPT SELECT bucket, r.* FROM before, replica(bucket) r);
-- Compacting again changes nothing.
SELECT syncline.compact() AS second_compaction;
-- Writes after compaction keep working.
UPDATE notes SET body = 'v4' WHERE id = 4;
SELECT syncline.flush();
SELECT object_id, data FROM replica('notes_by_owner["a"]');
SELECT syncline.drop_bucket('notes_by_owner');
DROP TABLE notes, before, replica_before;
DROP FUNCTION replica(text), replica_checksum(text);
