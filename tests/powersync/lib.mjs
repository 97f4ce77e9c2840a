// Helpers shared by the PowerSync front's tests and benchmark: tokens, psql, the gateway
// process, waiting, and a tiny test runner printing one line per case and "N passed, M failed".
import { createHmac } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

// What the suite shares between test files (the gateway under test, ...).
export const ctx = {};

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// An HS256 JWT for `sub`, valid for `seconds` (negative: already expired).
export function makeToken(secret, sub, seconds = 3600, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ sub, iat: now - 5, exp: now + seconds, ...extra }));
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

// Runs SQL with psql against the test database (PG* from the environment); returns stdout.
export function sql(text) {
  return execFileSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-c', text], {
    encoding: 'utf8',
    env: process.env
  }).trim();
}

// Polls `fn` until it returns a truthy value; throws `what` after `ms`.
export async function waitFor(what, fn, ms = 15000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

// A gateway process; start() waits for /healthz, stop() sends SIGTERM and returns its exit code.
export class Gateway {
  constructor({ binary, port, secret, databaseUrl, log, args = [], env = {} }) {
    Object.assign(this, { binary, port, secret, databaseUrl, log, args, env });
    this.url = `http://127.0.0.1:${port}`;
  }

  async start({ waitHealthy = true } = {}) {
    const out = openSync(this.log, 'a');
    this.proc = spawn(
      this.binary,
      ['--listen', `127.0.0.1:${this.port}`, '--jwt-hs256-secret', this.secret, '--database-url', this.databaseUrl, ...this.args],
      { stdio: ['ignore', out, out], env: { ...process.env, ...this.env } }
    );
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve(code ?? `signal ${signal}`)));
    if (waitHealthy) {
      await waitFor('the gateway to answer /healthz', async () => (await fetch(`${this.url}/healthz`)).ok, 20000, 100);
    } else {
      await waitFor('the gateway to listen', async () => (await fetch(`${this.url}/metrics`)).ok, 20000, 100);
    }
  }

  async stop() {
    if (!this.proc) return 0;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15000);
    const code = await this.exited;
    clearTimeout(timer);
    this.proc = null;
    return code;
  }
}

// A minimal runner: test(name, fn) registers, run() executes them in order.
const cases = [];
export function test(name, fn) {
  cases.push({ name, fn });
}

export async function run(filter = '') {
  let passed = 0;
  let failed = 0;
  for (const { name, fn } of cases) {
    if (filter && !name.includes(filter)) continue;
    const start = Date.now();
    try {
      await fn();
      passed++;
      console.log(`ok    ${name} (${Date.now() - start} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL  ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
    }
  }
  return { passed, failed };
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

export function assertEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

// Reads NDJSON lines from a fetch Response body as they arrive.
export class LineReader {
  constructor(response) {
    this.reader = response.body.getReader();
    this.decoder = new TextDecoder();
    this.buffer = '';
    this.lines = [];
    this.done = false;
  }

  // The next line parsed as JSON, or null when the stream ended; throws after `ms`.
  async next(ms = 10000) {
    const deadline = Date.now() + ms;
    while (this.lines.length === 0 && !this.done) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line within ${ms} ms`);
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no line within ${ms} ms`)), left);
      });
      try {
        const { done, value } = await Promise.race([this.reader.read(), timeout]);
        if (done) this.done = true;
        else this.buffer += this.decoder.decode(value, { stream: true });
      } finally {
        clearTimeout(timer);
      }
      let nl;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (line) this.lines.push(line);
      }
    }
    if (this.lines.length === 0) return null;
    return JSON.parse(this.lines.shift());
  }

  // Skips lines until one has key `kind` (keepalives, ...); returns its value.
  async nextOf(kind, ms = 10000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const line = await this.next(Math.max(1, deadline - Date.now()));
      if (line === null) throw new Error(`stream ended before a ${kind} line`);
      if (kind in line) return line[kind];
    }
  }

  cancel() {
    return this.reader.cancel().catch(() => {});
  }
}
