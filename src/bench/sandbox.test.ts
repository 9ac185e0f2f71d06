/**
 * benchSandbox without VMs: what it reports for back ends that are missing,
 * unavailable or failing, and that it closes every back end it was given.
 * (The figures themselves come from running it: `cordon bench sandbox`.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SandboxError } from '../errors/index.js';
import type { BackendAvailability, BackendSandbox, Isolation, SandboxBackend } from '../sandbox/types.js';
import { benchSandbox, residentMiB } from './sandbox.js';

class StubBackend implements SandboxBackend {
  closed = false;
  constructor(readonly isolation: Isolation, private readonly availability: BackendAvailability) {}
  async available(): Promise<BackendAvailability> {
    return this.availability;
  }
  async create(): Promise<BackendSandbox> {
    throw new SandboxError('sandbox-start', 'the runtime crashed at start');
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

test('missing, unavailable and failing back ends are reported as skipped with the reason, and all are closed', async () => {
  const home = mkdtempSync(join(tmpdir(), 'cordon-bench-sandbox-'));
  try {
    const gvisor = new StubBackend('gvisor', { ok: false, reason: 'runsc is not installed', fix: 'install gVisor (runsc)' });
    const bubblewrap = new StubBackend('bubblewrap', { ok: true });
    const result = await benchSandbox({ home, cycles: 2, backends: { gvisor, bubblewrap } });
    assert.deepEqual(result, {
      microvm: { skipped: 'no microvm back end in this build' },
      gvisor: { skipped: 'runsc is not installed (fix: install gVisor (runsc))' },
      bubblewrap: { skipped: 'the benchmark failed: the runtime crashed at start' },
    });
    assert.deepEqual([gvisor.closed, bubblewrap.closed], [true, true]);
    assert.deepEqual(readdirSync(join(home, 'run')), [], 'the run directories are removed');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
  assert.equal(existsSync(home), false);
});

test('residentMiB reads VmRSS and RssFile of a live process, and null for none or a gone one', () => {
  const own = residentMiB(process.pid);
  assert.ok(own.rssMiB !== null && own.rssMiB > 10, `node itself is resident (${own.rssMiB} MiB)`);
  assert.ok(own.fileMiB !== null && own.fileMiB > 0 && own.fileMiB <= own.rssMiB, 'its binary is file-backed and part of the total');
  assert.deepEqual(residentMiB(undefined), { rssMiB: null, fileMiB: null });
  assert.deepEqual(residentMiB(2 ** 22 + 1), { rssMiB: null, fileMiB: null }, 'above pid_max: no such process');
});
