-- Nothing is lost silently: DDL that would break a rule is refused like a
-- view's dependencies, Syncline's triggers cannot be disabled or dropped
-- behind its back, and writes under session_replication_role = replica
-- (logical replication subscribers, pg_restore --disable-triggers) still
-- reach the op log.
CREATE TABLE teams (id text PRIMARY KEY, member text NOT NULL);
CREATE TABLE tasks (id int PRIMARY KEY, team text NOT NULL, title text);
CREATE FUNCTION active(member text) RETURNS boolean STABLE LANGUAGE sql
  AS $$ SELECT $1 <> 'nobody' $$;
SELECT syncline.create_bucket('team_tasks',
  'SELECT id AS team FROM teams WHERE member = syncline.user_id() AND active(member)',
  ARRAY['SELECT * FROM tasks WHERE team = bucket.team']);

-- The primary key identifies every row: dropping or changing it is refused
-- (it used to be accepted, and every row's id became []).
ALTER TABLE tasks DROP CONSTRAINT tasks_pkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_pkey, ADD PRIMARY KEY (id, team);
-- A function the parameter query calls cannot be dropped or renamed.
DROP FUNCTION active(text);
ALTER FUNCTION active(text) RENAME TO is_active;
-- Nor a column it reads.
ALTER TABLE teams RENAME COLUMN member TO person;
SELECT proname FROM pg_proc WHERE proname IN ('active', 'is_active');

-- Syncline's triggers stay enabled and in place.
ALTER TABLE tasks DISABLE TRIGGER syncline_row;
ALTER TABLE tasks DISABLE TRIGGER ALL;
ALTER TABLE tasks ENABLE REPLICA TRIGGER syncline_row;
ALTER TABLE teams DISABLE TRIGGER syncline_parameters;
DROP TRIGGER syncline_row ON tasks;
DROP TRIGGER syncline_parameters ON teams;
ALTER TRIGGER syncline_row ON tasks RENAME TO my_trigger;
SELECT tgrelid::regclass, tgname, tgenabled FROM pg_trigger
 WHERE tgrelid IN ('tasks'::regclass, 'teams'::regclass) ORDER BY 1, 2;

-- Writes applied as a logical replication subscriber would apply them.
INSERT INTO teams VALUES ('red', 'alice');
SET session_replication_role = replica;
INSERT INTO tasks VALUES (1, 'red', 'replicated');
UPDATE tasks SET title = 'replicated, then updated' WHERE id = 1;
RESET session_replication_role;
SELECT syncline.flush() > 0 AS flushed;
SELECT op, object_id, data FROM syncline.bucket_data('team_tasks["red"]', 0) ORDER BY op_id;

-- A statement that changes nothing in a parameter table stages no recheck.
SELECT syncline.flush() >= 0 AS flushed;
UPDATE teams SET member = 'nobody' WHERE false;
UPDATE teams SET member = member;
SELECT count(*) AS staged_markers FROM syncline_internal.pending WHERE op = 10;
UPDATE teams SET member = 'bob';
UPDATE teams SET member = 'alice';
SELECT count(*) AS staged_markers FROM syncline_internal.pending WHERE op = 10;
-- A marker staged in a subtransaction that rolled back is staged again.
BEGIN;
SAVEPOINT s;
UPDATE teams SET member = 'carol';
ROLLBACK TO s;
UPDATE teams SET member = 'dave';
COMMIT;
SELECT count(*) AS staged_markers FROM syncline_internal.pending WHERE op = 10;
SELECT syncline.flush() >= 0 AS flushed;

-- Many definitions on one parameter table: the NOTIFY payload would pass
-- Postgres' 8000-byte limit, which used to make every flush fail. It is
-- capped; past the cap the gateways are told to recheck everyone.
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    PERFORM syncline.create_bucket(format('a_rather_long_bucket_name_for_many_definitions_%s', i),
      'SELECT id AS team FROM teams WHERE member = syncline.user_id()',
      ARRAY[format('SELECT id FROM tasks AS tasks_%s WHERE team = bucket.team', i)]);
  END LOOP;
END $$;
SELECT syncline.flush() >= 0 AS flushed;
UPDATE teams SET member = 'erin';
SELECT syncline.flush() >= 0 AS flushed_with_a_long_list;
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    PERFORM syncline.drop_bucket(format('a_rather_long_bucket_name_for_many_definitions_%s', i));
  END LOOP;
END $$;

-- Once the bucket is gone, the DDL goes through.
SELECT syncline.drop_bucket('team_tasks');
SELECT count(*) AS triggers_left FROM pg_trigger
 WHERE tgrelid IN ('tasks'::regclass, 'teams'::regclass);
ALTER TABLE tasks DROP CONSTRAINT tasks_pkey;
DROP FUNCTION active(text);
DROP TABLE tasks, teams;
