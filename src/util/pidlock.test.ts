/**
 * Pid lock files (`pidlock.ts`): created whole, held against live owners,
 * taken over from dead ones, and never held twice when processes race for a
 * stale lock (one in-process interleaving that the old unlink-and-create
 * takeover got wrong, and real processes racing).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../testkit/index.js';
import { tryPidLock } from './pidlock.js';

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
    assert.equal(readFileSync(path, 'utf8'), String(process.pid));
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

test('processes racing for one stale lock, 60 times in all: never two holders at once', async () => {
  const d = tempDir('cordon-pidlock-');
  try {
    const path = join(d.path, 'x.lock');
    const log = join(d.path, 'log');
    writeFileSync(log, '');
    writeFileSync(path, String(deadPid()));
    const lockModule = fileURLToPath(new URL('./pidlock.ts', import.meta.url));
    // Each child takes the lock 20 times; while holding it, it logs its start and end around a short pause.
    const child = `
      import { appendFileSync } from 'node:fs';
      import { tryPidLock } from ${JSON.stringify(lockModule)};
      const until = Date.now() + 20000;
      for (let n = 0; n < 20 && Date.now() < until;) {
        const got = tryPidLock(${JSON.stringify(path)});
        if (!got.ok) { await new Promise((r) => setTimeout(r, 1)); continue; }
        appendFileSync(${JSON.stringify(log)}, 'start ' + process.pid + '\\n');
        await new Promise((r) => setTimeout(r, 2));
        appendFileSync(${JSON.stringify(log)}, 'end ' + process.pid + '\\n');
        got.release();
        n++;
      }`;
    const children = Array.from({ length: 3 }, () => spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], { stdio: ['ignore', 'ignore', 'pipe'] }));
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
    d.cleanup();
  }
});

