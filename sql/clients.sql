-- A client id belongs to the token subject of its first batch: no user can
-- affect another user's batches, and a client's batches apply in seq order
-- whichever gateway they come through.
TRUNCATE syncline_internal.client_batches;  -- earlier tests' clients
CREATE TABLE items (id int PRIMARY KEY, owner text NOT NULL, title text);
GRANT SELECT, INSERT, UPDATE, DELETE ON items TO syncline_writer;
SELECT syncline.create_bucket('own_items', 'SELECT syncline.user_id() AS owner',
  ARRAY['SELECT * FROM items WHERE owner = bucket.owner']);

-- Alice's phone uploads its first batch.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-a',
  '{"seq": 1, "ops": [{"op": "PUT", "type": "items", "id": 1, "data": {"owner": "alice", "title": "one"}}]}') ->> 'status' AS status;
-- Bob sends batches under alice's client id: a huge seq (which used to make
-- all of alice's later batches "regressed") and her next seq (which used to
-- make her real batch a "duplicate" that was never written). Both refused,
-- nothing recorded.
SELECT syncline.apply_writes('{"sub": "bob"}', 'phone-a',
  '{"seq": 1000000000, "ops": [{"op": "PUT", "type": "items", "id": 9, "data": {"owner": "bob"}}]}');
SELECT syncline.apply_writes('{"sub": "bob"}', 'phone-a',
  '{"seq": 2, "ops": [{"op": "PUT", "type": "items", "id": 9, "data": {"owner": "bob"}}]}') ->> 'code' AS code;
SELECT client_id, seq, subject FROM syncline_internal.client_batches ORDER BY client_id, seq;
-- Alice's real seq 2 applies.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-a',
  '{"seq": 2, "ops": [{"op": "PUT", "type": "items", "id": 2, "data": {"owner": "alice", "title": "two"}}]}') ->> 'status' AS status;
SELECT id, owner, title FROM items ORDER BY id;
-- Bob cannot read alice's write checkpoint either; alice can.
SELECT syncline.client_write_checkpoint('{"sub": "bob"}', 'phone-a') AS bobs_view,
       syncline.client_write_checkpoint('{"sub": "alice"}', 'phone-a') > 0 AS alices_view,
       syncline.client_write_checkpoint('{"sub": "alice"}', 'no-such-client') AS unknown;
-- checkpoint(claims, client_id) carries the client's write checkpoint as
-- recorded in its own snapshot: never past its last_op_id, 0 for someone else.
SELECT (cp ->> 'write_checkpoint')::bigint > 0 AS has_write_checkpoint,
       (cp ->> 'write_checkpoint')::bigint <= (cp ->> 'last_op_id')::bigint AS within_checkpoint
  FROM syncline.checkpoint('{"sub": "alice"}', 'phone-a') cp;
SELECT syncline.checkpoint('{"sub": "bob"}', 'phone-a') ->> 'write_checkpoint' AS bobs_view;
-- Claims without a subject are refused outright.
SELECT syncline.apply_writes('{}', 'phone-a', '{"seq": 3, "ops": []}');
SELECT syncline.apply_writes('{"sub": ""}', 'phone-a', '{"seq": 3, "ops": []}');

-- Native protocol: seqs are contiguous from 1. An unknown client's seq 2 is
-- out of order (it used to be accepted as a first batch, and seq 1, sent at
-- the same moment through another gateway, was then refused as regressed).
SELECT syncline.apply_writes('{"sub": "carol"}', 'laptop-c',
  '{"seq": 2, "ops": [{"op": "PUT", "type": "items", "id": 32, "data": {"owner": "carol"}}]}');
SELECT syncline.apply_writes('{"sub": "carol"}', 'laptop-c',
  '{"seq": 1, "ops": [{"op": "PUT", "type": "items", "id": 31, "data": {"owner": "carol"}}]}') ->> 'status' AS status;
SELECT syncline.apply_writes('{"sub": "carol"}', 'laptop-c',
  '{"seq": 2, "ops": [{"op": "PUT", "type": "items", "id": 32, "data": {"owner": "carol"}}]}') ->> 'status' AS status;
SELECT syncline.apply_writes('{"sub": "carol"}', 'laptop-c',
  '{"seq": 4, "ops": [{"op": "PUT", "type": "items", "id": 34, "data": {"owner": "carol"}}]}') ->> 'expected_seq' AS expected_seq;

-- PowerSync transaction ids ("allow_gaps"): increasing with gaps; an older
-- one after a newer one is never applied.
SELECT syncline.apply_writes('{"sub": "dave"}', 'web-d',
  '{"seq": 5, "allow_gaps": true, "ops": [{"op": "PUT", "type": "items", "id": 45, "data": {"owner": "dave"}}]}') ->> 'status' AS status;
SELECT syncline.apply_writes('{"sub": "dave"}', 'web-d',
  '{"seq": 9, "allow_gaps": true, "ops": [{"op": "PUT", "type": "items", "id": 49, "data": {"owner": "dave"}}]}') ->> 'status' AS status;
SELECT syncline.apply_writes('{"sub": "dave"}', 'web-d',
  '{"seq": 7, "allow_gaps": true, "ops": [{"op": "PUT", "type": "items", "id": 47, "data": {"owner": "dave"}}]}') ->> 'code' AS code;
SELECT syncline.apply_writes('{"sub": "dave"}', 'web-d',
  '{"seq": 9, "allow_gaps": true, "ops": [{"op": "PUT", "type": "items", "id": 49, "data": {"owner": "dave"}}]}') ->> 'duplicate' AS duplicate;
SELECT id FROM items WHERE owner = 'dave' ORDER BY id;

-- Old batch outcomes are pruned; each client's newest is kept (it is the
-- client's last seq).
UPDATE syncline_internal.client_batches SET applied_at = now() - interval '30 days';
SELECT syncline.prune_client_batches(interval '7 days') AS pruned;
SELECT client_id, seq FROM syncline_internal.client_batches ORDER BY client_id, seq;
-- A retry of a pruned batch is not applied again.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-a',
  '{"seq": 1, "ops": [{"op": "PUT", "type": "items", "id": 1, "data": {"owner": "alice", "title": "again"}}]}') ->> 'code' AS code;
SELECT title FROM items WHERE id = 1;

SELECT syncline.drop_bucket('own_items');
DROP TABLE items;
