// The PowerSync front's HTTP surface, spoken to directly with fetch: routing (404/405 at once),
// CORS, authentication, malformed and oversized bodies, Retry-After on 503 and 429, the upload
// contract (exactly once, gaps allowed, rejections reported), and the NDJSON stream itself
// (string op ids, unsigned checksums that add up, live diffs, a write checkpoint pushed after a
// write that changed nothing the client syncs).
import { createServer } from 'node:net';
import { Gateway, LineReader, assert, assertEqual, makeToken, sql, test, waitFor } from './lib.mjs';

const URL_BASE = process.env.GW_URL;
const SECRET = process.env.GW_SECRET;
const token = (sub, seconds) => makeToken(SECRET, sub, seconds);
// Client ids are new each run: the database remembers every client's transactions.
const CLIENT = `http-client-${Date.now().toString(36)}`;
const auth = (sub) => ({ authorization: `Token ${token(sub)}` });

async function timed(promise) {
  const start = Date.now();
  const value = await promise;
  return { value, ms: Date.now() - start };
}

function openStream(sub, body = {}, headers = {}) {
  return fetch(`${URL_BASE}/sync/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth(sub), ...headers },
    body: JSON.stringify({ buckets: [], include_checksum: true, raw_data: true, client_id: `${sub}-client`, ...body })
  });
}

function upload(sub, body, headers = {}) {
  return fetch(`${URL_BASE}/upload`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token(sub)}`, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  });
}

function freePort() {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Reads one checkpoint's lines (checkpoint or diff, data..., complete) and checks every bucket's
// checksum is the wrapping u32 sum of its ops, as the SDK's sync client checks it.
async function readCheckpoint(reader, held = new Map()) {
  let first;
  for (;;) {
    first = await reader.next();
    assert(first !== null, 'stream ended');
    if (!('token_expires_in' in first)) break;
  }
  const cp = first.checkpoint ?? first.checkpoint_diff;
  assert(cp, `expected a checkpoint line, got ${JSON.stringify(first)}`);
  assertEqual(typeof cp.last_op_id, 'string', 'last_op_id type');
  if (first.checkpoint) held.clear();
  for (const b of first.checkpoint?.buckets ?? cp.updated_buckets) {
    assert(Number.isInteger(b.checksum) && b.checksum >= 0 && b.checksum <= 0xffffffff, `checksum ${b.checksum} is not an unsigned 32-bit integer`);
    if (!held.has(b.bucket)) held.set(b.bucket, { sum: 0, rows: new Map() });
    held.get(b.bucket).expected = b.checksum;
  }
  for (const name of cp.removed_buckets ?? []) held.delete(name);
  const data = [];
  for (;;) {
    const line = await reader.next();
    assert(line !== null, 'stream ended inside a checkpoint');
    if ('token_expires_in' in line) continue;
    if (line.checkpoint_complete) {
      assertEqual(line.checkpoint_complete.last_op_id, cp.last_op_id, 'checkpoint_complete last_op_id');
      break;
    }
    assert(line.data, `expected data or checkpoint_complete, got ${JSON.stringify(line)}`);
    data.push(line.data);
    const bucket = held.get(line.data.bucket);
    assert(bucket, `data for a bucket not in the checkpoint: ${line.data.bucket}`);
    for (const op of line.data.data) {
      assertEqual(typeof op.op_id, 'string', 'op_id type');
      if (op.op === 'CLEAR') {
        bucket.sum = op.checksum;
        bucket.rows.clear();
        continue;
      }
      bucket.sum = (bucket.sum + op.checksum) >>> 0;
      if (op.op === 'PUT') {
        assertEqual(typeof op.data, 'string', 'op data type (raw_data)');
        bucket.rows.set(op.object_id, JSON.parse(op.data));
      } else if (op.op === 'REMOVE') {
        bucket.rows.delete(op.object_id);
      }
    }
  }
  for (const [name, b] of held) assertEqual(b.sum, b.expected, `checksum of ${name}`);
  return { line: first, cp, data, held };
}

test('http_unknown_path_404_at_once', async () => {
  const { value: r, ms } = await timed(fetch(`${URL_BASE}/sync/nothing`, { method: 'POST', body: '{}' }));
  assertEqual(r.status, 404, 'status');
  assert(ms < 2000, `took ${ms} ms`);
  const body = await r.json();
  assertEqual(body.error.code, 'NOT_FOUND', 'error code');
  const get = await fetch(`${URL_BASE}/`);
  assertEqual(get.status, 404, 'GET / status');
});

test('http_wrong_method_405_at_once_with_allow', async () => {
  for (const [method, path, allow] of [
    ['PUT', '/upload', 'POST, OPTIONS'],
    ['GET', '/sync/stream', 'POST, OPTIONS'],
    ['POST', '/write-checkpoint2.json', 'GET, OPTIONS'],
    ['DELETE', '/upload', 'POST, OPTIONS'],
    ['POST', '/healthz', 'GET']
  ]) {
    const { value: r, ms } = await timed(fetch(`${URL_BASE}${path}`, { method, body: method === 'GET' ? undefined : '{}' }));
    assertEqual(r.status, 405, `${method} ${path} status`);
    assertEqual(r.headers.get('allow'), allow, `${method} ${path} Allow`);
    assert(ms < 2000, `${method} ${path} took ${ms} ms`);
    await r.arrayBuffer();
  }
});

test('http_cors_preflight_and_headers', async () => {
  for (const path of ['/sync/stream', '/upload', '/write-checkpoint2.json']) {
    const r = await fetch(`${URL_BASE}${path}`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' }
    });
    assertEqual(r.status, 204, `${path} preflight status`);
    assertEqual(r.headers.get('access-control-allow-origin'), '*', `${path} allow-origin`);
    assert(/authorization/i.test(r.headers.get('access-control-allow-headers') ?? ''), `${path} allow-headers lacks Authorization`);
    assert(/POST/.test(r.headers.get('access-control-allow-methods') ?? ''), `${path} allow-methods lacks POST`);
  }
  // Errors carry CORS headers too, so a browser app can read why.
  const r = await fetch(`${URL_BASE}/upload`, { method: 'POST', headers: { origin: 'https://app.example' }, body: '{}' });
  assertEqual(r.status, 401, 'unauthenticated upload');
  assertEqual(r.headers.get('access-control-allow-origin'), '*', '401 allow-origin');
});

