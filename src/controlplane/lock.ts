/**
 * One control plane per `$CORDON_HOME`: a lock file holding the owner's pid.
 * A lock left by a process that no longer exists is taken over.
 */
import { openSync, writeSync, closeSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { EnvironmentError } from '../errors/index.js';

export interface HomeLock {
  readonly path: string;
  release(): void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Take the lock or throw an EnvironmentError naming the process that holds it. */
export function acquireHomeLock(home: string): HomeLock {
  const path = join(home, 'cordon.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      let released = false;
      return {
        path,
        release() {
          if (released) return;
          released = true;
          try { unlinkSync(path); } catch { /* already gone */ }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) {
        throw new EnvironmentError('env-already-running', `a control plane (pid ${pid}) already runs on ${home}`, {
          fix: `stop it first (kill ${pid}), or use another CORDON_HOME`,
        });
      }
      unlinkSync(path); // stale lock: its owner is gone
    }
  }
  throw new EnvironmentError('env-lock', `cannot take the lock ${path}`, { fix: `remove ${path} if no cordon runs` });
}
