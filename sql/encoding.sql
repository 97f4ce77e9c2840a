-- One stable JSON encoding for every common type, whatever the session's
-- DateStyle, TimeZone or float settings.
SET timezone = 'America/New_York';
SET datestyle = 'SQL, DMY';
SET extra_float_digits = 0;
SET bytea_output = 'escape';
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE everything (
  id uuid PRIMARY KEY,
  i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision, n numeric, n2 numeric(10, 3),
  b bool, t text, vc varchar(10), c char(3), ts timestamp, tstz timestamptz, d date, tm time,
  j json, jb jsonb, arr int[], arr2 text[], grid int[][], by bytea, m mood, p positive,
  iv interval
);
SELECT syncline.create_bucket('all_of_it', NULL, ARRAY['SELECT * FROM everything']);
INSERT INTO everything VALUES (
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', -32768, 2147483647, 9223372036854775807,
  0.1, 1e-300, 123456789012345678901234567890.123456789, 1.5,
  true, E'quote " backslash \\ newline \n tab \t nul-free é 💪', 'short', 'ab',
  '2024-02-29 13:14:15.5', '2024-02-29 13:14:15.123456-05', '2024-02-29', '23:59:59.999',
  '{"b": [1, 2], "a": null}', '{"b": [1, 2], "a": null}', '{1,NULL,3}', '{"x,y","\"q\""}',
  '{{1,2},{3,4}}', '\xdeadbeef', 'sad', 7, '1 day 2 hours');
INSERT INTO everything (id, f4, f8, n, ts, tstz, d) VALUES
  ('b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'NaN', '-Infinity', 'NaN', 'infinity', '-infinity', 'infinity');
INSERT INTO everything (id) VALUES ('c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
SELECT syncline.flush();
SELECT object_id, data FROM syncline.bucket_data('all_of_it[]', 0) ORDER BY object_id;
-- The data is valid JSON that round-trips.
SELECT object_id, (data::jsonb ->> 'tstz') AS tstz, (data::jsonb -> 'n') AS n
  FROM syncline.bucket_data('all_of_it[]', 0) ORDER BY object_id;
SELECT syncline.drop_bucket('all_of_it');
DROP TABLE everything;
DROP TYPE mood;
DROP DOMAIN positive;
RESET timezone;
RESET datestyle;
RESET extra_float_digits;
RESET bytea_output;
