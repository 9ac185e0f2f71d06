/**
 * The two-store fixture itself: a PostgreSQL server that cannot start fails
 * the file's `[postgres]` tests, saying why, and leaves its `[sqlite]` tests
 * and the tests of no store alone. Runs a child test process with fake
 * PostgreSQL binaries, so it needs no PostgreSQL.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

test('a PostgreSQL server that cannot start fails the [postgres] tests only, saying why', async () => {
  const bin = mkdtempSync(join(tmpdir(), 'cordon-fake-pg-'));
  try {
    chmodSync(bin, 0o755); // as root, the server runs as another user, who must reach the scripts
    for (const name of ['initdb', 'postgres']) writeFileSync(join(bin, name), '#!/bin/sh\necho "fake server binary refuses" >&2\nexit 1\n', { mode: 0o755 });
    const { code, out } = await runChild({ CORDON_TEST_PG_BIN: bin });
    assert.equal(code, 1, out);
    assert.match(out, /^ok \d+ - a test of no store$/m, out);
    assert.match(out, /^ok \d+ - \[sqlite\] opens an empty store$/m, out);
    assert.match(out, /^not ok \d+ - \[postgres\] opens an empty store$/m, out);
    assert.match(out, /initdb exited with 1: fake server binary refuses/, out);
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});
