// The workout tracker in a browser: @powersync/web keeps a SQLite replica of what the sync
// rules give this user (examples/workout/rules.sql), every read below is a watched query on
// that replica, every write a local SQL statement the SDK queues and uploads through the
// connector. No sync code of our own.
import {
  column,
  PowerSyncDatabase,
  Schema,
  SyncStreamConnectionMethod,
  Table,
  WASQLiteVFS,
  type SyncStatus
} from '@powersync/web';
import { SynclineConnector, type Rejection } from './connector';

// What the client stores: the synced tables (ids are text on the client, the exercise catalog's
// int ids included), plus a local-only table for the writes the server rejected.
const schema = new Schema({
  users: new Table({ name: column.text }),
  workouts: new Table({ user_id: column.text, name: column.text, started_at: column.text }),
  exercises: new Table({ name: column.text, muscle_group: column.text }),
  sets: new Table(
    {
      workout_id: column.text,
      user_id: column.text,
      exercise_id: column.integer,
      reps: column.integer,
      weight_kg: column.real,
      done_at: column.text
    },
    { indexes: { workout: ['workout_id'] } }
  ),
  rejections: new Table(
    { at: column.text, op: column.text, tbl: column.text, row_id: column.text, code: column.text, message: column.text },
    { localOnly: true }
  )
});

const USERS = ['alice', 'bob', 'carol'];
const params = new URLSearchParams(location.search);
const user = USERS.includes(params.get('user') ?? '') ? params.get('user')! : 'alice';

// SQLite in a dedicated worker on IndexedDB: no SharedArrayBuffer, OPFS or shared worker needed.
const db = new PowerSyncDatabase({
  schema,
  database: {
    dbFilename: `workout-${user}.sqlite`,
    vfs: WASQLiteVFS.IDBBatchAtomicVFS,
    enableMultiTabs: false, // no shared worker: this tab syncs itself
    useWebWorker: true
  }
});

const connector = new SynclineConnector(user, async (outcome: Rejection, crud) => {
  const entry = (crud[outcome.op_index ?? 0] ?? crud[0] ?? {}) as { op?: string; type?: string; id?: string };
  await db.execute(
    'INSERT INTO rejections (id, at, op, tbl, row_id, code, message) VALUES (uuid(), ?, ?, ?, ?, ?, ?)',
    [new Date().toISOString(), entry.op ?? '?', entry.type ?? '?', entry.id ?? '?', outcome.code, outcome.message]
  );
});
const connectOptions = { connectionMethod: SyncStreamConnectionMethod.HTTP, retryDelayMs: 1000, crudUploadThrottleMs: 100 };

// Online/offline: a real disconnect of the sync stream, which also pauses uploads.
const offlineKey = `workout-offline-${user}`;
let online = localStorage.getItem(offlineKey) !== '1';
async function setOnline(value: boolean) {
  online = value;
  localStorage.setItem(offlineKey, value ? '0' : '1');
  if (value) await db.connect(connector, connectOptions);
  else await db.disconnect();
  renderStatus();
}

// --- rendering ----------------------------------------------------------------------------
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const esc = (v: unknown) =>
  String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

$('who').textContent = `· ${user}`;
$('users').innerHTML = USERS.map((u) => `<a href="?user=${u}" class="${u === user ? 'current' : ''}">${u}</a>`).join('');

let pendingUploads = 0;
function renderStatus(status: SyncStatus = db.currentStatus) {
  const flow = status.dataFlowStatus;
  const parts = [
    online ? (status.connected ? 'connected' : status.connecting ? 'connecting…' : 'not connected') : 'offline',
    flow.downloading ? 'downloading' : null,
    flow.uploading ? 'uploading' : null,
    `pending uploads: ${pendingUploads}`,
    `last synced: ${status.lastSyncedAt ? status.lastSyncedAt.toLocaleTimeString() : 'never'}`,
    flow.downloadError && online ? `download error: ${flow.downloadError.message}` : null,
    flow.uploadError && online ? `upload error: ${flow.uploadError.message}` : null
  ];
  const el = $('status');
  el.textContent = parts.filter(Boolean).join(' · ');
  el.className = online ? 'status' : 'status offline';
  el.dataset.connected = String(status.connected);
  el.dataset.pending = String(pendingUploads);
  $('toggle-online').textContent = online ? 'Go offline' : 'Go online';
}
db.registerListener({ statusChanged: (status) => renderStatus(status) });

let exercises: { id: string; name: string }[] = [];
let workouts: { id: string; name: string; started_at: string }[] = [];
let sets: { id: string; workout_id: string; exercise: string; reps: number; weight_kg: number | null; done_at: string }[] = [];
let editing: string | null = null;

function renderForm() {
  const keep = (sel: HTMLSelectElement, html: string) => {
    const value = sel.value;
    sel.innerHTML = html;
    if (value && [...sel.options].some((o) => o.value === value)) sel.value = value;
  };
  keep($('log-workout'), workouts.map((w) => `<option value="${esc(w.id)}">${esc(w.name)}</option>`).join(''));
  keep($('log-exercise'), exercises.map((e) => `<option value="${esc(e.id)}">${esc(e.name)}</option>`).join(''));
}

