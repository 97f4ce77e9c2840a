-- Schema changes that would break a sync rule are refused, naming the rule;
-- harmless ones go through and the rules follow them.
CREATE TABLE workouts (id int PRIMARY KEY, user_id text, name text, notes text);
CREATE TABLE memberships (user_id text PRIMARY KEY, team text);
SELECT syncline.create_bucket('by_user', 'SELECT user_id FROM memberships WHERE user_id = syncline.user_id()',
  ARRAY['SELECT id, user_id, name FROM workouts WHERE user_id = bucket.user_id']);
SELECT syncline.create_bucket('everything', NULL, ARRAY['SELECT * FROM workouts AS all_workouts']);
INSERT INTO workouts VALUES (1, 'u1', 'legs', 'n');
ALTER TABLE workouts DROP COLUMN name;
ALTER TABLE workouts RENAME COLUMN user_id TO owner_id;
DROP TABLE workouts;
DROP TABLE memberships;
-- Columns no explicit rule names can change; SELECT * rules pick them up.
ALTER TABLE workouts DROP COLUMN notes;
ALTER TABLE workouts ADD COLUMN duration int DEFAULT 30;
ALTER TABLE workouts RENAME TO sessions;
UPDATE sessions SET duration = 45 WHERE id = 1;
SELECT syncline.flush();
SELECT bucket, op, object_type, data FROM syncline.bucket_data('everything[]', 0) b, LATERAL (SELECT 'everything[]' AS bucket) x
 ORDER BY op_id;
SELECT syncline.drop_bucket('by_user');
SELECT syncline.drop_bucket('everything');
DROP TABLE sessions, memberships;
