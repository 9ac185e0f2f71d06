/**
 * The gVisor back end: the shared back-end suite (skipped, with the reason,
 * when runsc cannot run here), the OCI spec and runsc flags as tables, and
 * live checks of what only gVisor does (its own kernel, runsc's limits).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SandboxError } from '../../errors/index.js';
import { probeSpec, type StdioSandbox } from '../bubblewrap/index.js';
import { ensureTestImage, testHome } from '../image/testing.js';
import { runBackendSuite } from '../suite.js';
import type { SandboxSpec } from '../types.js';
import { cgroupPathFor, GvisorBackend } from './backend.js';
import { ociSpec, runscGlobalArgs } from './spec.js';

const home = testHome();
const backend = new GvisorBackend({ home });
/** Why the live tests cannot run here, or undefined when they can. */
const why = async (): Promise<string | undefined> => {
  if (process.getuid?.() !== 0) return 'the gVisor back end and the test image need root';
  await ensureTestImage(home); // reused when built; built from Debian packages (minutes) when not
  const a = await backend.available();
  return a.ok ? undefined : `runsc cannot run on this host: ${a.reason} (fix: ${a.fix})`;
};
const skipReason = await why();

runBackendSuite('gvisor', async () => skipReason ? { skip: skipReason } : backend);

test('ociSpec: read-only tree, tmpfs for writes, the agent as root with six capabilities, limits', () => {
  const spec = ociSpec({ rootfsDir: '/var/lib/cordon/images/x/rootfs-tree', memoryMiB: 512, cpus: 1.5, maxProcesses: 100, tmpfsMiB: 256, cgroupsPath: '/cordon-sb-x' }) as {
    process: { args: string[]; user: { uid: number }; noNewPrivileges: boolean; terminal: boolean; capabilities: Record<string, string[]> };
    root: { path: string; readonly: boolean };
    mounts: { destination: string; type: string; options?: string[] }[];
    linux: { namespaces: { type: string }[]; resources: Record<string, Record<string, number>>; cgroupsPath: string };
  };
  assert.deepEqual(spec.root, { path: '/var/lib/cordon/images/x/rootfs-tree', readonly: true });
  assert.deepEqual(spec.process.args, ['/usr/sbin/cordon-agent', '--stdio']);
  assert.equal(spec.process.terminal, false);
  assert.equal(spec.process.noNewPrivileges, true);
  assert.equal(spec.process.user.uid, 0);
  const caps = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID'];
  assert.deepEqual(spec.process.capabilities, { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] });
  const mount = (d: string) => spec.mounts.find((m) => m.destination === d);
  const table: [string, string, string[]][] = [
    ['/tmp', 'tmpfs', ['mode=1777', 'size=256m']],
    ['/var/tmp', 'tmpfs', ['mode=1777', 'size=256m']],
    ['/home/agent', 'tmpfs', ['mode=750', 'uid=1000', 'gid=1000', 'size=256m']],
    ['/run', 'tmpfs', ['mode=755']],
    ['/proc', 'proc', []],
    ['/sys', 'sysfs', ['ro']],
  ];
  for (const [dest, type, opts] of table) {
    assert.equal(mount(dest)?.type, type, dest);
    for (const o of opts) assert.ok(mount(dest)?.options?.includes(o), `${dest} has ${o}`);
  }
  assert.ok(spec.mounts.every((m) => m.type !== 'bind'), 'no host path is bound into the sandbox');
  assert.deepEqual(spec.linux.namespaces.map((n) => n.type).sort(), ['ipc', 'mount', 'network', 'pid', 'uts']);
  assert.deepEqual(spec.linux.resources, { memory: { limit: 512 * 1024 * 1024 }, pids: { limit: 100 }, cpu: { quota: 150_000, period: 100_000 } });
  assert.equal(spec.linux.cgroupsPath, '/cordon-sb-x');
});

test('runscGlobalArgs: no network, state and logs in the run directory, never stdout', () => {
  const cases: [string, Parameters<typeof runscGlobalArgs>[0], string[]][] = [
    ['root', { stateDir: '/r/state', logPath: '/r/runsc.log' },
      ['--root', '/r/state', '--network', 'none', '--platform', 'ptrace', '--log', '/r/runsc.log', '--panic-log', '/r/runsc.log']],
    ['no cgroups, kvm', { stateDir: '/s', logPath: '/l', platform: 'kvm', ignoreCgroups: true },
      ['--root', '/s', '--network', 'none', '--platform', 'kvm', '--log', '/l', '--panic-log', '/l', '--ignore-cgroups']],
  ];
  for (const [name, opts, want] of cases) assert.deepEqual(runscGlobalArgs(opts), want, name);
});

