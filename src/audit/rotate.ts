/**
 * Rotation of the Ed25519 key that signs audit checkpoints.
 *
 * `rotateAuditKey` seals the head with the old key, swaps the key files
 * (`rotateSigningKey`), then records `audit.key-rotated` ({ oldKeyId,
 * newKeyId }) in the chain, sealed by the new key. The old private key is
 * gone afterwards; its public half stays as `audit-ed25519.<oldKeyId>.pub`,
 * so every checkpoint it signed still verifies.
 *
 * The files change in three steps, each an fsynced rename (temp file first)
 * followed by an fsync of the directory:
 *   1. `audit-ed25519.<oldKeyId>.pub` ← old public key (never replaces a file
 *      holding another key; an existing one holding this key is kept);
 *   2. `audit-ed25519.key` ← new private key (0600);
 *   3. `audit-ed25519.pub` ← new public key (0644).
 * A crash leaves one of these key directories (stray `*.tmp` files aside,
 * which no loader reads):
 *   - before 1, or after 1: old .key and .pub, maybe the retired .pub too.
 *     Everything loads the old key; a new rotation starts over and keeps the
 *     retired .pub already there.
 *   - after 2: new .key, old key in both .pub files. `loadPublicKeys` returns
 *     the old key (the only one that signed anything); `loadOrCreateSigningKey`
 *     loads the new key, files the stale .pub under its keyId (same content)
 *     and writes the new .pub: the key files are rotated. Only the
 *     `audit.key-rotated` event is then missing from the chain (so verification
 *     keeps trusting the old key): `AuditLog.open` warns
 *     (`CORDON_AUDIT_ROTATION_UNFINISHED`), and the next `rotateAuditKey`
 *     records it first, sealed by the key in use.
 *   - after 3: rotated.
 * In every state each checkpoint already stored verifies, because the old
 * public key is on disk from step 1 on, and nothing signs with the new key
 * before step 2 is durable.
 *
 * Callers must have the key directory to themselves: the CLI holds the home
 * lock, so `cordon up` cannot run (and sign) meanwhile.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, linkSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuditError, KeyError } from '../errors/index.js';
import type { Store } from '../store/index.js';
import { fsyncPath, writeFileAtomic } from '../util/index.js';
import {
  KEY_ROTATED_EVENT,
  PRIVATE_KEY_FILE,
  PUBLIC_KEY_FILE,
  hasRetiredPublicKey,
  keyIdOf,
  loadOrCreateSigningKey,
  loadPublicKeys,
  parsePublicKeyPem,
  retiredPublicKeyPath,
  type AuditSigningKey,
} from './keys.js';
import { AuditLog } from './log.js';

export { KEY_ROTATED_EVENT };

export interface KeyRotation {
  oldKeyId: string;
  newKeyId: string;
  /** Where the old public key is kept. */
  retiredPublicKeyPath: string;
  /** The new public key file. */
  publicKeyPath: string;
}

export interface AuditKeyRotation extends KeyRotation {
  /** Last event sealed by the old key (0 for an empty log). */
  sealedSeq: number;
  /** seq of the `audit.key-rotated` event. */
  eventSeq: number;
}

export interface RotateAuditKeyOptions {
  store: Store;
  keyDir: string;
  /** Who rotates: `operator:<id>` or `system`. @default 'system' */
  actor?: string;
  /** Clock for the event and checkpoints. @default () => new Date() */
  now?: () => Date;
}

/**
 * The current signing key and every public key, all checked. Creates nothing.
 * @throws KeyError `key-missing` (no key to rotate), `key-corrupt`, `key-permissions`, `key-mismatch`
 */
