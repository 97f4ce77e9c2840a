-- Client writes: applied atomically as syncline.write_role under its GRANTs
-- and row-level security, once per (client_id, seq), with every outcome.
CREATE TABLE sets (
  id int PRIMARY KEY, user_id text NOT NULL, reps int CHECK (reps >= 0), weight_kg numeric,
  tags text[], done_at timestamptz, note jsonb);
ALTER TABLE sets ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_sets ON sets USING (user_id = syncline.user_id())
  WITH CHECK (user_id = syncline.user_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON sets TO syncline_writer;
CREATE TABLE audit (id int PRIMARY KEY, what text);
GRANT SELECT, INSERT ON audit TO syncline_writer;
CREATE TABLE secrets (id int PRIMARY KEY, value text);
SELECT syncline.create_bucket('user_sets', 'SELECT syncline.user_id() AS user_id',
  ARRAY['SELECT * FROM sets WHERE user_id = bucket.user_id']);
SELECT syncline.create_bucket('all_secrets', NULL, ARRAY['SELECT * FROM secrets']);
SELECT syncline.flush();

-- Applied: PUT inserts (types converted from JSON), PATCH updates, DELETE deletes.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', $${"seq": 1, "schema_version": "1",
  "ops": [{"op": "PUT", "type": "sets", "id": 1, "data": {"user_id": "alice", "reps": 8, "weight_kg": "42.5", "tags": ["warmup", "a,b"], "done_at": "2024-03-01T10:00:00Z", "note": {"felt": "good"}}},
          {"op": "PUT", "type": "sets", "id": 2, "data": {"user_id": "alice", "reps": 5}},
          {"op": "PATCH", "type": "sets", "id": 1, "data": {"reps": 9}}]}$$);
SELECT * FROM sets ORDER BY id;
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 2, "ops": [{"op": "DELETE", "type": "sets", "id": 2}]}');
SELECT id FROM sets ORDER BY id;
-- Its effects reach the op log; the write checkpoint is the first op id that includes them.
SELECT syncline.write_checkpoint('phone-1', 1) AS wc1, syncline.write_checkpoint('phone-1', 2) AS wc2,
       syncline.write_checkpoint('phone-1') AS latest, syncline.write_checkpoint('phone-1', 99) AS unknown;
SELECT (syncline.checkpoint('{"sub": "alice"}') ->> 'last_op_id')::bigint >= syncline.write_checkpoint('phone-1') AS included;
SELECT op_id, op, object_id FROM syncline.bucket_data('user_sets["alice"]', 0);

-- A retried batch returns its first outcome and is not applied twice.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 2, "ops": [{"op": "PUT", "type": "sets", "id": 2, "data": {"user_id": "alice"}}]}');
SELECT id FROM sets ORDER BY id;
-- Regressing and skipped seqs are answered, not applied.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 0, "ops": [{"op": "PUT", "type": "sets", "id": 3, "data": {"user_id": "alice"}}]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 5, "ops": [{"op": "PUT", "type": "sets", "id": 3, "data": {"user_id": "alice"}}]}');

-- Rejected for good, with the SQLSTATE, the reason and the failing op; the
-- whole batch is rolled back and the rejection is remembered.
-- Policy: alice may not write bob's set.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', $${"seq": 3, "ops": [
  {"op": "PUT", "type": "sets", "id": 3, "data": {"user_id": "alice", "reps": 1}},
  {"op": "PUT", "type": "sets", "id": 4, "data": {"user_id": "bob", "reps": 1}}]}$$);
SELECT id FROM sets ORDER BY id;
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 3, "ops": []}') ->> 'duplicate' AS replayed;
-- Constraint.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 4, "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"reps": -3}}]}');
-- Unknown column, and with a schema version the hint names the handler to declare.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 5, "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"repetitions": 3}}]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 6, "schema_version": "0.9", "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"repetitions": 3}}]}');
-- Bad JSON types name the column.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 7, "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"reps": "ten"}}]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 8, "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"reps": {"n": 1}}}]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 9, "ops": [{"op": "PATCH", "type": "sets", "id": "x", "data": {"reps": 1}}]}');
-- PATCH of a row that no longer exists (or that alice cannot see).
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 10, "ops": [{"op": "PATCH", "type": "sets", "id": 2, "data": {"reps": 10}}]}');
-- Malformed ops.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 11, "ops": [{"op": "UPSERT", "type": "sets", "id": 1}]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 12, "ops": [{"op": "PUT", "type": "sets", "data": {}}]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 13, "ops": [42]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 14}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"ops": []}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', NULL);
-- Tables nobody syncs need an opt-in; privileges still apply.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 15, "ops": [{"op": "PUT", "type": "audit", "id": 1, "data": {"what": "x"}}]}');
SELECT syncline.allow_writes('audit');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 16, "ops": [{"op": "PUT", "type": "audit", "id": 1, "data": {"what": "x"}}]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 17, "ops": [{"op": "PUT", "type": "secrets", "id": 1, "data": {"value": "x"}}]}');
SELECT * FROM audit;
SELECT count(*) AS secrets FROM secrets;
-- Nothing of a rejected batch was applied.
SELECT id, reps FROM sets ORDER BY id;

