// `make demo` (scripts/demo.sh starts Postgres, the gateway and serve.mjs, then this):
// headless Chromium drives the workout web app as three devices, alice's phone (A), alice's
// laptop (B) and bob's phone, through the UI, and checks every device against Postgres.
//   DEMO_URL=http://127.0.0.1:5173 CHROMIUM=/usr/bin/chromium OUT_DIR=build/demo MIGRATION=... node demo.mjs
// PG* in the environment name the database. Prints each step and what each device holds;
// exits non-zero on the first broken expectation (screenshots of every device either way).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const URL_BASE = process.env.DEMO_URL;
const OUT = process.env.OUT_DIR || 'build/demo';
const TIMEOUT = Number(process.env.DEMO_TIMEOUT_MS || 20000);
mkdirSync(OUT, { recursive: true });

const t0 = Date.now();
const log = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function sql(text) {
  return execFileSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-c', text], { encoding: 'utf8', env: process.env }).trim();
}
function sqlFile(path) {
  execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', path], { encoding: 'utf8', env: process.env });
}

async function waitFor(what, fn, ms = TIMEOUT) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}
function expect(cond, what) {
  if (!cond) throw new Error(`expectation failed: ${what}`);
  log(`  ok: ${what}`);
}

// --- what a device holds, what the server holds ------------------------------------------
const norm = (rows) =>
  rows
    .map((r) => ({
      id: String(r.id),
      workout_id: String(r.workout_id),
      user_id: r.user_id,
      exercise_id: Number(r.exercise_id),
      reps: Number(r.reps),
      weight_kg: r.weight_kg === null || r.weight_kg === undefined ? null : Number(r.weight_kg)
    }))
    .sort((a, b) => a.id.localeCompare(b.id));

function serverSets(user) {
  return norm(
    JSON.parse(
      sql(`SELECT coalesce(json_agg(json_build_object('id', id, 'workout_id', workout_id, 'user_id', user_id,
             'exercise_id', exercise_id, 'reps', reps, 'weight_kg', weight_kg)), '[]') FROM sets WHERE user_id = '${user}'`)
    )
  );
}
const serverExercises = () => sql("SELECT string_agg(id || ':' || name, ',' ORDER BY id) FROM exercises");
const serverWorkouts = (user) => sql(`SELECT string_agg(id::text, ',' ORDER BY id) FROM workouts WHERE user_id = '${user}'`);

class Device {
  constructor(name, user) {
    Object.assign(this, { name, user, console: [] });
  }
  async open(browser) {
    this.context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    this.page = await this.context.newPage();
    this.page.on('console', (m) => this.console.push(`${m.type()}: ${m.text()}`));
    this.page.on('pageerror', (e) => this.console.push(`pageerror: ${e.message}`));
    await this.page.goto(`${URL_BASE}/?user=${this.user}`);
    await this.page.waitForFunction(() => window.workout?.db, null, { timeout: TIMEOUT });
    log(`  ${this.name}: app loaded (${await this.eval(() => window.workout.timings)})`);
  }
  eval(fn, arg) {
    return this.page.evaluate(fn, arg);
  }
  async sets() {
    return norm(await this.eval(() => window.workout.db.getAll('SELECT id, workout_id, user_id, exercise_id, reps, weight_kg FROM sets')));
  }
  async exercises() {
    return (await this.eval(() => window.workout.db.getAll('SELECT id, name FROM exercises ORDER BY CAST(id AS INTEGER)')))
      .map((r) => `${r.id}:${r.name}`)
      .join(',');
  }
  async workouts() {
    return (await this.eval(() => window.workout.db.getAll('SELECT id FROM workouts ORDER BY id'))).map((r) => r.id).join(',');
  }
  async pending() {
    return Number(await this.page.locator('#status').getAttribute('data-pending'));
  }
  async connected() {
    return (await this.page.locator('#status').getAttribute('data-connected')) === 'true';
  }
  async statusLine() {
    return this.page.locator('#status').textContent();
  }
  async rejections() {
    return this.page.locator('#rejections li').allTextContents();
  }
  async buckets() {
    return this.eval(() =>
      window.workout.db.getAll('SELECT b.name, (SELECT count(*) FROM ps_oplog o WHERE o.bucket = b.id) AS rows FROM ps_buckets b ORDER BY b.name')
    );
  }
  async show() {
    const sets = await this.sets();
    const held = sets.map((s) => `${s.id.slice(0, 4)}:${s.reps}x${s.weight_kg ?? '-'}`).join(' ');
    log(`  ${this.name.padEnd(15)} ${String(sets.length).padStart(2)} sets [${held}] | ${await this.statusLine()}`);
  }
  // Uses the app's own toggle (db.disconnect / db.connect).
  async setOnline(on) {
    const label = on ? 'Go online' : 'Go offline';
    await this.page.getByRole('button', { name: label }).click();
    await waitFor(`${this.name} to be ${on ? 'connected' : 'disconnected'}`, async () => (await this.connected()) === on);
  }
  async logSet(workoutName, exercise, reps, weight) {
    await this.page.selectOption('#log-workout', { label: workoutName });
    await this.page.selectOption('#log-exercise', { label: exercise });
    await this.page.fill('#log-reps', String(reps));
    await this.page.fill('#log-weight', String(weight));
    const before = (await this.sets()).length;
    await this.page.getByRole('button', { name: 'Log set' }).click();
    await waitFor(`${this.name}'s new set in its list`, async () => (await this.page.locator('tr[data-set-id]').count()) === before + 1);
  }
  async editSet(id, reps, weight) {
    const row = this.page.locator(`tr[data-set-id="${id}"]`);
    await row.getByRole('button', { name: 'Edit' }).click();
    await this.page.fill('#edit-reps', String(reps));
    await this.page.fill('#edit-weight', String(weight));
    await this.page.locator(`tr[data-set-id="${id}"]`).getByRole('button', { name: 'Save' }).click();
    await waitFor(`${this.name} to show the edit`, async () => (await row.locator('td.reps').textContent()) === String(reps));
  }
  async deleteSet(id) {
    await this.page.locator(`tr[data-set-id="${id}"]`).getByRole('button', { name: 'Delete' }).click();
    await waitFor(`${this.name} to drop the row`, async () => (await this.page.locator(`tr[data-set-id="${id}"]`).count()) === 0);
  }
  async screenshot(suffix = '') {
    const path = `${OUT}/${this.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}${suffix}.png`;
    await this.page.screenshot({ path, fullPage: true });
    return path;
  }
}

