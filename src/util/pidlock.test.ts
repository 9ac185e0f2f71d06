/**
 * Pid lock files (`pidlock.ts`): created whole, held against live owners,
 * taken over from dead ones (and from a pid a later process got), and never
 * held twice when processes race for a stale lock (in-process interleavings
 * that the old unlink-and-create takeover and an age-only break lock got
 * wrong, and real processes racing).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, readFileSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EnvironmentError } from '../errors/index.js';
import { acquireHomeLock } from '../controlplane/lock.js';
import { tempDir } from '../testkit/index.js';
import { tryPidLock } from './pidlock.js';

/** This module's lock code as children import it: the .ts source under tsx, the built .js under `npm test`. */
const LOCK_MODULE = fileURLToPath(new URL(`./pidlock${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

/** A pid that no longer runs: a child that has already exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  assert.ok(r.pid && r.pid > 0);
  return r.pid;
}

test('a lock holds our pid; a second try sees it held; release removes it, twice is harmless', () => {
  const d = tempDir('cordon-pidlock-');
  try {
    const path = join(d.path, 'x.lock');
    const got = tryPidLock(path);
    assert.equal(got.ok, true);
    assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid}( [0-9a-f-]{36}/\\d+)?$`), 'our pid, and our boot and start where /proc tells');
    assert.deepEqual(tryPidLock(path), { ok: false, pid: process.pid });
    if (got.ok) {
      got.release();
      got.release();
    }
    assert.equal(existsSync(path), false);
    assert.deepEqual(readdirSync(d.path), [], 'no temporary file is left behind');
  } finally {
    d.cleanup();
  }
});

test('a dead owner\'s lock is taken over; a live owner\'s is not', async () => {
  const d = tempDir('cordon-pidlock-');
  const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  try {
    const path = join(d.path, 'x.lock');
    writeFileSync(path, String(deadPid()));
    const got = tryPidLock(path);
    assert.equal(got.ok, true, 'the stale lock was taken over');
    if (got.ok) got.release();
    writeFileSync(path, String(sleeper.pid));
    assert.deepEqual(tryPidLock(path), { ok: false, pid: sleeper.pid });
    assert.equal(readFileSync(path, 'utf8'), String(sleeper.pid), 'a live owner\'s lock is untouched');
  } finally {
    sleeper.kill();
    await once(sleeper, 'exit');
    d.cleanup();
  }
});

// A lock left by a dead owner whose pid a later process got (after a reboot, or once pids wrap) is
// stale: without the start recorded, `cordon up` would refuse to start and say to kill that process.
const reused: { name: string; text: (live: number, boot: string) => string; taken: boolean }[] = [
  { name: 'our own pid, written in an earlier boot', text: () => `${process.pid} 00000000-0000-4000-8000-000000000000/5`, taken: true },
  { name: 'a live process\'s pid, with another start time in this boot', text: (live, boot) => `${live} ${boot}/1`, taken: true },
  { name: 'a live process\'s pid alone (by hand, or an older cordon)', text: (live) => String(live), taken: false },
];
for (const c of reused) {
  test(`a lock naming ${c.name}: ${c.taken ? 'stale' : 'held'}`, { skip: !existsSync('/proc/sys/kernel/random/boot_id') && 'needs /proc (Linux): elsewhere a lock names the pid alone' }, async () => {
    const d = tempDir('cordon-pidlock-');
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
    try {
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      writeFileSync(join(d.path, 'cordon.lock'), c.text(sleeper.pid!, boot));
      if (c.taken) {
        acquireHomeLock(d.path).release();
        assert.equal(existsSync(join(d.path, 'cordon.lock')), false, 'taken over and released');
      } else {
        assert.throws(() => acquireHomeLock(d.path), (err: unknown) => err instanceof EnvironmentError && err.code === 'env-already-running' && err.message.includes(`pid ${sleeper.pid}`));
      }
    } finally {
      sleeper.kill();
      await once(sleeper, 'exit');
      d.cleanup();
    }
  });
}

test('a lock without a pid counts as held while new and as stale once it is old', () => {
  const d = tempDir('cordon-pidlock-');
  try {
    const path = join(d.path, 'x.lock');
    writeFileSync(path, '');
    assert.deepEqual(tryPidLock(path), { ok: false }, 'an empty new lock may be one being written');
    const old = new Date(Date.now() - 60_000);
    utimesSync(path, old, old);
    const got = tryPidLock(path);
    assert.equal(got.ok, true, 'an old lock with no pid is stale');
    if (got.ok) got.release();
  } finally {
    d.cleanup();
  }
});

