/**
 * A lock file that serialises writers of the secret store (two `cordon secrets
 * set` at once must not lose an update). It holds the owner's pid; a lock whose
 * owner no longer exists is taken over. Readers need no lock: the store file is
 * replaced atomically.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { sleep } from '../util/index.js';
import { SecretError } from './errors.js';

export interface FileLockOptions {
  /** Give up after waiting this long for another writer. @default 5000 */
  waitMs?: number;
}

const POLL_MS = 25;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Run `fn` while holding the lock file `path`. */
export async function withFileLock<T>(path: string, fn: () => T | Promise<T>, opts: FileLockOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.waitMs ?? 5000);
  for (;;) {
    let fd: number | undefined;
    try {
      fd = openSync(path, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new SecretError('secret-store-unwritable', `cannot create the lock ${path}: ${(err as Error).message}`, {
          fix: 'make $CORDON_HOME writable by this user',
          cause: err,
        });
      }
    }
    if (fd !== undefined) {
      try {
        writeSync(fd, String(process.pid));
      } finally {
        closeSync(fd);
      }
      try {
        return await fn();
      } finally {
        try { unlinkSync(path); } catch { /* already gone */ }
      }
    }
    const pid = readPid(path);
    if (pid !== undefined && !alive(pid)) {
      try { unlinkSync(path); } catch { /* another writer took it over first */ }
      continue;
    }
    if (Date.now() >= deadline) {
      throw new SecretError('secret-store-locked', `the secret store is being changed by another process${pid ? ` (pid ${pid})` : ''}: ${path} is held`, {
        fix: `try again; if no cordon command is running, remove ${path}`,
        details: { path },
      });
    }
    await sleep(POLL_MS);
  }
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