-- An older client's writes, mapped by a handler the app declares.
CREATE FUNCTION sets_from_v09(op jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_set(op, '{data}', (op -> 'data') - 'repetitions' ||
                   jsonb_build_object('reps', op -> 'data' -> 'repetitions')) $$;
SELECT syncline.set_write_handler('sets', '0.9', 'sets_from_v09(jsonb)');
SELECT syncline.set_write_handler('sets', '0.8', 'lower(text)');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 18, "schema_version": "0.9", "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"repetitions": 12}}]}');
SELECT id, reps FROM sets ORDER BY id;
-- A handler that returns something other than an op, and one that raises an error (the way an
-- app refuses a write): each batch is rejected with the reason, nothing applied.
CREATE FUNCTION sets_from_v07(op jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '[1]'::jsonb $$;
CREATE FUNCTION sets_from_v06(op jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'version 0.6 may not write sets' USING ERRCODE = '42501'; END $$;
SELECT syncline.set_write_handler('sets', '0.7', 'sets_from_v07(jsonb)');
SELECT syncline.set_write_handler('sets', '0.6', 'sets_from_v06(jsonb)');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-old', '{"seq": 1, "schema_version": "0.7", "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"reps": 13}}]}');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-old', '{"seq": 2, "schema_version": "0.6", "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"reps": 14}}]}');
-- A JSON array for a column that is not an array.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-old', '{"seq": 3, "ops": [{"op": "PATCH", "type": "sets", "id": 1, "data": {"reps": [1, 2]}}]}');
SELECT id, reps FROM sets ORDER BY id;

-- Write checkpoints of many batches at once (what a gateway asks): only those
-- already flushed, unless forced; mismatched arrays are refused.
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 19, "ops": [{"op": "PUT", "type": "sets", "id": 3, "data": {"user_id": "alice", "reps": 1}}]}') ->> 'status' AS status;
SELECT client_id, seq, write_checkpoint > 0 AS has_checkpoint
  FROM syncline.write_checkpoints(ARRAY['phone-1', 'phone-1', 'nobody'], ARRAY[1, 19, 1]::bigint[]);
SELECT client_id, seq, write_checkpoint > 0 AS has_checkpoint
  FROM syncline.write_checkpoints(ARRAY['phone-1', 'phone-1', 'nobody'], ARRAY[1, 19, 1]::bigint[], force => true);
SELECT * FROM syncline.write_checkpoints(ARRAY['phone-1'], ARRAY[1, 2]::bigint[]);

-- Withdrawing the opt-in refuses the table again at once, although this
-- session's apply_writes had it cached.
SELECT syncline.disallow_writes('audit');
SELECT syncline.apply_writes('{"sub": "alice"}', 'phone-1', '{"seq": 20, "ops": [{"op": "PUT", "type": "audit", "id": 2, "data": {"what": "y"}}]}');
SELECT syncline.allow_writes('audit');

-- Another client's seqs are its own.
SELECT syncline.apply_writes('{"sub": "bob"}', 'tablet-7', '{"seq": 1, "ops": [{"op": "PUT", "type": "sets", "id": 7, "data": {"user_id": "bob", "reps": 3}}]}');
-- A write role that would bypass row-level security is refused.
SET syncline.write_role = 'postgres';
SELECT syncline.apply_writes('{"sub": "bob"}', 'tablet-7', '{"seq": 2, "ops": [{"op": "DELETE", "type": "sets", "id": 7}]}');
RESET syncline.write_role;
-- Only the gateway role may call it.
CREATE ROLE writes_nobody;
SET ROLE writes_nobody;
SELECT syncline.apply_writes('{"sub": "bob"}', 'tablet-7', '{"seq": 2, "ops": []}');
RESET ROLE;
DROP ROLE writes_nobody;

