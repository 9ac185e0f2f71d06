/**
 * Lock files that hold their owner's pid: one control plane per home, one
 * writer of the secret store, one image build at a time. A lock whose owner
 * no longer runs is taken over. Two things make that safe when several
 * processes race for the same lock:
 *
 * - a lock is created whole: the pid goes into a private temporary file that
 *   is then hard-linked to the lock's name (which fails if it exists), so no
 *   process ever reads an empty lock and takes it for a stale one;
 * - a stale lock is broken only under a second, short-lived lock
 *   (`<path>.break`), after reading it again: of two processes that saw the
 *   same dead owner, the second finds the first one's fresh lock and leaves
 *   it alone (without that, both would end up holding the lock).
 *
 * @example
 * const got = tryPidLock(join(home, 'cordon.lock'));
 * if (!got.ok) throw new Error(`held by pid ${got.pid}`);
 * try { work(); } finally { got.release(); }
 */
import { linkSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

/** A lock file that does not hold a pid (written by hand, or cut short by a crash) counts as stale after this long. */
const UNREADABLE_STALE_MS = 10_000;
/** A break lock older than this was left by a process that died while breaking; it is removed. */
const BREAK_STALE_MS = 10_000;

export type PidLock =
  | { ok: true; path: string; release: () => void }
  /** Held by a running process (`pid`), or, without a pid, by one that could not be identified yet. */
  | { ok: false; pid?: number };

export interface PidLockOptions {
  /** Called after a stale owner was seen and before the lock is broken (tests use it to let a rival act in between). */
  beforeBreak?: () => void;
}

/** Take the lock at `path` if it is free or its owner is gone; never waits. @throws on a file system error (not EEXIST) */
export function tryPidLock(path: string, opts: PidLockOptions = {}): PidLock {
  for (let attempt = 0; attempt < 3; attempt++) {
    if (createWhole(path)) return { ok: true, path, release: () => releaseOwn(path) };
    const seen = readLock(path);
    if (seen === 'missing') continue; // released between our two steps: try again
    if (typeof seen === 'number' && alive(seen)) return { ok: false, pid: seen };
    if (seen === 'unreadable' && !olderThan(path, UNREADABLE_STALE_MS)) return { ok: false };
    opts.beforeBreak?.();
    breakStale(path, seen);
  }
  const last = readLock(path);
  return typeof last === 'number' ? { ok: false, pid: last } : { ok: false };
}

/** Whether a process with this pid exists (one we may not signal still exists). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Create `path` holding our pid, whole, or return false if it exists. */
function createWhole(path: string): boolean {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, String(process.pid), { mode: 0o600, flag: 'wx' });
  try {
    linkSync(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    try { unlinkSync(tmp); } catch { /* already gone */ }
  }
}

/** Remove the lock `seen` described, under the break lock, only if it still holds the same stale owner. */
function breakStale(path: string, seen: number | 'unreadable'): void {
  const breakPath = `${path}.break`;
  if (!createWhole(breakPath)) {
    // Someone else is breaking it; a break lock that old belongs to a process that died doing so.
    if (olderThan(breakPath, BREAK_STALE_MS)) {
      try { unlinkSync(breakPath); } catch { /* already gone */ }
    }
    return;
  }
  try {
    const now = readLock(path);
    const stillStale = now === seen && (typeof now === 'number' ? !alive(now) : olderThan(path, UNREADABLE_STALE_MS));
    if (stillStale) {
      try { unlinkSync(path); } catch { /* already gone */ }
    }
  } finally {
    try { unlinkSync(breakPath); } catch { /* already gone */ }
  }
}

/** Remove the lock if it is still ours (a lock broken and taken by another process is left alone). */
function releaseOwn(path: string): void {
  if (readLock(path) !== process.pid) return;
  try { unlinkSync(path); } catch { /* already gone */ }
}

function readLock(path: string): number | 'missing' | 'unreadable' {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw err;
  }
  const pid = /^\d{1,10}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  return Number.isSafeInteger(pid) && pid > 0 ? pid : 'unreadable';
}

function olderThan(path: string, ms: number): boolean {
  try {
    return Date.now() - statSync(path).mtimeMs > ms;
  } catch {
    return false;
  }
}
