-- Declaring rules, and every kind of rule that is refused.
CREATE TABLE lists (id text PRIMARY KEY, owner text NOT NULL, name text, archived bool DEFAULT false);
CREATE TABLE todos (id int PRIMARY KEY, list_id text NOT NULL, title text, done bool DEFAULT false);
CREATE TABLE nokey (a int, b text);
CREATE VIEW todo_view AS SELECT * FROM todos;

SELECT syncline.create_bucket('by_list',
  'SELECT id AS list_id FROM lists WHERE owner = syncline.user_id() AND NOT archived',
  ARRAY['SELECT * FROM todos WHERE list_id = bucket.list_id AND NOT done',
        'SELECT id, name AS title FROM lists WHERE bucket.list_id = id']);
SELECT syncline.create_bucket('everything', NULL, ARRAY['SELECT id, title FROM todos AS all_todos']);
-- Stored as declared and as Postgres deparsed them, every name schema-qualified:
-- that is what runs, whatever search_path or objects exist later.
SELECT name, parameter_query_source, parameter_query, parameter_names, parameter_types, definer
  FROM syncline_internal.bucket_definitions ORDER BY name;
SELECT bucket_name, position, relation, object_type, query, filter, key_columns
  FROM syncline_internal.data_queries ORDER BY 1, 2;
SELECT bucket_name, relation FROM syncline_internal.parameter_tables;
SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE tgname LIKE 'syncline%' ORDER BY 1, 2;

-- Refused, each with a clear error; nothing is left behind.
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELEC * FROM todos']);
SELECT syncline.create_bucket('b1', 'SELECT FROM WHERE x', ARRAY['SELECT * FROM todos']);
SELECT syncline.create_bucket('b1', 'DELETE FROM lists', ARRAY['SELECT * FROM todos']);
SELECT syncline.create_bucket('b1', 'SELECT id AS list_id FROM nosuch', ARRAY['SELECT * FROM todos']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM nosuch']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT id, nosuch FROM todos']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM todos WHERE nosuch = 1']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT t.* FROM todos t JOIN lists l ON l.id = t.list_id']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM todos, lists']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM todos WHERE list_id IN (SELECT id FROM lists)']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM (SELECT * FROM todos) s']);
SELECT syncline.create_bucket('b1', 'SELECT id AS list_id FROM lists', ARRAY['SELECT * FROM todos']);
SELECT syncline.create_bucket('b1', 'SELECT id AS list_id FROM lists', ARRAY['SELECT * FROM todos WHERE list_id = bucket.lst']);
SELECT syncline.create_bucket('b1', 'SELECT id AS list_id FROM lists', ARRAY['SELECT * FROM todos WHERE list_id = bucket.list_id OR done']);
SELECT syncline.create_bucket('b1', 'SELECT id AS list_id FROM lists', ARRAY['SELECT * FROM todos WHERE list_id = bucket.list_id AND title = bucket.list_id']);
SELECT syncline.create_bucket('b1', 'SELECT id AS list_id FROM lists', ARRAY['SELECT * FROM todos WHERE list_id > bucket.list_id']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM nokey']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM todo_view']);
SELECT syncline.create_bucket('by_list', NULL, ARRAY['SELECT * FROM todos']);
SELECT syncline.create_bucket('bad name', NULL, ARRAY['SELECT * FROM todos']);
SELECT syncline.create_bucket('b1', NULL, ARRAY[]::text[]);
SELECT syncline.create_bucket('b1', NULL, NULL);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT id, upper(title) AS t FROM todos']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT id, title AS id FROM todos']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM todos WHERE random() > 0.5']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM todos ORDER BY id']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT count(*) FROM todos']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM todos; SELECT * FROM lists']);
SELECT syncline.create_bucket('b1', 'SELECT 1 AS list_id', ARRAY['SELECT * FROM todos WHERE list_id = bucket.list_id']);
SELECT syncline.create_bucket('b1', 'SELECT 1', ARRAY['SELECT * FROM todos']);
SELECT syncline.create_bucket('b1', 'SELECT 1 AS a, 2 AS a', ARRAY['SELECT * FROM todos']);
SELECT syncline.create_bucket('b1', NULL, ARRAY['SELECT * FROM todos', 'SELECT id FROM todos WHERE done']);
SELECT count(*) AS half_installed FROM syncline_internal.bucket_definitions WHERE name = 'b1';
SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE tgname LIKE 'syncline%' ORDER BY 1, 2;

-- Only superusers and syncline_admin members declare rules; the caller must
-- own the tables.
CREATE ROLE rules_nobody;
CREATE ROLE rules_admin IN ROLE syncline_admin;
SET ROLE rules_nobody;
SELECT syncline.create_bucket('b2', NULL, ARRAY['SELECT * FROM todos']);
SET ROLE rules_admin;
SELECT syncline.create_bucket('b2', NULL, ARRAY['SELECT * FROM todos AS t2']);
RESET ROLE;
ALTER TABLE todos OWNER TO rules_admin;
SET ROLE rules_admin;
SELECT syncline.create_bucket('b2', NULL, ARRAY['SELECT * FROM todos AS t2']);
SELECT syncline.drop_bucket('b2');
RESET ROLE;
ALTER TABLE todos OWNER TO CURRENT_USER;

-- Dropping.
SELECT syncline.drop_bucket('nosuch');
SELECT syncline.drop_bucket('everything');
SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE tgname LIKE 'syncline%' ORDER BY 1, 2;
SELECT syncline.drop_bucket('by_list');
SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE tgname LIKE 'syncline%' ORDER BY 1, 2;
SELECT count(*) FROM syncline_internal.data_queries;
DROP ROLE rules_nobody;
DROP ROLE rules_admin;
DROP VIEW todo_view;
DROP TABLE lists, todos, nokey;
