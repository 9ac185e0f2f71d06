/**
 * The bubblewrap back end: the shared back-end suite, then what is specific
 * to it (availability messages, the id mapping, cgroup limits really biting,
 * the lifetime, the refusal to stand in for a stronger tier) and the figures
 * for the benchmark table.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SandboxError } from '../../errors/index.js';
import { sleep } from '../../util/index.js';
import { ensureTestImage, testHome } from '../image/testing.js';
import { runBackendSuite } from '../suite.js';
import type { SandboxSpec } from '../types.js';
import { HOST_ID_BASE } from './args.js';
import { BubblewrapBackend, probeSpec } from './backend.js';
import { processTree } from './proc.js';
import type { StdioSandbox } from './stdio-sandbox.js';

const home = testHome();
const needRoot = process.getuid?.() === 0 ? undefined : 'the test image is built with debootstrap, which needs root';

runBackendSuite('bubblewrap', async () => {
  if (needRoot) return { skip: needRoot };
  await ensureTestImage(home); // reused when built; built from Debian packages (minutes) when not
  return new BubblewrapBackend({ home });
});

test('available() names what is missing and the command that fixes it', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'cordon-empty-'));
  try {
    const cases: [string, BubblewrapBackend, { ok: boolean; reason: RegExp; fix: string }][] = [
      ['no bwrap on the search path', new BubblewrapBackend({ home: empty, searchPath: empty }),
        { ok: false, reason: /^bwrap is not installed$/, fix: 'apt-get install -y bubblewrap' }],
      ['no image in the home', new BubblewrapBackend({ home: empty }),
        { ok: false, reason: /^no guest image with the guest agent in .*images$/, fix: 'make -C guest/agent && cordon image build' }],
    ];
    for (const [name, backend, want] of cases) {
      const got = await backend.available();
      assert.equal(got.ok, want.ok, name);
      assert.match(got.reason ?? '', want.reason, name);
      assert.equal(got.fix, want.fix, name);
    }
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

describe('bubblewrap specifics', { skip: needRoot }, () => {
  const backend = new BubblewrapBackend({ home, maxProcesses: 48 });
  const create = async (spec: Partial<SandboxSpec> = {}): Promise<{ sb: StdioSandbox; runDir: string }> => {
    const runDir = mkdtempSync(join(tmpdir(), 'cordon-bwrap-'));
    return { sb: await backend.create({ ...probeSpec(), ...spec }, { home, runDir }), runDir };
  };
  const sh = async (sb: StdioSandbox, script: string) => {
    let out = '';
    const r = await sb.channel.exec({ argv: ['/bin/sh', '-c', script], user: 'agent', timeoutMs: 30_000, onStdout: (b) => { out += b; }, onStderr: (b) => { out += b; } });
    return { ...r, out };
  };

  test('a sandbox is never created for a stronger tier than bubblewrap', async () => {
    for (const isolation of ['microvm', 'gvisor'] as const) {
      await assert.rejects(create({ isolation }), (err: unknown) => {
        assert.ok(err instanceof SandboxError);
        assert.equal(err.code, 'sandbox-tier-too-weak');
        assert.match(err.message, new RegExp(`asks for ${isolation} isolation; bubblewrap is weaker`));
        return true;
      });
    }
  });

  test("the sandbox's ids map to an unused host range: its root is not the host's root", async () => {
    const { sb } = await create();
    try {
      const map = await sh(sb, 'cat /proc/self/uid_map /proc/self/gid_map');
      assert.deepEqual(map.out.trim().split('\n').map((l) => l.trim().split(/\s+/)), [['0', String(HOST_ID_BASE), '65536'], ['0', String(HOST_ID_BASE), '65536']]);
      const h = sb.channel.spawn({ argv: ['sleep', '30'], user: 'agent' });
      h.result.catch(() => undefined); // ended by abort() below
      let hostUids: string[] = [];
      for (let i = 0; i < 100 && hostUids.length === 0; i++) {
        await sleep(10);
        hostUids = processTree(sb.pid!).map((pid) => readFileSync(`/proc/${pid}/status`, 'utf8'))
          .filter((s) => /^Name:\s+sleep$/m.test(s)).map((s) => /^Uid:\s+(\d+)/m.exec(s)?.[1] ?? '');
      }
      assert.deepEqual(hostUids, [String(HOST_ID_BASE + 1000)], 'the agent user is host uid base+1000');
      const runtimeUid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${sb.pid}/status`, 'utf8'))?.[1];
      assert.equal(runtimeUid, String(HOST_ID_BASE), 'bwrap itself runs unprivileged');
      h.abort();
    } finally {
      await sb.destroy();
    }
  });

  test('the seccomp filter refuses new user namespaces and the keyring, and ordinary programs still run', async () => {
    const { sb } = await create();
    try {
      assert.equal(sb.limits.syscalls, process.arch === 'x64' ? 'seccomp-denylist' : 'none');
      if (sb.limits.syscalls === 'none') return;
      const r = await sh(sb, [
        'unshare -U -r true 2>&1; echo unshare=$?',
        'python3 -c "import ctypes; l = ctypes.CDLL(None, use_errno=True); print(\'keyctl\', l.syscall(250, 0, 0, 0, 0, 0), ctypes.get_errno())"',
        'python3 -c "import subprocess; print(\'spawn\', subprocess.run([\'true\']).returncode)"',
        'grep ^Seccomp: /proc/self/status',
      ].join('; '));
      assert.match(r.out, /unshare failed: Operation not permitted\nunshare=1/);
      assert.match(r.out, /^keyctl -1 1$/m, 'keyctl fails with EPERM');
      assert.match(r.out, /^spawn 0$/m, 'clone3 falls back to clone');
      assert.match(r.out, /^Seccomp:\s+2$/m, 'filter mode');
    } finally {
      await sb.destroy();
    }
  });

  test('limits bite: memory (OOM kill), processes (fork fails), file size', async (t) => {
    const { sb } = await create({ memoryMiB: 96, diskMiB: 8 });
    try {
      t.diagnostic(`enforced: ${JSON.stringify(sb.limits)}`);
      const mem = await sh(sb, 'exec python3 -c "b = bytearray(400 * 1024 * 1024); b[::4096] = b\\"x\\" * len(b[::4096]); print(\\"allocated\\")"');
      assert.doesNotMatch(mem.out, /allocated/, 'allocated 400 MiB in a 96 MiB sandbox');
      assert.ok(mem.signal === 'KILL' || /MemoryError/.test(mem.out), `memory: ${mem.signal ?? mem.exitCode} ${mem.out.slice(-200)}`);
      const big = await sh(sb, 'head -c 20000000 /dev/zero > /tmp/big; echo status=$?; wc -c < /tmp/big');
      assert.match(big.out, /status=[1-9]/, `writing past RLIMIT_FSIZE (8 MiB) fails: ${big.out}`);
      assert.match(big.out, /^8388608$/m);
      const cgfs = await sh(sb, 'ls /sys/fs/cgroup 2>/dev/null | head -3; echo listed');
      assert.equal(cgfs.out, 'listed\n', 'the sandbox cannot see (or change) any cgroup');
      // Last: the shell dies on the failed fork and leaves its sleepers behind.
      const pids = await sh(sb, 'for i in $(seq 80); do sleep 5 & done; wait; echo end');
      assert.match(pids.out, /fork|Resource temporarily unavailable/i, 'more than 48 processes could start');
    } finally {
      await sb.destroy();
    }
  });

  test('the wall-clock lifetime destroys the sandbox with reason timeout', async () => {
    const { sb, runDir } = await create({ timeoutMs: 1_000 });
    const started = performance.now();
    const exit = await sb.exited;
    const ms = performance.now() - started;
    assert.equal(exit.reason, 'timeout');
    assert.match(exit.detail ?? '', /lifetime of 1000 ms reached/);
    assert.ok(ms < 5_000, `ended after ${ms.toFixed(0)} ms`);
    assert.equal(existsSync(runDir), false);
  });

  // Timing figures live in `cordon bench sandbox` (bench/sandbox.ts), not in tests.
  test('rssKiB reports the resident memory of the running bubblewrap runtime', { timeout: 60_000 }, async () => {
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
