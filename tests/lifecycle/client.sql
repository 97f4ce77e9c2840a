-- A client replica kept in SQL, for the lifecycle tests: applies bucket ops
-- the way clients do (PUT replaces, REMOVE deletes, MOVE changes nothing,
-- CLEAR empties the bucket and restarts its running checksum at the CLEAR's;
-- every other op adds its checksum, wrapping at 32 bits).
CREATE SCHEMA IF NOT EXISTS client;
CREATE TABLE IF NOT EXISTS client.objects (
  bucket text, object_type text, object_id text, data text,
  PRIMARY KEY (bucket, object_type, object_id));
CREATE TABLE IF NOT EXISTS client.buckets (
  bucket text PRIMARY KEY, checksum bigint NOT NULL, position bigint NOT NULL);

CREATE OR REPLACE FUNCTION client.apply(b text, upto bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  op record;
  sum bigint;
  pos bigint;
BEGIN
  SELECT checksum, position INTO sum, pos FROM client.buckets WHERE bucket = b;
  IF NOT FOUND THEN
    sum := 0;
    pos := 0;
  END IF;
  FOR op IN SELECT * FROM syncline.bucket_data(b, pos, upto, 1000000000) LOOP
    IF op.op = 'CLEAR' THEN
      DELETE FROM client.objects WHERE bucket = b;
      sum := op.checksum;
    ELSE
      IF op.op = 'PUT' THEN
        INSERT INTO client.objects VALUES (b, op.object_type, op.object_id, op.data)
        ON CONFLICT (bucket, object_type, object_id) DO UPDATE SET data = excluded.data;
      ELSIF op.op = 'REMOVE' THEN
        DELETE FROM client.objects
         WHERE bucket = b AND object_type = op.object_type AND object_id = op.object_id;
      END IF;
      sum := (sum + op.checksum) % 4294967296;
    END IF;
  END LOOP;
  INSERT INTO client.buckets VALUES (b, sum, upto)
  ON CONFLICT (bucket) DO UPDATE SET checksum = excluded.checksum, position = excluded.position;
END $$;

-- Syncs a user's client to the current checkpoint; returns the buckets whose
-- checksum does not match after applying their ops (a client would have to
-- throw them away and download them again).
CREATE OR REPLACE FUNCTION client.sync(claims jsonb) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
  cp jsonb := syncline.checkpoint(claims);
  upto bigint := (cp ->> 'last_op_id')::bigint;
  b jsonb;
BEGIN
  DELETE FROM client.objects o WHERE NOT EXISTS (
    SELECT FROM jsonb_array_elements(cp -> 'buckets') x WHERE x ->> 'bucket' = o.bucket);
  DELETE FROM client.buckets c WHERE NOT EXISTS (
    SELECT FROM jsonb_array_elements(cp -> 'buckets') x WHERE x ->> 'bucket' = c.bucket);
  FOR b IN SELECT * FROM jsonb_array_elements(cp -> 'buckets') LOOP
    PERFORM client.apply(b ->> 'bucket', upto);
    IF (SELECT checksum FROM client.buckets WHERE bucket = b ->> 'bucket')
       IS DISTINCT FROM (b ->> 'checksum')::bigint THEN
      RETURN NEXT b ->> 'bucket';
    END IF;
  END LOOP;
END $$;
