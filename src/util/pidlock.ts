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
 *   it alone (without that, both would end up holding the lock). A break lock
 *   is never removed while its owner lives; one left by a process that died
 *   while breaking is a stale lock like any other, broken under
 *   `<path>.break.break`.
 *
 * A pid alone cannot tell a live owner from a later process that got the same
 * pid (after a reboot, or once pids wrap). Where `/proc` shows them, a lock
 * also names its owner's boot and start time (`<pid> <boot id>/<start ticks>`),
 * and a lock whose pid now belongs to a process that started otherwise is
 * stale. A lock with a pid only (written by hand or by an older cordon) is
 * judged by the pid alone.
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
/** Break locks of break locks (`<path>.break.break`…) go this deep; each level needs a process that died while breaking. */
const MAX_BREAK_DEPTH = 4;

export type PidLock =
  | { ok: true; path: string; release: () => void }
  /** Held by a running process (`pid`); without a pid, by one not known yet (the lock is new and names no owner, or another process is taking it over). */
  | { ok: false; pid?: number };

export interface PidLockOptions {
  /** Called with the lock's path (or a break lock's) after a stale owner was seen and before it is broken (tests use it to let a rival act in between). */
  beforeBreak?: (path: string) => void;
}

/** Take the lock at `path` if it is free or its owner is gone; never waits. @throws on a file system error (not EEXIST) */
export function tryPidLock(path: string, opts: PidLockOptions = {}): PidLock {
  for (let attempt = 0; attempt < 3; attempt++) {
    if (createWhole(path)) return { ok: true, path, release: () => releaseOwn(path) };
    const seen = readLock(path);
    if (seen === 'missing') continue; // released between our two steps: try again
    if (typeof seen === 'object' && !gone(seen)) return { ok: false, pid: seen.pid };
    if (seen === 'unreadable' && !olderThan(path, UNREADABLE_STALE_MS)) return { ok: false };
    opts.beforeBreak?.(path);
    breakStale(path, seen, opts, 0);
  }
  const last = readLock(path);
  // a dead owner's pid is not named: the lock is being broken by another process, not held by that one
  return typeof last === 'object' && !gone(last) ? { ok: false, pid: last.pid } : { ok: false };
}

/** What a lock names: its owner's pid and, where `/proc` tells, that process's boot and start (`<boot id>/<ticks>`). */
interface Owner {
  pid: number;
  start?: string;
}

/** Whether the lock's owner no longer runs: no process has its pid, or the one that has it started otherwise. */
function gone(owner: Owner): boolean {
  if (!alive(owner.pid)) return true;
  if (owner.start === undefined) return false;
  const now = startOf(owner.pid);
  return now !== undefined && now !== owner.start;
}

/** `<boot id>/<start time in clock ticks since boot>` of a process, or undefined where `/proc` does not show it. */
function startOf(pid: number): string | undefined {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ticks = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]; // field 22 (the name before ')' may hold spaces)
    return /^[0-9a-f-]{36}$/.test(boot) && ticks !== undefined && /^\d+$/.test(ticks) ? `${boot}/${ticks}` : undefined;
  } catch {
    return undefined; // not Linux, or /proc hides the process (hidepid): judge by the pid alone
  }
}

let ownCache: Owner | undefined;
/** Ourselves, as our locks name us. */
function own(): Owner {
  if (ownCache === undefined) {
    const start = startOf(process.pid);
    ownCache = start === undefined ? { pid: process.pid } : { pid: process.pid, start };
  }
  return ownCache;
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
  try {
    const me = own();
    writeFileSync(tmp, me.start === undefined ? String(me.pid) : `${me.pid} ${me.start}`, { mode: 0o600, flag: 'wx' }); // a failed write (ENOSPC) leaves the file: removed below
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
function breakStale(path: string, seen: Owner | 'unreadable', opts: PidLockOptions, depth: number): void {
  const breakPath = `${path}.break`;
  if (!createWhole(breakPath)) {
    // Someone else is breaking it. A live owner's break lock is never removed, however old (it may
    // be stopped or swapped out; removing it would let a second process break at the same time and
    // unlink the first one's fresh lock). One whose owner died while breaking is itself a stale lock,
    // broken the same way, under its own break lock: unlinking it by name after a plain check could
    // remove the fresh break lock of a process that came in between.
    const owner = readLock(breakPath);
    if (owner !== 'missing' && stale(breakPath, owner) && depth < MAX_BREAK_DEPTH) {
      opts.beforeBreak?.(breakPath);
      breakStale(breakPath, owner, opts, depth + 1);
    }
    return;
  }
  try {
    const now = readLock(path);
    if (sameOwner(now, seen) && stale(path, seen)) {
      try { unlinkSync(path); } catch { /* already gone */ }
    }
  } finally {
    releaseOwn(breakPath);
  }
}

/** Whether a lock that read as `seen` is stale: its owner is gone, or it names none and is old. */
function stale(path: string, seen: Owner | 'unreadable'): boolean {
  return typeof seen === 'object' ? gone(seen) : olderThan(path, UNREADABLE_STALE_MS);
}

function sameOwner(a: Owner | 'missing' | 'unreadable', b: Owner | 'unreadable'): boolean {
  return typeof a === 'object' && typeof b === 'object' ? a.pid === b.pid && a.start === b.start : a === b;
}

/** Remove the lock if it is still ours (a lock broken and taken by another process is left alone). */
function releaseOwn(path: string): void {
  let owner: ReturnType<typeof readLock>;
  try {
    owner = readLock(path);
  } catch {
    return; // not a lock file we can read (replaced by a directory, permissions changed): not ours to remove
  }
  if (!sameOwner(owner, own())) return;
  try { unlinkSync(path); } catch { /* already gone */ }
}

function readLock(path: string): Owner | 'missing' | 'unreadable' {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw err;
  }
  const m = /^(\d{1,10})(?: ([0-9a-f-]{36}\/\d{1,20}))?$/.exec(text.trim()); // `<pid>` or `<pid> <boot id>/<ticks>`
  const pid = m ? Number(m[1]) : 0;
  if (!m || pid <= 0) return 'unreadable';
  return m[2] === undefined ? { pid } : { pid, start: m[2] };
}

function olderThan(path: string, ms: number): boolean {
  try {
    return Date.now() - statSync(path).mtimeMs > ms;
  } catch {
    return false;
  }
}
