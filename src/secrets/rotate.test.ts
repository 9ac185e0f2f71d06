/**
 * Master key rotation: every value reads back under the new key and not under
 * the old one; a store that cannot be read, or a key from the environment, is
 * refused with every file unchanged; each state a crash can leave reads all
 * secrets and is finished by the next rotation; the store's lock is held.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { CordonError } from '../errors/index.js';
import { tempDir } from '../testkit/index.js';
import { HEADER_BYTES, openStoreFile } from './format.js';
import {
  masterKeyId, masterKeyPath, openSecretStore, pendingMasterKeyPath, rotateMasterKey, secretStorePath,
  type RotationStep,
} from './index.js';

const VALUES: Record<string, string> = {
  github_token: 'ghp_rotate0123456789abcdefCANARY',
  openai_key: 'sk-rotate-0123456789ABCDEF',
  db_password: 'pass word/with~"quotes"+plus',
};
const OTHER_KEY_HEX = 'c3'.repeat(32);

function withHome<T>(fn: (home: string) => Promise<T> | T): () => Promise<T> {
  return async () => {
    const dir = tempDir('cordon-rotate-');
    try {
      return await fn(dir.path);
    } finally {
      dir.cleanup();
    }
  };
}

/** A home whose store holds VALUES under a generated key file. */
async function filled(home: string): Promise<void> {
  const store = openSecretStore({ home, env: {} });
  for (const [name, value] of Object.entries(VALUES)) await store.set(name, Buffer.from(value));
}

function keyBytes(home: string): Buffer {
  return Buffer.from(readFileSync(masterKeyPath(home), 'utf8').trim(), 'hex');
}

/** Every file under `home`: its bytes (hex) and mode. */
function snapshot(home: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else out[relative(home, p)] = `${(statSync(p).mode & 0o777).toString(8)} ${readFileSync(p).toString('hex')}`;
    }
  };
  walk(home);
  return out;
}

