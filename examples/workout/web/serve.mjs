// !!! DEV ONLY !!! Serves the built workout web app and a token endpoint that hands ANY caller
// a signed JWT for ANY example user. That is an open door: it exists so `make run` and
// `make demo` need no auth service. A real app gets its tokens from its own login.
//
//   SYNCLINE_JWT_SECRET=... GATEWAY_URL=http://127.0.0.1:8080 node serve.mjs [--port 5173] [--dist DIR]
//
//   GET /dev/token?user=alice  -> {token, endpoint, expires_at}   (HS256, sub=user, 1 h)
//   GET /anything else         -> the static file from DIST (index.html for /)
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const port = Number(arg('port', process.env.WORKOUT_WEB_PORT || 5173));
const host = arg('host', '127.0.0.1');
const dist = arg('dist', process.env.WORKOUT_WEB_DIST || fileURLToPath(new URL('../../../build/workout-web/dist', import.meta.url)));
const secret = process.env.SYNCLINE_JWT_SECRET;
const gateway = (process.env.GATEWAY_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const USERS = new Set(['alice', 'bob', 'carol']); // examples/workout/schema.sql
if (!secret) {
  console.error('serve.mjs: SYNCLINE_JWT_SECRET is not set');
  process.exit(2);
}

const b64url = (s) => Buffer.from(s).toString('base64url');
function devToken(sub, seconds = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub, iat: now - 5, exp: now + seconds }));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return { token: `${head}.${body}.${sig}`, expires_at: now + seconds };
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.map': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml'
};

const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/dev/token') {
    const user = url.searchParams.get('user') ?? '';
    if (!USERS.has(user)) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: `no example user ${user}` }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify({ ...devToken(user), endpoint: gateway, dev_only: true }));
    return;
  }
  const rel = normalize(decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname));
  if (rel.includes('..')) return res.writeHead(400).end();
  try {
    const body = await readFile(join(dist, rel));
    res.writeHead(200, { 'content-type': TYPES[extname(rel)] ?? 'application/octet-stream', 'cache-control': 'no-cache' });
    res.end(body);
  } catch {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
});
server.listen(port, host, () => {
  console.log(`workout web app (DEV ONLY token endpoint): http://${host}:${port}/?user=alice  (gateway ${gateway})`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500).unref());