export function loadKeyToRotate(keyDir: string): { key: AuditSigningKey; publicKeyIds: Set<string> } {
  const path = join(keyDir, PRIVATE_KEY_FILE);
  try {
    statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw notUsable(path, (err as Error).message);
    throw new KeyError('key-missing', `there is no audit signing key to rotate: ${path} does not exist`, {
      fix: `check --home / CORDON_HOME; \`cordon up\` creates the key on its first start (restore ${path} from backup if it was lost)`,
      details: { path },
    });
  }
  const key = loadOrCreateSigningKey(keyDir, { create: false });
  const publicKeyIds = new Set(loadPublicKeys(keyDir).keys());
  return { key, publicKeyIds };
}

/**
 * Replace the signing key in `keyDir` by a new one, keeping the old public
 * key as `audit-ed25519.<oldKeyId>.pub`. Seal the log with the old key first
 * (see {@link rotateAuditKey}, which does both).
 * @throws KeyError as {@link loadKeyToRotate}; `key-mismatch` when the retired
 *   .pub name is taken by another key; `key-unwritable` when a file cannot be written
 */
export function rotateSigningKey(keyDir: string): KeyRotation {
  const { key: old, publicKeyIds } = loadKeyToRotate(keyDir);
  const retiredPath = keepRetiredPublicKey(keyDir, old.keyId, old.publicKeyPem);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const newKeyId = keyIdOf(publicKey);
  if (publicKeyIds.has(newKeyId)) {
    throw new KeyError('key-rotation-failed', `the new key ${newKeyId} has the keyId of a key already in ${keyDir}`, {
      fix: 'run the rotation again',
    });
  }
  const publicKeyPath = join(keyDir, PUBLIC_KEY_FILE);
  writeKeyFile(old.path, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), 0o600, keyDir);
  writeKeyFile(publicKeyPath, publicKey.export({ format: 'pem', type: 'spki' }).toString(), 0o644, keyDir);
  const now = loadOrCreateSigningKey(keyDir, { create: false });
  if (now.keyId !== newKeyId || !loadPublicKeys(keyDir).has(old.keyId)) {
    throw new KeyError('key-rotation-failed', `the key files in ${keyDir} do not read back as rotated (found key ${now.keyId})`, {
      fix: 'check that nothing else writes the key directory, then run the rotation again',
    });
  }
  return { oldKeyId: old.keyId, newKeyId, retiredPublicKeyPath: retiredPath, publicKeyPath };
}

/**
 * Rotate the audit signing key of a log: seal every event with the old key,
 * rotate the key files, and record `audit.key-rotated` sealed by the new key.
 * Nothing is rotated when the log cannot be opened (damaged chain, bad key)
 * or sealed. No AuditLog may be open on `store` meanwhile.
 * @example
 * const r = await rotateAuditKey({ store, keyDir: join(cordonHome(), 'keys'), actor: 'operator:local:alice' });
 * console.log(`${r.oldKeyId} → ${r.newKeyId}`);
 */
export async function rotateAuditKey(o: RotateAuditKeyOptions): Promise<AuditKeyRotation> {
  const { key: current } = loadKeyToRotate(o.keyDir);
  const clock = o.now ? { now: o.now } : {};
  const lastBefore = await o.store.audit.lastCheckpoint();
  const unfinished = lastBefore !== undefined && lastBefore.keyId !== current.keyId && hasRetiredPublicKey(o.keyDir, lastBefore.keyId);
  // Finishing an earlier rotation is what this run is for: its key change is not reported as unrecorded.
  const before = await AuditLog.open({ store: o.store, keyDir: o.keyDir, recordingRotation: unfinished, ...clock });
  try {
    if (unfinished) {
      // An earlier rotation replaced the key files but did not record it (a crash, a failed write): record that
      // retirement first, sealed below by the key in use, or the retired key would stay trusted for ever.
      await before.append({
        type: KEY_ROTATED_EVENT,
        actor: o.actor ?? 'system',
        data: { newKeyId: current.keyId, oldKeyId: lastBefore.keyId },
      });
    }
    await before.checkpoint();
  } finally {
    await before.close();
  }
  const head = await o.store.audit.head();
  const sealed = await o.store.audit.lastCheckpoint();
  if (head !== undefined && (sealed === undefined || sealed.seq !== head.seq || sealed.keyId !== current.keyId)) {
    throw new AuditError('audit-checkpoint-failed', `the events up to seq ${head.seq} are not sealed by key ${current.keyId}; the key was not rotated`, {
      fix: 'check the store (disk space, permissions, another writer) and run the rotation again',
    });
  }
  const rotation = rotateSigningKey(o.keyDir);
  let eventSeq: number;
  try {
    eventSeq = await recordRotation(o, rotation);
  } catch (cause) {
    throw new AuditError('audit-write-failed', `the audit key was rotated (${rotation.oldKeyId} -> ${rotation.newKeyId}) but the rotation could not be recorded in the log: ${(cause as Error)?.message ?? String(cause)}`, {
      fix: 'the key files are complete and every checkpoint verifies; check the store, then run `cordon audit rotate-key` again: it records the missing audit.key-rotated event first (and rotates once more)',
      cause,
    });
  }
  return { ...rotation, sealedSeq: head?.seq ?? 0, eventSeq };
}