test('http_401_missing_bad_expired_token', async () => {
  const cases = [
    ['no header', {}],
    ['not a token scheme', { authorization: 'Basic abc' }],
    ['forged', { authorization: `Token ${makeToken('not-the-secret-not-the-secret-123', 'x')}` }],
    ['expired', { authorization: `Token ${token('x', -3600)}` }],
    ['garbage', { authorization: 'Bearer a.b.c' }]
  ];
  for (const [what, headers] of cases) {
    for (const [method, path, body] of [
      ['POST', '/sync/stream', '{}'],
      ['POST', '/upload', '{}'],
      ['GET', '/write-checkpoint2.json?client_id=c', undefined]
    ]) {
      const r = await fetch(`${URL_BASE}${path}`, { method, headers, body });
      assertEqual(r.status, 401, `${what} ${method} ${path}`);
      const j = await r.json();
      assertEqual(j.error.code, 'UNAUTHENTICATED', `${what} ${path} code`);
    }
  }
});

test('http_400_malformed_bodies', async () => {
  const bad = [
    'not json',
    '[]',
    JSON.stringify({ transaction_id: 1, crud: [{ op: 'PUT', type: 'pst_todos', id: 'x', data: {} }] }),
    JSON.stringify({ client_id: 'c', crud: [{ op: 'PUT', type: 'pst_todos', id: 'x', data: {} }] }),
    JSON.stringify({ client_id: 'c', transaction_id: -1, crud: [{ op: 'PUT', type: 'pst_todos', id: 'x' }] }),
    JSON.stringify({ client_id: 'c', transaction_id: 1, crud: [] }),
    JSON.stringify({ client_id: 'c', transaction_id: 1, crud: [{ op: 'UPSERT', type: 'pst_todos', id: 'x' }] }),
    JSON.stringify({ client_id: 'c', transaction_id: 1, crud: [{ op: 'PUT', id: 'x' }] }),
    JSON.stringify({ client_id: 'c', transaction_id: 1, crud: [{ op: 'PATCH', type: 'pst_todos', id: 'x', data: [1] }] })
  ];
  for (const body of bad) {
    const r = await upload('http-user', body);
    assertEqual(r.status, 400, `upload ${body.slice(0, 60)}`);
    const j = await r.json();
    assertEqual(j.error.code, 'BAD_REQUEST', 'code');
    assert(j.error.description.length > 10, 'the error says what is wrong');
  }
  for (const body of ['{', JSON.stringify({ buckets: [{ name: 'b' }] }), JSON.stringify({ buckets: [{ name: 'b', after: 'x1' }] })]) {
    const r = await fetch(`${URL_BASE}/sync/stream`, { method: 'POST', headers: auth('http-user'), body });
    assertEqual(r.status, 400, `stream ${body}`);
    await r.arrayBuffer();
  }
  const r = await fetch(`${URL_BASE}/write-checkpoint2.json`, { headers: auth('http-user') });
  assertEqual(r.status, 400, 'write-checkpoint2 without client_id');
  await r.arrayBuffer();
});

