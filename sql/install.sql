-- Installing, what it creates, and dropping it cleanly.
CREATE EXTENSION syncline;
SELECT nspname FROM pg_namespace WHERE nspname LIKE 'syncline%' ORDER BY 1;
SELECT p.oid::regprocedure AS function FROM pg_proc p
 WHERE p.pronamespace = 'syncline'::regnamespace
 ORDER BY p.proname, pg_get_function_identity_arguments(p.oid) COLLATE "C";
-- Every public function is documented.
SELECT p.oid::regprocedure AS undocumented FROM pg_proc p
 WHERE p.pronamespace = 'syncline'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT rolname FROM pg_roles WHERE rolname LIKE 'syncline%' ORDER BY 1;
-- Internal tables are not readable by ordinary roles.
CREATE ROLE install_nobody;
SET ROLE install_nobody;
SELECT * FROM syncline_internal.ops;
SELECT syncline.checkpoint('{}');
RESET ROLE;
DROP ROLE install_nobody;
-- Dropping the extension removes its triggers from user tables.
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT syncline.create_bucket('all_t', NULL, ARRAY['SELECT * FROM t']);
SELECT tgname FROM pg_trigger WHERE tgrelid = 't'::regclass ORDER BY 1;
DROP EXTENSION syncline;
SELECT tgname FROM pg_trigger WHERE tgrelid = 't'::regclass ORDER BY 1;
INSERT INTO t VALUES (1, 'still writable');
DROP TABLE t;
CREATE EXTENSION syncline;