// The device holds exactly what the server has for its user (sets, workouts, the exercise catalog).
async function inSync(device, what = 'in sync with Postgres') {
  let last;
  try {
    await waitFor(`${device.name} ${what}`, async () => {
      const [local, server] = [await device.sets(), serverSets(device.user)];
      last = { local: local.length, server: server.length };
      return (
        JSON.stringify(local) === JSON.stringify(server) &&
        (await device.workouts()) === serverWorkouts(device.user) &&
        (await device.exercises()) === serverExercises() &&
        (await device.pending()) === 0
      );
    });
  } catch (e) {
    const buckets = await device.buckets().catch(() => []);
    const empty = buckets.filter((b) => Number(b.rows) === 0).map((b) => b.name);
    const hint = empty.length ? ` NOTE: bucket(s) with no rows on the device: ${empty.join(', ')} (initial bucket copy lost?)` : '';
    throw new Error(`${e.message}; sets local/server ${JSON.stringify(last)}; buckets ${JSON.stringify(buckets)}.${hint}`);
  }
  log(`  ok: ${device.name} ${what}`);
}

const steps = [];
const step = (title, fn) => steps.push({ title, fn });

const A = new Device('alice phone A', 'alice');
const B = new Device('alice laptop B', 'alice');
const bob = new Device('bob phone', 'bob');
const devices = [A, B, bob];
const showAll = async () => {
  for (const d of devices) await d.show();
};

const aliceSeed = sql("SELECT string_agg(id::text, ',' ORDER BY done_at) FROM sets WHERE user_id = 'alice'").split(',');
const [S1, S2] = aliceSeed; // B edits S1; A edits S2 offline while B deletes it
const aliceIds = new Set(aliceSeed);
let aNew = [];

step('all three devices open the app and sync', async () => {
  await Promise.all(devices.map((d) => d.open(browser)));
  for (const d of devices) await inSync(d, 'holds its user\'s rows, as Postgres has them');
  await showAll();
});

step("bob never sees alice's rows", async () => {
  const rows = await bob.eval(() => window.workout.db.getAll('SELECT id, user_id FROM sets UNION ALL SELECT id, user_id FROM workouts'));
  expect(rows.length > 0 && rows.every((r) => r.user_id === 'bob'), `bob's device holds only bob's sets and workouts (${rows.length} rows)`);
  expect(!rows.some((r) => aliceIds.has(r.id)), 'none of alice\'s set ids on bob\'s device');
});

step('A goes offline (app toggle) and logs three sets, and edits a set', async () => {
  await A.setOnline(false);
  const before = new Set((await A.sets()).map((s) => s.id));
  await A.logSet('Leg day', 'Back squat', 5, 90);
  await A.logSet('Leg day', 'Back squat', 4, 95);
  await A.logSet('Push', 'Dips', 10, 0);
  await A.editSet(S2, 12, 85);
  aNew = (await A.sets()).filter((s) => !before.has(s.id)).map((s) => s.id);
  expect(aNew.length === 3, 'A holds three new sets locally');
  await waitFor('4 pending uploads on A', async () => (await A.pending()) === 4);
  expect(true, 'A queues 4 writes (3 inserts, 1 edit) while offline');
  expect(serverSets('alice').length === aliceSeed.length, 'nothing reached Postgres');
  await showAll();
});