SELECT client_id, seq, outcome ->> 'status' AS status,
       syncline_internal.published_write_checkpoint(write_checkpoint, txid) IS NOT NULL AS has_checkpoint
  FROM syncline_internal.client_batches ORDER BY client_id, seq;
SELECT syncline.flush() >= 0 AS flushed;

-- Several clients' batches in one statement, as the gateway sends them when batches wait:
-- each keeps its own outcome (a rejected one rejects only itself, with nothing of it applied).
SELECT syncline.apply_writes(e -> 'c', e ->> 'i', e -> 'b') AS outcome
  FROM jsonb_array_elements($$[
    {"c": {"sub": "bob"}, "i": "group-1", "b": {"seq": 1, "ops": [{"op": "PUT", "type": "sets", "id": 101, "data": {"user_id": "bob", "reps": 1}}]}},
    {"c": {"sub": "bob"}, "i": "group-2", "b": {"seq": 1, "ops": [{"op": "PUT", "type": "sets", "id": 102, "data": {"user_id": "alice", "reps": 2}}]}},
    {"c": {"sub": "bob"}, "i": "group-3", "b": {"seq": 1, "ops": [{"op": "PUT", "type": "sets", "id": 103, "data": {"user_id": "bob", "reps": 3}}]}},
    {"c": {"sub": "bob"}, "i": "group-4", "b": {"seq": 2, "ops": [{"op": "PUT", "type": "sets", "id": 104, "data": {"user_id": "bob", "reps": 4}}]}},
    {"c": {"sub": "bob"}, "i": "group-5", "b": {"seq": 1, "ops": [{"op": "PUT", "type": "sets", "id": 105, "data": {"user_id": "bob", "reps": 5}}]}},
    {"c": {"sub": "bob"}, "i": "group-6", "b": {"seq": 1, "ops": [{"op": "PUT", "type": "sets", "id": 106, "data": {"user_id": "bob", "reps": 6}}]}},
    {"c": {"sub": "bob"}, "i": "group-1", "b": {"seq": 1, "ops": [{"op": "PUT", "type": "sets", "id": 107, "data": {"user_id": "bob", "reps": 7}}]}}
  ]$$::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n;
SELECT id, reps FROM sets WHERE id > 100 ORDER BY id;
-- One flush publishes them all: every recorded batch has a write checkpoint, the op log's
-- head, and the flush wrote nothing per batch (no record is stamped) ...
SELECT syncline.flush() > 0 AS flushed;
SELECT client_id, seq, outcome ->> 'status' AS status,
       syncline_internal.published_write_checkpoint(write_checkpoint, txid)
         = (SELECT last_op_id FROM syncline_internal.state) AS at_head,
       write_checkpoint IS NULL AS unstamped
  FROM syncline_internal.client_batches WHERE client_id LIKE 'group-%' ORDER BY client_id, seq;
-- ... and so do the next ones.
SELECT syncline.apply_writes('{"sub": "bob"}', 'pair-' || i, jsonb_build_object('seq', 1, 'ops',
         jsonb_build_array(jsonb_build_object('op', 'DELETE', 'type', 'sets', 'id', 100 + i)))) ->> 'status' AS status
  FROM generate_series(1, 2) i;
SELECT syncline.flush() > 0 AS flushed;
SELECT client_id, syncline_internal.published_write_checkpoint(write_checkpoint, txid)
         = (SELECT last_op_id FROM syncline_internal.state) AS at_head
  FROM syncline_internal.client_batches WHERE client_id LIKE 'pair-%' ORDER BY client_id;
-- A flush in the transaction that applied a batch publishes none of its ops (they are
-- staged at its commit): the batch is not published by it, only by the next flush, and its
-- write checkpoint then covers its op.
BEGIN;
SELECT syncline.apply_writes('{"sub": "bob"}', 'same-xact', '{"seq": 1, "ops": [
  {"op": "PUT", "type": "sets", "id": 301, "data": {"user_id": "bob", "reps": 3}}]}') ->> 'status' AS status;
SELECT syncline.flush() >= 0 AS flushed;
COMMIT;
SELECT syncline_internal.published_write_checkpoint(write_checkpoint, txid) IS NULL AS not_yet
  FROM syncline_internal.client_batches WHERE client_id = 'same-xact';