test('cgroupPathFor nests the sandbox below cordon\'s own memory cgroup', () => {
  const cases: [string, string, string][] = [
    ['v1 hybrid', '9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n', '/process_api/abc/cordon-sb-x'],
    ['v1 with memory joined to another controller', '3:cpuset,memory:/a\n', '/a/cordon-sb-x'],
    ['v2', '0::/system.slice/cordon.service\n', '/system.slice/cordon.service/cordon-sb-x'],
    ['root cgroup', '0::/\n', '/cordon-sb-x'],
  ];
  for (const [name, text, want] of cases) assert.equal(cgroupPathFor('sb-x', text), want, name);
});

test('available() without runsc says how to install it', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'cordon-empty-'));
  try {
    assert.deepEqual(await new GvisorBackend({ home: empty, searchPath: empty }).available(),
      { ok: false, reason: 'runsc (gVisor) is not installed', fix: 'apt-get install -y runsc' });
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

describe('gvisor specifics', () => {
  const create = async (spec: Partial<SandboxSpec> = {}): Promise<{ sb: StdioSandbox; runDir: string }> => {
    const runDir = mkdtempSync(join(tmpdir(), 'cordon-gvisor-'));
    return { sb: await backend.create({ ...probeSpec('gvisor'), ...spec }, { home, runDir }), runDir };
  };
  const sh = async (sb: StdioSandbox, script: string) => {
    let out = '';
    const r = await sb.channel.exec({ argv: ['/bin/sh', '-c', script], user: 'agent', timeoutMs: 30_000, onStdout: (b) => { out += b; }, onStderr: (b) => { out += b; } });
    return { ...r, out };
  };

  test('a microvm sandbox is never created by the gVisor back end', { skip: skipReason }, async () => {
    await assert.rejects(create({ isolation: 'microvm' }), (err: unknown) =>
      err instanceof SandboxError && err.code === 'sandbox-tier-too-weak' && /asks for microvm isolation; gVisor is weaker/.test(err.message));
  });

  test("commands see gVisor's kernel, not the host's, and the memory limit bites", { skip: skipReason }, async (t) => {
    const { sb } = await create({ memoryMiB: 128 });
    try {
      assert.match(sb.channel.hello?.kernel ?? '', /^4\.4\.0/, `gVisor reports its own kernel release, got ${String(sb.channel.hello?.kernel)}`);
      const dmesg = await sh(sb, 'dmesg 2>/dev/null | head -1; true');
      t.diagnostic(`dmesg inside: ${dmesg.out.trim()}`);
      // Over the limit, the host's OOM killer may take the whole sandbox (runsc's sentry holds all guest memory).
      const mem = await sh(sb, 'exec python3 -c "b = bytearray(512 * 1024 * 1024); b[::4096] = b\\"x\\" * len(b[::4096]); print(\\"allocated\\")"')
        .catch(async (err: Error) => ({ out: '', signal: `sandbox ended: ${(await sb.exited).reason} (${err.message})`, exitCode: null }));
      t.diagnostic(`512 MiB in a 128 MiB gVisor sandbox: ${mem.signal ?? mem.exitCode} ${mem.out.slice(-120).trim()}`);
      assert.doesNotMatch(mem.out, /allocated/, 'allocated 512 MiB in a 128 MiB sandbox');
      assert.ok(mem.signal === 'KILL' || /MemoryError/.test(mem.out) || /^sandbox ended: runtime-exited/.test(String(mem.signal)), String(mem.signal));
    } finally {
      await sb.destroy();
    }
  });

  test('the wall-clock lifetime destroys the sandbox with reason timeout', { skip: skipReason }, async () => {
    const { sb, runDir } = await create({ timeoutMs: 1_500 });
    const exit = await sb.exited;
    assert.equal(exit.reason, 'timeout');
    assert.equal(existsSync(runDir), false);
  });

  // Timing figures live in `cordon bench sandbox` (bench/sandbox.ts), not in tests.
  test('rssKiB reports the resident memory of the running gVisor runtime', { skip: skipReason, timeout: 60_000 }, async () => {
    const { sb } = await create();
    try {
      const rss = await sb.rssKiB();
      assert.ok(rss !== undefined && rss > 0, `rssKiB() gave ${String(rss)}`);
    } finally {
      await sb.destroy();
    }
    assert.equal(await sb.rssKiB(), undefined, 'a destroyed sandbox has no resident memory');
  });
});
