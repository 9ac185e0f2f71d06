/**
 * Security tests of the microVM back end, each one an attempt from inside a
 * real guest (TCG) to see or reach the host: its kernel, its files, its
 * processes, a TCP service on its loopback; then resource exhaustion (a fork
 * bomb, a memory hog) while the host is pinged over HTTP every 100 ms; and the
 * wall-clock lifetime enforced by the manager. One sandbox serves the first
 * group of checks, restored from the shared test snapshot.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseConfig } from '../../config/index.js';
import { sleep } from '../../util/index.js';
import { createSandboxManager } from '../manager.js';
import type { MicrovmBackend } from './backend.js';
import type { MicrovmSandbox } from './sandbox.js';
import { processGone, run, testRunDir, testSpec, vmFixture, vmSkipReason, type Ran, type VmFixture } from './testing.js';

const skip = vmSkipReason();
const SHAPE = { vcpus: 1, memoryMiB: 256, diskMiB: 2048 };

describe('what a microVM guest cannot see or reach', { skip, timeout: 10 * 60_000 }, () => {
  let fx: VmFixture;
  let backend: MicrovmBackend;
  let sb: MicrovmSandbox;
  let runDir: string;
  before(async () => {
    fx = await vmFixture();
    backend = fx.backend();
    await backend.warm(SHAPE);
    runDir = testRunDir();
    sb = await backend.create(testSpec(), { home: fx.home, runDir });
  });
  after(async () => {
    await sb?.destroy();
    await backend?.close();
    rmSync(runDir, { recursive: true, force: true });
  });

  test('the guest runs its own kernel, not the host one', async () => {
    const r = await run(sb.channel, ['uname', '-r']);
    assert.equal(r.stdout.trim(), fx.image.kernelRelease);
    assert.notEqual(r.stdout.trim(), release());
  });

  test('a host file is invisible: not at its path, not anywhere on the guest file systems, no shared mount', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-marker-'));
    const name = `marker-${randomBytes(8).toString('hex')}`;
    const path = join(dir, name);
    writeFileSync(path, 'host secret\n');
    try {
      const at = await run(sb.channel, ['cat', path]);
      assert.equal(at.exitCode, 1);
      assert.match(at.stderr, /No such file or directory/);
      const found = await run(sb.channel, ['find', '/', '-xdev', '-name', name], 'root', 120_000);
      assert.equal(found.stdout, '', 'find / found the marker');
      const mounts = await run(sb.channel, ['cat', '/proc/mounts']);
      assert.doesNotMatch(mounts.stdout, /\b(9p|virtiofs|nfs|fuse)\b/, 'no host file system is mounted');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('host processes are invisible: neither a marked host process nor the test process', async () => {
    const token = `600.${randomBytes(4).readUInt32BE(0)}`;
    const sleeper = spawn('sleep', [token], { stdio: 'ignore' });
    try {
      const cmdlines = await run(sb.channel, ['python3', '-c',
        "import glob\nfor p in glob.glob('/proc/[0-9]*/cmdline'):\n  try: print(open(p,'rb').read().replace(b'\\0', b' ').decode())\n  except OSError: pass"], 'root');
      assert.equal(cmdlines.exitCode, 0, cmdlines.stderr);
      assert.match(cmdlines.stdout, /cordon-agent/, 'the guest sees its own processes');
      assert.doesNotMatch(cmdlines.stdout, new RegExp(token.replace('.', '\\.')), 'the marked host process is visible');
      assert.doesNotMatch(cmdlines.stdout, /\bnode\b|--test/, 'the test process is visible');
      const byPid = await run(sb.channel, ['sh', '-c', `cat /proc/${sleeper.pid}/cmdline 2>/dev/null | tr '\\0' ' '`], 'root');
      assert.doesNotMatch(byPid.stdout, /sleep/, `host pid ${sleeper.pid} is visible`);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });

  test('a TCP service on the host loopback is unreachable: no network device, no route', async () => {
    let connections = 0;
    const server = createServer((_req, res) => res.end('host service\n'));
    server.on('connection', () => connections++);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    try {
      const probe = await run(sb.channel, ['python3', '-c', [
        'import socket, sys',
        'for host in ("127.0.0.1", "10.0.2.2", "192.168.0.1"):',
        '    try:',
        '        socket.create_connection((host, int(sys.argv[1])), timeout=3).close(); print(host, "CONNECTED")',
        '    except OSError as e: print(host, type(e).__name__, e.errno)',
      ].join('\n'), String(port)]);
      assert.doesNotMatch(probe.stdout, /CONNECTED/);
      assert.match(probe.stdout, /^127\.0\.0\.1 ConnectionRefusedError 111$/m, 'guest loopback is its own');
      assert.match(probe.stdout, /^10\.0\.2\.2 OSError 101$/m, 'no route off the guest (network unreachable)');
      const curl = await run(sb.channel, ['curl', '-sS', '-m', '3', `http://127.0.0.1:${port}/`]);
      assert.notEqual(curl.exitCode, 0);
      assert.match(curl.stderr, /Failed to connect|Connection refused|Couldn't connect/);
      const links = await run(sb.channel, ['ls', '/sys/class/net']);
      assert.equal(links.stdout, 'lo\n');
      assert.equal(connections, 0, 'the host service saw no connection');
    } finally {
      server.close();
    }
  });

  const exhaustion: { name: string; argv: string[]; timeoutMs: number; check: (r: Ran) => void }[] = [
    {
      name: 'a fork bomb',
      // The classic shell bomb; no ulimit. The guest's own limits make fork fail; the agent kills the
      // whole process group at the command timeout.
      argv: ['sh', '-c', 'b(){ b|b& }; b; sleep 60'],
      timeoutMs: 15_000,
      check: (r) => {
        assert.deepEqual([r.timedOut, r.signal], [true, 'KILL']);
        assert.match(r.stderr, /Cannot fork/, 'fork failed inside the guest');
      },
    },
    {
      name: 'a memory hog',
      argv: ['python3', '-c', 'a = []\nwhile True: a.append(bytearray(16 << 20))'],
      timeoutMs: 120_000,
      check: (r) => {
        // The guest's OOM killer ends it (or Python gets a MemoryError first).
        assert.ok(r.signal === 'KILL' || /MemoryError/.test(r.stderr), `ended by ${r.signal ?? r.exitCode}: ${r.stderr.slice(-300)}`);
      },
    },
  ];
  for (const c of exhaustion) {
    test(`${c.name} hits the guest's limits while the host answers HTTP every 100 ms`, async (t) => {
      const ping = await startPinger();
      let maxRssKiB = 0;
      const rss = setInterval(() => void sb.rssKiB().then((k) => (maxRssKiB = Math.max(maxRssKiB, k ?? 0))), 200);
      let r: Ran;
      try {
        r = await run(sb.channel, c.argv, 'agent', c.timeoutMs);
      } finally {
        clearInterval(rss);
        await ping.stop();
      }
      t.diagnostic(`${c.name}: ${r.signal ? `killed by ${r.signal}` : `exit ${r.exitCode}`} after ${r.durationMs} ms; ` +
        `host HTTP ping max ${Math.round(ping.maxLatencyMs())} ms over ${ping.count()} pings; VMM RSS max ${Math.round(maxRssKiB / 1024)} MiB`);
      c.check(r);
      assert.ok(ping.count() >= 5, 'the pinger ran');
      assert.ok(ping.maxLatencyMs() < 1_000, `a host HTTP ping took ${Math.round(ping.maxLatencyMs())} ms`);
      assert.ok(maxRssKiB < (SHAPE.memoryMiB + 256) * 1024, `the VMM grew to ${Math.round(maxRssKiB / 1024)} MiB`);
      const alive = await run(sb.channel, ['echo', 'still here']);
      assert.equal(alive.stdout, 'still here\n', 'the sandbox survives');
    });
  }

  test('the manager destroys the sandbox at its wall-clock timeout', async () => {
    const config = parseConfig('version: 1\nagents:\n  short: { isolation: microvm, resources: { vcpus: 1, memoryMiB: 256, diskMiB: 2048, timeout: 3s } }\n');
    const home = mkdtempSync(join(tmpdir(), 'cordon-lifetime-'));
    const events: { type: string; reason?: string }[] = [];
    const manager = createSandboxManager({
      home, config, audit: { append: async (e) => void events.push(e) },
      backends: { microvm: fx.backend() },
    });
    // The back end's image and snapshots live in the shared test home; the manager's run directories in its own.
    try {
      const info = await manager.create({ agent: 'short', caller: { actor: 'test' } });
      assert.equal(info.tier, fx.probe.accel === 'kvm' ? 'microvm-kvm' : 'microvm-tcg');
      const r = await manager.run(info.id, { argv: ['sleep', '30'] }, { actor: 'test' }).catch((err: Error) => err);
      assert.ok(r instanceof Error, 'the command ends with the sandbox');
      for (let i = 0; i < 100 && manager.get(info.id).state !== 'destroyed'; i++) await sleep(50);
      const ended = manager.get(info.id);
      assert.deepEqual([ended.state, ended.endReason], ['destroyed', 'timeout']);
      const lived = Date.now() - Date.parse(info.createdAt);
      assert.ok(lived >= 3_000 && lived < 8_000, `lived ${lived} ms`);
      assert.ok(info.pid !== undefined && processGone(info.pid), 'QEMU is gone');
      assert.deepEqual(events.filter((e) => e.type === 'sandbox.destroy').map((e) => e.reason), ['timeout']);
    } finally {
      await manager.close();
      rmSync(home, { recursive: true, force: true });
    }
  });
});

/** An HTTP server on the host and a client that GETs it every 100 ms, recording the slowest answer (or gap). */
async function startPinger(): Promise<{ maxLatencyMs(): number; count(): number; stop(): Promise<void> }> {
  const server: Server = createServer((_req, res) => res.end('pong'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  let max = 0;
  let count = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const sent = performance.now();
    max = Math.max(max, sent - last - 100); // a late timer is unresponsiveness too
    last = sent;
    const req = request({ host: '127.0.0.1', port, path: '/' }, (res) => {
      res.resume();
      res.on('end', () => {
        max = Math.max(max, performance.now() - sent);
        count++;
      });
    });
    req.on('error', () => (max = Infinity));
    req.end();
  }, 100);
  return {
    maxLatencyMs: () => max,
    count: () => count,
    stop: async () => {
      clearInterval(timer);
      server.close();
    },
  };
}
