-- Least privilege: nothing Syncline runs on someone's behalf runs with more
-- privilege than its author, and no search_path or object a caller controls
-- changes what Syncline's own statements mean.
CREATE ROLE mallory LOGIN;
GRANT syncline_gateway, syncline_admin TO mallory;
CREATE SCHEMA evil AUTHORIZATION mallory;
CREATE TABLE notes (id int PRIMARY KEY, owner text, body text);
GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON notes TO mallory;
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO syncline_writer;
SELECT syncline.create_bucket('note_owner', 'SELECT syncline.user_id() AS owner',
  ARRAY['SELECT * FROM notes WHERE owner = bucket.owner']);

-- Mallory shadows the equality operators Syncline's internal statements use,
-- and records in whose name they ran. Before 0.2 they ran as the bootstrap
-- superuser, and this made mallory a superuser.
SET ROLE mallory;
CREATE TABLE evil.calls (who text, superuser boolean);
CREATE FUNCTION evil.pwn(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO evil.calls SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'ALTER ROLE mallory SUPERUSER';
  END IF;
  RETURN a OPERATOR(pg_catalog.=) b;
END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.pwn);
CREATE FUNCTION evil.pwn_oid(a oid, b oid) RETURNS boolean LANGUAGE sql AS
  $$ SELECT evil.pwn(a::text, b::text) $$;
CREATE OPERATOR evil.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = evil.pwn_oid);
CREATE FUNCTION evil.pwn_regclass(a regclass, b regclass) RETURNS boolean LANGUAGE sql AS
  $$ SELECT evil.pwn(a::text, b::text) $$;
CREATE OPERATOR evil.= (LEFTARG = regclass, RIGHTARG = regclass, FUNCTION = evil.pwn_regclass);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT INSERT ON evil.calls TO PUBLIC;
SET search_path = evil, pg_catalog, public;
-- A plain write to a synced table (the row trigger compiles the rules) ...
INSERT INTO notes VALUES (1, 'mallory', 'hi');
-- ... a write batch through the gateway's function ...
SELECT syncline.apply_writes('{"sub": "mallory"}', 'm-1',
  '{"seq": 1, "ops": [{"op": "PUT", "type": "notes", "id": 2, "data": {"owner": "mallory"}}]}') ->> 'status' AS status;
-- ... declaring and dropping a rule, checkpoints, write checkpoints.
SELECT syncline.create_bucket('mallory_notes', NULL, ARRAY['SELECT id FROM notes AS mnotes']);
SELECT count(*) > 0 AS has_buckets FROM jsonb_array_elements(syncline.checkpoint('{"sub": "mallory"}') -> 'buckets');
SELECT syncline.client_write_checkpoint('{"sub": "mallory"}', 'm-1') > 0 AS has_write_checkpoint;
SELECT syncline.drop_bucket('mallory_notes');
RESET search_path;
RESET ROLE;
SELECT rolsuper AS mallory_is_superuser FROM pg_roles WHERE rolname = 'mallory';
-- The shadowing operator never ran in Syncline's statements (nor as a superuser).
SELECT count(*) AS calls_as_superuser FROM evil.calls WHERE superuser;
SELECT DISTINCT who FROM evil.calls ORDER BY 1;

-- Filters run for every writer and in the background: only PostgreSQL's own
-- functions, operators and types, even when labelled IMMUTABLE.
SET ROLE mallory;
CREATE FUNCTION evil.looks_harmless(text) RETURNS boolean IMMUTABLE LANGUAGE sql AS $$ SELECT true $$;
SELECT syncline.create_bucket('sneaky', NULL,
  ARRAY['SELECT * FROM notes AS sneaky_notes WHERE evil.looks_harmless(body)']);
CREATE OPERATOR evil.~~~ (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.pwn);
SELECT syncline.create_bucket('sneaky', NULL,
  ARRAY['SELECT * FROM notes AS sneaky_notes WHERE body OPERATOR(evil.~~~) ''x''']);
CREATE DOMAIN evil.checked AS text CHECK (evil.looks_harmless(VALUE));
SELECT syncline.create_bucket('sneaky', NULL,
  ARRAY['SELECT * FROM notes AS sneaky_notes WHERE body::evil.checked = ''x''']);
