/**
 * `cordon audit rotate-key` as a real process on a temporary CORDON_HOME: it
 * rotates, the log then verifies with both keys, and it is refused (files
 * untouched) while a control plane holds the home or when there is no key.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, KEY_ROTATED_EVENT, PRIVATE_KEY_FILE } from '../../audit/index.js';
import { keyDir, storePath } from '../../controlplane/index.js';
import { openStore } from '../../store/index.js';
import { cordon, oneJson } from './testing.js';

/** A home whose store holds `n` sealed events; returns the keyId that sealed them. */
async function homeWithEvents(home: string, n: number): Promise<string> {
  const store = await openStore({ kind: 'sqlite', path: storePath(home) });
  try {
    const log = await AuditLog.open({ store, keyDir: keyDir(home) });
    for (let i = 0; i < n; i++) await log.append({ type: 'test.event', actor: 'system', data: { i } });
    await log.close();
    return log.keyId;
  } finally {
    await store.close();
  }
}

function keyFiles(home: string): Record<string, string> {
  const dir = keyDir(home);
  if (!existsSync(dir)) return {};
  return Object.fromEntries(readdirSync(dir).sort().map((n) => [n, readFileSync(join(dir, n), 'utf8')]));
}

test('rotate-key rotates, records the rotation, and verify passes with both keys', async () => {
  const home = mkdtempSync(join(tmpdir(), 'cordon-cli-rotate-'));
  try {
    const oldKeyId = await homeWithEvents(home, 3);
    const run = await cordon(['audit', 'rotate-key', '--json'], { home });
    assert.equal(run.code, 0, run.stderr);
    assert.doesNotMatch(run.stderr, /CORDON_AUDIT_KEY_CHANGED/);
    const r = oneJson<{ oldKeyId: string; newKeyId: string; retiredPublicKeyPath: string; sealedSeq: number; eventSeq: number }>(run);
    assert.equal(r.oldKeyId, oldKeyId);
    assert.notEqual(r.newKeyId, oldKeyId);
    assert.equal(r.retiredPublicKeyPath, join(keyDir(home), `audit-ed25519.${oldKeyId}.pub`));
    assert.deepEqual([r.sealedSeq, r.eventSeq], [3, 4]);
    assert.ok(!existsSync(join(home, 'cordon.lock')), 'the home lock is released');

    const text = await cordon(['audit', 'rotate-key'], { home });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`audit key rotated: ${r.newKeyId} -> [0-9a-f]{16}`));
    assert.match(text.stdout, new RegExp(`retired public key: .*audit-ed25519\\.${r.newKeyId}\\.pub`));

    const verify = await cordon(['audit', 'verify', '--json'], { home });
    assert.equal(verify.code, 0, verify.stdout);
    const report = oneJson<{ ok: boolean; events: number; checkpoints: number }>(verify);
    assert.deepEqual([report.ok, report.events, report.checkpoints], [true, 5, 3]);

    const tail = oneJson<{ events: { type: string; actor: string; data: Record<string, string> }[] }>(await cordon(['audit', 'tail', '--json', '--type', KEY_ROTATED_EVENT], { home }));
    assert.deepEqual(tail.events.map((e) => e.data.oldKeyId), [oldKeyId, r.newKeyId]);
    assert.match(tail.events[0]!.actor, /^operator:local:/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('rotate-key is refused, with the files untouched, while cordon up holds the home or without a key', async (t) => {
  await t.test('a running control plane (a live pid holds cordon.lock)', async () => {
    const home = mkdtempSync(join(tmpdir(), 'cordon-cli-rotate-'));
    try {
      await homeWithEvents(home, 2);
      writeFileSync(join(home, 'cordon.lock'), String(process.pid)); // this test process: alive
      const files = keyFiles(home);
      const run = await cordon(['audit', 'rotate-key'], { home });
      assert.equal(run.code, 1, run.stdout + run.stderr);
      assert.match(run.stderr, /cannot rotate the audit key while the control plane runs/);
      assert.match(run.stderr, new RegExp(`fix: stop \`cordon up\` \\(pid ${process.pid}\\) first`));
      assert.deepEqual(keyFiles(home), files);
      assert.equal(readFileSync(join(home, 'cordon.lock'), 'utf8'), String(process.pid), 'the lock is not taken over');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  await t.test('no audit key in this home', async () => {
    const home = mkdtempSync(join(tmpdir(), 'cordon-cli-rotate-'));
    try {
      const run = await cordon(['audit', 'rotate-key', '--json'], { home });
      assert.equal(run.code, 1, run.stdout + run.stderr);
      assert.match(run.stdout + run.stderr, /no audit signing key to rotate/);
      assert.ok(!existsSync(join(keyDir(home), PRIVATE_KEY_FILE)), 'no key is created');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
