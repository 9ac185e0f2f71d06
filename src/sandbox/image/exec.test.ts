import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EnvironmentError } from '../../errors/index.js';
import { requireTools, runTool, whichTool } from './exec.js';

test('requireTools names every missing tool and the packages that provide them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-exec-test-'));
  try {
    writeFileSync(join(dir, 'xz'), '#!/bin/sh\n');
    chmodSync(join(dir, 'xz'), 0o755);
    assert.throws(() => requireTools(['xz', 'debootstrap', 'mkfs.ext4', 'qemu-img'], 'cordon image build', dir), (err: unknown) => {
      assert.ok(err instanceof EnvironmentError);
      assert.equal(err.code, 'env-missing-tool');
      assert.equal(err.message, 'cordon image build needs debootstrap, mkfs.ext4, qemu-img, which are not installed');
      assert.equal(err.fix, 'apt-get install -y debootstrap e2fsprogs qemu-utils');
      return true;
    });
    assert.deepEqual(requireTools(['xz'], 'x', dir), { xz: join(dir, 'xz') });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('whichTool ignores files that are not executable', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-exec-test-'));
  try {
    writeFileSync(join(dir, 'zstd'), '');
    assert.equal(whichTool('zstd', dir), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('runTool returns stdout and reports a failure with the stderr tail', async () => {
  const sh = whichTool('sh');
  assert.ok(sh, 'sh is needed for this test');
  assert.equal((await runTool(sh, ['-c', 'cat'], { input: Buffer.from('in') })).stdout, 'in');
  await assert.rejects(runTool(sh, ['-c', 'echo boom >&2; exit 3']), (err: unknown) => {
    assert.ok(err instanceof EnvironmentError);
    assert.equal(err.code, 'env-tool-failed');
    assert.match(err.message, /failed \(exit 3\): boom/);
    return true;
  });
});

test('runTool passes lines to onLine as they arrive', async () => {
  const lines: string[] = [];
  await runTool(whichTool('sh')!, ['-c', 'echo I: one; echo I: two >&2; printf last'], { onLine: (l) => lines.push(l) });
  assert.deepEqual(lines.sort(), ['I: one', 'I: two', 'last']);
});