SELECT syncline.flush() > 0 AS flushed;
SELECT syncline_internal.published_write_checkpoint(b.write_checkpoint, b.txid)
         >= (SELECT max(o.op_id) FROM syncline_internal.ops o WHERE o.object_id = '301') AS covers_its_op
  FROM syncline_internal.client_batches b WHERE b.client_id = 'same-xact';
-- An op the caller could not pass on (the gateway's stand-in for a value jsonb cannot hold,
-- such as U+0000) refuses its batch, recorded under the seq: the client's next seq goes on.
SELECT syncline.apply_writes('{"sub": "bob"}', 'refused-1', '{"seq": 1, "ops": [
  {"op": "PUT", "type": "sets", "id": 201, "data": {"user_id": "bob", "reps": 1}},
  {"op": "PUT", "refused": "data holds U+0000 (NUL), which PostgreSQL text cannot store"}]}');
SELECT syncline.apply_writes('{"sub": "bob"}', 'refused-1', '{"seq": 1, "ops": []}') ->> 'status' AS again;
SELECT syncline.apply_writes('{"sub": "bob"}', 'refused-1', '{"seq": 2, "ops": [
  {"op": "PUT", "type": "sets", "id": 202, "data": {"user_id": "bob", "reps": 2}}]}') ->> 'status' AS next;
-- The caller's SQLSTATE is kept when it is one (a value nested too deep: 54001), else 22P05.
SELECT syncline.apply_writes('{"sub": "bob"}', 'refused-1', '{"seq": 3, "ops": [
  {"op": "PUT", "refused": "data is nested more than 100 levels deep", "code": "54001"}]}') ->> 'code' AS code;
SELECT syncline.apply_writes('{"sub": "bob"}', 'refused-1', '{"seq": 4, "ops": [
  {"op": "PUT", "refused": "not a code", "code": "54001; DROP"}]}') ->> 'code' AS code;
SELECT id FROM sets WHERE id IN (201, 202) ORDER BY id;
-- A batch's record is written straight into client_batches: the columns' defaults as an
-- INSERT would give them, within the applying transaction.
BEGIN;
SELECT syncline.apply_writes('{"sub": "bob"}', 'direct-1', '{"seq": 1, "ops": [
  {"op": "PUT", "type": "sets", "id": 211, "data": {"user_id": "bob", "reps": 1}}]}') ->> 'status' AS status;
SELECT seq, subject, outcome ->> 'status' AS outcome, write_checkpoint IS NULL AS no_stamp,
       applied_at = now() AS applied_now, txid = pg_current_xact_id() AS this_xact
  FROM syncline_internal.client_batches WHERE client_id = 'direct-1';
COMMIT;
-- Two batches of one client in one statement (a gateway's write group): the second sees the
-- first's record, and a copy of the second is its duplicate.
SELECT syncline.apply_writes('{"sub": "bob"}', 'direct-3', '{"seq": 1, "ops": [
         {"op": "PUT", "type": "sets", "id": 221, "data": {"user_id": "bob", "reps": 1}}]}') ->> 'status' AS first,
       syncline.apply_writes('{"sub": "bob"}', 'direct-3', '{"seq": 2, "ops": [
         {"op": "PUT", "type": "sets", "id": 222, "data": {"user_id": "bob", "reps": 2}}]}') ->> 'status' AS second,
       syncline.apply_writes('{"sub": "bob"}', 'direct-3', '{"seq": 2, "ops": []}') ->> 'duplicate' AS again;
-- A column this library does not know (a newer schema): the record goes through the INSERT
-- statement (the column gets its default), and the batch is applied once.
ALTER TABLE syncline_internal.client_batches ADD COLUMN note text;
ALTER TABLE syncline_internal.client_batches ALTER COLUMN note SET DEFAULT 'through SQL';
SELECT syncline.apply_writes('{"sub": "bob"}', 'direct-1', '{"seq": 2, "ops": [
  {"op": "PUT", "type": "sets", "id": 212, "data": {"user_id": "bob", "reps": 2}}]}') ->> 'status' AS status;