/** Append `audit.key-rotated` with the new key and seal it; returns its seq. */
async function recordRotation(o: RotateAuditKeyOptions, rotation: KeyRotation): Promise<number> {
  const log = await AuditLog.open({ store: o.store, keyDir: o.keyDir, recordingRotation: true, ...(o.now ? { now: o.now } : {}) });
  try {
    const event = await log.append({
      type: KEY_ROTATED_EVENT,
      actor: o.actor ?? 'system',
      data: { newKeyId: rotation.newKeyId, oldKeyId: rotation.oldKeyId },
    });
    return event.seq;
  } finally {
    await log.close();
  }
}

/** Write the old public key under its keyId without ever replacing another file; returns its path. */
function keepRetiredPublicKey(keyDir: string, keyId: string, pem: string): string {
  const path = retiredPublicKeyPath(keyDir, keyId);
  if (existingHolds(path, keyId)) return path;
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, pem, { mode: 0o644, flag: 'wx' });
    chmodSync(tmp, 0o644);
    fsyncPath(tmp);
    try {
      linkSync(tmp, path); // fails if the name was taken meanwhile: never replaces a file
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !existingHolds(path, keyId)) throw err;
    }
    fsyncPath(keyDir);
  } catch (err) {
    if (err instanceof KeyError) throw err;
    throw unwritable(path, err);
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      /* never created, or already gone */
    }
  }
  return path;
}

/** True when `path` holds the public key `keyId`, false when it does not exist; refuses anything else. */
function existingHolds(path: string, keyId: string): boolean {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw notUsable(path, (err as Error).message);
  }
  let heldId: string | undefined;
  try {
    heldId = keyIdOf(parsePublicKeyPem(pem, path));
  } catch {
    heldId = undefined;
  }
  if (heldId === keyId) return true;
  throw new KeyError('key-mismatch', `${path} should keep the retired public key ${keyId} but holds ${heldId ? `key ${heldId}` : 'no valid public key'}; refusing to replace it`, {
    fix: `find out where ${path} came from and move it out of the key directory, then run the rotation again`,
    details: { path, keyId },
  });
}

function writeKeyFile(path: string, pem: string, mode: number, keyDir: string): void {
  try {
    writeFileAtomic(path, pem, mode);
    fsyncPath(keyDir);
  } catch (err) {
    throw unwritable(path, err);
  }
}

function unwritable(path: string, err: unknown): KeyError {
  return new KeyError('key-unwritable', `cannot write ${path} while rotating the audit key: ${(err as Error).message}`, {
    fix: 'make the key directory writable by this user and run the rotation again (the key files are left in a state that loads and verifies)',
    cause: err,
    details: { path },
  });
}

function notUsable(path: string, why: string): KeyError {
  return new KeyError('key-corrupt', `cannot read ${path}: ${why}`, {
    fix: `make ${path} readable by this user (restore it from backup if it is damaged)`,
    details: { path },
  });
}
