import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probeAccel, type ProbeAccelOptions } from './probe.js';

/**
 * A stand-in for qemu-system-x86_64: `--version`, and boots that behave as
 * $FAKE_KVM / $FAKE_TCG say. Every boot appends its accelerator to calls.log.
 * Waiting boots `exec sleep`, so killing the process leaves no child holding the pipes.
 */
const FAKE = `#!/bin/sh
dir=$(dirname "$0")
case " $* " in *" --version "*) echo "QEMU emulator version \${FAKE_VERSION:-7.2.22}"; exit 0 ;; esac
case " $* " in
  *" -accel kvm "*)
    echo kvm >> "$dir/calls.log"
    case "$FAKE_KVM" in
      ok) echo "[    0.9] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"; exit 0 ;;
      crash) echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2; kill -ABRT $$ ;;
      dirty) echo "VFS: Unable to mount root fs on unknown-block(0,0)"; exit 1 ;;
      *) exec sleep 30 ;;
    esac ;;
  *" -accel tcg,"*|*" -accel tcg "*)
    echo tcg >> "$dir/calls.log"
    case "$FAKE_TCG" in
      fail) echo "[    0.0] tsc: Unable to calibrate against PIT"; exec sleep 30 ;;
      *) echo "[    0.0] tsc: Fast TSC calibration using PIT"; echo "[    0.0] tsc: Detected 2596.115 MHz processor"; exec sleep 30 ;;
    esac ;;
esac
`;

function setup(env: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-probe-test-'));
  const qemuPath = join(dir, 'qemu-system-x86_64');
  writeFileSync(qemuPath, FAKE);
  chmodSync(qemuPath, 0o755);
  const kvmDevice = join(dir, 'kvm');
  writeFileSync(kvmDevice, '');
  const saved = { ...process.env };
  Object.assign(process.env, env);
  const opts: ProbeAccelOptions = { kernelPath: join(dir, 'vmlinux'), home: dir, qemuPath, kvmDevice, timeoutMs: 3000 };
  return {
    dir,
    opts,
    calls: () => (existsSync(join(dir, 'calls.log')) ? readFileSync(join(dir, 'calls.log'), 'utf8').trim().split('\n') : []),
    done: () => {
      process.env = saved;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('KVM is used when the probe boot reaches the root-mount panic and QEMU exits cleanly', async () => {
  const s = setup({ FAKE_KVM: 'ok' });
  try {
    const r = await probeAccel(s.opts);
    assert.equal(r.accel, 'kvm');
    assert.equal(r.kvm.usable, true);
    assert.match(r.kvm.reason, /reached the kernel's root-mount panic/);
    assert.deepEqual(s.calls(), ['kvm'], 'no TSC calibration when KVM works');
  } finally {
    s.done();
  }
});

const kvmFailures: [string, Record<string, string>, Partial<ProbeAccelOptions>, RegExp][] = [
  ['QEMU aborts under KVM', { FAKE_KVM: 'crash' }, {}, /QEMU failed under KVM \(signal SIGABRT\): qemu-system-x86_64: error: failed to set MSR 0x10a/],
  ['the probe boot hangs', { FAKE_KVM: 'hang' }, { timeoutMs: 800 }, /did not reach the root-mount panic within 800 ms/],
  ['the kernel ran but QEMU exited with an error', { FAKE_KVM: 'dirty' }, {}, /ran but QEMU did not exit cleanly \(code 1\)/],
  ['/dev/kvm is missing', { FAKE_KVM: 'ok' }, { kvmDevice: '/nonexistent/kvm' }, /\/nonexistent\/kvm does not exist/],
];
for (const [name, env, change, reason] of kvmFailures) {
  test(`TCG is used when ${name}`, async () => {
    const s = setup(env);
    try {
      const r = await probeAccel({ ...s.opts, ...change });
      assert.equal(r.accel, 'tcg');
      assert.equal(r.kvm.usable, false);
      assert.match(r.kvm.reason, reason);
      assert.equal(r.tcg.tscKhz, 2596115);
      assert.equal(r.tcg.tscSource, 'guest-pit');
      assert.deepEqual(s.calls().filter((c) => c === 'tcg').length, 3, 'three calibration boots');
    } finally {
      s.done();
    }
  });
}

test('the result is cached per host boot and QEMU version', async () => {
  const s = setup({ FAKE_KVM: 'crash' });
  try {
    const first = await probeAccel(s.opts);
    assert.equal(first.cached, false);
    const n = s.calls().length;
    const second = await probeAccel(s.opts);
    assert.equal(second.cached, true);
    assert.equal(second.kvm.reason, first.kvm.reason);
    assert.equal(s.calls().length, n, 'no boot for a cached result');
    process.env.FAKE_VERSION = '8.0.0';
    const third = await probeAccel(s.opts);
    assert.equal(third.cached, false, 'a new QEMU version is probed again');
    assert.equal(third.key.qemuVersion, '8.0.0');
    assert.equal((await probeAccel({ ...s.opts, force: true })).cached, false);
  } finally {
    s.done();
  }
});

test('when the guest cannot calibrate the TSC, the probe gives up after eight tries', async () => {
  const s = setup({ FAKE_KVM: 'crash', FAKE_TCG: 'fail' });
  try {
    const r = await probeAccel(s.opts);
    assert.notEqual(r.tcg.tscSource, 'guest-pit');
    assert.equal(s.calls().filter((c) => c === 'tcg').length, 8);
  } finally {
    s.done();
  }
});