test('http_413_oversized_body', async () => {
  const big = JSON.stringify({ client_id: 'c', transaction_id: 1, crud: [{ op: 'PUT', type: 'pst_todos', id: 'x', data: { description: 'x'.repeat(2 << 20) } }] });
  const r = await upload('http-user', big);
  assertEqual(r.status, 413, 'status');
  await r.arrayBuffer();
});

test('http_503_retry_after_when_database_unavailable', async () => {
  const port = await freePort();
  const gw = new Gateway({
    binary: process.env.GW_BIN_RELEASE,
    port,
    secret: SECRET,
    databaseUrl: 'host=127.0.0.1 port=1 dbname=nowhere connect_timeout=1',
    log: `${process.env.LOG_DIR}/gateway-unavailable.log`
  });
  await gw.start({ waitHealthy: false });
  try {
    const base = `http://127.0.0.1:${port}`;
    const h = { authorization: `Token ${token('http-user')}`, 'content-type': 'application/json' };
    const up = await fetch(`${base}/upload`, {
      method: 'POST',
      headers: h,
      body: JSON.stringify({ client_id: 'c503', transaction_id: 1, crud: [{ op: 'PUT', type: 'pst_todos', id: 'z', data: { list_id: 'H1', description: 'z' } }] })
    });
    assertEqual(up.status, 503, 'upload status');
    assert(Number(up.headers.get('retry-after')) > 0, `upload Retry-After: ${up.headers.get('retry-after')}`);
    await up.arrayBuffer();
    const st = await fetch(`${base}/sync/stream`, { method: 'POST', headers: h, body: '{"buckets":[]}' });
    assertEqual(st.status, 503, 'stream status');
    assert(Number(st.headers.get('retry-after')) > 0, 'stream Retry-After');
    await st.arrayBuffer();
    const wc = await fetch(`${base}/write-checkpoint2.json?client_id=c503`, { headers: h });
    assertEqual(wc.status, 503, 'write-checkpoint2 status');
    assert(Number(wc.headers.get('retry-after')) > 0, 'write-checkpoint2 Retry-After');
    await wc.arrayBuffer();
  } finally {
    const code = await gw.stop();
    assertEqual(code, 0, 'exit code of the gateway without a database');
  }
});