function renderWorkouts() {
  // Keep what is being typed into the row under edit across a re-render.
  const draft = editing ? { reps: $<HTMLInputElement>('edit-reps')?.value, weight: $<HTMLInputElement>('edit-weight')?.value } : null;
  if (editing && !sets.some((s) => s.id === editing)) editing = null; // deleted under us
  $('workouts').innerHTML = workouts
    .map((w) => {
      const rows = sets.filter((s) => s.workout_id === w.id);
      return `<h2>${esc(w.name)} <small>${esc(w.started_at.slice(0, 10))}</small></h2>
        <table><thead><tr><th>exercise</th><th>reps</th><th>kg</th><th></th></tr></thead><tbody>
        ${rows
          .map((s) =>
            s.id === editing
              ? `<tr data-set-id="${esc(s.id)}" class="editing"><td>${esc(s.exercise)}</td>
                 <td><input id="edit-reps" type="number" min="1" value="${esc(draft?.reps ?? s.reps)}"></td>
                 <td><input id="edit-weight" type="number" min="0" step="0.5" value="${esc(draft?.weight ?? s.weight_kg ?? '')}"></td>
                 <td><button data-action="save">Save</button> <button data-action="cancel">Cancel</button></td></tr>`
              : `<tr data-set-id="${esc(s.id)}"><td>${esc(s.exercise)}</td><td class="reps">${esc(s.reps)}</td>
                 <td class="weight">${esc(s.weight_kg ?? '')}</td>
                 <td><button data-action="edit">Edit</button> <button data-action="delete">Delete</button></td></tr>`
          )
          .join('')}
        </tbody></table>`;
    })
    .join('');
}

function renderRejections(rows: { at: string; op: string; tbl: string; row_id: string; code: string; message: string }[]) {
  $('rejections-box').hidden = rows.length === 0;
  $('rejections').innerHTML = rows
    .map((r) => `<li data-code="${esc(r.code)}">${esc(r.at.slice(11, 19))} ${esc(r.op)} ${esc(r.tbl)}/${esc(r.row_id.slice(0, 8))}: rejected (${esc(r.code)}) ${esc(r.message)}</li>`)
    .join('');
}

// --- writes: plain SQL on the local database; the SDK queues and uploads them --------------
$('log-set').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target as HTMLFormElement);
  const weight = String(form.get('weight_kg') ?? '');
  await db.execute(
    'INSERT INTO sets (id, workout_id, user_id, exercise_id, reps, weight_kg, done_at) VALUES (uuid(), ?, ?, ?, ?, ?, ?)',
    [form.get('workout_id'), user, Number(form.get('exercise_id')), Number(form.get('reps')), weight === '' ? null : Number(weight), new Date().toISOString()]
  );
});

$('workouts').addEventListener('click', async (ev) => {
  const button = (ev.target as HTMLElement).closest('button');
  const id = button?.closest('tr')?.dataset.setId;
  if (!button || !id) return;
  switch (button.dataset.action) {
    case 'edit':
      editing = id;
      renderWorkouts();
      break;
    case 'cancel':
      editing = null;
      renderWorkouts();
      break;
    case 'save': {
      const reps = Number($<HTMLInputElement>('edit-reps').value);
      const weight = $<HTMLInputElement>('edit-weight').value;
      editing = null;
      await db.execute('UPDATE sets SET reps = ?, weight_kg = ? WHERE id = ?', [reps, weight === '' ? null : Number(weight), id]);
      break;
    }
    case 'delete':
      await db.execute('DELETE FROM sets WHERE id = ?', [id]);
      break;
  }
});

$('toggle-online').addEventListener('click', () => setOnline(!online));

// --- reads: watched queries on the local SQLite --------------------------------------------
function watch<T>(sql: string, onRows: (rows: T[]) => void) {
  db.watch(sql, [], {
    onResult: (r) => onRows((r.rows?._array ?? []) as T[]),
    onError: (e) => console.error('watch failed', sql, e)
  });
}

const t0 = performance.now();
await db.init();
const tInit = performance.now();
watch<{ id: string; name: string }>('SELECT id, name FROM exercises ORDER BY CAST(id AS INTEGER)', (rows) => {
  exercises = rows;
  renderForm();
});
watch<(typeof workouts)[number]>('SELECT id, name, started_at FROM workouts ORDER BY started_at DESC', (rows) => {
  workouts = rows;
  renderForm();
  renderWorkouts();
});
watch<(typeof sets)[number]>(
  `SELECT s.id, s.workout_id, coalesce(e.name, 'exercise ' || s.exercise_id) AS exercise, s.reps, s.weight_kg, s.done_at
     FROM sets s LEFT JOIN exercises e ON CAST(e.id AS INTEGER) = s.exercise_id
    ORDER BY s.done_at, s.id`,
  (rows) => {
    sets = rows;
    renderWorkouts();
  }
);
watch<Parameters<typeof renderRejections>[0][number]>('SELECT * FROM rejections ORDER BY at DESC', renderRejections);
watch<{ n: number }>('SELECT count(*) AS n FROM ps_crud', (rows) => {
  pendingUploads = rows[0]?.n ?? 0;
  renderStatus();
});

renderStatus();
if (online) await db.connect(connector, connectOptions);
const timings = `database ready ${Math.round(tInit - t0)} ms, connected ${Math.round(performance.now() - tInit)} ms later`;

// For the headless demo (demo.mjs) and the console: the database and the toggle.
Object.assign(window, { workout: { db, user, setOnline, isOnline: () => online, timings } });
