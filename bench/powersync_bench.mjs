// Initial sync of one bucket into the PowerSync Node SDK's SQLite from Syncline's gateway:
// connect, wait for the first complete sync, count the rows. Prints one JSON line.
// Env: PS_MODULES (node_modules with @powersync/node), GW_URL, GW_SECRET, BENCH_ROWS.
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const { PowerSyncDatabase, Schema, Table, column } = await import(
  pathToFileURL(join(process.env.PS_MODULES, '@powersync/node/lib/index.js')).href
);

function token(secret, sub) {
  const now = Math.floor(Date.now() / 1000);
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ sub, iat: now, exp: now + 3600 })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

const schema = new Schema({ bench_rows: new Table({ owner: column.text, title: column.text, n: column.integer, done: column.integer }) });
const dir = mkdtempSync(join(tmpdir(), 'syncline-psbench-'));
const db = new PowerSyncDatabase({
  schema,
  database: { dbFilename: 'bench.db', dbLocation: dir },
  logger: { log: () => {} }
});
await db.init();
const connector = {
  fetchCredentials: async () => ({ endpoint: process.env.GW_URL, token: token(process.env.GW_SECRET, 'bench-user') }),
  uploadData: async () => {}
};
const start = performance.now();
await db.connect(connector);
await db.waitForFirstSync();
const seconds = (performance.now() - start) / 1000;
const rows = (await db.get('SELECT count(*) AS n FROM bench_rows')).n;
console.log(JSON.stringify({ rows, seconds: Number(seconds.toFixed(3)), rows_per_second: Math.round(rows / seconds) }));
await db.disconnect();
await db.close();
rmSync(dir, { recursive: true, force: true });
if (rows !== Number(process.env.BENCH_ROWS)) {
  console.error(`expected ${process.env.BENCH_ROWS} rows, got ${rows}`);
  process.exit(1);
}
