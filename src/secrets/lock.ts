/**
 * A lock file that serialises writers of the secret store (two `cordon secrets
 * set` at once must not lose an update). It holds the owner's pid; a lock
 * whose owner no longer exists is taken over (`util/pidlock.ts`). Readers need
 * no lock: the store file is replaced atomically.
 */
import { sleep } from '../util/index.js';
import { tryPidLock, type PidLock } from '../util/pidlock.js';
import { SecretError } from './errors.js';

export interface FileLockOptions {
  /** Give up after waiting this long for another writer. @default 5000 */
  waitMs?: number;
}

const POLL_MS = 25;

/** Run `fn` while holding the lock file `path`. */
export async function withFileLock<T>(path: string, fn: () => T | Promise<T>, opts: FileLockOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.waitMs ?? 5000);
  for (;;) {
    let got: PidLock;
    try {
      got = tryPidLock(path);
    } catch (err) {
      throw new SecretError('secret-store-unwritable', `cannot create the lock ${path}: ${(err as Error).message}`, {
        fix: 'make $CORDON_HOME writable by this user, on a file system with hard links (lock files are hard-linked into place)',
        cause: err,
      });
    }
    if (got.ok) {
      try {
        return await fn();
      } finally {
        got.release();
      }
    }
    if (Date.now() >= deadline) {
      throw new SecretError('secret-store-locked', `the secret store is being changed by another process${got.pid ? ` (pid ${got.pid})` : ''}: ${path} is held`, {
        fix: `try again; if no cordon command is running, remove ${path}`,
        details: { path },
      });
    }
    await sleep(POLL_MS);
  }
}
