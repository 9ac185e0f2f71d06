import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readCpio, writeCpio, type CpioEntry } from './cpio.js';
import { whichTool } from './exec.js';

const entries: CpioEntry[] = [
  { type: 'dir', path: 'bin' },
  { type: 'file', path: 'bin/busybox', data: Buffer.from('x'.repeat(13)), mode: 0o755 },
  { type: 'symlink', path: 'bin/sh', target: 'busybox' },
  { type: 'dir', path: 'dev' },
  { type: 'char', path: 'dev/console', major: 5, minor: 1 },
  { type: 'file', path: '/init', data: Buffer.from('#!/bin/sh\n') },
];

test('writeCpio round-trips through readCpio with types, modes and device numbers', () => {
  const got = readCpio(writeCpio(entries));
  assert.deepEqual(
    got.map((e) => [e.path, e.mode.toString(8), e.size, e.rdevMajor, e.rdevMinor]),
    [
      ['bin', '40755', 0, 0, 0],
      ['bin/busybox', '100755', 13, 0, 0],
      ['bin/sh', '120777', 7, 0, 0],
      ['dev', '40755', 0, 0, 0],
      ['dev/console', '20600', 0, 5, 1],
      ['init', '100644', 10, 0, 0],
    ],
  );
  assert.equal(got[2]?.data.toString(), 'busybox');
  assert.equal(got[1]?.data.toString(), 'x'.repeat(13));
});

test('every header starts 4-byte aligned and the archive ends with the trailer', () => {
  const buf = writeCpio(entries);
  let p = 0;
  let count = 0;
  while ((p = buf.indexOf('070701', p, 'ascii')) >= 0) {
    assert.equal(p % 4, 0, `header at ${p} is not aligned`);
    p += 6;
    count++;
  }
  assert.equal(count, entries.length + 1);
  assert.ok(buf.includes(Buffer.from('TRAILER!!!\0')));
});

test('the same entries always give the same bytes', () => {
  assert.deepEqual(writeCpio(entries), writeCpio(entries));
  assert.notDeepEqual(writeCpio(entries), writeCpio(entries, { mtimeSec: 1 }));
});

const invalid: [string, CpioEntry[], RegExp][] = [
  ['a path with ..', [{ type: 'dir', path: 'a/../../etc' }], /invalid path/],
  ['an empty path', [{ type: 'dir', path: '/' }], /invalid path/],
  ['a duplicate path', [{ type: 'dir', path: 'a' }, { type: 'dir', path: '/a' }], /duplicate path a/],
];
for (const [name, list, re] of invalid) {
  test(`writeCpio rejects ${name}`, () => assert.throws(() => writeCpio(list), re));
}

const cpioTool = whichTool('cpio');
test('GNU cpio lists our archive the same way', { skip: cpioTool ? false : 'cpio is not installed' }, () => {
  const r = spawnSync(cpioTool!, ['-t', '-v', '--quiet'], { input: writeCpio(entries) });
  assert.equal(r.status, 0, r.stderr.toString());
  const lines = r.stdout.toString().trim().split('\n');
  assert.equal(lines.length, entries.length);
  assert.match(lines[1] ?? '', /^-rwxr-xr-x .* 13 .* bin\/busybox$/);
  assert.match(lines[2] ?? '', /^lrwxrwxrwx .* bin\/sh -> busybox$/);
  assert.match(lines[4] ?? '', /^crw------- .* 5,\s+1 .* dev\/console$/);
});
