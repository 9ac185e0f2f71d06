/**
 * Key ring tests: private files, stable key ids, rotation by hand and by age,
 * the verification window of a retired key (and its end), an interrupted
 * rotation, and refusal of key files that are too open or not keys at all.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KeyError } from '../errors/index.js';
import { tempDir } from '../testkit/index.js';
import { openKeyRing, jwkThumbprint } from './index.js';

const HOUR = 3_600_000;

function clock(startMs = 1_700_000_000_000) {
  let t = startMs;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

function keyFile(dir: string, kid: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(dir, `${kid}.json`), 'utf8')) as Record<string, unknown>;
}

test('the first open creates one 0600 key file in a 0700 directory; the next open loads the same key', () => {
  const tmp = tempDir();
  const dir = join(tmp.path, 'keys', 'identity');
  try {
    const ring = openKeyRing({ dir, retainMs: 605_000 });
    const [info] = ring.list();
    assert.ok(info?.active);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(dir), [`${info.kid}.json`]);
    assert.equal(statSync(join(dir, `${info.kid}.json`)).mode & 0o777, 0o600);
    const file = keyFile(dir, info.kid);
    assert.equal(file.state, 'active');
    assert.match(String(file.privateKeyPem), /^-----BEGIN PRIVATE KEY-----/);
    assert.equal(openKeyRing({ dir, retainMs: 605_000 }).signingKey().kid, info.kid);
  } finally {
    tmp.cleanup();
  }
});

test('the JWK set holds only public Ed25519 keys named by their RFC 7638 thumbprint', () => {
  const tmp = tempDir();
  try {
    const ring = openKeyRing({ dir: tmp.path, retainMs: 605_000 });
    const { keys } = ring.jwks();
    assert.equal(keys.length, 1);
    const jwk = keys[0]!;
    assert.deepEqual(Object.keys(jwk).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x']);
    assert.equal(jwk.kty, 'OKP');
    assert.equal(jwk.crv, 'Ed25519');
    assert.equal(jwk.alg, 'EdDSA');
    assert.equal(jwk.use, 'sig');
    assert.equal(Buffer.from(jwk.x, 'base64url').length, 32);
    // The thumbprint of {crv, kty, x}, computed independently of jwkThumbprint.
    assert.equal(jwk.kid, createHash('sha256').update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x })).digest('base64url'));
  } finally {
    tmp.cleanup();
  }
});

test('rotate(): the old key drops its private half, verifies for retainMs, then is deleted', () => {
  const tmp = tempDir();
  const c = clock();
  try {
    const ring = openKeyRing({ dir: tmp.path, retainMs: 605_000, now: c.now });
    const old = ring.signingKey().kid;
    c.advance(1000);
    const { kid } = ring.rotate();
    assert.notEqual(kid, old);
    assert.equal(ring.signingKey().kid, kid);
    const file = keyFile(tmp.path, old);
    assert.equal(file.state, 'retired');
    assert.equal(file.privateKeyPem, undefined, 'a retired key file keeps no private key');
    assert.equal(file.verifyUntilMs, c.now() + 605_000);
    assert.deepEqual(ring.jwks().keys.map((k) => k.kid), [kid, old]);

    c.advance(605_000 - 1);
    assert.ok(ring.verificationKey(old), 'still inside the window');
    assert.ok(openKeyRing({ dir: tmp.path, retainMs: 1, now: c.now }).verificationKey(old), 'the window is kept in the file across restarts');
    c.advance(1);
    assert.equal(ring.verificationKey(old), undefined, 'the window has closed');
    assert.deepEqual(ring.jwks().keys.map((k) => k.kid), [kid]);
    assert.equal(existsSync(join(tmp.path, `${old}.json`)), false, 'its file is deleted');
  } finally {
    tmp.cleanup();
  }
});

test('the active key is rotated by itself once it is rotateEveryMs old', () => {
  const tmp = tempDir();
  const c = clock();
  try {
    const ring = openKeyRing({ dir: tmp.path, retainMs: 605_000, rotateEveryMs: 24 * HOUR, now: c.now });
    const first = ring.signingKey().kid;
    c.advance(24 * HOUR - 1);
    assert.equal(ring.signingKey().kid, first);
    c.advance(1);
    const second = ring.signingKey().kid;
    assert.notEqual(second, first);
    assert.ok(ring.verificationKey(first), 'the rotated key still verifies');
    c.advance(24 * HOUR);
    const reopened = openKeyRing({ dir: tmp.path, retainMs: 605_000, rotateEveryMs: 24 * HOUR, now: c.now });
    assert.notEqual(reopened.signingKey().kid, second, 'an overdue key is rotated after a restart too');
    assert.equal(reopened.verificationKey(first), undefined);
  } finally {
    tmp.cleanup();
  }
});

test('after an interrupted rotation (two active files) the newest key signs and the other is retired', () => {
  const a = tempDir();
  const b = tempDir();
  const c = clock();
  try {
    const older = openKeyRing({ dir: a.path, retainMs: 605_000, now: c.now }).signingKey().kid;
    c.advance(60_000);
    const newer = openKeyRing({ dir: b.path, retainMs: 605_000, now: c.now }).signingKey().kid;
    copyFileSync(join(b.path, `${newer}.json`), join(a.path, `${newer}.json`));
    const ring = openKeyRing({ dir: a.path, retainMs: 605_000, now: c.now });
    assert.equal(ring.signingKey().kid, newer);
    assert.equal(keyFile(a.path, older).state, 'retired');
    assert.ok(ring.verificationKey(older));
  } finally {
    a.cleanup();
    b.cleanup();
  }
});

const tooOpen: Array<{ name: string; mode: number }> = [
  { name: 'group-readable', mode: 0o640 },
  { name: 'world-readable', mode: 0o604 },
  { name: 'group-writable', mode: 0o620 },
];
for (const c of tooOpen) {
  test(`a ${c.name} key file is refused with "chmod 600" and left as it is`, () => {
    const tmp = tempDir();
    try {
      const kid = openKeyRing({ dir: tmp.path, retainMs: 605_000 }).signingKey().kid;
      const path = join(tmp.path, `${kid}.json`);
      const before = readFileSync(path, 'utf8');
      chmodSync(path, c.mode);
      assert.throws(() => openKeyRing({ dir: tmp.path, retainMs: 605_000 }), (err: unknown) => {
        assert.ok(err instanceof KeyError, String(err));
        assert.equal(err.code, 'key-permissions');
        assert.match(err.message, new RegExp(`mode 0${c.mode.toString(8)}`));
        assert.equal(err.fix, `chmod 600 ${path}`);
        return true;
      });
      assert.equal(readFileSync(path, 'utf8'), before);
      assert.equal(statSync(path).mode & 0o777, c.mode);
      assert.deepEqual(readdirSync(tmp.path), [`${kid}.json`], 'no new key was made instead');
    } finally {
      tmp.cleanup();
    }
  });
}

test('a key directory that others can write to is refused with "chmod 700"', () => {
  const tmp = tempDir();
  try {
    chmodSync(tmp.path, 0o770);
    assert.throws(() => openKeyRing({ dir: tmp.path, retainMs: 605_000 }), (err: unknown) => {
      assert.ok(err instanceof KeyError);
      assert.equal(err.code, 'key-permissions');
      assert.equal(err.fix, `chmod 700 ${tmp.path}`);
      return true;
    });
    assert.deepEqual(readdirSync(tmp.path), [], 'no key was written there');
  } finally {
    tmp.cleanup();
  }
});

test('key files that are not usable keys are refused as key-corrupt and never overwritten', async (t) => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const other = generateKeyPairSync('ed25519');
  const otherKid = jwkThumbprint(other.publicKey);
  const ed = (pem: string, kid: string) => JSON.stringify({ version: 1, state: 'active', kid, alg: 'EdDSA', createdAtMs: 1, privateKeyPem: pem });
  const cases: Array<{ name: string; file: string; content?: string; symlink?: boolean; message: RegExp }> = [
    { name: 'not JSON', file: `${otherKid}.json`, content: 'garbage', message: /not an identity key file/ },
    { name: 'unknown field', file: `${otherKid}.json`, content: JSON.stringify({ ...JSON.parse(ed(other.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), otherKid)), extra: 1 }), message: /not an identity key file/ },
    { name: 'bad PEM', file: `${otherKid}.json`, content: ed('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n', otherKid), message: /does not parse/ },
    { name: 'an EC key', file: `${otherKid}.json`, content: ed(ec.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), otherKid), message: /holds a ec key, not Ed25519/ },
    { name: 'a kid that is not its thumbprint', file: `${'A'.repeat(43)}.json`, content: ed(other.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), 'A'.repeat(43)), message: /thumbprint/ },
    { name: 'a symbolic link', file: `${otherKid}.json`, symlink: true, message: /not a regular file/ },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const tmp = tempDir();
      try {
        const path = join(tmp.path, c.file);
        if (c.symlink) {
          writeFileSync(join(tmp.path, 'target'), ed(other.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), otherKid), { mode: 0o600 });
          symlinkSync(join(tmp.path, 'target'), path);
        } else {
          writeFileSync(path, c.content ?? '', { mode: 0o600 });
        }
        assert.throws(() => openKeyRing({ dir: tmp.path, retainMs: 605_000 }), (err: unknown) => {
          assert.ok(err instanceof KeyError, String(err));
          assert.equal(err.code, 'key-corrupt');
          assert.match(err.message, c.message);
          assert.ok(err.message.includes(path), 'names the file');
          assert.match(err.fix ?? '', /restore .* from backup/);
          return true;
        });
        if (!c.symlink) assert.equal(readFileSync(path, 'utf8'), c.content);
      } finally {
        tmp.cleanup();
      }
    });
  }
});