function assertAllReadable(home: string, what: string): void {
  const store = openSecretStore({ home, env: {} });
  for (const [name, value] of Object.entries(VALUES)) assert.equal(store.get(name)?.reveal(), value, `${what}: ${name}`);
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<CordonError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof CordonError, `expected a CordonError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.ok(err.fix && err.fix.length > 0, 'the error names a fix');
    for (const v of Object.values(VALUES)) assert.ok(!err.describe().includes(v), 'the error never holds a value');
    return err;
  }
  assert.fail(`expected an error with code ${code}`);
}

describe('rotateMasterKey', () => {
  test('re-encrypts every secret under a new key; the old key no longer opens the store', withHome(async (home) => {
    await filled(home);
    const oldKey = keyBytes(home);
    const before = openSecretStore({ home, env: {} }).list();

    const r = await rotateMasterKey({ home, env: {} });
    const newKey = keyBytes(home);
    assert.notDeepEqual(newKey, oldKey, 'the key file holds a new key');
    assert.deepEqual(r, {
      store: secretStorePath(home), keyPath: masterKeyPath(home), keyId: masterKeyId(newKey), previousKeyId: masterKeyId(oldKey),
      secrets: 3, interrupted: 'none',
    });
    assertAllReadable(home, 'after rotation');
    assert.deepEqual(openSecretStore({ home, env: {} }).list(), before, 'names and times are kept');
    const file = readFileSync(secretStorePath(home));
    assert.equal(file.subarray(10, 18).toString('hex'), masterKeyId(newKey), 'the header names the new key');
    assert.throws(() => openStoreFile(oldKey, file, { path: 'secrets.enc', keyFix: 'x' }), (e: unknown) => e instanceof CordonError && e.code === 'key-wrong');
    await rejectsWith(Promise.resolve().then(() => openSecretStore({ home, env: { CORDON_MASTER_KEY: oldKey.toString('hex') } }).list()), 'key-wrong');
    assert.equal(statSync(secretStorePath(home)).mode & 0o777, 0o600);
    assert.equal(statSync(masterKeyPath(home)).mode & 0o777, 0o600);
    assert.deepEqual(Object.keys(snapshot(home)).sort(), ['keys/master.key', 'secrets.enc'], 'no pending key, temp file or lock is left');

    const again = await rotateMasterKey({ home, env: {} });
    assert.equal(again.previousKeyId, r.keyId, 'a second rotation starts from the first one\'s key');
    assertAllReadable(home, 'after a second rotation');
  }));

  test('an empty store (file with no secrets) and a home with nothing yet both rotate', withHome(async (home) => {
    await openSecretStore({ home, env: {} }).set('gone_soon', Buffer.from(VALUES.github_token!));
    await openSecretStore({ home, env: {} }).remove('gone_soon');
    const oldKey = keyBytes(home);
    const r = await rotateMasterKey({ home, env: {} });
    assert.equal(r.secrets, 0);
    assert.notDeepEqual(keyBytes(home), oldKey);
    assert.deepEqual(openSecretStore({ home, env: {} }).list(), []);

    const fresh = tempDir('cordon-rotate-fresh-');
    try {
      const f = await rotateMasterKey({ home: fresh.path, env: {} });
      assert.equal(f.secrets, 0);
      assert.equal(f.previousKeyId, undefined, 'there was no key');
      assert.equal(f.keyId, masterKeyId(keyBytes(fresh.path)));
      assert.deepEqual(openSecretStore({ home: fresh.path, env: {} }).list(), []);
      await openSecretStore({ home: fresh.path, env: {} }).set('later', Buffer.from(VALUES.openai_key!));
      assert.equal(f.keyId, masterKeyId(keyBytes(fresh.path)), 'a later set uses the rotated key');
    } finally {
      fresh.cleanup();
    }
  }));

  const refused: Array<{ name: string; env?: NodeJS.ProcessEnv; spoil: (home: string) => void; code: string; message: RegExp; fix: RegExp }> = [
    {
      name: 'a store whose ciphertext was altered',
      spoil: (home) => { const f = readFileSync(secretStorePath(home)); f[HEADER_BYTES + 2] = f[HEADER_BYTES + 2]! ^ 1; writeFileSync(secretStorePath(home), f); },
      code: 'secret-store-corrupt', message: /failed authentication/, fix: /restore .*secrets\.enc from backup/,
    },
    {
      name: 'a truncated store',
      spoil: (home) => writeFileSync(secretStorePath(home), readFileSync(secretStorePath(home)).subarray(0, 20)),
      code: 'secret-store-corrupt', message: /truncated/, fix: /restore .*secrets\.enc from backup/,
    },
    {
      name: 'a key file that is not the store\'s key',
      spoil: (home) => writeFileSync(masterKeyPath(home), `${OTHER_KEY_HEX}\n`, { mode: 0o600 }),
      code: 'key-wrong', message: /encrypted with another master key/, fix: /restore the .*master\.key this store was written with/,
    },
    {
      name: 'a missing key file',
      spoil: (home) => rmSync(masterKeyPath(home)),
      code: 'key-missing', message: /master key is missing/, fix: /restore .*master\.key from backup/,
    },
    {
      name: 'a key from CORDON_MASTER_KEY, which cordon cannot replace',
      env: { CORDON_MASTER_KEY: OTHER_KEY_HEX },
      spoil: () => undefined,
      code: 'secret-key-from-env', message: /comes from CORDON_MASTER_KEY/, fix: /write that key to .*master\.key .*unset CORDON_MASTER_KEY/,
    },
    {
      name: 'a pending key of an interrupted rotation when the store opens with neither key',
      spoil: (home) => {
        writeFileSync(pendingMasterKeyPath(home), `${OTHER_KEY_HEX}\n`, { mode: 0o600 });
        writeFileSync(masterKeyPath(home), `${'d4'.repeat(32)}\n`, { mode: 0o600 });
      },
      code: 'key-wrong', message: /opens neither with .*master\.key nor with the pending key/, fix: /keep .*master\.key\.new/,
    },
  ];
  for (const c of refused) {
    test(`refused, every file unchanged: ${c.name}`, withHome(async (home) => {
      await filled(home);
      c.spoil(home);
      const before = snapshot(home);
      const err = await rejectsWith(rotateMasterKey({ home, env: c.env ?? {} }), c.code);
      assert.match(err.message, c.message);
      assert.match(err.fix ?? '', c.fix);
      assert.deepEqual(snapshot(home), before, 'bytes and modes of every file are the same');
    }));
  }

  const crashes: Array<{ step: RotationStep; storeUnder: 'old' | 'pending' | 'new'; next: string }> = [
    { step: 'pending-key-written', storeUnder: 'old', next: 'discarded' },
    { step: 'store-written', storeUnder: 'pending', next: 'completed' },
    { step: 'key-replaced', storeUnder: 'new', next: 'none' },
  ];
  for (const c of crashes) {
    test(`a crash after ${c.step} leaves every secret readable; the next rotation finishes (${c.next})`, withHome(async (home) => {
      await filled(home);
      const oldKey = keyBytes(home);
      let pendingKey: Buffer | undefined;
      await assert.rejects(rotateMasterKey({
        home, env: {},
        afterStep: (step) => {
          if (existsSync(pendingMasterKeyPath(home))) pendingKey = Buffer.from(readFileSync(pendingMasterKeyPath(home), 'utf8').trim(), 'hex');
          if (step === c.step) throw new Error('simulated crash');
        },
      }), /simulated crash/);
      const storeKeyId = readFileSync(secretStorePath(home)).subarray(10, 18).toString('hex');
      const expected = c.storeUnder === 'old' ? oldKey : c.storeUnder === 'pending' ? pendingKey! : keyBytes(home);
      assert.equal(storeKeyId, masterKeyId(expected), `the store is under the ${c.storeUnder} key`);
      assert.equal(existsSync(pendingMasterKeyPath(home)), c.step !== 'key-replaced', 'the pending key is there until renamed');
      if (c.storeUnder === 'pending') assert.notEqual(masterKeyId(keyBytes(home)), storeKeyId, 'master.key alone does not open it');
      assertAllReadable(home, `after a crash at ${c.step}`);

      await openSecretStore({ home, env: {} }).set('written_after', Buffer.from('a-value-written-after'));
      assert.equal(openSecretStore({ home, env: {} }).get('written_after')?.reveal(), 'a-value-written-after', 'a writer keeps the store readable');

      const r = await rotateMasterKey({ home, env: {} });
      assert.equal(r.interrupted, c.next);
      assert.equal(r.secrets, 4);
      assertAllReadable(home, 'after the next rotation');
      assert.equal(existsSync(pendingMasterKeyPath(home)), false);
      assert.equal(readFileSync(secretStorePath(home)).subarray(10, 18).toString('hex'), masterKeyId(keyBytes(home)), 'master.key opens the store');
    }));
  }

  test('a first rotation of an empty home that crashed before its key file existed reads with the pending key', withHome(async (home) => {
    await assert.rejects(rotateMasterKey({ home, env: {}, afterStep: (step) => { if (step === 'store-written') throw new Error('simulated crash'); } }), /simulated crash/);
    assert.equal(existsSync(masterKeyPath(home)), false, 'no master.key yet');
    assert.deepEqual(openSecretStore({ home, env: {} }).list(), [], 'not key-missing: the pending key opens the store');
    await openSecretStore({ home, env: {} }).set('first_one', Buffer.from(VALUES.github_token!));
    const r = await rotateMasterKey({ home, env: {} });
    assert.equal(r.interrupted, 'completed');
    assert.equal(openSecretStore({ home, env: {} }).get('first_one')?.reveal(), VALUES.github_token);
    rmSync(masterKeyPath(home));
    await rejectsWith(Promise.resolve().then(() => openSecretStore({ home, env: {} }).list()), 'key-missing');
  }));

  test('a pending key that is not even a key is deleted when master.key opens the store', withHome(async (home) => {
    await filled(home);
    writeFileSync(pendingMasterKeyPath(home), 'not a key\n', { mode: 0o600 });
    assertAllReadable(home, 'with a broken pending key');
    const r = await rotateMasterKey({ home, env: {} });
    assert.equal(r.interrupted, 'discarded');
    assertAllReadable(home, 'after rotation');
  }));

  test('the store\'s lock is held throughout: a writer waits for the rotation or gives up with a fix', withHome(async (home) => {
    await filled(home);
    let late: Promise<unknown> | undefined;
    const r = await rotateMasterKey({
      home, env: {},
      afterStep: async (step) => {
        if (step !== 'pending-key-written') return;
        await rejectsWith(openSecretStore({ home, env: {}, lockWaitMs: 100 }).set('impatient', Buffer.from('impatient-value')), 'secret-store-locked');
        late = openSecretStore({ home, env: {}, lockWaitMs: 10_000 }).set('patient', Buffer.from('patient-value'));
        await new Promise((resolve) => setTimeout(resolve, 100));
      },
    });
    await late;
    const store = openSecretStore({ home, env: {} });
    assert.equal(store.get('patient')?.reveal(), 'patient-value', 'the waiting writer ran after the rotation');
    assert.equal(store.get('impatient'), undefined);
    assert.equal(readFileSync(secretStorePath(home)).subarray(10, 18).toString('hex'), r.keyId, 'and wrote under the new key');
    assertAllReadable(home, 'after both');

    writeFileSync(`${secretStorePath(home)}.lock`, String(process.pid));
    const before = snapshot(home);
    await rejectsWith(rotateMasterKey({ home, env: {}, lockWaitMs: 100 }), 'secret-store-locked');
    assert.deepEqual(snapshot(home), before, 'a rotation that cannot take the lock changes nothing');
  }));
});
