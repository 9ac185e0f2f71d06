/**
 * The shared test suite every sandbox back end must pass (microvm, gvisor,
 * bubblewrap): the control channel works end to end, commands run as the
 * unprivileged agent user, the sandbox has no network and sees no host file,
 * and destroying it leaves nothing behind.
 *
 * Commands run as `user: 'agent'` explicitly: choosing that default is the
 * sandbox manager's job, the back end only has to make the user exist with
 * uid 1000 and no privileges.
 *
 * @example
 * runBackendSuite('bubblewrap', async () => new BubblewrapBackend({ home: testHome() }));
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { sleep } from '../util/index.js';
import { isRunning, processTree, randomSandboxId } from './bubblewrap/index.js';
import { testHome } from './image/testing.js';
import type { ExecOptions, ExecResult } from './protocol/index.js';
import type { BackendSandbox, SandboxBackend, SandboxSpec } from './types.js';

export interface BackendSuiteOptions {
  /** `$CORDON_HOME` with a built image. @default testHome() */
  home?: string;
  /** Overrides for every sandbox the suite creates. */
  spec?: Partial<SandboxSpec>;
  /** Deadline of each test. @default 60000 */
  testTimeoutMs?: number;
}

type Made = SandboxBackend | { skip: string };

/** Register the shared tests for one back end. `makeBackend` may return `{ skip: reason }`. */
export function runBackendSuite(name: string, makeBackend: () => Promise<Made>, opts: BackendSuiteOptions = {}): void {
  const home = opts.home ?? testHome();
  const timeout = opts.testTimeoutMs ?? 60_000;
  let backend: SandboxBackend | undefined;
  let skip: string | undefined;
  let shared: BackendSandbox | undefined;
  const created: { sb: BackendSandbox; runDir: string }[] = [];

  const create = async (spec: Partial<SandboxSpec> = {}) => {
    if (!backend) throw new Error('no back end');
    const runDir = mkdtempSync(join(tmpdir(), 'cordon-suite-'));
    const full: SandboxSpec = {
      id: randomSandboxId(), agent: 'suite', isolation: backend.isolation, vcpus: 1, memoryMiB: 512, diskMiB: 512,
      timeoutMs: 10 * 60_000, maxOutputBytes: 16 * 1024 * 1024, env: {}, ...opts.spec, ...spec,
    };
    try {
      const sb = await backend.create(full, { home, runDir });
      created.push({ sb, runDir });
      return { sb, runDir };
    } catch (err) {
      rmSync(runDir, { recursive: true, force: true });
      throw err;
    }
  };
  /** Run as the agent user, collecting output. */
  const run = async (sb: BackendSandbox, o: Omit<ExecOptions, 'onStdout' | 'onStderr'>) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const r: ExecResult = await sb.channel.exec({ user: 'agent', timeoutMs: 30_000, ...o, onStdout: (b) => out.push(b), onStderr: (b) => err.push(b) });
    return { ...r, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), raw: Buffer.concat(out) };
  };
  const sh = (sb: BackendSandbox, script: string, extra: Partial<ExecOptions> = {}) => run(sb, { argv: ['/bin/sh', '-c', script], ...extra });
  const it = (title: string, fn: (t: TestContext, sb: BackendSandbox) => Promise<void>) =>
    test(title, { timeout }, async (t) => {
      if (skip !== undefined) return t.skip(skip);
      await fn(t, shared!);
    });

  describe(`sandbox back end: ${name}`, () => {
    before(async () => {
      const made = await makeBackend();
      if ('skip' in made) {
        skip = made.skip;
        return;
      }
      const avail = await made.available();
      if (!avail.ok) {
        skip = `${name} cannot run on this host: ${avail.reason ?? 'unknown'} (fix: ${avail.fix ?? 'none given'})`;
        return;
      }
      backend = made;
      shared = (await create()).sb;
    }, { timeout: 5 * 60_000 });

    after(async () => {
      for (const { sb, runDir } of created) {
        await sb.destroy('suite-done');
        rmSync(runDir, { recursive: true, force: true });
      }
      await backend?.close();
    });

    it('create gives a ready channel: the agent said hello, the runtime runs', async (t, sb) => {
      assert.equal(sb.channel.hello?.protocol, 1);
      assert.match(sb.id, /^sb-[a-z2-7]{20}$/);
      assert.ok(['microvm-kvm', 'microvm-tcg', 'gvisor', 'bubblewrap'].includes(sb.tier), `tier ${sb.tier}`);
      if (sb.pid !== undefined) assert.ok(isRunning(sb.pid), `runtime pid ${sb.pid} is running`);
      const rss = await sb.rssKiB();
      assert.ok(rss === undefined || rss > 0, `rss ${String(rss)} KiB`);
      t.diagnostic(`tier ${sb.tier}, runtime rss ${String(rss)} KiB`);
    });

    it('exec returns stdout and the exit status', async (_t, sb) => {
      const r = await run(sb, { argv: ['echo', 'hello', 'sandbox'] });
      assert.equal(r.stdout, 'hello sandbox\n');
      assert.deepEqual([r.exitCode, r.signal, r.timedOut, r.outputTruncated], [0, null, false, false]);
      for (const code of [1, 3, 42, 255]) {
        const e = await sh(sb, `exit ${code}`);
        assert.equal(e.exitCode, code, `exit ${code}`);
        assert.equal(e.signal, null);
      }
    });

    it('a command ended by a signal reports the signal, not an exit code', async (_t, sb) => {
      const self = await sh(sb, 'kill -TERM $$');
      assert.deepEqual([self.exitCode, self.signal], [null, 'TERM']);
      const out: Buffer[] = [];
      const h = sb.channel.spawn({ argv: ['/bin/sh', '-c', 'echo started; exec sleep 30'], user: 'agent', onStdout: (b) => out.push(b) });
      for (let i = 0; i < 200 && !Buffer.concat(out).includes('started'); i++) await sleep(10);
      assert.equal(await h.kill('INT'), true, 'the signal was delivered');
      const r = await h.result;
      assert.deepEqual([r.exitCode, r.signal], [null, 'INT']);
    });

    it('the agent user can read its own sandbox\'s identity token, and nobody else in the sandbox can write it', async (_t, sb) => {
      const token = `eyJhbGciOiJFZERTQSJ9.${randomBytes(24).toString('base64url')}.c2ln`;
      const { path } = await sb.channel.setToken(token);
      const read = await sh(sb, 'cat "$CORDON_TOKEN_FILE"');
      assert.equal(read.exitCode, 0, `the agent user reads ${path}: ${read.stderr}`);
      assert.equal(read.stdout, token);
      const write = await sh(sb, ': > "$CORDON_TOKEN_FILE"');
      assert.notEqual(write.exitCode, 0, 'the agent user cannot change the token');
      assert.equal((await sh(sb, 'cat "$CORDON_TOKEN_FILE"')).stdout, token);
    });

    it('stdin is delivered, then closed', async (_t, sb) => {
      const text = await run(sb, { argv: ['cat'], stdin: 'line one\nline two\n' });
      assert.equal(text.stdout, 'line one\nline two\n');
      const big = randomBytes(200 * 1024);
      const counted = await run(sb, { argv: ['wc', '-c'], stdin: big });
      assert.equal(counted.stdout.trim(), String(big.length));
    });

    it('stderr arrives separately from stdout', async (_t, sb) => {
      const r = await sh(sb, 'echo to-out; echo to-err >&2; exit 7');
      assert.deepEqual([r.stdout, r.stderr, r.exitCode], ['to-out\n', 'to-err\n', 7]);
    });

    it('a command past its timeout is killed', async (_t, sb) => {
      const started = performance.now();
      const r = await run(sb, { argv: ['sleep', '30'], timeoutMs: 500 });
      const ms = performance.now() - started;
      assert.deepEqual([r.timedOut, r.signal, r.exitCode], [true, 'KILL', null]);
      assert.ok(ms < 5_000, `killed after ${ms.toFixed(0)} ms`);
    });

    it('output past the limit is cut at the limit', async (_t, sb) => {
      const r = await run(sb, { argv: ['head', '-c', '1000000', '/dev/zero'], maxOutputBytes: 4096 });
      assert.equal(r.outputTruncated, true);
      assert.equal(r.raw.length, 4096);
    });

    it('binary files survive a write and read round trip', async (_t, sb) => {
      const data = randomBytes(300 * 1024 + 17); // several frames and more than one credit window
      data[0] = 0;
      data[1] = 0xff;
      await sb.channel.writeFile('/tmp/suite-blob.bin', data, { mode: 0o640, uid: 1000, gid: 1000 });
      assert.deepEqual(await sb.channel.readFile('/tmp/suite-blob.bin'), data);
      const inside = await sh(sb, 'sha256sum /tmp/suite-blob.bin; stat -c %a:%u /tmp/suite-blob.bin 2>/dev/null || echo stat-unavailable');
      assert.equal(inside.stdout.split(' ')[0], createHash('sha256').update(data).digest('hex'));
      const mode = inside.stdout.trim().split('\n')[1];
      if (mode !== 'stat-unavailable') assert.equal(mode, '640:1000');
    });

    it('env and cwd reach the command', async (_t, sb) => {
      const r = await sh(sb, 'printf "%s|%s|%s" "$GREETING" "$(pwd)" "$HOME"', { env: { GREETING: 'hello there' }, cwd: '/tmp' });
      assert.equal(r.stdout, 'hello there|/tmp|/home/agent');
    });

    it('commands run as the unprivileged agent user (uid 1000, no capabilities) who cannot change the system', async (_t, sb) => {
      const r = await sh(sb, 'id -u; id -un; grep ^CapEff /proc/self/status');
      assert.deepEqual(r.stdout.trim().split('\n'), ['1000', 'agent', 'CapEff:\t0000000000000000']);
      const sys = await sh(sb, 'touch /usr/bin/cordon-suite-probe 2>&1 || echo refused');
      assert.match(sys.stdout, /refused$/m);
      const home = await sh(sb, 'echo kept > "$HOME/note" && cat "$HOME/note"');
      assert.equal(home.stdout, 'kept\n', 'the agent can write its home');
    });

    it('no network: a host listener is unreachable and the only interface is lo', async (_t, sb) => {
      let connections = 0;
      const server = createServer((s) => { connections++; s.destroy(); }).listen(0, '0.0.0.0');
      await once(server, 'listening');
      const port = (server.address() as { port: number }).port;
      try {
        const addrs = ['127.0.0.1', ...Object.values(networkInterfaces()).flat()
          .filter((a) => a && a.family === 'IPv4' && !a.internal).map((a) => a!.address)];
        for (const addr of addrs) {
          const r = await run(sb, { argv: ['bash', '-c', `exec 3<>/dev/tcp/${addr}/${port} && echo CONNECTED`], timeoutMs: 10_000 });
          assert.notEqual(r.stdout.trim(), 'CONNECTED', `reached the host at ${addr}:${port}`);
          assert.notEqual(r.exitCode, 0, `connecting to ${addr} failed`);
        }
        assert.equal(connections, 0, 'the host listener saw no connection');
      } finally {
        server.close();
      }
      const ifaces = await sh(sb, 'for f in /sys/class/net/*; do echo "${f##*/}"; done; tail -n +3 /proc/net/dev | cut -d: -f1');
      const names = new Set(ifaces.stdout.split('\n').map((l) => l.trim()).filter((l) => l && l !== '*'));
      assert.deepEqual([...names].filter((n) => n !== 'lo'), [], `interfaces: ${[...names].join(', ')}`);
    });

    it('host files are invisible: a marker in the host temp dir, the source tree', async (_t, sb) => {
      const marker = join(tmpdir(), `cordon-marker-${randomBytes(6).toString('hex')}`);
      writeFileSync(marker, 'host secret');
      try {
        for (const path of [marker, join(process.cwd(), 'package.json')]) {
          const r = await sh(sb, `cat '${path}' 2>/dev/null && echo VISIBLE; test -e '${path}' && echo EXISTS; true`);
          assert.equal(r.stdout, '', `${path} is visible inside the sandbox`);
        }
        const grep = await sh(sb, `grep -rls 'host secret' /tmp /home /run 2>/dev/null; true`);
        assert.equal(grep.stdout, '');
      } finally {
        rmSync(marker, { force: true });
      }
    });

    it('pause holds commands until resume', async (t, sb) => {
      try {
        await sb.pause();
      } catch (err) {
        if ((err as { code?: string }).code === 'sandbox-pause-unsupported') return t.skip(`pause is not supported here: ${(err as Error).message}`);
        throw err;
      }
      let done = false;
      const pending = run(sb, { argv: ['echo', 'after-resume'] }).then((r) => { done = true; return r; });
      await sleep(700);
      assert.equal(done, false, 'a command finished while the sandbox was paused');
      await sb.resume();
      assert.equal((await pending).stdout, 'after-resume\n');
    });

    it('destroy kills a running command and leaves no process, socket or run directory; it is idempotent', async (t) => {
      const { sb, runDir } = await create();
      const out: Buffer[] = [];
      const h = sb.channel.spawn({ argv: ['/bin/sh', '-c', 'echo started; exec sleep 1000'], user: 'agent', onStdout: (b) => out.push(b) });
      const settled = h.result.then(() => 'resolved', () => 'rejected');
      for (let i = 0; i < 300 && !Buffer.concat(out).includes('started'); i++) await sleep(10);
      const procs = sb.pid === undefined ? [] : processTree(sb.pid);
      assert.ok(sb.pid === undefined || procs.length > 0, 'the runtime had processes');
      const started = performance.now();
      await Promise.all([sb.destroy(), sb.destroy()]);
      const ms = performance.now() - started;
      assert.equal(await settled, 'rejected', 'the running command did not complete normally');
      assert.deepEqual(procs.filter(isRunning), [], 'every runtime process (and the command) is gone');
      assert.equal(existsSync(runDir), false, `${runDir} was removed`);
      const exit = await sb.exited;
      assert.equal(exit.reason, 'destroyed');
      await sb.destroy(); // again: no error
      assert.equal(await sb.rssKiB(), undefined);
      await assert.rejects(sb.channel.exec({ argv: ['true'] }), 'a destroyed sandbox runs nothing');
      t.diagnostic(`destroy took ${ms.toFixed(0)} ms for ${procs.length} host processes`);
    });
  });
}
