/**
 * Key rotation tests: the old key seals what it signed, the rotation is in
 * the chain, checkpoints of every key verify (and only of known keys), the
 * states a crash can leave load and verify, and unusable key directories are
 * refused untouched. What reaches the store (sealing, the rotation event,
 * checkpoints of every key, a thief's writes) runs on SQLite and on
 * PostgreSQL (`[sqlite] …`, `[postgres] …`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuditError, KeyError } from '../errors/index.js';
import { sql } from 'kysely';
import type { Store } from '../store/index.js';
import { cleanupAll, eachStore, undoOnThrow, withFixture, type StoreUnderTest, type TestStoreLocation } from '../store/testing/each-store.js';
import { canonicalJson } from '../util/index.js';
import { signCheckpoint } from './checkpoint.js';
import { sha256Hex } from './event.js';
import {
  AuditLog,
  KEY_ROTATED_EVENT,
  PRIVATE_KEY_FILE,
  PUBLIC_KEY_FILE,
  keyIdOf,
  loadOrCreateSigningKey,
  loadPublicKeys,
  retiredPublicKeyPath,
  rotateAuditKey,
  rotateSigningKey,
  verifyAudit,
} from './index.js';

interface Fixture {
  dir: string;
  keyDir: string;
  store: Store;
  loc: TestStoreLocation;
  cleanup(): Promise<void>;
}

/** A fresh store of this kind, open; when opening it throws, the location is removed before the error is rethrown. */
async function fixture(s: StoreUnderTest): Promise<Fixture> {
  const loc = await s.fresh();
  const store = await undoOnThrow(() => loc.open(), () => loc.cleanup());
  return {
    dir: loc.dir,
    keyDir: join(loc.dir, 'keys'),
    store,
    loc,
    cleanup: () => cleanupAll(() => store.close(), () => loc.cleanup()),
  };
}

/** Run `fn` on a fresh fixture, then clean up (a cleanup error never hides `fn`'s own). */
const withStoreFixture = (s: StoreUnderTest, fn: (f: Fixture) => Promise<void>): Promise<void> => withFixture(() => fixture(s), fn);

/** Append `n` events through a log that is closed (sealed) afterwards; returns its keyId. */
async function appendClosed(f: Fixture, n: number, type = 'test.event'): Promise<string> {
  const log = await AuditLog.open({ store: f.store, keyDir: f.keyDir });
  for (let i = 0; i < n; i++) await log.append({ type, actor: 'system', data: { i } });
  await log.close();
  return log.keyId;
}

/** Key warnings (`CORDON_AUDIT_KEY_CHANGED`, `CORDON_AUDIT_ROTATION_UNFINISHED`) emitted while `fn` runs, as `code: message`. */
async function keyChangedWarnings(fn: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const onWarning = (w: Error & { code?: string }) => {
    if (w.code === 'CORDON_AUDIT_KEY_CHANGED' || w.code === 'CORDON_AUDIT_ROTATION_UNFINISHED') seen.push(`${w.code}: ${w.message}`);
  };
  process.on('warning', onWarning);
  try {
    await fn();
    await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
  } finally {
    process.off('warning', onWarning);
  }
  return seen;
}

/** Every file of the key directory with its content and mode. */
function snapshot(keyDir: string): Record<string, string> {
  if (!existsSync(keyDir)) return {};
  const out: Record<string, string> = {};
  for (const n of readdirSync(keyDir).sort()) {
    out[n] = `${(statSync(join(keyDir, n)).mode & 0o777).toString(8)} ${readFileSync(join(keyDir, n), 'utf8')}`;
  }
  return out;
}

const stores = eachStore('cordon_rotate');
/** For the refusals that happen before the store is touched. */
const sqlite = stores[0]!;