RESET ROLE;
-- Built-in immutable functions are fine, and are stored schema-qualified
-- where they are not PostgreSQL's own.
CREATE TYPE mood AS ENUM ('happy', 'sad');
ALTER TABLE notes ADD COLUMN mood mood;
SET search_path = evil, public, pg_catalog;
SELECT syncline.create_bucket('happy_notes', NULL,
  ARRAY['SELECT id, body FROM notes AS happy WHERE mood = ''happy''::mood AND lower(body) <> ''''']);
RESET search_path;
SELECT query, filter FROM syncline_internal.data_queries WHERE bucket_name = 'happy_notes';
INSERT INTO notes VALUES (3, 'alice', 'Yay', 'happy'), (4, 'alice', 'Meh', 'sad');
SELECT syncline.flush() > 0 AS flushed;
SELECT object_id FROM syncline.bucket_data('happy_notes[]', 0) ORDER BY op_id;
SELECT syncline.drop_bucket('happy_notes');

-- Declaring a rule checks the declarer's rights every time, not only when
-- Syncline's trigger is first created on the table.
CREATE ROLE rules_reader;
GRANT syncline_admin TO rules_reader;
GRANT SELECT ON notes TO rules_reader;
SET ROLE rules_reader;
SELECT syncline.create_bucket('second_look', NULL, ARRAY['SELECT * FROM notes AS again']);
RESET ROLE;
-- A non-superuser syncline_admin member declares the first rule on its own table.
CREATE TABLE owned (id int PRIMARY KEY, v text);
ALTER TABLE owned OWNER TO rules_reader;
SET ROLE rules_reader;
INSERT INTO owned VALUES (1, 'before');
SELECT syncline.create_bucket('owned_rows', NULL, ARRAY['SELECT * FROM owned']);
INSERT INTO owned VALUES (2, 'after');
SELECT syncline.wait_for_initial_copy(10000) AS copied;
RESET ROLE;
SELECT syncline.flush() >= 0 AS flushed;
SELECT object_id, data FROM syncline.bucket_data('owned_rows[]', 0) ORDER BY op_id;
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'owned'::regclass ORDER BY 1;
-- Someone else's syncline_admin membership may drop the rule and its triggers.
SELECT syncline.drop_bucket('owned_rows');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'owned'::regclass;

-- syncline.claims is what row-level security policies trust: an ordinary
-- session cannot set it to impersonate someone.
SET ROLE mallory;
SET syncline.claims = '{"sub": "alice"}';
SELECT set_config('syncline.claims', '{"sub": "alice"}', false);
SELECT syncline.user_id() AS impersonated;
RESET ROLE;

-- A write role that owns the tables it writes would skip their row-level
-- security: refused, unless the table forces it.
CREATE ROLE owning_writer;
CREATE TABLE diary (id int PRIMARY KEY, owner text NOT NULL, body text);
ALTER TABLE diary OWNER TO owning_writer;
ALTER TABLE diary ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_diary ON diary USING (owner = syncline.user_id()) WITH CHECK (owner = syncline.user_id());
SELECT syncline.allow_writes('diary');
SET syncline.write_role = 'owning_writer';
SELECT syncline.apply_writes('{"sub": "alice"}', 'a-1',
  '{"seq": 1, "ops": [{"op": "PUT", "type": "diary", "id": 1, "data": {"owner": "bob", "body": "forged"}}]}');
ALTER TABLE diary FORCE ROW LEVEL SECURITY;
SELECT syncline.apply_writes('{"sub": "alice"}', 'a-1',
  '{"seq": 2, "ops": [{"op": "PUT", "type": "diary", "id": 1, "data": {"owner": "bob", "body": "forged"}}]}') ->> 'code' AS code;
SELECT syncline.apply_writes('{"sub": "alice"}', 'a-1',
  '{"seq": 3, "ops": [{"op": "PUT", "type": "diary", "id": 1, "data": {"owner": "alice", "body": "mine"}}]}') ->> 'status' AS status;
RESET syncline.write_role;
SELECT * FROM diary;

SELECT syncline.disallow_writes('diary');
SELECT syncline.drop_bucket('note_owner');
DROP TABLE notes, owned, diary;
DROP TYPE mood;
DROP SCHEMA evil CASCADE;
DROP OWNED BY mallory, rules_reader, owning_writer;
DROP ROLE mallory, rules_reader, owning_writer;
