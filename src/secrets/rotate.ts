/**
 * Master key rotation: re-encrypt the whole secret store under a new random
 * master key, all or nothing, holding the store's lock throughout.
 *
 * Every entry is decrypted with the current key first; any failure (no key,
 * wrong key, damaged store) changes nothing. Then, with K = `keys/master.key`,
 * P = `keys/master.key.new` (the pending key) and S = `secrets.enc`, each file
 * written atomically (temp file, fsync, rename) and its directory fsynced:
 *
 *   1. write P (the new key)     2. write S under P     3. rename P over K
 *
 * The states a crash can leave, and how each is read:
 * - before 1: K, S under K (perhaps a stray `*.tmp` file, which nothing reads).
 * - after 1: K, P, S under K. Readers use K; P is stale. The next rotation
 *   sees that S opens with K and deletes P.
 * - after 2: K, P, S under P. `openSecretStore` finds that S does not open
 *   with K and reads it with P (writers then seal with P, keeping S under P);
 *   the next `rotate-master` renames P over K before rotating again.
 * - after 3: K (new), S under K: done. The old key is gone.
 * At no point is S under a key that is on no disk: P is durable before S is
 * replaced, and S is durable before K is. A store whose key comes from
 * `CORDON_MASTER_KEY` is refused: cordon cannot change the environment of
 * whoever set it (move that key to the key file, unset it, then rotate).
 */
