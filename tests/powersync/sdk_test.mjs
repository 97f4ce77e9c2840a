// The real PowerSync Node SDK (@powersync/node, pinned in package.json) against the gateway,
// through the connector shipped in examples/powersync: initial sync of a parameterized bucket,
// live changes, a local write uploaded and replaced by the server's version once its write
// checkpoint arrives, a rejected write reported and reverted, a bucket removed when access is
// lost, a rule change, the gateway restarted under the client, and no checksum failure logged.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PowerSyncDatabase, Schema, Table, column } from '@powersync/node';

import { SynclineConnector } from '../../examples/powersync/connector.mjs';
import { assert, assertEqual, ctx, makeToken, sql, test, waitFor } from './lib.mjs';

const schema = new Schema({
  pst_todos: new Table({ list_id: column.text, description: column.text, done: column.integer }),
  pst_notices: new Table({ body: column.text })
});

const logs = [];
const logger = {
  log(record) {
    const text = `${record.message ?? ''} ${record.error ? String(record.error?.message ?? record.error) : ''}`;
    logs.push({ level: record.level, text });
    if (process.env.PS_SDK_DEBUG && record.level >= 20) console.log(`  sdk[${record.level}] ${text.slice(0, 300)}`);
  }
};
const checksumFailures = () => logs.filter((l) => l.level >= 30 && /checksum|could not apply checkpoint,/i.test(l.text));

const rejected = [];
let db;
let dir;

const localTodos = async () =>
  Object.fromEntries((await db.getAll('SELECT id, list_id, description FROM pst_todos ORDER BY id')).map((r) => [r.id, r.description]));
const pendingUploads = async () => (await db.get('SELECT count(*) AS n FROM ps_crud')).n;

test('sdk_initial_sync_parameterized_bucket', async () => {
  sql(`INSERT INTO pst_members VALUES ('alice', 'A1'), ('alice', 'A2');
       INSERT INTO pst_todos (id, list_id, description) VALUES
         ('a1', 'A1', 'alpha'), ('a2', 'A1', 'beta'), ('b1', 'B1', 'not alice''s'), ('c1', 'A2', 'gamma')`);
  // Published before the client connects, so its first sync must carry them (the flusher
  // would, within milliseconds, but the first checkpoint is taken at once).
  sql('SELECT syncline.flush()');
  dir = mkdtempSync(join(tmpdir(), 'syncline-ps-'));
  db = new PowerSyncDatabase({ schema, database: { dbFilename: 'sdk.db', dbLocation: dir }, logger });
  await db.init();
  const connector = new SynclineConnector({
    endpoint: ctx.gateway.url,
    fetchToken: async () => makeToken(ctx.secret, 'alice', 3600),
    onRejected: (outcome) => rejected.push(outcome)
  });
  await db.connect(connector, { retryDelayMs: 300, crudUploadThrottleMs: 50 });
  await db.waitForFirstSync();
  const rows = await localTodos();
  assertEqual(rows, { a1: 'alpha', a2: 'beta', c1: 'gamma' }, 'rows after the first sync');
  const buckets = (await db.getAll("SELECT name FROM ps_buckets WHERE name LIKE 'pst_%' ORDER BY name")).map((r) => r.name);
  assertEqual(buckets, ['pst_list["A1"]', 'pst_list["A2"]'], 'buckets');
});

test('sdk_live_changes_arrive', async () => {
  sql(`INSERT INTO pst_todos (id, list_id, description) VALUES ('a3', 'A1', 'live insert');
       UPDATE pst_todos SET description = 'alpha 2' WHERE id = 'a1';
       DELETE FROM pst_todos WHERE id = 'a2'`);
  await waitFor('the live changes in the SDK', async () => {
    const rows = await localTodos();
    return rows.a3 === 'live insert' && rows.a1 === 'alpha 2' && !('a2' in rows);
  });
});

test('sdk_local_write_uploaded_and_replaced_after_its_write_checkpoint', async () => {
  await db.execute("INSERT INTO pst_todos (id, list_id, description, done) VALUES (uuid(), 'A1', 'buy milk!', 0)");
  const id = (await db.get("SELECT id FROM pst_todos WHERE description LIKE 'buy milk%'")).id;
  // The server's trigger appends " [srv]": the SDK shows that version only once the checkpoint
  // carrying the write's write checkpoint has been applied.
  await waitFor('the row on the server', () => sql(`SELECT description FROM pst_todos WHERE id = '${id}'`) === 'buy milk! [srv]');
  await waitFor('the server version in the SDK', async () => (await localTodos())[id] === 'buy milk! [srv]');
  assertEqual(await pendingUploads(), 0, 'upload queue');
  assertEqual(rejected.length, 0, 'rejections');
});

