/**
 * One control plane per `$CORDON_HOME`: a lock file holding the owner's pid
 * (`util/pidlock.ts`). A lock left by a process that no longer exists is taken over.
 */
import { join } from 'node:path';
import { EnvironmentError } from '../errors/index.js';
import { tryPidLock } from '../util/pidlock.js';

export interface HomeLock {
  readonly path: string;
  release(): void;
}

/** Take the lock or throw an EnvironmentError naming the process that holds it. */
export function acquireHomeLock(home: string): HomeLock {
  const path = join(home, 'cordon.lock');
  let got;
  try {
    got = tryPidLock(path);
  } catch (err) {
    throw new EnvironmentError('env-lock', `cannot take the lock ${path}: ${(err as Error).message}`, {
      fix: `make ${home} writable by this user, on a file system with hard links`,
      cause: err,
    });
  }
  if (got.ok) return got;
  if (got.pid !== undefined) {
    throw new EnvironmentError('env-already-running', `a control plane (pid ${got.pid}) already runs on ${home}`, {
      fix: `stop it first (kill ${got.pid}), or use another CORDON_HOME`,
    });
  }
  throw new EnvironmentError('env-lock', `cannot take the lock ${path}: another process is taking it over, or it names no owner and is new`, {
    fix: `wait a few seconds and try again; remove ${path} if no cordon runs`,
  });
}
