-- Workout tracker, migration 1: how hard a set felt (rate of perceived exertion, 1-10).
-- Nullable, so clients built before this column keep working: their inserts and
-- updates name only the columns they know and still apply. Clients that know the
-- column see it on rows written after the migration (rows that are not written
-- again are not republished, under the `SELECT *` rule, with the new column).
ALTER TABLE sets ADD COLUMN rpe numeric(3, 1) CHECK (rpe BETWEEN 1 AND 10);
