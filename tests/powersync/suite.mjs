// The PowerSync front's test suite (tests/powersync/run.sh starts it): runs the AddressSanitizer
// gateway against the test database, the HTTP surface tests, then the real PowerSync Node SDK,
// and last checks the gateway stops cleanly on SIGTERM with no sanitizer report.
// Prints one line per case and "N passed, M failed".
import { readFileSync } from 'node:fs';
import { Gateway, assert, assertEqual, ctx, run, test } from './lib.mjs';

const env = process.env;
ctx.secret = env.GW_SECRET;
ctx.gateway = new Gateway({
  binary: env.GW_BIN,
  port: Number(env.GW_PORT),
  secret: env.GW_SECRET,
  databaseUrl: env.GW_DATABASE_URL,
  log: `${env.LOG_DIR}/gateway.log`,
  args: ['--max-connections-per-user', env.GW_MAX_PER_USER, '--page-ops', '1000'],
  env: { ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', UBSAN_OPTIONS: 'print_stacktrace=1' }
});
env.GW_URL = ctx.gateway.url;
await ctx.gateway.start();

await import('./http_test.mjs');
await import('./sdk_test.mjs');

test('gateway_exit_clean_no_sanitizer_report', async () => {
  const code = await ctx.gateway.stop();
  assertEqual(code, 0, 'exit code on SIGTERM');
  const log = readFileSync(ctx.gateway.log, 'utf8');
  const report = log.match(/ERROR: (AddressSanitizer|LeakSanitizer)[^\n]*|runtime error:[^\n]*/);
  assert(!report, `sanitizer report in ${ctx.gateway.log}: ${report && report[0]}`);
});

const { passed, failed } = await run(process.argv[2] ?? '');
if (ctx.gateway.proc) await ctx.gateway.stop();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
