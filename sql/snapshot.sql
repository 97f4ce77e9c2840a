-- Rows that exist when a bucket is declared reach clients through an
-- initial copy; writes made meanwhile are never lost or reordered.
CREATE TABLE readings (id int PRIMARY KEY, sensor text, value float8);
INSERT INTO readings SELECT g, 's' || (g % 3), g * 0.5 FROM generate_series(1, 3000) g;
SELECT syncline.create_bucket('by_sensor', $$SELECT unnest(ARRAY['s0', 's1', 's2']) AS sensor$$,
  ARRAY['SELECT * FROM readings WHERE sensor = bucket.sensor']);
SELECT count(*) AS copy_jobs FROM syncline_internal.snapshot_jobs;
-- Writes after the rule exists and before the copy ran.
UPDATE readings SET value = -1 WHERE id = 5;
DELETE FROM readings WHERE id = 6;
UPDATE readings SET sensor = 's0' WHERE id = 7;
INSERT INTO readings VALUES (5000, 's1', 42);
SELECT syncline.flush() AS ops;
SELECT count(*) AS copy_jobs_left FROM syncline_internal.snapshot_jobs;
-- The replica equals the table, bucket by bucket.
CREATE FUNCTION snapshot_replica(b text) RETURNS TABLE (object_id text, data text) LANGUAGE sql AS $$
  WITH o AS (SELECT * FROM syncline.bucket_data(b, 0, NULL, 1000000)),
  latest AS (SELECT DISTINCT ON (object_id) * FROM o ORDER BY object_id, op_id DESC)
  SELECT object_id, data FROM latest WHERE op = 'PUT' $$;
SELECT s.sensor,
       (SELECT count(*) FROM snapshot_replica('by_sensor["' || s.sensor || '"]')) AS replica_rows,
       (SELECT count(*) FROM readings r WHERE r.sensor = s.sensor) AS table_rows,
       NOT EXISTS (
         SELECT object_id::int, (data::jsonb ->> 'value')::float8 FROM snapshot_replica('by_sensor["' || s.sensor || '"]')
         EXCEPT SELECT id, value FROM readings r WHERE r.sensor = s.sensor) AS same_rows
  FROM (VALUES ('s0'), ('s1'), ('s2')) s(sensor) ORDER BY 1;
SELECT syncline.drop_bucket('by_sensor');
DROP TABLE readings;
DROP FUNCTION snapshot_replica(text);