import { randomBytes } from 'node:crypto';
import { renameSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { CordonError, KeyError } from '../errors/index.js';
import { ensurePrivateDir, fsyncPath, writeFileAtomic } from '../util/index.js';
import { SecretError } from './errors.js';
import { masterKeyId, openStoreFile, sealStore } from './format.js';
import { withFileLock } from './lock.js';
import {
  loadMasterKey, masterKeyPath, MASTER_KEY_BYTES, MASTER_KEY_ENV, pendingMasterKeyPath, readMasterKeyFile, type MasterKey,
} from './masterkey.js';
import {
  decodeStoreContent, keyMissingError, openStoreWithKey, readStoreFile, secretStoreLockPath, secretStorePath, type StoreContent,
} from './store.js';

/** The points a rotation passes; a test hook may stop there to leave that on-disk state. */
export type RotationStep = 'pending-key-written' | 'store-written' | 'key-replaced';

export interface RotateMasterKeyOptions {
  /** `$CORDON_HOME`. */
  home: string;
  /** Where `CORDON_MASTER_KEY` is read from. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** How long to wait for another writer of the store. @default 5000 */
  lockWaitMs?: number;
  /** Test hook, awaited after each step; throwing there leaves the files as a crash would. @default none */
  afterStep?: (step: RotationStep) => void | Promise<void>;
}

export interface RotateMasterKeyResult {
  /** The store file. */
  store: string;
  /** The key file now holding the new key. */
  keyPath: string;
  /** Public ids (never the keys): the new key's, and the old one's when there was one. */
  keyId: string;
  previousKeyId?: string;
  /** How many secrets were re-encrypted. */
  secrets: number;
  /** What was done first about a rotation interrupted earlier. */
  interrupted: InterruptedRotation;
}

/** `none`: no pending key; `completed`: the store was under it and it became the key; `discarded`: it was stale. */
export type InterruptedRotation = 'none' | 'completed' | 'discarded';

/**
 * Re-encrypt the store in `opts.home` under a new random master key, written to `keys/master.key`.
 * @throws SecretError `secret-key-from-env`, `secret-store-corrupt`, `secret-store-version`, `secret-store-locked`,
 *   `secret-store-unwritable`; KeyError `key-missing`, `key-wrong`, `key-corrupt`, `key-permissions`
 */
export async function rotateMasterKey(opts: RotateMasterKeyOptions): Promise<RotateMasterKeyResult> {
  const env = opts.env ?? process.env;
  const { home } = opts;
  if (env[MASTER_KEY_ENV] !== undefined) {
    throw new SecretError('secret-key-from-env', `the master key comes from ${MASTER_KEY_ENV}, which cordon cannot replace`, {
      fix: `write that key to ${masterKeyPath(home)} (64 hex digits and a newline, chmod 600), unset ${MASTER_KEY_ENV}, and run \`cordon secrets rotate-master\` again`,
    });
  }
  ensurePrivateDir(home);
  return withFileLock(secretStoreLockPath(home), async () => {
    const interrupted = finishInterruptedRotation(home);
    const storePath = secretStorePath(home);
    const file = readStoreFile(storePath);
    const old = loadMasterKey({ home, env });
    let content: StoreContent = { version: 1, secrets: {} };
    if (file !== undefined) {
      if (old === undefined) throw keyMissingError(home);
      content = openStoreWithKey(home, file, old).content; // after finishInterruptedRotation, only `old` can open it
    }
    const plain = Buffer.from(JSON.stringify(content), 'utf8');
    const next = randomBytes(MASTER_KEY_BYTES);
    const sealed = sealStore(next, plain);
    // the new file must give back exactly what was read before anything is replaced
    if (!openStoreFile(next, sealed, { path: storePath, keyFix: '' }).equals(plain)) {
      throw new SecretError('secret-store-unwritable', 'the re-encrypted store did not read back the same; nothing was changed', { fix: 'report this as a bug' });
    }

    const pendingPath = pendingMasterKeyPath(home);
    const keyPath = masterKeyPath(home);
    step(`write the new key to ${pendingPath}`, home, () => {
      writeFileAtomic(pendingPath, next.toString('hex') + '\n', 0o600);
      fsyncPath(dirname(pendingPath));
      // the store is sealed for this key only once the key reads back from disk
      if (!readMasterKeyFile(pendingPath)?.bytes.equals(next)) throw new Error('the written key does not read back the same');
    });
    await opts.afterStep?.('pending-key-written');
    step(`write the re-encrypted store ${storePath}`, home, () => {
      writeFileAtomic(storePath, sealed, 0o600);
      fsyncPath(home);
    });
    await opts.afterStep?.('store-written');
    step(`rename ${pendingPath} to ${keyPath}`, home, () => {
      renameSync(pendingPath, keyPath);
      fsyncPath(dirname(keyPath));
    });
    await opts.afterStep?.('key-replaced');
    return {
      store: storePath, keyPath, keyId: masterKeyId(next),
      ...(old ? { previousKeyId: masterKeyId(old.bytes) } : {}),
      secrets: Object.keys(content.secrets).length, interrupted,
    };
  }, { waitMs: opts.lockWaitMs ?? 5000 });
}

/**
 * Settle a pending key left by an interrupted rotation; call with the store's lock held.
 * It becomes the key when the store opens with it, and is deleted when the
 * store is absent or opens with the current key; otherwise nothing changes.
 * @throws KeyError `key-wrong` (the store opens with neither key), `key-corrupt`; SecretError as `openStoreFile`
 */
export function finishInterruptedRotation(home: string): InterruptedRotation {
  const pendingPath = pendingMasterKeyPath(home);
  const storePath = secretStorePath(home);
  let pending: MasterKey | undefined;
  let pendingProblem: unknown;
  try {
    pending = readMasterKeyFile(pendingPath);
    if (pending === undefined) return 'none';
  } catch (err) {
    pendingProblem = err; // unreadable: deleted only if the store proves it stale
  }
  const file = readStoreFile(storePath);
  if (pending && file !== undefined && opensWith(pending.bytes, file, storePath)) {
    step(`rename ${pendingPath} to ${masterKeyPath(home)}`, home, () => {
      renameSync(pendingPath, masterKeyPath(home));
      fsyncPath(dirname(pendingPath));
    });
    return 'completed';
  }
  const current = readMasterKeyFile(masterKeyPath(home));
  if (file === undefined || (current && opensWith(current.bytes, file, storePath))) {
    step(`delete the stale ${pendingPath}`, home, () => {
      unlinkSync(pendingPath);
      fsyncPath(dirname(pendingPath));
    });
    return 'discarded';
  }
  if (pendingProblem) throw pendingProblem;
  throw new KeyError('key-wrong', `${storePath} opens neither with ${masterKeyPath(home)} nor with the pending key ${pendingPath} of an interrupted rotation; nothing was changed`, {
    fix: `restore ${masterKeyPath(home)} (or ${storePath}) from backup; keep ${pendingPath} until the store reads again`,
    details: { path: storePath },
  });
}

function opensWith(key: Buffer, file: Buffer, path: string): boolean {
  try {
    decodeStoreContent(openStoreFile(key, file, { path, keyFix: '' }), path);
    return true;
  } catch (err) {
    if (err instanceof CordonError) return false;
    throw err;
  }
}

/** Run one file operation of a rotation; a failure says how to finish. */
function step(what: string, home: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    throw new SecretError('secret-store-unwritable', `key rotation failed to ${what}: ${(err as Error).message}; every secret stays readable`, {
      fix: `make ${home} and ${dirname(masterKeyPath(home))} writable by this user, then run \`cordon secrets rotate-master\` again to finish`,
      cause: err,
    });
  }
}
