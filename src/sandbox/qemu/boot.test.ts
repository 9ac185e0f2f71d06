/**
 * Integration test: build (or reuse) the real image, boot it under TCG on a
 * fresh overlay, and check that nothing is left behind afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createOverlay, FAILED_MARKER, READY_MARKER, removeOverlay } from '../image/index.js';
import { ensureTestImage, testHome } from '../image/testing.js';
import { CONTROL_PORT_ID } from './args.js';
import { probeAccel } from './probe.js';
import { launchVm, type Vm } from './vm.js';

const needRoot = process.getuid?.() === 0 ? false : 'building the image needs root (debootstrap)';

function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

async function bootAndCheck(kernelArgs: string[], whenUp: (vm: Vm) => Promise<void>) {
  const image = await ensureTestImage();
  const probe = await probeAccel({ kernelPath: image.kernelPath, home: testHome() });
  const runDir = mkdtempSync(join(tmpdir(), 'cordon-boot-test-'));
  const { path: diskPath, createMs } = await createOverlay(image.rootfsPath, join(runDir, 'disk.qcow2'));
  assert.ok(createMs < 2000, `overlay took ${createMs} ms`);
  const vm = launchVm({
    runDir,
    machine: {
      accel: 'tcg', // the test is about the TCG path; KVM sandboxes use the same arguments otherwise
      kernelPath: image.kernelPath,
      initrdPath: image.initrdPath,
      diskPath,
      memoryMiB: 256,
      tscKhz: probe.tcg.tscKhz ?? undefined,
      tscReliable: probe.tcg.tscReliable,
      kernelArgs,
    },
  });
  try {
    await whenUp(vm);
  } finally {
    const exit = await vm.stop();
    removeOverlay(diskPath);
    assert.ok(exit.code !== null || exit.signal !== null);
    assert.ok(gone(vm.pid), `QEMU ${vm.pid} is still running`);
    assert.deepEqual(readdirSync(runDir), [], 'no socket or disk left in the run directory');
    rmSync(runDir, { recursive: true });
  }
}

test('the guest boots under TCG to the ready marker from its own root disk', { skip: needRoot, timeout: 20 * 60_000 }, async () => {
  await bootAndCheck(['cordon.init=/sbin/cordon-ready'], async (vm) => {
    const { line } = await vm.waitForConsole(new RegExp(`${READY_MARKER}|${FAILED_MARKER}`), 120_000);
    assert.match(line, new RegExp(`^${READY_MARKER} \\d+\\.\\d+\\.\\d+-\\d+-amd64$`));
    const exit = await Promise.race([vm.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 30_000))]);
    assert.deepEqual(exit, { code: 0, signal: null }, 'the stand-in init powers the VM off and QEMU exits cleanly');
  });
});

test('the guest agent opens its control port', { skip: needRoot, timeout: 20 * 60_000 }, async (t) => {
  const image = await ensureTestImage();
  if (!image.agent.init) {
    t.skip('the image has no guest agent (guest/build/cordon-init was not built)');
    return;
  }
  await bootAndCheck([], async (vm) => {
    const qmp = await vm.qmp();
    const ev = await qmp.waitForEvent((e) => e.event === 'VSERPORT_CHANGE' && e.data?.['id'] === CONTROL_PORT_ID && e.data?.['open'] === true, 120_000);
    assert.equal(ev.data?.['open'], true);
    assert.ok(existsSync(vm.controlSocketPath), 'the control socket exists while the VM runs');
    assert.ok((vm.rssKiB() ?? 0) > 0);
  });
});