test('http_429_retry_after_over_per_user_limit', async () => {
  const limit = Number(process.env.GW_MAX_PER_USER);
  const open = [];
  try {
    for (let i = 0; i < limit; i++) {
      const r = await openStream('limit-user');
      assertEqual(r.status, 200, `stream ${i}`);
      const reader = new LineReader(r);
      open.push(reader);
      await reader.nextOf('checkpoint');
    }
    const over = await openStream('limit-user');
    assertEqual(over.status, 429, 'status over the limit');
    assert(Number(over.headers.get('retry-after')) > 0, 'Retry-After');
    await over.arrayBuffer();
  } finally {
    for (const r of open) await r.cancel();
  }
  // Closed streams free their slots.
  await waitFor('a slot to free up', async () => {
    const r = await openStream('limit-user');
    const ok = r.status === 200;
    await r.body.cancel();
    return ok;
  });
});

let streamReader;
let held = new Map();

test('http_stream_ndjson_initial_checkpoint_checksums_add_up', async () => {
  sql(`INSERT INTO pst_members VALUES ('http-user', 'H1');
       INSERT INTO pst_todos (id, list_id, description) VALUES ('h1', 'H1', 'first'), ('h2', 'H1', 'second'),
         ('hx', 'HX', 'not for http-user')`);
  sql('SELECT syncline.flush()');
  const r = await openStream('http-user', { client_id: CLIENT });
  assertEqual(r.status, 200, 'status');
  assertEqual(r.headers.get('content-type'), 'application/x-ndjson', 'content-type');
  assertEqual(r.headers.get('x-accel-buffering'), 'no', 'x-accel-buffering');
  streamReader = new LineReader(r);
  const { line, held: h } = await readCheckpoint(streamReader, held);
  assert(line.checkpoint, 'the first line is a full checkpoint');
  assertEqual([...h.keys()].filter((b) => b.startsWith('pst_')), ['pst_list["H1"]'], 'buckets');
  assertEqual([...h.get('pst_list["H1"]').rows.keys()].sort(), ['h1', 'h2'], 'rows');
  assertEqual(h.get('pst_list["H1"]').rows.get('h1').description, 'first', 'row data');
});

test('http_stream_live_change_arrives_as_diff', async () => {
  sql(`INSERT INTO pst_todos (id, list_id, description) VALUES ('h3', 'H1', 'live')`);
  const { line, held: h } = await readCheckpoint(streamReader, held);
  assert(line.checkpoint_diff, `expected a checkpoint_diff, got ${Object.keys(line)}`);
  assertEqual(h.get('pst_list["H1"]').rows.get('h3').description, 'live', 'live row');
});

let appliedCheckpoint = 0;

test('http_upload_applied_once_and_retry_answers_the_same', async () => {
  const body = { client_id: CLIENT, transaction_id: 1, crud: [{ op_id: 1, op: 'PUT', type: 'pst_todos', id: 'h4', tx_id: 1, data: { list_id: 'H1', description: 'uploaded' } }] };
  const r = await upload('http-user', body);
  assertEqual(r.status, 200, 'status');
  const j = await r.json();
  assertEqual(j.status, 'applied', 'outcome');
  appliedCheckpoint = Number(j.write_checkpoint);
  assert(appliedCheckpoint > 0, `write_checkpoint ${j.write_checkpoint}`);
  const again = await (await upload('http-user', body)).json();
  assertEqual(again, j, 'a retry gets the first answer');
  assertEqual(sql("SELECT count(*) FROM pst_todos WHERE id = 'h4'"), '1', 'rows');
  // The stream carries it, with the write checkpoint.
  const { cp, held: h } = await readCheckpoint(streamReader, held);
  assertEqual(h.get('pst_list["H1"]').rows.get('h4').description, 'uploaded', 'row on the stream');
  assertEqual(cp.write_checkpoint, String(appliedCheckpoint), 'write_checkpoint on the diff');
});