SELECT syncline.apply_writes('{"sub": "bob"}', 'direct-1', '{"seq": 2, "ops": []}') ->> 'duplicate' AS replayed;
SELECT seq, note FROM syncline_internal.client_batches WHERE client_id = 'direct-1' ORDER BY seq;
ALTER TABLE syncline_internal.client_batches DROP COLUMN note;
-- A dropped column is no obstacle to the direct write.
SELECT syncline.apply_writes('{"sub": "bob"}', 'direct-1', '{"seq": 3, "ops": [
  {"op": "PUT", "type": "sets", "id": 214, "data": {"user_id": "bob", "reps": 4}}]}') ->> 'status' AS status;
SELECT seq, outcome ->> 'status' AS outcome FROM syncline_internal.client_batches
 WHERE client_id = 'direct-1' ORDER BY seq;
-- Nor is a trigger someone put on the table skipped: the record goes through the statement.
CREATE FUNCTION note_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'recorded through the statement: seq %', NEW.seq; RETURN NEW; END $$;
CREATE TRIGGER note_batch BEFORE INSERT ON syncline_internal.client_batches
  FOR EACH ROW EXECUTE FUNCTION note_batch();
SELECT syncline.apply_writes('{"sub": "bob"}', 'direct-1', '{"seq": 4, "ops": [
  {"op": "PUT", "type": "sets", "id": 215, "data": {"user_id": "bob", "reps": 5}}]}') ->> 'status' AS status;
DROP TRIGGER note_batch ON syncline_internal.client_batches;
DROP FUNCTION note_batch();
-- Numbers arrive as the client wrote them: a decimal of more than 17 digits, trailing zeros,
-- an integer past 64 bits inside a jsonb value, an array's elements. (Read through a double,
-- 12345678901234567.891 was stored as 12345678901234568 and 1.10 as 1.1.)
CREATE TABLE amounts (id text PRIMARY KEY, amount numeric, doc jsonb, parts numeric[], note text);
GRANT SELECT, INSERT, UPDATE, DELETE ON amounts TO syncline_writer;
SELECT syncline.allow_writes('amounts');
SELECT syncline.apply_writes('{"sub": "bob"}', 'exact-1', '{"seq": 1, "ops": [{"op": "PUT", "type": "amounts",
  "id": "a1", "data": {"amount": 12345678901234567.891, "doc": {"price": 1.10, "big": 123456789012345678901234567890},
  "parts": [0.10, 2.50], "note": 1.50}}]}') ->> 'status' AS status;
SELECT amount, doc, parts, note FROM amounts;
-- A number where a string belongs is no string: refused, as before numbers kept their text.
SELECT syncline.apply_writes('{"sub": "bob"}', 'exact-1', '{"seq": 2, "ops": [{"op": "PUT", "type": 1.5, "id": "a2"}]}') ->> 'message' AS message;
SELECT syncline.apply_writes('{"sub": "bob"}', 'exact-1', '{"seq": 3, "ops": [{"op": 2.5, "type": "amounts", "id": "a2"}]}') ->> 'message' AS message;
SELECT syncline.apply_writes('{"sub": "bob"}', 'exact-1', '{"seq": 4, "schema_version": 1.5, "ops": [{"op": "PUT", "type": "amounts", "id": 2.50, "data": {"amount": 1}}]}') ->> 'status' AS status;
SELECT id, amount FROM amounts WHERE id <> 'a1';
-- Past a double's range too (jsonb holds any numeric).
SELECT syncline.apply_writes('{"sub": "bob"}', 'exact-1', '{"seq": 5, "ops": [{"op": "PUT", "type": "amounts", "id": "a3", "data": {"amount": 1e400, "doc": [-1e-400]}}]}') ->> 'status' AS status;
SELECT amount = 1e400 AS exact, doc = '[-1e-400]'::jsonb AS exact_doc FROM amounts WHERE id = 'a3';
-- A rejection names the op's id as written, in the outcome's jsonb too.
SELECT syncline.apply_writes('{"sub": "bob"}', 'exact-1', '{"seq": 6, "ops": [{"op": "PATCH", "type": "amounts", "id": 9.90, "data": {"amount": 1}}]}') -> 'id' AS id;
-- Its retry repeats that answer digit for digit.
SELECT syncline.apply_writes('{"sub": "bob"}', 'exact-1', '{"seq": 6, "ops": []}') -> 'id' AS id;
SELECT syncline.disallow_writes('amounts');
DROP TABLE amounts;
SELECT syncline.drop_bucket('user_sets');
SELECT syncline.drop_bucket('all_secrets');
SELECT syncline.disallow_writes('audit');
DROP TABLE sets, audit, secrets;
DROP FUNCTION sets_from_v09(jsonb);
