/**
 * The two-store fixture itself: a PostgreSQL server that cannot start, or
 * is older than 13, fails the file's `[postgres]` tests, saying why, and
 * leaves its `[sqlite]` tests and the tests of no store alone (a child test
 * process with fake PostgreSQL binaries, so it needs no PostgreSQL). A
 * cleanup that fails (a database that cannot be dropped) never hides the
 * test's own error, and fails a test that passed (on a real server).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { cleanupAll, eachStore, runThenCleanup, undoOnThrow, type TestStoreLocation } from './each-store.js';

// The child imports the fixture with this file's own extension: .ts from the sources, .js under dist/ (npm test).
const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const CHILD = `
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eachStore } from ${JSON.stringify(new URL(`./each-store${EXT}`, import.meta.url).href)};
test('a test of no store', () => undefined);
for (const s of eachStore('cordon_each')) {
  s.test('opens an empty store', async () => {
    await s.withStore(async ({ store }) => assert.equal(await store.audit.count(), 0));
  });
}
`;

function runChild(env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  const args = [...(EXT === '.ts' ? ['--import', 'tsx'] : []), '--test-reporter=tap', '--input-type=module', '-e', CHILD];
  // Without the runner's NODE_TEST_CONTEXT, the child reports in TAP rather than to a parent runner.
  const { NODE_TEST_CONTEXT: _runner, ...inherited } = process.env;
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...inherited, ...env } });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, out })));
}

/** Fake `initdb` and `postgres` that refuse to run, `postgres --version` saying `version`. */
function fakeBinaries(version: string): string {
  const bin = mkdtempSync(join(tmpdir(), 'cordon-fake-pg-'));
  chmodSync(bin, 0o755); // as root, the server runs as another user, who must reach the scripts
  const refuse = 'echo "fake server binary refuses" >&2\nexit 1\n';
  writeFileSync(join(bin, 'initdb'), `#!/bin/sh\n${refuse}`, { mode: 0o755 });
  writeFileSync(join(bin, 'postgres'), `#!/bin/sh\nif [ "$1" = --version ]; then echo "postgres (PostgreSQL) ${version}"; exit 0; fi\n${refuse}`, { mode: 0o755 });
  return bin;
}

const startFailures = [
  { name: 'a PostgreSQL server that cannot start', version: '16.4', says: /initdb exited with 1: fake server binary refuses/ },
  { name: 'a PostgreSQL server older than 13', version: '12.17', says: /PostgreSQL 12\.17 \(.*postgres\) is too old: .*needs PostgreSQL 13 or newer/ },
];
for (const c of startFailures) {
  test(`${c.name} fails the [postgres] tests only, saying why`, async () => {
    const bin = fakeBinaries(c.version);
    try {
      const { code, out } = await runChild({ CORDON_TEST_PG_BIN: bin });
      assert.equal(code, 1, out);
      assert.match(out, /^ok \d+ - a test of no store$/m, out);
      assert.match(out, /^ok \d+ - \[sqlite\] opens an empty store$/m, out);
      assert.match(out, /^not ok \d+ - \[postgres\] opens an empty store$/m, out);
      assert.match(out, c.says, out);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
}

test('the cleanup helpers run every step and never let a cleanup error hide the first one', async () => {
  const own = new Error('own');
  const late = new Error('late');
  const ran: string[] = [];
  const step = (name: string, err?: Error) => async () => {
    ran.push(name);
    if (err) throw err;
  };
  await assert.rejects(runThenCleanup(step('body', own), step('cleanup', late)), (e: unknown) => e instanceof AggregateError && e.errors[0] === own && e.errors[1] === late);
  await assert.rejects(runThenCleanup(step('body'), step('cleanup', late)), (e: unknown) => e instanceof Error && e.cause === late && /^the test passed, but its cleanup failed: late$/.test(e.message));
  await assert.rejects(runThenCleanup(step('body', own), step('cleanup')), (e: unknown) => e === own);
  assert.equal(await runThenCleanup(async () => 7, step('cleanup')), 7);
  await assert.rejects(undoOnThrow(step('open', own), step('undo', late)), (e: unknown) => e instanceof AggregateError && e.errors[0] === own && e.errors[1] === late);
  await assert.rejects(undoOnThrow(step('open', own), step('undo')), (e: unknown) => e === own);
  assert.equal(await undoOnThrow(async () => 'opened', step('not run')), 'opened');
  await assert.rejects(cleanupAll(step('a', own), step('b'), step('c', late)), (e: unknown) => e instanceof AggregateError && e.errors[0] === own && e.errors[1] === late);
  await assert.rejects(cleanupAll(step('d'), step('e', late)), (e: unknown) => e === late);
  assert.deepEqual(ran, ['body', 'cleanup', 'body', 'cleanup', 'body', 'cleanup', 'cleanup', 'open', 'undo', 'open', 'undo', 'a', 'b', 'c', 'd', 'e']);
});

const pgStore = eachStore('cordon_eachcl')[1]!;

/** Make the location's database one that cannot be dropped (a template); returns the undo. */
async function makeUndroppable(loc: TestStoreLocation): Promise<() => Promise<void>> {
  const name = new URL(loc.options.kind === 'postgres' ? loc.options.url : '').pathname.slice(1);
  const setTemplate = (on: boolean) => loc.outside((db) => sql`alter database ${sql.id(name)} is_template ${sql.lit(on)}`.execute(db));
  await setTemplate(true);
  return async () => {
    await setTemplate(false);
    await loc.cleanup();
  };
}

pgStore.test('a cleanup that fails does not hide the test\'s own error: both are reported', async () => {
  const own = new Error('the test\'s own failure');
  let undo: (() => Promise<void>) | undefined;
  let dir = '';
  try {
    await assert.rejects(
      pgStore.withStore(async ({ loc }) => {
        dir = loc.dir;
        undo = await makeUndroppable(loc);
        throw own;
      }),
      (err: unknown) => {
        assert.ok(err instanceof AggregateError, `got ${String(err)}`);
        assert.equal(err.errors[0], own, 'the test\'s own error comes first, unchanged');
        assert.match(String((err.errors[1] as Error).message), /cannot drop a template database/);
        assert.match(err.message, /the test's own failure; and then the cleanup failed too: cannot drop a template database/);
        return true;
      },
    );
    assert.equal(existsSync(dir), false, 'the directory is removed before the drop');
  } finally {
    await undo?.();
  }
});

pgStore.test('a cleanup that fails fails a test that passed, saying so', async () => {
  let undo: (() => Promise<void>) | undefined;
  try {
    await assert.rejects(
      pgStore.withStore(async ({ loc }) => {
        undo = await makeUndroppable(loc);
      }),
      (err: unknown) => {
        assert.ok(err instanceof Error);
        assert.match(err.message, /^the test passed, but its cleanup failed: cannot drop a template database/);
        assert.match(String((err.cause as Error).message), /cannot drop a template database/);
        return true;
      },
    );
  } finally {
    await undo?.();
  }
});
