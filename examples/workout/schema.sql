-- Workout tracker: the example app's own schema and some seed data.
-- Plain PostgreSQL, nothing Syncline-specific: this is what an app has before
-- it adopts Syncline. The sync rules and the authorization live in rules.sql.
--   psql -v ON_ERROR_STOP=1 -f examples/workout/schema.sql -f examples/workout/rules.sql

CREATE TABLE users (
  id text PRIMARY KEY,                 -- the token's 'sub' claim
  name text NOT NULL
);

CREATE TABLE workouts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id text NOT NULL REFERENCES users,
  name text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workouts_user_id ON workouts (user_id);

-- Shared by everyone, maintained by the app's admins.
CREATE TABLE exercises (
  id int PRIMARY KEY,
  name text NOT NULL UNIQUE,
  muscle_group text NOT NULL
);

-- user_id is denormalized from the workout so the sync rule can map a set to
-- its owner's bucket from the row alone.
CREATE TABLE sets (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workout_id uuid NOT NULL REFERENCES workouts ON DELETE CASCADE,
  user_id text NOT NULL,
  exercise_id int NOT NULL REFERENCES exercises,
  reps int NOT NULL CHECK (reps > 0),
  weight_kg numeric(6, 2) CHECK (weight_kg >= 0),
  done_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sets_workout_id ON sets (workout_id);
CREATE INDEX sets_user_id ON sets (user_id);

-- Seed data ----------------------------------------------------------------------

INSERT INTO users (id, name) VALUES
  ('alice', 'Alice'),
  ('bob', 'Bob'),
  ('carol', 'Carol');

INSERT INTO exercises (id, name, muscle_group) VALUES
  (1, 'Back squat', 'legs'),
  (2, 'Bench press', 'chest'),
  (3, 'Deadlift', 'back'),
  (4, 'Overhead press', 'shoulders'),
  (5, 'Pull-up', 'back'),
  (6, 'Barbell row', 'back'),
  (7, 'Romanian deadlift', 'legs'),
  (8, 'Dips', 'chest');

INSERT INTO workouts (id, user_id, name, started_at) VALUES
  ('a0000000-0000-4000-8000-000000000001', 'alice', 'Leg day', '2026-11-02 07:30:00+00'),
  ('a0000000-0000-4000-8000-000000000002', 'alice', 'Push', '2026-11-04 07:30:00+00'),
  ('b0000000-0000-4000-8000-000000000001', 'bob', 'Full body', '2026-11-03 18:00:00+00'),
  ('c0000000-0000-4000-8000-000000000001', 'carol', 'Pull', '2026-11-05 12:15:00+00');

INSERT INTO sets (workout_id, user_id, exercise_id, reps, weight_kg, done_at) VALUES
  ('a0000000-0000-4000-8000-000000000001', 'alice', 1, 5, 80, '2026-11-02 07:35:00+00'),
  ('a0000000-0000-4000-8000-000000000001', 'alice', 1, 5, 85, '2026-11-02 07:40:00+00'),
  ('a0000000-0000-4000-8000-000000000001', 'alice', 7, 8, 60, '2026-11-02 07:50:00+00'),
  ('a0000000-0000-4000-8000-000000000002', 'alice', 2, 5, 55, '2026-11-04 07:35:00+00'),
  ('a0000000-0000-4000-8000-000000000002', 'alice', 4, 6, 35.5, '2026-11-04 07:50:00+00'),
  ('b0000000-0000-4000-8000-000000000001', 'bob', 3, 3, 140, '2026-11-03 18:10:00+00'),
  ('b0000000-0000-4000-8000-000000000001', 'bob', 5, 10, 0, '2026-11-03 18:25:00+00'),
  ('c0000000-0000-4000-8000-000000000001', 'carol', 6, 8, 50, '2026-11-05 12:20:00+00');