step(`B edits set ${S1.slice(0, 4)} and deletes set ${S2.slice(0, 4)} (which A edited offline)`, async () => {
  await B.editSet(S1, 7, 100);
  await B.deleteSet(S2);
  await waitFor('B\'s writes in Postgres', () => sql(`SELECT count(*) FROM sets WHERE id = '${S2}'`) === '0' && sql(`SELECT reps FROM sets WHERE id = '${S1}'`) === '7');
  await inSync(B);
  const a = await A.sets();
  expect(
    a.find((s) => s.id === S1)?.reps === 5 && a.find((s) => s.id === S2)?.reps === 12,
    'A (offline) still shows its own version: its sync stream is really disconnected'
  );
  await showAll();
});

step('A comes back online: its queue uploads, the edit of the deleted set is rejected', async () => {
  await A.setOnline(true);
  await waitFor('the rejection shown on A', async () => (await A.rejections()).length === 1);
  const [text] = await A.rejections();
  log(`  A shows: "${text}"`);
  expect(/PATCH sets\//.test(text) && /P0002/.test(text), 'A lists its PATCH of the deleted set as rejected with SQLSTATE P0002 and the reason');
  await inSync(A);
  await inSync(B);
  const server = serverSets('alice');
  expect(aNew.every((id) => server.some((s) => s.id === id)), "A's three offline sets are in Postgres");
  expect(!server.some((s) => s.id === S2), `set ${S2.slice(0, 4)} stays deleted`);
  expect(server.find((s) => s.id === S1)?.reps === 7, "B's edit stands");
  expect(JSON.stringify(await A.sets()) === JSON.stringify(await B.sets()), 'A and B hold identical sets');
  await showAll();
});

step('bob tries a write the rules forbid (renaming a shared exercise)', async () => {
  // The UI offers no such thing: this is what a tampered client could send. exercises is
  // SELECT-only for workout_app (rules.sql), so the server refuses it.
  await bob.eval(() => window.workout.db.execute("UPDATE exercises SET name = 'Squat (bob was here)' WHERE id = '1'"));
  await waitFor('the rejection shown on bob\'s device', async () => (await bob.rejections()).length === 1);
  const [text] = await bob.rejections();
  log(`  bob shows: "${text}"`);
  expect(/42501/.test(text), 'rejected with SQLSTATE 42501 (permission denied)');
  expect(sql('SELECT name FROM exercises WHERE id = 1') === 'Back squat', 'Postgres unchanged');
  await waitFor("bob's local exercise name reverted", async () =>
    (await bob.eval(() => window.workout.db.get("SELECT name FROM exercises WHERE id = '1'"))).name === 'Back squat'
  );
  expect(true, "bob's optimistic rename reverted to the server's");
  await inSync(bob);
  const rows = await bob.eval(() => window.workout.db.getAll("SELECT id FROM sets WHERE user_id <> 'bob'"));
  expect(rows.length === 0, "bob still holds none of alice's rows");
});

step('schema drift: A queues writes offline, the server adds a column, A\'s writes still apply', async () => {
  await A.setOnline(false);
  await A.logSet('Push', 'Bench press', 6, 60);
  await A.editSet(S1, 8, 100);
  await waitFor('2 pending uploads on A', async () => (await A.pending()) === 2);
  log(`  server: psql -f ${process.env.MIGRATION}`);
  sqlFile(process.env.MIGRATION);
  const cols = sql("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'sets'");
  log(`  sets columns now: ${cols}`);
  await A.setOnline(true);
  await inSync(A, 'in sync after its old-schema writes');
  await inSync(B);
  expect((await A.rejections()).length === 1, 'no new rejection on A');
  expect(sql(`SELECT reps FROM sets WHERE id = '${S1}'`) === '8', "A's queued edit applied");
  expect(serverSets('alice').length === aliceSeed.length - 1 + 3 + 1, "A's queued insert applied");
  await showAll();
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage']
});
let failed = null;
for (const [i, { title, fn }] of steps.entries()) {
  log(`step ${i + 1}/${steps.length}: ${title}`);
  try {
    await fn();
  } catch (e) {
    failed = e;
    log(`FAILED: ${e.message}`);
    break;
  }
}
for (const d of devices) {
  if (!d.page) continue;
  const path = await d.screenshot(failed ? '-failed' : '').catch((e) => `(no screenshot: ${e.message})`);
  const consoleLog = path.replace(/(-failed)?\.png$/, '.console.log');
  writeFileSync(consoleLog, d.console.join('\n') + '\n');
  log(`screenshot of ${d.name}: ${path} (its console: ${consoleLog})`);
  if (failed) {
    console.log(`---- ${d.name} console (last 15)`);
    for (const line of d.console.slice(-15)) console.log(`  ${line.slice(0, 400)}`);
  }
}
await browser.close();
if (failed) {
  console.log(`demo FAILED after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  process.exit(1);
}
console.log(`demo passed: ${steps.length} steps in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