test('sdk_rejected_write_reported_and_reverted', async () => {
  await db.execute(`UPDATE pst_todos SET description = '${'x'.repeat(200)}' WHERE id = 'a3'`);
  assertEqual((await localTodos()).a3.length, 200, 'optimistic local value');
  await waitFor('the rejection', () => rejected.length === 1);
  assertEqual(rejected[0].code, '23514', 'SQLSTATE of the rejection');
  // Nothing the client syncs changed: the empty checkpoint_diff with the write checkpoint
  // lets the SDK drop its optimistic value for the server's.
  await waitFor('the server value back in the SDK', async () => (await localTodos()).a3 === 'live insert');
  assertEqual(await pendingUploads(), 0, 'upload queue');
});

test('sdk_bucket_removed_when_access_lost', async () => {
  sql(`DELETE FROM pst_members WHERE user_id = 'alice' AND list_id = 'A2'`);
  await waitFor('list A2 gone from the SDK', async () => !('c1' in (await localTodos())));
  const buckets = (await db.getAll("SELECT name FROM ps_buckets WHERE name LIKE 'pst_%' ORDER BY name")).map((r) => r.name);
  assertEqual(buckets, ['pst_list["A1"]'], 'buckets after losing A2');
  sql(`INSERT INTO pst_members VALUES ('alice', 'B1')`);
  await waitFor('list B1 in the SDK', async () => (await localTodos()).b1 === "not alice's");
});

test('sdk_rule_change_adds_and_removes_a_bucket', async () => {
  sql(`INSERT INTO pst_notices VALUES ('n1', 'maintenance tonight'), ('n2', 'new release');
       SELECT syncline.create_bucket('pst_board', NULL, ARRAY['SELECT * FROM pst_notices'])`);
  await waitFor('the new bucket in the SDK', async () => (await db.getAll('SELECT id FROM pst_notices')).length === 2);
  sql(`SELECT syncline.drop_bucket('pst_board')`);
  await waitFor('the dropped bucket gone from the SDK', async () => (await db.getAll('SELECT id FROM pst_notices')).length === 0);
});

test('sdk_gateway_restarted_under_the_client', async () => {
  const code = await ctx.gateway.stop();
  assertEqual(code, 0, 'exit code on SIGTERM');
  await waitFor('the SDK to notice', () => !db.connected, 10000);
  // Changes on both sides while the gateway is away.
  sql(`INSERT INTO pst_todos (id, list_id, description) VALUES ('a9', 'A1', 'while down')`);
  await db.execute("INSERT INTO pst_todos (id, list_id, description, done) VALUES ('a10', 'A1', 'offline write', 0)");
  const before = readFileSync(ctx.gateway.log, 'utf8').length;
  await ctx.gateway.start();
  await waitFor('the server change in the SDK', async () => (await localTodos()).a9 === 'while down', 30000);
  await waitFor('the offline write on the server', () => sql("SELECT description FROM pst_todos WHERE id = 'a10'") === 'offline write', 30000);
  await waitFor('the upload queue drained', async () => (await pendingUploads()) === 0, 30000);
  // It resumed from its positions rather than starting over.
  const log = readFileSync(ctx.gateway.log, 'utf8').slice(before);
  const resumed = [...log.matchAll(/event=powersync-stream client_id=\S+ buckets=(\d+)/g)].map((m) => Number(m[1]));
  assert(resumed.length > 0 && resumed[0] >= 1, `reconnect named no buckets: ${resumed}`);
});

test('sdk_no_checksum_failure_reported', async () => {
  // A last round trip, then the SDK's own logs must show no failed checksum at any point.
  sql(`INSERT INTO pst_todos (id, list_id, description) VALUES ('a11', 'A1', 'last')`);
  await waitFor('the last change', async () => (await localTodos()).a11 === 'last');
  const failures = checksumFailures();
  assertEqual(failures.map((f) => f.text), [], 'checksum failures in the SDK log');
  assert(logs.length > 0, 'the SDK logged nothing at all: the logger is not wired');
  await db.disconnectAndClear();
  await db.close();
  rmSync(dir, { recursive: true, force: true });
});
