-- Checkpoints: the instances a user's claims give, with running checksums.
CREATE TABLE lists (id text PRIMARY KEY, owner text NOT NULL, name text);
CREATE TABLE todos (id int PRIMARY KEY, list_id text NOT NULL, title text);
CREATE TABLE shares (list_id text, user_id text, PRIMARY KEY (list_id, user_id));
INSERT INTO lists VALUES ('L1', 'alice', 'groceries'), ('L2', 'bob', 'work'), ('L3', 'bob', 'empty');
INSERT INTO todos VALUES (1, 'L1', 'milk'), (2, 'L2', 'report'), (3, 'L2', 'slides');
-- Parameter queries are real SQL: joins and subqueries are fine.
SELECT syncline.create_bucket('by_list',
  $$SELECT l.id AS list_id FROM lists l
     WHERE l.owner = syncline.user_id()
        OR EXISTS (SELECT 1 FROM shares s WHERE s.list_id = l.id AND s.user_id = syncline.user_id())$$,
  ARRAY['SELECT * FROM todos WHERE list_id = bucket.list_id',
        'SELECT id, name FROM lists WHERE id = bucket.list_id']);
SELECT syncline.create_bucket('admin_only', $$SELECT DISTINCT owner FROM lists WHERE (syncline.claims() ->> 'role') = 'admin'$$,
  ARRAY['SELECT id, owner FROM lists AS owners WHERE owner = bucket.owner']);
SELECT syncline.flush();

SELECT syncline.claims() IS NULL AS no_claims_outside_a_request, syncline.user_id() IS NULL AS no_user;
SELECT jsonb_pretty(syncline.checkpoint('{"sub": "alice"}'));
SELECT jsonb_pretty(syncline.checkpoint('{"sub": "bob"}'));
SELECT jsonb_pretty(syncline.checkpoint('{"sub": "carol", "role": "admin"}'));
SELECT jsonb_pretty(syncline.checkpoint('{}'));
SELECT syncline.checkpoint(NULL);
-- Claims are only in scope for the call.
SELECT syncline.claims() IS NULL AS claims_gone;

-- A checksum is the wrapping 32-bit sum of the bucket's op checksums.
SELECT (b ->> 'checksum')::bigint = (SELECT sum(checksum) % 4294967296 FROM syncline.bucket_data(b ->> 'bucket', 0)) AS checksum_matches
  FROM jsonb_array_elements(syncline.checkpoint('{"sub": "bob"}') -> 'buckets') b;

-- Sharing a list changes what carol gets; the flusher consumes the change
-- marker (and announces it to gateways with NOTIFY syncline).
INSERT INTO shares VALUES ('L2', 'carol');
SELECT count(*) AS parameter_change_markers FROM syncline_internal.pending WHERE op = 10;
SELECT syncline.flush();
SELECT count(*) AS parameter_change_markers FROM syncline_internal.pending WHERE op = 10;
SELECT b ->> 'bucket' AS carol_gets FROM jsonb_array_elements(syncline.checkpoint('{"sub": "carol"}') -> 'buckets') b;

-- changes(after): the buckets with ops after a given op id.
SELECT bucket, count, last_op_id FROM syncline.changes(0);
UPDATE todos SET title = 'milk and eggs' WHERE id = 1;
SELECT syncline.flush();
SELECT bucket, count, last_op_id FROM syncline.changes(7);

-- The number of instances one checkpoint may name is bounded.
SET syncline.max_buckets_per_user = 1;
SELECT syncline.checkpoint('{"sub": "bob"}');
RESET syncline.max_buckets_per_user;

-- A parameter query that fails at sync time says which bucket it is.
SELECT syncline.create_bucket('fragile', $$SELECT (1 / (syncline.claims() ->> 'n')::int)::text AS list_id$$,
  ARRAY['SELECT id, title FROM todos AS fragile_todos WHERE list_id = bucket.list_id']);
SELECT syncline.checkpoint('{"sub": "bob", "n": 0}');
SELECT syncline.drop_bucket('fragile');

-- A gateway needs no privileges on app tables: parameter queries run as the
-- role that declared the bucket.
CREATE ROLE cp_gateway IN ROLE syncline_gateway;
SET ROLE cp_gateway;
SELECT jsonb_array_length(syncline.checkpoint('{"sub": "bob"}') -> 'buckets') AS gateway_sees;
SELECT * FROM lists;
RESET ROLE;
-- ... so a declarer cannot publish what it may not read itself.
CREATE ROLE cp_limited IN ROLE syncline_admin;
GRANT SELECT ON todos TO cp_limited;
SET ROLE cp_limited;
SELECT syncline.create_bucket('sneaky', 'SELECT id AS list_id FROM lists',
  ARRAY['SELECT * FROM todos AS sneaky_todos WHERE list_id = bucket.list_id']);
RESET ROLE;
REVOKE SELECT ON todos FROM cp_limited;
DROP ROLE cp_gateway, cp_limited;
SELECT syncline.drop_bucket('admin_only');
SELECT syncline.drop_bucket('by_list');
DROP TABLE lists, todos, shares;
