/**
 * Signing key tests: creation with private modes, refusal of corrupt or
 * too-open key files (never overwritten), public key re-derivation, and the
 * key that a store's checkpoints depend on (on SQLite and on PostgreSQL:
 * `[sqlite] …`, `[postgres] …`; the key files alone run once).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyError } from '../errors/index.js';
import { eachStore } from '../store/testing/each-store.js';
import { AuditLog, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, loadOrCreateSigningKey, loadPublicKeys, verifyAudit } from './index.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'cordon-keys-'));
}

test('the first start creates a 0600 PKCS8 key in a 0700 directory and a matching .pub', () => {
  const dir = tempDir();
  const keyDir = join(dir, 'keys');
  try {
    const key = loadOrCreateSigningKey(keyDir);
    const keyPath = join(keyDir, PRIVATE_KEY_FILE);
    assert.equal(statSync(keyDir).mode & 0o777, 0o700);
    assert.equal(statSync(keyPath).mode & 0o777, 0o600);
    assert.match(readFileSync(keyPath, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.equal(readFileSync(join(keyDir, PUBLIC_KEY_FILE), 'utf8'), key.publicKeyPem);
    assert.match(key.keyId, /^[0-9a-f]{16}$/);
    const again = loadOrCreateSigningKey(keyDir);
    assert.equal(again.keyId, key.keyId, 'the same key is loaded on the next start');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing public key is derived again from the private key', () => {
  const dir = tempDir();
  try {
    const key = loadOrCreateSigningKey(dir);
    unlinkSync(join(dir, PUBLIC_KEY_FILE));
    assert.deepEqual([...loadPublicKeys(dir).keys()], [key.keyId], 'verify can derive it');
    loadOrCreateSigningKey(dir);
    assert.equal(readFileSync(join(dir, PUBLIC_KEY_FILE), 'utf8'), key.publicKeyPem);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unusable key files are refused with a fix and left untouched', async (t) => {
  const cases: { name: string; content: string; mode: number; code: string; message: RegExp; fix: RegExp }[] = [
    { name: 'garbage text', content: 'this is not a key\n', mode: 0o600, code: 'key-corrupt', message: /not a PEM private key/, fix: /restore .* from backup/ },
    { name: 'empty file', content: '', mode: 0o600, code: 'key-corrupt', message: /not a PEM private key/, fix: /never overwrites/ },
    {
      name: 'truncated PEM',
      content: '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIE\n-----END PRIVATE KEY-----\n',
      mode: 0o600,
      code: 'key-corrupt',
      message: /not a PEM private key/,
      fix: /restore/,
    },
    { name: 'group-readable key', content: 'KEEP', mode: 0o640, code: 'key-permissions', message: /readable by other users \(mode 0640\)/, fix: /^chmod 600 / },
    { name: 'world-readable key', content: 'KEEP', mode: 0o604, code: 'key-permissions', message: /mode 0604/, fix: /^chmod 600 / },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const dir = tempDir();
      const keyPath = join(dir, PRIVATE_KEY_FILE);
      writeFileSync(keyPath, c.content);
      chmodSync(keyPath, c.mode);
      try {
        assert.throws(() => loadOrCreateSigningKey(dir), (err: unknown) => {
          assert.ok(err instanceof KeyError, String(err));
          assert.equal(err.code, c.code);
          assert.match(err.message, c.message);
          assert.ok(err.message.includes(keyPath), 'the message names the file');
          assert.match(err.fix ?? '', c.fix);
          if (c.code === 'key-permissions') assert.equal(err.fix, `chmod 600 ${keyPath}`);
          return true;
        });
        assert.equal(readFileSync(keyPath, 'utf8'), c.content, 'never overwritten');
        assert.equal(existsSync(join(dir, PUBLIC_KEY_FILE)), false);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

test('a key of another type is corrupt for this purpose', async () => {
  const { generateKeyPairSync } = await import('node:crypto');
  const dir = tempDir();
  try {
    const rsa = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' });
    writeFileSync(join(dir, PRIVATE_KEY_FILE), rsa, { mode: 0o600 });
    assert.throws(() => loadOrCreateSigningKey(dir), /holds a ec key, not Ed25519/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const s of eachStore('cordon_keys')) {
  s.test('a corrupt key stops AuditLog.open and the stored events stay intact', async () => {
    await s.withStore(async ({ store, keyDir }) => {
      const log = await AuditLog.open({ store, keyDir });
      await log.append({ type: 'x', actor: 'a' });
      await log.close();
      writeFileSync(join(keyDir, PRIVATE_KEY_FILE), 'corrupted');
      await assert.rejects(AuditLog.open({ store, keyDir }), (err: unknown) => err instanceof KeyError && err.code === 'key-corrupt');
      assert.equal(await store.audit.count(), 1);
      assert.equal(readFileSync(join(keyDir, PRIVATE_KEY_FILE), 'utf8'), 'corrupted');
    });
  });

  s.test('a missing key is not silently replaced while checkpoints depend on it', async () => {
    await s.withStore(async ({ store, keyDir }) => {
      const a = await AuditLog.open({ store, keyDir });
      await a.append({ type: 'x', actor: 'a' });
      await a.close();
      const oldId = a.keyId;
      unlinkSync(join(keyDir, PRIVATE_KEY_FILE));
      await assert.rejects(AuditLog.open({ store, keyDir }), (err: unknown) => {
        assert.ok(err instanceof KeyError);
        assert.equal(err.code, 'key-missing');
        assert.match(err.message, new RegExp(`signed by key ${oldId}`));
        assert.match(err.fix ?? '', /restore .* from backup/);
        return true;
      });

      const b = await AuditLog.open({ store, keyDir, allowNewKey: true });
      assert.notEqual(b.keyId, oldId);
      await b.append({ type: 'x', actor: 'a' });
      await b.close();
      assert.ok(readdirSync(keyDir).includes(`audit-ed25519.${oldId}.pub`), 'the retired public key is kept');
      const report = await verifyAudit(store, { keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.checkpoints, 2, 'checkpoints of both keys verify');
    });
  });
}
