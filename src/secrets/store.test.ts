/**
 * The encrypted store: round trips, the master key's forms and file, and every
 * way a store file can be unreadable (wrong key, altered header, ciphertext or
 * tag, truncation, unknown version), each a clear error and never an empty store.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { join } from 'node:path';
import { CordonError } from '../errors/index.js';
import { tempDir } from '../testkit/index.js';
import { HEADER_BYTES } from './format.js';
import {
  loadMasterKey, masterKeyId, masterKeyPath, openSecretStore, parseMasterKey, secretStorePath, SecretValue,
} from './index.js';

const VALUE = 'ghp_canary0123456789abcdefCANARY';
const KEY_HEX = 'a1'.repeat(32);
const OTHER_KEY_HEX = 'b2'.repeat(32);

function withHome<T>(fn: (home: string) => Promise<T> | T): () => Promise<T> {
  return async () => {
    const dir = tempDir('cordon-secrets-');
    try {
      return await fn(dir.path);
    } finally {
      dir.cleanup();
    }
  };
}

/** The error thrown by `fn` (sync or async), asserted to be a CordonError with `code`. */
async function errorOf(fn: () => unknown, code: string): Promise<CordonError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof CordonError, `expected a CordonError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.ok(err.fix && err.fix.length > 0, 'the error names a fix');
    assert.ok(!err.describe().includes(VALUE) && !JSON.stringify(err.toJSON()).includes(VALUE), 'the error never holds the value');
    return err;
  }
  assert.fail(`expected an error with code ${code}`);
}

describe('secret store round trip', () => {
  test('set, get, list, replace, remove with a generated key file', withHome(async (home) => {
    const times = ['2025-01-01T00:00:00.000Z', '2025-01-02T00:00:00.000Z', '2025-01-03T00:00:00.000Z'];
    const store = openSecretStore({ home, env: {}, now: () => new Date(times.shift()!) });
    assert.deepEqual(store.list(), [], 'no file: an empty store');
    assert.equal(existsSync(masterKeyPath(home)), false, 'reading does not create a key');

    const first = await store.set('github_token', Buffer.from(VALUE));
    assert.deepEqual(first, { created: true, createdKeyPath: masterKeyPath(home) });
    assert.equal(statSync(masterKeyPath(home)).mode & 0o777, 0o600);
    assert.equal(statSync(join(home, 'keys')).mode & 0o777, 0o700);
    assert.equal(statSync(secretStorePath(home)).mode & 0o777, 0o600);
    await store.set('b_key', Buffer.from('another-value-123'));
    const replaced = await store.set('github_token', Buffer.from(VALUE + 'X'));
    assert.deepEqual(replaced, { created: false }, 'a replace says so and creates no key');

    assert.deepEqual(store.list(), [
      { name: 'b_key', createdAt: '2025-01-02T00:00:00.000Z', updatedAt: '2025-01-02T00:00:00.000Z' },
      { name: 'github_token', createdAt: '2025-01-01T00:00:00.000Z', updatedAt: '2025-01-03T00:00:00.000Z' },
    ]);
    const again = openSecretStore({ home, env: {} });
    assert.equal(again.get('github_token')?.reveal(), VALUE + 'X', 'a new instance reads what was written');
    assert.equal(again.get('nope'), undefined);
    assert.equal(await again.remove('b_key'), true);
    assert.equal(await again.remove('b_key'), false, 'removing twice says there was none');
    assert.deepEqual(again.list().map((s) => s.name), ['github_token']);
  }));

  test('the file holds no value in clear, base64 or hex, and each write uses a fresh nonce', withHome(async (home) => {
    const store = openSecretStore({ home, env: { CORDON_MASTER_KEY: KEY_HEX } });
    await store.set('tok', Buffer.from(VALUE));
    const one = readFileSync(secretStorePath(home));
    for (const form of [VALUE, Buffer.from(VALUE).toString('base64'), Buffer.from(VALUE).toString('hex')]) {
      assert.equal(one.includes(Buffer.from(form)), false, `store file contains the value as ${form.slice(0, 6)}…`);
    }
    await store.set('tok', Buffer.from(VALUE));
    const two = readFileSync(secretStorePath(home));
    assert.equal(one.subarray(0, 18).equals(two.subarray(0, 18)), true, 'same magic, version, algorithm and key id');
    assert.equal(one.subarray(18, HEADER_BYTES).equals(two.subarray(18, HEADER_BYTES)), false, 'a new nonce per write');
    assert.equal(existsSync(masterKeyPath(home)), false, 'with CORDON_MASTER_KEY no key file is made');
  }));

  test('SecretValue prints as [secret NAME] in strings, JSON and inspect', () => {
    const v = new SecretValue('github_token', Buffer.from(VALUE));
    for (const shown of [String(v), `${v}`, JSON.stringify({ v }), inspect(v), inspect({ deep: { v } }, { depth: 5, showHidden: true })]) {
      assert.ok(!shown.includes(VALUE), shown);
      assert.match(shown, /\[secret github_token\]/);
    }
    assert.equal(v.reveal(), VALUE);
    assert.equal(v.equals(Buffer.from(VALUE)), true);
    assert.equal(v.equals(Buffer.from(VALUE.toLowerCase())), false);
  });

  test('concurrent writers do not lose updates (the lock serialises them)', withHome(async (home) => {
    const env = { CORDON_MASTER_KEY: KEY_HEX };
    await Promise.all(Array.from({ length: 8 }, (_, i) => openSecretStore({ home, env }).set(`s${i}`, Buffer.from(`value-number-${i}`))));
    assert.deepEqual(openSecretStore({ home, env }).list().map((s) => s.name), ['s0', 's1', 's2', 's3', 's4', 's5', 's6', 's7']);
  }));

  test('a lock held by a live process makes a writer give up with a fix; a stale one is taken over', withHome(async (home) => {
    const env = { CORDON_MASTER_KEY: KEY_HEX };
    mkdirSync(home, { recursive: true });
    writeFileSync(`${secretStorePath(home)}.lock`, String(process.pid));
    const err = await errorOf(() => openSecretStore({ home, env, lockWaitMs: 100 }).set('x_y', Buffer.from(VALUE)), 'secret-store-locked');
    assert.match(err.message, new RegExp(`pid ${process.pid}`));
    writeFileSync(`${secretStorePath(home)}.lock`, '999999999');
    await openSecretStore({ home, env, lockWaitMs: 100 }).set('x_y', Buffer.from(VALUE));
    assert.equal(existsSync(`${secretStorePath(home)}.lock`), false, 'the lock is released');
  }));
});

describe('values and names refused at set', () => {
  const cases: Array<{ name: string; secret: string; value: Buffer; code: string; problem: RegExp }> = [
    { name: 'shorter than 8 bytes', secret: 'ok', value: Buffer.from('1234567'), code: 'secret-invalid', problem: /7 bytes long; cordon needs at least 8/ },
    { name: 'empty', secret: 'ok', value: Buffer.alloc(0), code: 'secret-invalid', problem: /empty/ },
    { name: 'NUL byte', secret: 'ok', value: Buffer.from('abcdefgh\0ijk'), code: 'secret-invalid', problem: /NUL/ },
    { name: 'line break inside', secret: 'ok', value: Buffer.from('abcdefgh\nX-Evil: 1'), code: 'secret-invalid', problem: /line break/ },
    { name: 'escape character', secret: 'ok', value: Buffer.from('abcdefgh\x1b[31m'), code: 'secret-invalid', problem: /control character/ },
    { name: 'not UTF-8', secret: 'ok', value: Buffer.from([0xff, 0xfe, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47]), code: 'secret-invalid', problem: /not UTF-8/ },
    { name: 'too long', secret: 'ok', value: Buffer.alloc(64 * 1024 + 1, 0x61), code: 'secret-invalid', problem: /more than 65536/ },
    { name: 'bad name', secret: '1-starts-with-digit', value: Buffer.from(VALUE), code: 'secret-invalid', problem: /secret name given \(19 characters\) is not valid/ },
  ];
  for (const c of cases) {
    test(c.name, withHome(async (home) => {
      const err = await errorOf(() => openSecretStore({ home, env: { CORDON_MASTER_KEY: KEY_HEX } }).set(c.secret, c.value), c.code);
      assert.match(err.message, c.problem);
      assert.equal(existsSync(secretStorePath(home)), false, 'nothing written');
    }));
  }
});

describe('CORDON_MASTER_KEY forms', () => {
  const raw = Buffer.from(KEY_HEX, 'hex');
  const good: Array<{ name: string; text: string }> = [
    { name: '64 hex digits, lower case', text: KEY_HEX },
    { name: '64 hex digits, upper case, with a newline', text: KEY_HEX.toUpperCase() + '\n' },
    { name: 'base64, padded', text: raw.toString('base64') },
    { name: 'base64, unpadded', text: raw.toString('base64').replace(/=$/, '') },
    { name: 'base64url', text: Buffer.from('fb'.repeat(32), 'hex').toString('base64url') },
  ];
  for (const c of good) {
    test(`accepted: ${c.name}`, () => {
      const expected = c.name === 'base64url' ? Buffer.from('fb'.repeat(32), 'hex') : raw;
      assert.ok(parseMasterKey(c.text, 'CORDON_MASTER_KEY').equals(expected));
    });
  }
  const bad: Array<{ name: string; text: string }> = [
    { name: '63 hex digits', text: KEY_HEX.slice(1) },
    { name: '66 hex digits', text: KEY_HEX + 'ab' },
    { name: 'a passphrase', text: 'correct horse battery staple' },
    { name: 'base64 of 31 bytes', text: raw.subarray(1).toString('base64') },
    { name: 'base64 of 33 bytes', text: Buffer.concat([raw, Buffer.from([1])]).toString('base64') },
    { name: 'non-canonical base64 (low bits set)', text: raw.toString('base64').replace(/.=$/, 'B=') },
    { name: 'hex with a non-hex character', text: KEY_HEX.slice(0, 63) + 'g' },
    { name: 'whitespace only', text: '   ' },
  ];
  for (const c of bad) {
    test(`refused: ${c.name}`, withHome(async (home) => {
      const err = await errorOf(() => loadMasterKey({ home, env: { CORDON_MASTER_KEY: c.text } }), 'key-invalid');
      if (c.text.trim().length >= 8) assert.ok(!err.message.includes(c.text.trim()), 'the key is not echoed');
      assert.match(err.fix!, /openssl rand -hex 32/);
    }));
  }
});

describe('the master key file', () => {
  const modes: Array<{ name: string; mode: number; code?: string }> = [
    { name: '0600 is used', mode: 0o600 },
    { name: '0400 is used', mode: 0o400 },
    { name: '0640 (group-readable) is refused', mode: 0o640, code: 'key-permissions' },
    { name: '0604 (world-readable) is refused', mode: 0o604, code: 'key-permissions' },
    { name: '0644 is refused', mode: 0o644, code: 'key-permissions' },
  ];
  for (const c of modes) {
    test(c.name, withHome(async (home) => {
      mkdirSync(join(home, 'keys'), { mode: 0o700 });
      writeFileSync(masterKeyPath(home), KEY_HEX + '\n', { mode: 0o600 });
      chmodSync(masterKeyPath(home), c.mode);
      if (!c.code) {
        assert.ok(loadMasterKey({ home, env: {} })!.bytes.equals(Buffer.from(KEY_HEX, 'hex')));
        return;
      }
      const err = await errorOf(() => loadMasterKey({ home, env: {} }), c.code);
      assert.match(err.fix!, /chmod 600/);
    }));
  }

  test('a key file that is not 64 hex digits is refused, never replaced', withHome(async (home) => {
    mkdirSync(join(home, 'keys'), { mode: 0o700 });
    writeFileSync(masterKeyPath(home), 'not a key\n', { mode: 0o600 });
    await errorOf(() => openSecretStore({ home, env: {} }).set('a_b', Buffer.from(VALUE)), 'key-corrupt');
    assert.equal(readFileSync(masterKeyPath(home), 'utf8'), 'not a key\n');
  }));

  test('a store without its key file is an error naming the fix, and no new key is made', withHome(async (home) => {
    await openSecretStore({ home, env: {} }).set('a_b', Buffer.from(VALUE));
    const before = readFileSync(secretStorePath(home));
    rmSync(masterKeyPath(home));
    for (const op of [() => openSecretStore({ home, env: {} }).list(), () => openSecretStore({ home, env: {} }).set('c_d', Buffer.from(VALUE))]) {
      const err = await errorOf(op, 'key-missing');
      assert.match(err.fix!, /restore .*master\.key from backup, or set CORDON_MASTER_KEY/);
    }
    assert.equal(existsSync(masterKeyPath(home)), false);
    assert.ok(readFileSync(secretStorePath(home)).equals(before), 'the store is untouched');
  }));
});

describe('unreadable store files', () => {
  async function sealed(home: string): Promise<Buffer> {
    await openSecretStore({ home, env: { CORDON_MASTER_KEY: KEY_HEX } }).set('tok', Buffer.from(VALUE));
    return readFileSync(secretStorePath(home));
  }
  const flip = (b: Buffer, i: number): Buffer => {
    const c = Buffer.from(b);
    c[i < 0 ? c.length + i : i]! ^= 0x01;
    return c;
  };
  const cases: Array<{ name: string; mutate: (b: Buffer) => Buffer; code: string; message: RegExp }> = [
    { name: 'magic altered', mutate: (b) => flip(b, 0), code: 'secret-store-corrupt', message: /not a cordon secret store/ },
    { name: 'version from the future', mutate: (b) => { const c = Buffer.from(b); c[8] = 2; return c; }, code: 'secret-store-version', message: /format version 2; this cordon reads version 1/ },
    { name: 'algorithm byte altered', mutate: (b) => flip(b, 9), code: 'secret-store-corrupt', message: /unknown algorithm/ },
    { name: 'key id altered', mutate: (b) => flip(b, 12), code: 'key-wrong', message: /another master key .* or its header was altered/ },
    { name: 'nonce altered', mutate: (b) => flip(b, 20), code: 'secret-store-corrupt', message: /failed authentication/ },
    { name: 'ciphertext altered', mutate: (b) => flip(b, HEADER_BYTES + 3), code: 'secret-store-corrupt', message: /failed authentication/ },
    { name: 'tag altered', mutate: (b) => flip(b, -1), code: 'secret-store-corrupt', message: /failed authentication/ },
    { name: 'truncated by one byte', mutate: (b) => b.subarray(0, b.length - 1), code: 'secret-store-corrupt', message: /failed authentication/ },
    { name: 'truncated into the header', mutate: (b) => b.subarray(0, 20), code: 'secret-store-corrupt', message: /truncated \(20 bytes\)/ },
    { name: 'truncated to nothing', mutate: () => Buffer.alloc(0), code: 'secret-store-corrupt', message: /not a cordon secret store/ },
    { name: 'a byte appended', mutate: (b) => Buffer.concat([b, Buffer.from([0])]), code: 'secret-store-corrupt', message: /failed authentication/ },
    { name: 'replaced by text', mutate: () => Buffer.from('{"secrets":{}}'), code: 'secret-store-corrupt', message: /not a cordon secret store/ },
  ];
  for (const c of cases) {
    test(c.name, withHome(async (home) => {
      const bad = c.mutate(await sealed(home));
      writeFileSync(secretStorePath(home), bad, { mode: 0o600 });
      const store = openSecretStore({ home, env: { CORDON_MASTER_KEY: KEY_HEX } });
      for (const op of [() => store.list(), () => store.get('tok'), () => store.set('other', Buffer.from(VALUE)), () => store.remove('tok')]) {
        const err = await errorOf(op, c.code);
        assert.match(err.message, c.message);
      }
      assert.ok(readFileSync(secretStorePath(home)).equals(bad), 'a store that cannot be read is never overwritten');
    }));
  }

  test('a wrong CORDON_MASTER_KEY is told apart from damage, and the fix says the variable overrides the file', withHome(async (home) => {
    await sealed(home);
    const err = await errorOf(() => openSecretStore({ home, env: { CORDON_MASTER_KEY: OTHER_KEY_HEX } }).list(), 'key-wrong');
    assert.ok(err.message.includes(masterKeyId(Buffer.from(KEY_HEX, 'hex'))), 'names the key id the store needs');
    assert.match(err.fix!, /CORDON_MASTER_KEY overrides .*master\.key/);
  }));

  test('a store written with the key file and read with another key file says to restore it', withHome(async (home) => {
    await openSecretStore({ home, env: {} }).set('tok', Buffer.from(VALUE));
    writeFileSync(masterKeyPath(home), OTHER_KEY_HEX + '\n', { mode: 0o600 });
    const err = await errorOf(() => openSecretStore({ home, env: {} }).get('tok'), 'key-wrong');
    assert.match(err.fix!, /restore the .*master\.key this store was written with/);
  }));
});