test('two takers of one stale lock: the one that comes second leaves the first one\'s fresh lock alone', async () => {
  const d = tempDir('cordon-pidlock-');
  const rival = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  try {
    const path = join(d.path, 'x.lock');
    writeFileSync(path, String(deadPid()));
    // Between our reading the dead pid and our breaking the lock, a rival breaks it and takes it.
    const got = tryPidLock(path, {
      beforeBreak: () => {
        unlinkSync(path);
        writeFileSync(path, String(rival.pid));
      },
    });
    assert.deepEqual(got, { ok: false, pid: rival.pid }, 'we do not hold it');
    assert.equal(readFileSync(path, 'utf8'), String(rival.pid), 'the rival still holds its lock');
  } finally {
    rival.kill();
    await once(rival, 'exit');
    d.cleanup();
  }
});

test('a lock another process is breaking: not taken, and its dead owner is not named as the holder', () => {
  const d = tempDir('cordon-pidlock-');
  try {
    const dead = deadPid();
    writeFileSync(join(d.path, 'cordon.lock'), String(dead));
    writeFileSync(join(d.path, 'cordon.lock.break'), String(process.pid)); // a live process is breaking it right now
    assert.deepEqual(tryPidLock(join(d.path, 'cordon.lock')), { ok: false });
    assert.throws(() => acquireHomeLock(d.path), (err: unknown) => {
      assert.ok(err instanceof EnvironmentError);
      assert.equal(err.code, 'env-lock', 'not env-already-running: no control plane runs');
      assert.doesNotMatch(`${err.message} ${err.fix}`, new RegExp(`\\b${dead}\\b`), 'the operator is not told to kill a dead pid');
      return true;
    });
    assert.equal(readFileSync(join(d.path, 'cordon.lock.break'), 'utf8'), String(process.pid), 'the live breaker keeps its break lock');
  } finally {
    d.cleanup();
  }
});

// A break lock is removed only when its owner is gone: removing a live (stopped, swapped-out) owner's
// break lock lets two processes break at once, and the slow one then unlinks the other's fresh lock.
const breakLocks: { name: string; owner: () => string; ageMs: number; removed: boolean }[] = [
  { name: 'a live owner\'s, however old, is left alone', owner: () => String(process.pid), ageMs: 60_000, removed: false },
  { name: 'a dead owner\'s is removed at once', owner: () => String(deadPid()), ageMs: 0, removed: true },
  { name: 'one naming no owner is left alone while new', owner: () => '', ageMs: 0, removed: false },
  { name: 'one naming no owner is removed once old (a crash)', owner: () => '', ageMs: 60_000, removed: true },
];
for (const c of breakLocks) {
  test(`a break lock on a stale lock: ${c.name}`, () => {
    const d = tempDir('cordon-pidlock-');
    try {
      const path = join(d.path, 'x.lock');
      const breakPath = `${path}.break`;
      writeFileSync(path, String(deadPid()));
      writeFileSync(breakPath, c.owner());
      const then = new Date(Date.now() - c.ageMs);
      utimesSync(breakPath, then, then);
      const got = tryPidLock(path);
      assert.equal(got.ok, c.removed, c.removed ? 'the stale lock is taken once the break lock is gone' : 'the stale lock is not broken');
      assert.equal(existsSync(breakPath), !c.removed);
      if (got.ok) got.release();
      if (c.removed) assert.deepEqual(readdirSync(d.path), [], 'no lock, break lock or temporary file is left behind');
    } finally {
      d.cleanup();
    }
  });
}

test('a break lock left by a dead breaker is broken only under its own break lock', () => {
  const d = tempDir('cordon-pidlock-');
  try {
    const path = join(d.path, 'x.lock');
    writeFileSync(path, String(deadPid()));
    const dead = String(deadPid());
    writeFileSync(`${path}.break`, dead);
    writeFileSync(`${path}.break.break`, String(process.pid)); // a live process is breaking the dead breaker's break lock
    assert.deepEqual(tryPidLock(path), { ok: false });
    assert.equal(readFileSync(`${path}.break`, 'utf8'), dead, 'left to the process that holds its break lock');
  } finally {
    d.cleanup();
  }
});

test('two removers of a dead breaker\'s break lock: the second leaves alone the fresh break lock of a process that came in between', async () => {
  const d = tempDir('cordon-pidlock-');
  const rival = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
  try {
    const path = join(d.path, 'x.lock');
    const breakPath = `${path}.break`;
    writeFileSync(path, String(deadPid()));
    writeFileSync(breakPath, String(deadPid()));
    // Between our seeing the dead breaker and our removing its break lock, another process removes it
    // and a rival takes a fresh break lock of its own.
    const got = tryPidLock(path, {
      beforeBreak: (p) => {
        if (p !== breakPath) return;
        unlinkSync(breakPath);
        writeFileSync(breakPath, String(rival.pid));
      },
    });
    assert.deepEqual(got, { ok: false }, 'we do not break the lock while the rival does');
    assert.equal(readFileSync(breakPath, 'utf8'), String(rival.pid), 'the rival keeps its break lock');
  } finally {
    rival.kill();
    await once(rival, 'exit');
    d.cleanup();
  }
});