for (const s of stores) {
  s.test('the fixture removes its directory and database when the store cannot be opened', async () => {
    let made: TestStoreLocation | undefined;
    const broken: StoreUnderTest = {
      ...s,
      fresh: async () => ({ ...(made = await s.fresh()), open: () => Promise.reject(new Error('store refused')) }),
    };
    await assert.rejects(fixture(broken), /store refused/);
    assert.ok(made !== undefined);
    assert.equal(existsSync(made.dir), false, 'the directory is removed');
    await assert.rejects(made.outside((db) => sql`select 1`.execute(db)), /does not exist/, 'the file or database is gone');
  });

  s.test('rotation seals the old key, records audit.key-rotated, and the whole log verifies with both keys', async () => {
    await withStoreFixture(s, async (f) => {
      // A log left open (as by a crash) with 7 unsealed events: the rotation must seal them with the old key.
      const crashed = await AuditLog.open({ store: f.store, keyDir: f.keyDir, checkpointEvery: 10_000, checkpointIntervalMs: 2_000_000_000 });
      for (let i = 0; i < 7; i++) await crashed.append({ type: 'test.before', actor: 'system', data: { i } });
      const oldKeyId = crashed.keyId;
      const oldPrivatePem = readFileSync(join(f.keyDir, PRIVATE_KEY_FILE), 'utf8');
      assert.equal(await f.store.audit.lastCheckpoint(), undefined, 'nothing sealed yet');

      let r!: Awaited<ReturnType<typeof rotateAuditKey>>;
      const warnings = await keyChangedWarnings(async () => {
        r = await rotateAuditKey({ store: f.store, keyDir: f.keyDir, actor: 'operator:local:alice' });
        await appendClosed(f, 5, 'test.after');
      });
      assert.deepEqual(warnings, [], 'a rotated key is not reported as a changed key');
      assert.equal(r.oldKeyId, oldKeyId);
      assert.notEqual(r.newKeyId, oldKeyId);
      assert.equal(r.sealedSeq, 7);
      assert.equal(r.eventSeq, 8);
      assert.equal(r.retiredPublicKeyPath, retiredPublicKeyPath(f.keyDir, oldKeyId));

      const checkpoints = await f.store.audit.listCheckpoints();
      assert.deepEqual(
        checkpoints.map((c) => [c.seq, c.keyId]),
        [[7, oldKeyId], [8, r.newKeyId], [13, r.newKeyId]],
        'the old key sealed everything up to the rotation, the new key everything after',
      );
      const [event] = await f.store.audit.query({ afterSeq: 7, beforeSeq: 9, limit: 1 });
      assert.equal(event?.type, KEY_ROTATED_EVENT);
      assert.equal(event?.actor, 'operator:local:alice');
      assert.deepEqual(JSON.parse(event!.body).data, { newKeyId: r.newKeyId, oldKeyId });

      const report = await verifyAudit(f.store, { keyDir: f.keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 13);
      assert.equal(report.checkpoints, 3, 'checkpoints of both keys verify');
      assert.equal(report.unsealedEvents, 0);

      assert.equal(statSync(join(f.keyDir, PRIVATE_KEY_FILE)).mode & 0o777, 0o600);
      assert.equal(statSync(join(f.keyDir, PUBLIC_KEY_FILE)).mode & 0o777, 0o644);
      assert.equal(statSync(r.retiredPublicKeyPath).mode & 0o777, 0o644);
      assert.notEqual(readFileSync(join(f.keyDir, PRIVATE_KEY_FILE), 'utf8'), oldPrivatePem, 'the old private key is gone');
      assert.equal(loadOrCreateSigningKey(f.keyDir, { create: false }).keyId, r.newKeyId);
      assert.deepEqual([...loadPublicKeys(f.keyDir).keys()].sort(), [oldKeyId, r.newKeyId].sort());
      assert.deepEqual(readdirSync(f.keyDir).filter((n) => n.endsWith('.tmp')), [], 'no temp file is left');
    });
  });

  s.test('after a rotation, verification still fails for a third key and for a missing retired key', async (t) => {
    await withStoreFixture(s, async (f) => {
      await appendClosed(f, 4);
      const r = await rotateAuditKey({ store: f.store, keyDir: f.keyDir });
      await appendClosed(f, 3);

      await t.test('a checkpoint forged with a third key is reported as forged', async () => {
        const { privateKey, publicKey } = generateKeyPairSync('ed25519');
        const third = { keyId: keyIdOf(publicKey), privateKey, publicKey, publicKeyPem: '', path: '' };
        const [row] = await f.store.audit.query({ afterSeq: 1, beforeSeq: 3, limit: 1 });
        await f.store.audit.insertCheckpoint(signCheckpoint(third, 2, row!.hash, new Date().toISOString()));
        const report = await verifyAudit(f.store, { keyDir: f.keyDir });
        assert.equal(report.ok, false);
        assert.equal(report.problem, 'forged-checkpoint');
        assert.equal(report.firstBadSeq, 2);
        assert.match(report.message, new RegExp(`unknown key ${third.keyId}`));
      });

      await t.test('without the retired .pub, the old key is an unknown key', async () => {
        await withStoreFixture(s, async (fresh) => {
          await appendClosed(fresh, 2);
          const again = await rotateAuditKey({ store: fresh.store, keyDir: fresh.keyDir });
          unlinkSync(again.retiredPublicKeyPath);
          const report = await verifyAudit(fresh.store, { keyDir: fresh.keyDir });
          assert.equal(report.ok, false);
          assert.equal(report.problem, 'forged-checkpoint');
          assert.equal(report.firstBadSeq, 2, 'the checkpoint the old key signed');
          assert.match(report.message, new RegExp(`unknown key ${again.oldKeyId}`));
        });
      });
      assert.ok(r.newKeyId);
    });
  });

  s.test('rotating twice keeps both retired keys and every checkpoint verifies', async () => {
    await withStoreFixture(s, async (f) => {
      const first = await appendClosed(f, 3);
      const a = await rotateAuditKey({ store: f.store, keyDir: f.keyDir });
      await appendClosed(f, 2);
      const b = await rotateAuditKey({ store: f.store, keyDir: f.keyDir });
      await appendClosed(f, 2);
      assert.equal(a.oldKeyId, first);
      assert.equal(b.oldKeyId, a.newKeyId);
      assert.ok(existsSync(retiredPublicKeyPath(f.keyDir, first)) && existsSync(retiredPublicKeyPath(f.keyDir, a.newKeyId)));
      const keyIds = new Set((await f.store.audit.listCheckpoints()).map((c) => c.keyId));
      assert.deepEqual([...keyIds].sort(), [first, a.newKeyId, b.newKeyId].sort());
      const report = await verifyAudit(f.store, { keyDir: f.keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 9, '7 events and 2 rotation events');
    });
  });

  s.test('the key directories a crash can leave load, verify and open; the one with the new key warns that the rotation is unfinished', async (t) => {
    const cases: { name: string; leave: (keyDir: string, oldKeyId: string) => void; keyIs: 'old' | 'new' }[] = [
      {
        name: 'crash after step 1: only the retired .pub is written',
        leave: (keyDir, oldKeyId) => copyFileSync(join(keyDir, PUBLIC_KEY_FILE), retiredPublicKeyPath(keyDir, oldKeyId)),
        keyIs: 'old',
      },
      {
        name: 'crash after step 2: new private key, the .pub still holds the old key',
        leave: (keyDir, oldKeyId) => {
          copyFileSync(join(keyDir, PUBLIC_KEY_FILE), retiredPublicKeyPath(keyDir, oldKeyId));
          const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
          writeFileSync(join(keyDir, PRIVATE_KEY_FILE), pem, { mode: 0o600 });
        },
        keyIs: 'new',
      },
    ];
    for (const c of cases) {
      await t.test(c.name, async () => {
        await withStoreFixture(s, async (f) => {
          const oldKeyId = await appendClosed(f, 3);
          c.leave(f.keyDir, oldKeyId);
          assert.deepEqual([...loadPublicKeys(f.keyDir).keys()], [oldKeyId], 'verify reads the old key');
          const before = await verifyAudit(f.store, { keyDir: f.keyDir });
          assert.equal(before.ok, true, before.message);

          const warnings = await keyChangedWarnings(async () => {
            const log = await AuditLog.open({ store: f.store, keyDir: f.keyDir });
            assert.equal(log.keyId === oldKeyId, c.keyIs === 'old', `the log signs with the ${c.keyIs} key`);
            await log.append({ type: 'test.after-crash', actor: 'system' });
            await log.close();
          });
          if (c.keyIs === 'old') assert.deepEqual(warnings, []);
          else {
            // Never silent: a retired .pub (a rotation cut short, or a file someone put there) changes what is said, not whether.
            assert.equal(warnings.length, 1, warnings.join('\n'));
            assert.match(warnings[0]!, /^CORDON_AUDIT_ROTATION_UNFINISHED: .*does not record yet; run `cordon audit rotate-key`/);
          }
          const after = await verifyAudit(f.store, { keyDir: f.keyDir });
          assert.equal(after.ok, true, after.message);
          assert.equal(after.checkpoints, 2);

          let r!: Awaited<ReturnType<typeof rotateAuditKey>>;
          const finishing = await keyChangedWarnings(async () => {
            r = await rotateAuditKey({ store: f.store, keyDir: f.keyDir });
          });
          assert.deepEqual(finishing, [], 'the rotation that finishes it reports nothing');
          const reopened = await keyChangedWarnings(async () => {
            await (await AuditLog.open({ store: f.store, keyDir: f.keyDir })).close();
          });
          assert.deepEqual(reopened, [], 'once recorded, nothing more is said');
          const final = await verifyAudit(f.store, { keyDir: f.keyDir });
          assert.equal(final.ok, true, `a rotation from this state completes: ${final.message}`);
          assert.ok(loadPublicKeys(f.keyDir).has(oldKeyId) && loadPublicKeys(f.keyDir).has(r.newKeyId));
        });
      });
    }
  });

  s.test('a log whose unsealed tail does not chain is not sealed, and its key is not rotated', async () => {
    await withStoreFixture(s, async (f) => {
      await appendClosed(f, 2);
      const head = (await f.store.audit.head())!;
      const ts = new Date().toISOString();
      const prevHash = 'f'.repeat(64); // not the hash of event 2
      const body = canonicalJson({ actor: 'system', data: {}, prevHash, seq: head.seq + 1, ts, type: 'test.spliced' });
      await f.store.audit.insertEvents([
        { seq: head.seq + 1, ts, type: 'test.spliced', sandbox: null, agent: null, actor: 'system', decision: null, prevHash, hash: sha256Hex(body), body },
      ]);
      const files = snapshot(f.keyDir);
      await assert.rejects(rotateAuditKey({ store: f.store, keyDir: f.keyDir }), (err: unknown) => {
        assert.ok(err instanceof AuditError, String(err));
        assert.equal(err.code, 'audit-chain-broken');
        return true;
      });
      assert.deepEqual(snapshot(f.keyDir), files, 'the key is not rotated');
      assert.deepEqual((await f.store.audit.listCheckpoints()).map((c) => c.seq), [2], 'the spliced event is not sealed');
    });
  });

  s.test('a private key swapped without a rotation is still reported as a changed key', async () => {
    await withStoreFixture(s, async (f) => {
      await appendClosed(f, 2);
      const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
      writeFileSync(join(f.keyDir, PRIVATE_KEY_FILE), pem, { mode: 0o600 });
      const warnings = await keyChangedWarnings(async () => {
        const log = await AuditLog.open({ store: f.store, keyDir: f.keyDir });
        await log.close();
      });
      assert.equal(warnings.length, 1, 'the stale .pub filed away on load does not count as a rotation');
      assert.match(warnings[0]!, /^CORDON_AUDIT_KEY_CHANGED: /);
    });
  });

  s.test('a retired key signs nothing from its rotation on: a checkpoint it signs later is reported as forged', async () => {
    await withStoreFixture(s, async (f) => {
      await appendClosed(f, 3);
      const old = loadOrCreateSigningKey(f.keyDir); // what a thief of the old key holds
      const rotation = await rotateAuditKey({ store: f.store, keyDir: f.keyDir });
      await appendClosed(f, 2);
      assert.equal((await verifyAudit(f.store, { keyDir: f.keyDir })).ok, true, 'the honest log verifies');
      // The thief, with write access to the store, appends an event and seals it with the old key.
      const thiefKeys = join(f.dir, 'thief-keys');
      mkdirSync(thiefKeys, { mode: 0o700 });
      writeFileSync(join(thiefKeys, PRIVATE_KEY_FILE), old.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
      const thief = await AuditLog.open({ store: f.store, keyDir: thiefKeys, allowNewKey: true });
      const forgedEvent = await thief.append({ type: 'test.event', actor: 'system', data: { forged: true } });
      await thief.close();
      assert.equal((await f.store.audit.listCheckpoints()).at(-1)?.keyId, rotation.oldKeyId, 'the thief sealed it with the old key');
      const report = await verifyAudit(f.store, { keyDir: f.keyDir });
      assert.equal(report.ok, false);
      assert.equal(report.problem, 'forged-checkpoint');
      assert.equal(report.firstBadSeq, forgedEvent.seq);
      assert.match(report.message, new RegExp(`signed by key ${rotation.oldKeyId}, which the ${KEY_ROTATED_EVENT.replace('.', '\\.')} event at seq ${rotation.eventSeq} retired`));
    });
  });

  s.test('a rotation interrupted before its event was recorded can be run again at once, and records the missing retirement', async (t) => {
    const cases: { name: string; interrupt: (f: Fixture, oldKeyId: string) => Promise<void> }[] = [
      {
        name: 'crash after step 2 (new private key, old .pub)',
        interrupt: async (f, oldKeyId) => {
          copyFileSync(join(f.keyDir, PUBLIC_KEY_FILE), retiredPublicKeyPath(f.keyDir, oldKeyId));
          const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
          writeFileSync(join(f.keyDir, PRIVATE_KEY_FILE), pem, { mode: 0o600 });
        },
      },
      {
        name: 'key files rotated, the audit.key-rotated event not written',
        interrupt: async (f) => void rotateSigningKey(f.keyDir),
      },
    ];
    for (const c of cases) {
      await t.test(c.name, async () => {
        await withStoreFixture(s, async (f) => {
          const oldKeyId = await appendClosed(f, 3);
          const old = loadOrCreateSigningKey(f.keyDir); // what a thief of the old key holds
          await c.interrupt(f, oldKeyId);
          const middleKeyId = loadOrCreateSigningKey(f.keyDir, { create: false }).keyId;
          assert.notEqual(middleKeyId, oldKeyId);
          // the operator runs the rotation again, with no event appended in between
          const r = await rotateAuditKey({ store: f.store, keyDir: f.keyDir });
          assert.equal(r.oldKeyId, middleKeyId);
          const rotations = (await f.store.audit.query({ type: KEY_ROTATED_EVENT, limit: 10 })).map((e) => JSON.parse(e.body).data);
          assert.deepEqual(rotations, [{ newKeyId: middleKeyId, oldKeyId }, { newKeyId: r.newKeyId, oldKeyId: middleKeyId }], 'both retirements are in the chain');
          assert.equal((await verifyAudit(f.store, { keyDir: f.keyDir })).ok, true);
          // the first old key can no longer extend the log
          const thiefKeys = join(f.dir, 'thief-keys');
          mkdirSync(thiefKeys, { mode: 0o700 });
          writeFileSync(join(thiefKeys, PRIVATE_KEY_FILE), old.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
          const thief = await AuditLog.open({ store: f.store, keyDir: thiefKeys, allowNewKey: true });
          await thief.append({ type: 'test.event', actor: 'system', data: { forged: true } });
          await thief.close();
          const report = await verifyAudit(f.store, { keyDir: f.keyDir });
          assert.equal(report.ok, false);
          assert.equal(report.problem, 'forged-checkpoint');
        });
      });
    }
  });

  s.test('a log cut back past its rotation and extended with the retired key fails: the newest seal must be the current key', async () => {
    await withStoreFixture(s, async (f) => {
      await appendClosed(f, 3);
      const old = loadOrCreateSigningKey(f.keyDir);
      const rotation = await rotateAuditKey({ store: f.store, keyDir: f.keyDir });
      await appendClosed(f, 2);
      // The thief removes the rotation event, everything after it and the new key's checkpoints…
      await f.loc.outside(async (db) => {
        await sql`delete from audit_events where seq >= ${rotation.eventSeq}`.execute(db);
        await sql`delete from audit_checkpoints where seq >= ${rotation.eventSeq}`.execute(db);
      });
      // …then appends and seals with the old key, so that no retired key signs after a rotation event.
      const thiefKeys = join(f.dir, 'thief-keys');
      mkdirSync(thiefKeys, { mode: 0o700 });
      writeFileSync(join(thiefKeys, PRIVATE_KEY_FILE), old.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
      const thief = await AuditLog.open({ store: f.store, keyDir: thiefKeys, allowNewKey: true });
      const forged = await thief.append({ type: 'test.event', actor: 'system', data: { forged: true } });
      await thief.close();
      const report = await verifyAudit(f.store, { keyDir: f.keyDir });
      assert.equal(report.ok, false);
      assert.equal(report.problem, 'truncated');
      assert.equal(report.firstBadSeq, forged.seq);
      assert.match(report.message, new RegExp(`signed by key ${rotation.oldKeyId}, not by the current audit key ${rotation.newKeyId}`));
      // Given only the public keys (no key directory, so no notion of "current"), the rule does not apply.
      const pems = [...loadPublicKeys(f.keyDir).values()].map((k) => k.export({ type: 'spki', format: 'pem' }) as string);
      assert.equal((await verifyAudit(f.store, { publicKeyPem: pems })).ok, true);
    });
  });
}

// Refused on the key directory before anything is sealed: the same on every store.
test('unusable key directories are refused with a fix and left untouched', async (t) => {
  const cases: { name: string; prepare: (f: Fixture) => Promise<void>; code: string; message: RegExp; fix: RegExp }[] = [
    { name: 'no key at all', prepare: async () => {}, code: 'key-missing', message: /no audit signing key to rotate/, fix: /cordon up/ },
    {
      name: 'key directory without a private key',
      prepare: async (f) => mkdirSync(f.keyDir, { mode: 0o700 }),
      code: 'key-missing',
      message: /does not exist/,
      fix: /restore .* from backup/,
    },
    {
      name: 'private key readable by others',
      prepare: async (f) => {
        await appendClosed(f, 1);
        chmodSync(join(f.keyDir, PRIVATE_KEY_FILE), 0o644);
      },
      code: 'key-permissions',
      message: /readable by other users/,
      fix: /chmod 600/,
    },
    {
      name: 'corrupt private key',
      prepare: async (f) => {
        await appendClosed(f, 1);
        writeFileSync(join(f.keyDir, PRIVATE_KEY_FILE), 'not a key');
      },
      code: 'key-corrupt',
      message: /not a PEM private key/,
      fix: /restore/,
    },
    {
      name: 'corrupt retired public key',
      prepare: async (f) => {
        await appendClosed(f, 1);
        writeFileSync(join(f.keyDir, 'audit-ed25519.0123456789abcdef.pub'), 'garbage');
      },
      code: 'key-corrupt',
      message: /not a PEM public key/,
      fix: /restore/,
    },
    {
      name: 'retired .pub name already holds another key',
      prepare: async (f) => {
        const id = await appendClosed(f, 1);
        const other = generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' }).toString();
        writeFileSync(retiredPublicKeyPath(f.keyDir, id), other, { mode: 0o644 });
      },
      code: 'key-mismatch',
      message: /refusing to replace it/,
      fix: /move it out of the key directory/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      await withStoreFixture(sqlite, async (f) => {
        await c.prepare(f);
        const files = snapshot(f.keyDir);
        const checkpoints = await f.store.audit.listCheckpoints();
        for (const rotate of [() => rotateSigningKey(f.keyDir), () => rotateAuditKey({ store: f.store, keyDir: f.keyDir })]) {
          await assert.rejects(async () => rotate(), (err: unknown) => {
            assert.ok(err instanceof KeyError, String(err));
            assert.equal(err.code, c.code);
            assert.match(err.message, c.message);
            assert.match(err.fix ?? '', c.fix);
            return true;
          });
        }
        assert.deepEqual(snapshot(f.keyDir), files, 'the key directory is unchanged');
        assert.deepEqual(await f.store.audit.listCheckpoints(), checkpoints, 'nothing was signed');
      });
    });
  }
});