test('http_upload_rejected_then_write_checkpoint_pushed_with_empty_diff', async () => {
  const r = await upload('http-user', {
    client_id: CLIENT,
    transaction_id: 2,
    crud: [
      { op: 'PATCH', type: 'pst_todos', id: 'h1', data: { description: 'fine' } },
      { op: 'PATCH', type: 'pst_todos', id: 'h2', data: { description: 'x'.repeat(200) } }
    ]
  });
  assertEqual(r.status, 200, 'status');
  const j = await r.json();
  assertEqual(j.status, 'rejected', 'outcome');
  assertEqual(j.code, '23514', 'SQLSTATE');
  assertEqual(j.op_index, 1, 'op_index');
  assertEqual(sql("SELECT description FROM pst_todos WHERE id = 'h1'"), 'first', 'nothing of the batch applied');
  // It changed nothing http-user syncs. As the SDK does once its upload queue is empty, ask for
  // the write checkpoint: a checkpoint carrying it arrives although no bucket changed.
  const wc = await (await fetch(`${URL_BASE}/write-checkpoint2.json?client_id=${CLIENT}`, { headers: auth('http-user') })).json();
  assert(Number(wc.data.write_checkpoint) >= appliedCheckpoint, `write_checkpoint ${wc.data.write_checkpoint}`);
  const { line, cp } = await readCheckpoint(streamReader, held);
  assert(line.checkpoint_diff, 'a checkpoint_diff');
  assertEqual(cp.updated_buckets, [], 'no bucket changes');
  assertEqual(cp.write_checkpoint, wc.data.write_checkpoint, 'the stream carries the write checkpoint');
});

test('http_upload_gaps_allowed_older_refused', async () => {
  const put = (tx, id) => ({ client_id: CLIENT, transaction_id: tx, crud: [{ op: 'PUT', type: 'pst_todos', id, data: { list_id: 'H1', description: id } }] });
  const gap = await (await upload('http-user', put(7, 'h7'))).json();
  assertEqual(gap.status, 'applied', 'transaction 7 after 2');
  const older = await (await upload('http-user', put(5, 'h5'))).json();
  assertEqual(older.status, 'rejected', 'transaction 5 after 7');
  assertEqual(sql("SELECT count(*) FROM pst_todos WHERE id = 'h5'"), '0', 'the older one was not applied');
});

test('http_upload_keeps_exact_numbers', async () => {
  // Written as JSON text: a JavaScript number would already have rounded them. Read through a
  // double, these were stored as 12345678901234568 and 1.1.
  const body = `{"client_id": "http-exact", "transaction_id": 1, "crud": [
    {"op": "PUT", "type": "pst_todos", "id": "hx1", "data": {"list_id": "H1", "description": 12345678901234567.891}},
    {"op": "PUT", "type": "pst_todos", "id": "hx2", "data": {"list_id": "H1", "description": 1.10}}]}`;
  const r = await (await upload('http-user', body)).json();
  assertEqual(r.status, 'applied', 'outcome');
  assertEqual(sql("SELECT string_agg(description, ' ' ORDER BY id) FROM pst_todos WHERE id IN ('hx1', 'hx2')"),
    '12345678901234567.891 1.10', 'descriptions as written');
  sql("DELETE FROM pst_todos WHERE id IN ('hx1', 'hx2')");
});

test('http_upload_other_users_client_id_refused', async () => {
  const r = await (await upload('someone-else', { client_id: CLIENT, transaction_id: 100, crud: [{ op: 'DELETE', type: 'pst_todos', id: 'h1' }] })).json();
  assertEqual(r.status, 'rejected', 'outcome');
  assertEqual(sql("SELECT count(*) FROM pst_todos WHERE id = 'h1'"), '1', 'row untouched');
});

test('http_stream_keepalive_and_clean_end', async () => {
  // A stream a client stops reading is dropped without trouble; the gateway keeps serving.
  await streamReader.cancel();
  const r = await fetch(`${URL_BASE}/metrics`);
  const text = await r.text();
  assert(/syncline_powersync_streams_total \d+/.test(text), 'metrics list PowerSync streams');
  assert(/syncline_uploads_applied_total [1-9]/.test(text), 'metrics count uploads');
});

