-- Workout tracker: sync rules and authorization (needs CREATE EXTENSION syncline).
-- Load after schema.sql, as a role that may declare rules (a superuser or a
-- member of syncline_admin) and owns the tables.

-- Who gets what ----------------------------------------------------------------

-- One bucket per user: their profile, workouts and sets.
SELECT syncline.create_bucket(
  'user_workouts',
  'SELECT syncline.user_id() AS user_id',
  ARRAY[
    'SELECT * FROM users WHERE id = bucket.user_id',
    'SELECT * FROM workouts WHERE user_id = bucket.user_id',
    'SELECT * FROM sets WHERE user_id = bucket.user_id'
  ]);

-- The exercise catalog: one global bucket everyone gets.
SELECT syncline.create_bucket(
  'exercises',
  NULL,
  ARRAY['SELECT * FROM exercises']);

-- Who may write what -----------------------------------------------------------
-- syncline.apply_writes applies client writes as syncline.write_role with the
-- client's token claims in scope, so these privileges and policies are the
-- whole authorization story.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'workout_app') THEN
    CREATE ROLE workout_app NOLOGIN;
  END IF;
END
$$;

-- Client writes to this database run as workout_app (new sessions).
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I SET syncline.write_role = %L', current_database(), 'workout_app');
END
$$;

GRANT USAGE ON SCHEMA public TO workout_app;
GRANT USAGE ON SCHEMA syncline TO workout_app;
GRANT SELECT ON exercises TO workout_app;                  -- read-only for clients
GRANT SELECT, UPDATE (name) ON users TO workout_app;        -- may rename themselves
GRANT SELECT, INSERT, UPDATE, DELETE ON workouts, sets TO workout_app;

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE workouts ENABLE ROW LEVEL SECURITY;
ALTER TABLE sets ENABLE ROW LEVEL SECURITY;

CREATE POLICY own_user ON users TO workout_app
  USING (id = syncline.user_id())
  WITH CHECK (id = syncline.user_id());

CREATE POLICY own_workouts ON workouts TO workout_app
  USING (user_id = syncline.user_id())
  WITH CHECK (user_id = syncline.user_id());

-- A set belongs to the user and must hang off one of the user's own workouts.
CREATE POLICY own_sets ON sets TO workout_app
  USING (user_id = syncline.user_id())
  WITH CHECK (
    user_id = syncline.user_id()
    AND EXISTS (SELECT 1 FROM workouts w
                 WHERE w.id = sets.workout_id AND w.user_id = syncline.user_id()));