test('a failed write of the temporary file (file size limit, like ENOSPC) leaves no file behind', { skip: process.platform !== 'linux' && 'needs sh with ulimit -f and SIGXFSZ ignored (Linux)', timeout: 60_000 }, () => {
  const d = tempDir('cordon-pidlock-');
  try {
    const path = join(d.path, 'x.lock');
    const lockModule = LOCK_MODULE;
    const child = `
      import { tryPidLock } from ${JSON.stringify(lockModule)};
      try { tryPidLock(${JSON.stringify(path)}); console.log('taken'); } catch (err) { console.log(err.code); }`;
    // With SIGXFSZ ignored and a file size limit of 0, creating a file works and writing to it fails (EFBIG).
    const r = spawnSync('sh', ['-c', 'trap "" XFSZ; ulimit -f 0; exec "$0" --import tsx --input-type=module -e "$1"', process.execPath, child], {
      encoding: 'utf8', timeout: 30_000,
    });
    assert.equal(r.stdout.trim(), 'EFBIG', r.stderr);
    assert.deepEqual(readdirSync(d.path), [], 'neither a lock nor a temporary file is left');
  } finally {
    d.cleanup();
  }
});

test('a release does not throw when the lock\'s name no longer holds a readable file', () => {
  const d = tempDir('cordon-pidlock-');
  try {
    const path = join(d.path, 'x.lock');
    const got = tryPidLock(path);
    assert.equal(got.ok, true);
    unlinkSync(path);
    mkdirSync(path);
    if (got.ok) assert.doesNotThrow(() => got.release(), 'a release in a finally must not hide the error that ended the work');
    assert.equal(existsSync(path), true, 'what is there now is left alone');
  } finally {
    d.cleanup();
  }
});

test('a release leaves alone a lock that is no longer ours', () => {
  const d = tempDir('cordon-pidlock-');
  try {
    const path = join(d.path, 'x.lock');
    const got = tryPidLock(path);
    assert.equal(got.ok, true);
    writeFileSync(path, '1');
    if (got.ok) got.release();
    assert.equal(readFileSync(path, 'utf8'), '1');
  } finally {
    d.cleanup();
  }
});

test('processes racing for one stale lock, 60 times in all: never two holders at once', { timeout: 90_000 }, async () => {
  const d = tempDir('cordon-pidlock-');
  let children: ReturnType<typeof spawn>[] = [];
  try {
    const path = join(d.path, 'x.lock');
    const log = join(d.path, 'log');
    writeFileSync(log, '');
    writeFileSync(path, String(deadPid()));
    const lockModule = LOCK_MODULE;
    const dead = deadPid();
    // Each child takes the lock 20 times; while holding it, it logs its start and end around a short pause.
    // Every other time it then leaves the lock as a dead owner would (naming a dead pid), so the others race
    // to break a stale lock 30 times, not only at the start.
    const child = `
      import { appendFileSync, renameSync, writeFileSync } from 'node:fs';
      import { tryPidLock } from ${JSON.stringify(lockModule)};
      const until = Date.now() + 20000;
      for (let n = 0; n < 20 && Date.now() < until;) {
        const got = tryPidLock(${JSON.stringify(path)});
        if (!got.ok) { await new Promise((r) => setTimeout(r, 1)); continue; }
        appendFileSync(${JSON.stringify(log)}, 'start ' + process.pid + '\\n');
        await new Promise((r) => setTimeout(r, 2));
        appendFileSync(${JSON.stringify(log)}, 'end ' + process.pid + '\\n');
        if (n % 2 === 0) {
          writeFileSync(${JSON.stringify(path)} + '.dying', '${dead}');
          renameSync(${JSON.stringify(path)} + '.dying', ${JSON.stringify(path)});
        } else {
          got.release();
        }
        n++;
      }`;
    children = Array.from({ length: 3 }, () => spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], { stdio: ['ignore', 'ignore', 'pipe'] }));
    const codes = await Promise.all(children.map(async (c) => {
      let err = '';
      c.stderr!.on('data', (b: Buffer) => (err += b.toString()));
      const [code] = (await once(c, 'exit')) as [number];
      return { code, err };
    }));
    assert.deepEqual(codes.map((c) => c.code), [0, 0, 0], codes.map((c) => c.err).join('\n'));
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    assert.equal(lines.length, 120, 'every child held the lock 20 times');
    for (let i = 0; i < lines.length; i += 2) {
      const [start, end] = [lines[i]!.split(' '), lines[i + 1]!.split(' ')];
      assert.deepEqual([start[0], end[0], end[1]], ['start', 'end', start[1]], `line ${i + 1}: one holder at a time`);
    }
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); // the test timed out or threw
    d.cleanup();
  }
});

