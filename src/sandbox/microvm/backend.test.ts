/**
 * Functional tests of the microVM back end with real QEMU (TCG on the
 * development machines): availability, a cold boot and what it leaves
 * behind, start failures, snapshot restores and the warm pool (fresh entropy,
 * clock and machine id in every clone), and hostile guests that break the
 * control protocol while another sandbox keeps running.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { SandboxError } from '../../errors/index.js';
import { MicrovmBackend } from './backend.js';
import { supportsLazyRam } from './snapshot.js';
import type { MicrovmSandbox } from './sandbox.js';
import { assertNothingLeft, HOSTILE_GUEST, processGone, run, testRunDir, testSpec, vmFixture, vmSkipReason, type VmFixture } from './testing.js';

const skip = vmSkipReason();
const SHAPE = { vcpus: 1, memoryMiB: 256, diskMiB: 2048 };

test('available() names what is missing and the command that fixes it', { skip: skip && 'needs QEMU' }, async () => {
  const home = mkdtempSync(join(tmpdir(), 'cordon-empty-home-'));
  try {
    const a = await new MicrovmBackend({ home }).available();
    assert.equal(a.ok, false);
    assert.match(a.reason ?? '', /no guest image in .*images/);
    assert.equal(a.fix, 'cordon image build');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

describe('microvm back end', { skip, timeout: 10 * 60_000 }, () => {
  let fx: VmFixture;
  before(async () => {
    fx = await vmFixture();
  });

  test('a cold boot: TCG tier, own kernel, unprivileged seccomp-confined VMM, nothing left after destroy', async (t) => {
    const backend = fx.backend({ snapshots: 'off' });
    const runDir = testRunDir();
    const started = performance.now();
    const sb = await backend.create(testSpec(), { home: fx.home, runDir });
    const r = await run(sb.channel, ['uname', '-r']);
    const firstExecMs = performance.now() - started;
    try {
      assert.deepEqual([sb.tier, sb.startedFrom], [fx.probe.accel === 'kvm' ? 'microvm-kvm' : 'microvm-tcg', 'boot']);
      assert.match(r.stdout, /^\d+\.\d+\.\d+-\d+-amd64\n$/);
      const status = readFileSync(`/proc/${sb.pid}/status`, 'utf8');
      assert.match(status, /^Seccomp:\s+2$/m, 'QEMU runs under its seccomp filter');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
      assert.ok(uid >= 0x6000_0000, `QEMU runs as its own unprivileged uid, not ${uid}`);
      assert.equal(sb.vmmUid, uid);
      assert.match(readFileSync(`/proc/${sb.pid}/cmdline`, 'utf8'), /-nic\0none\0/);
      const nets = await run(sb.channel, ['ls', '/sys/class/net']);
      assert.equal(nets.stdout, 'lo\n', 'the guest has no network device');
      const whoami = await run(sb.channel, ['id', '-un']);
      assert.equal(whoami.stdout, 'agent\n');
      t.diagnostic(`cold boot to first exec result: ${Math.round(firstExecMs)} ms`);
      assert.ok(firstExecMs < 15_000, `cold start took ${Math.round(firstExecMs)} ms`);
    } finally {
      await sb.destroy();
      await backend.close();
    }
    assert.deepEqual(await sb.exited, { reason: 'destroyed' });
    assertNothingLeft(sb, runDir);
  });

  const failures: { name: string; kernelArgs: string[]; code: string; message: RegExp }[] = [
    { name: 'init exits at once (kernel panic, QEMU exits)', kernelArgs: ['cordon.init=/bin/true'], code: 'sandbox-start', message: /QEMU exited .* before the guest agent said hello[\s\S]*last console lines:[\s\S]*(Kernel panic|Attempted to kill init)/ },
    { name: 'the guest never says hello', kernelArgs: ['cordon.init=/usr/bin/tail'], code: 'sandbox-boot-timeout', message: /did not say hello within 8000 ms[\s\S]*(last console lines|console was empty)/ },
  ];
  for (const c of failures) {
    test(`a start failure (${c.name}) is a clear error and leaves nothing`, async () => {
      const backend = fx.backend({ snapshots: 'off', kernelArgs: c.kernelArgs, bootTimeoutMs: 8_000 });
      const runDir = testRunDir();
      const before = new Set(readdirSync(tmpdir()).filter((n) => n.startsWith('cordon-vm-')));
      await assert.rejects(backend.create(testSpec(), { home: fx.home, runDir }), (err: SandboxError) => {
        assert.equal(err.code, c.code);
        assert.match(err.message, c.message);
        assert.match(err.fix ?? '', /cordon image build/);
        assert.equal(typeof err.details?.['consoleTail'], 'string');
        return true;
      });
      await backend.close();
      assert.deepEqual(readdirSync(runDir), [], 'no overlay left');
      const left = readdirSync(tmpdir()).filter((n) => n.startsWith('cordon-vm-') && !before.has(n));
      assert.deepEqual(left, [], 'no socket directory left');
      rmSync(runDir, { recursive: true });
    });
  }

  test('the first cold boot of a VM shape makes its snapshot in the background; the next create restores it', async () => {
    // A kernel argument nobody else uses gives a VM shape without a snapshot.
    const backend = fx.backend({ kernelArgs: [`cordon.test=${randomBytes(6).toString('hex')}`] });
    const first = testRunDir();
    const sb = await backend.create(testSpec(), { home: fx.home, runDir: first });
    assert.equal(sb.startedFrom, 'boot');
    await sb.destroy();
    const { snapshot } = await backend.warm(SHAPE); // joins the background build
    try {
      const second = testRunDir();
      const again = await backend.create(testSpec(), { home: fx.home, runDir: second });
      assert.equal(again.startedFrom, 'snapshot');
      assert.equal((await run(again.channel, ['echo', 'restored'])).stdout, 'restored\n');
      await again.destroy();
      assertNothingLeft(again, second);
    } finally {
      await backend.close();
      rmSync(snapshot.dir, { recursive: true, force: true });
    }
  });

  describe('snapshot restore and warm pool', () => {
    let backend: MicrovmBackend;
    before(async () => {
      backend = fx.backend({ poolSize: 1 });
      const { snapshot } = await backend.warm(SHAPE);
      if (snapshot.key.lazyRam) {
        // Lazy: the RAM is in ram.bin (read-only, the guest's size), the state holds only the devices.
        assert.ok(snapshot.ramPath && statSync(snapshot.ramPath).size === SHAPE.memoryMiB * 1024 * 1024, 'the RAM file has the guest\'s size');
        assert.equal(statSync(snapshot.ramPath).mode & 0o222, 0, 'the RAM file is read-only');
        assert.ok(snapshot.stateBytes > 4096 && snapshot.stateBytes < 1 << 20, `the state holds the devices only (${snapshot.stateBytes} bytes)`);
      } else {
        assert.ok(snapshot.stateBytes > 1 << 20, 'the snapshot holds the machine state');
      }
    });
    after(async () => {
      await backend.close();
    });

    test('two sandboxes restored from one snapshot get their own entropy, machine id and the right clock', async (t) => {
      const plain = fx.backend({ poolSize: 0 }); // restores straight from the snapshot the pool backend made
      const sbs: MicrovmSandbox[] = [];
      const dirs: string[] = [];
      try {
        for (let i = 0; i < 2; i++) {
          dirs.push(testRunDir());
          const started = performance.now();
          sbs.push(await plain.create(testSpec(), { home: fx.home, runDir: dirs[i]! }));
          await run(sbs[i]!.channel, ['true']);
          t.diagnostic(`snapshot restore to first exec result: ${Math.round(performance.now() - started)} ms`);
        }
        assert.deepEqual(sbs.map((s) => s.startedFrom), ['snapshot', 'snapshot']);
        const random = await Promise.all(sbs.map((s) => run(s.channel, ['sh', '-c', 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"'])));
        assert.equal(random[0]!.stdout.length, 64);
        assert.notEqual(random[0]!.stdout, random[1]!.stdout, 'the clones read different random bytes');
        const ids = await Promise.all(sbs.map((s) => run(s.channel, ['cat', '/etc/machine-id'])));
        assert.match(ids[0]!.stdout, /^[0-9a-f]{32}\n$/);
        assert.notEqual(ids[0]!.stdout, ids[1]!.stdout, 'each clone has its own machine id');
        for (const s of sbs) {
          const t = Number((await run(s.channel, ['date', '+%s.%N'])).stdout);
          assert.ok(Math.abs(t * 1000 - Date.now()) < 2_000, `guest clock is ${Math.round(t * 1000 - Date.now())} ms off`);
        }
      } finally {
        await Promise.all(sbs.map((s) => s.destroy()));
        await plain.close();
      }
      sbs.forEach((s, i) => assertNothingLeft(s, dirs[i]!));
    });

    test('a pool member starts fast, is refreshed like a restore, and the pool refills', async (t) => {
      const runDir = testRunDir();
      const started = performance.now();
      const sb = await backend.create(testSpec(), { home: fx.home, runDir });
      const r = await run(sb.channel, ['cat', '/etc/machine-id']);
      const ms = performance.now() - started;
      t.diagnostic(`pool to first exec result: ${Math.round(ms)} ms`);
      assert.equal(sb.startedFrom, 'pool');
      assert.match(r.stdout, /^[0-9a-f]{32}\n$/);
      assert.ok(ms < 2_000, `a pooled start took ${Math.round(ms)} ms`);
      assert.equal(sb.diskPath, join(runDir, 'disk.qcow2'), 'the overlay moved into the run directory');
      assert.ok(existsSync(sb.diskPath));
      await sb.destroy();
      assertNothingLeft(sb, runDir);
      const { poolReady } = await backend.warm(SHAPE);
      assert.equal(poolReady, 1, 'the pool is full again');
    });

    const attacks: { mode: string; reason: string }[] = [
      { mode: 'garbage', reason: 'frame-too-large' },
      { mode: 'flood', reason: 'log-flood' },
      { mode: 'restart', reason: 'duplicate-hello' },
    ];
    test('a hostile guest is destroyed with reason protocol-error; the other sandbox keeps running', async () => {
      const bystanderDir = testRunDir();
      const bystander = await backend.create(testSpec(), { home: fx.home, runDir: bystanderDir });
      try {
        for (const a of attacks) {
          const runDir = testRunDir();
          const hostile = await backend.create(testSpec(), { home: fx.home, runDir });
          await assert.rejects(run(hostile.channel, ['python3', '-c', HOSTILE_GUEST, a.mode], 'root'), /protocol error|closed/);
          const exit = await hostile.exited;
          assert.equal(exit.reason, 'protocol-error', `${a.mode}: ${JSON.stringify(exit)}`);
          assert.match(exit.detail ?? '', new RegExp(`^${a.reason}:`));
          assertNothingLeft(hostile, runDir);
          const alive = await run(bystander.channel, ['echo', `alive after ${a.mode}`]);
          assert.equal(alive.stdout, `alive after ${a.mode}\n`);
        }
      } finally {
        await bystander.destroy();
      }
      assert.ok(processGone(bystander.pid));
    });
  });
});

test('lazy snapshots only where QEMU can open the RAM file read-only (8.2 and later)', () => {
  const cases: [string, boolean][] = [['7.2.22', false], ['8.1.5', false], ['8.2.0', true], ['9.0.1', true], ['10.0.2', true], ['', false], ['garbage', false]];
  for (const [version, lazy] of cases) assert.equal(supportsLazyRam(version), lazy, version);
});
