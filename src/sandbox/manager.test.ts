/**
 * Sandbox manager tests against a stand-in back end: the real guest agent
 * (`guest/build/cordon-agent --stdio`) running on the host, so exec, files and
 * protocol errors are the real protocol, without booting VMs. The audit log is
 * the real one on a temporary SQLite store, wrapped so that writes of chosen
 * event types fail (as a full disk would). The egress cases give each stand-in
 * guest agent its own loopback listener (`--proxy-port`), so a host client
 * plays the guest's curl, and the real egress proxy serves the doors.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer as createHttpServer, request as httpRequest, type Server as HttpServer } from 'node:http';
import { connect as netConnect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { AuditLog, type AuditEvent } from '../audit/index.js';
import { createEgressProxy, type EgressDoor, type EgressProxy } from '../egress/index.js';
import { parseConfig, resolveAgent } from '../config/index.js';
import { createIdentityService, createSandboxKeys, SANDBOX_KEY_PATTERN, type IdentityService, type TokenRefresher } from '../identity/index.js';
import { createSecretsRouter, PLACEHOLDER_PATTERN, resolveAgentSecrets, SecretError } from '../secrets/index.js';
import type { AuditError, InvalidInputError, SandboxError } from '../errors/index.js';
import { openStore, type Store } from '../store/index.js';
import { sleep } from '../util/index.js';
import { createSandboxManager } from './manager.js';
import { GuestChannel, type ExecOptions } from './protocol/index.js';
import type {
  BackendAvailability, BackendContext, BackendExit, BackendSandbox, Isolation, IsolationTier, SandboxBackend, SandboxManager, SandboxSpec,
} from './types.js';

const agentBin = fileURLToPath(new URL('../../guest/build/cordon-agent', import.meta.url));
const skip = existsSync(agentBin) ? false : 'the guest agent is not built (make -C guest/agent)';
const caller = { actor: 'operator:test' };

/** A BackendSandbox whose "guest" is the agent process on the host. */
class HostAgentSandbox implements BackendSandbox {
  readonly channel: GuestChannel;
  readonly pid: number | undefined;
  readonly exited: Promise<BackendExit>;
  readonly startedFrom = 'boot' as const;
  /** Options of every exec the manager sent, before the test maps the user. */
  readonly execs: ExecOptions[] = [];
  readonly destroyReasons: string[] = [];
  readonly #child: ChildProcess;
  readonly #fromGuest = new PassThrough();
  #resolve!: (e: BackendExit) => void;
  #done = false;
  paused = 0;
  resumed = 0;

  /** Where token.set writes: a private file per stand-in guest (never the host's /run). */
  readonly tokenPath = join(mkdtempSync(join(tmpdir(), 'cordon-token-')), 'token');

  constructor(readonly id: string, readonly tier: IsolationTier, readonly proxyPort?: number) {
    const listen = proxyPort === undefined ? [] : ['--proxy-port', String(proxyPort)];
    this.#child = spawn(agentBin, ['--stdio', '--token-path', this.tokenPath, ...listen], { stdio: ['pipe', 'pipe', 'ignore'] });
    this.pid = this.#child.pid;
    this.#child.stdout!.pipe(this.#fromGuest);
    this.channel = new GuestChannel(Duplex.from({ readable: this.#fromGuest, writable: this.#child.stdin! }));
    const realExec = this.channel.exec.bind(this.channel);
    // Record what the manager asked for; run "agent" commands as the host user (the host has no agent account).
    this.channel.exec = (o) => {
      this.execs.push(o);
      return realExec({ ...o, user: o.user === 'agent' ? undefined : o.user });
    };
    this.exited = new Promise((r) => (this.#resolve = r));
    this.channel.on('protocol-error', (err) => void this.#end('protocol-error', err.reason));
  }

  /** Bytes that look as if the guest sent them. */
  inject(bytes: Buffer): void {
    this.#fromGuest.write(bytes);
  }

  async rssKiB(): Promise<number | undefined> {
    return undefined;
  }
  async pause(): Promise<void> {
    this.paused++;
  }
  async resume(): Promise<void> {
    this.resumed++;
  }
  destroy(reason = 'destroyed'): Promise<void> {
    this.destroyReasons.push(reason);
    return this.#end(reason);
  }
  async #end(reason: string, detail?: string): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.channel.close();
    this.#child.kill('SIGKILL');
    rmSync(dirname(this.tokenPath), { recursive: true, force: true });
    this.#resolve(detail === undefined ? { reason } : { reason, detail });
  }
}

class HostAgentBackend implements SandboxBackend {
  availability: BackendAvailability = { ok: true };
  readonly created: SandboxSpec[] = [];
  readonly contexts: BackendContext[] = [];
  readonly sandboxes: HostAgentSandbox[] = [];
  closed = false;
  /** @param listen give each guest agent an egress listener on a free loopback port */
  constructor(readonly isolation: Isolation, readonly tier: IsolationTier, readonly listen = false) {}
  async available(): Promise<BackendAvailability> {
    return this.availability;
  }
  async create(spec: SandboxSpec, ctx: BackendContext): Promise<HostAgentSandbox> {
    this.created.push(spec);
    this.contexts.push(ctx);
    const s = new HostAgentSandbox(spec.id, this.tier, this.listen ? await freePort() : undefined);
    await s.channel.ready;
    this.sandboxes.push(s);
    return s;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A loopback port that was free a moment ago. */
async function freePort(): Promise<number> {
  const srv = createNetServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

const CONFIG = parseConfig(`
version: 1
agents:
  vm: { isolation: microvm, resources: { timeout: 10m, maxOutputBytes: 4096 } }
  dev: { isolation: bubblewrap, env: { GREETING: hello } }
`);

interface Fixture {
  manager: SandboxManager;
  microvm: HostAgentBackend;
  bubblewrap: HostAgentBackend;
  /** Event types whose audit writes fail while listed. */
  failing: Set<string>;
  events(): Promise<AuditEvent[]>;
  home: string;
  close(): Promise<void>;
}

describe('sandbox manager', { skip }, () => {
  let dir: string;
  const fixtures: Fixture[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cordon-manager-'));
  });
  after(async () => {
    for (const f of fixtures) await f.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A manager with two stand-in back ends and its own audit log, on a store whose writes of `failing` types fail. */
  async function fixture(): Promise<Fixture> {
    const home = mkdtempSync(join(dir, 'home-'));
    const store = await openStore({ kind: 'sqlite', path: join(home, 'cordon.db') });
    const failing = new Set<string>();
    const flaky: Store = {
      ...store,
      audit: {
        ...store.audit,
        async insertEvents(rows) {
          const bad = rows.find((r) => failing.has(r.type));
          if (bad) throw new Error(`disk full while writing ${bad.type}`);
          return store.audit.insertEvents(rows);
        },
      },
    };
    const log = await AuditLog.open({ store: flaky, keyDir: join(home, 'keys'), checkpointIntervalMs: 60_000 });
    const microvm = new HostAgentBackend('microvm', 'microvm-tcg');
    const bubblewrap = new HostAgentBackend('bubblewrap', 'bubblewrap');
    const manager = createSandboxManager({ home, config: CONFIG, audit: log, backends: { microvm, bubblewrap } });
    const f: Fixture = {
      manager, microvm, bubblewrap, failing, home,
      events: () => log.query({ limit: 1000 }),
      close: async () => {
        await manager.close();
        await log.close();
        await store.close();
      },
    };
    fixtures.push(f);
    return f;
  }

  const forSandbox = (events: AuditEvent[], id: string) => events.filter((e) => e.sandbox === id);

  test('create picks the back end the agent names, audits create then ready, and gives an sb- id', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'vm', caller });
    assert.match(info.id, /^sb-[a-z2-7]{20}$/);
    assert.deepEqual([info.isolation, info.tier, info.state, info.startedFrom], ['microvm', 'microvm-tcg', 'running', 'boot']);
    assert.equal(f.microvm.created.length, 1);
    assert.equal(f.bubblewrap.created.length, 0);
    assert.equal(Date.parse(info.expiresAt) - Date.parse(info.createdAt), 600_000);
    const types = forSandbox(await f.events(), info.id).map((e) => e.type);
    assert.deepEqual(types, ['sandbox.create', 'sandbox.ready']);
    const ready = forSandbox(await f.events(), info.id)[1]!;
    assert.equal(ready.data.tier, 'microvm-tcg');
    assert.equal(typeof ready.data.startMs, 'number');
    assert.equal(ready.data.startedFrom, 'boot');
    assert.equal(f.microvm.contexts[0]!.runDir, join(f.home, 'run', info.id));
  });

  const unavailable: { name: string; setup: (f: Fixture) => void; agent: string; fix: RegExp }[] = [
    { name: 'the back end reports a missing dependency', agent: 'vm', fix: /apt-get install -y qemu-system-x86/,
      setup: (f) => (f.microvm.availability = { ok: false, reason: 'qemu-system-x86_64 not installed', fix: 'apt-get install -y qemu-system-x86 qemu-utils' }) },
    { name: 'the back end fails its own probe', agent: 'dev', fix: /apt-get install -y bubblewrap/,
      setup: (f) => (f.bubblewrap.availability = { ok: false, reason: 'bwrap cannot create a user namespace', fix: 'apt-get install -y bubblewrap' }) },
  ];
  for (const c of unavailable) {
    test(`isolation unavailable (${c.name}): refused with the fix, never a weaker back end`, async () => {
      const f = await fixture();
      c.setup(f);
      await assert.rejects(f.manager.create({ agent: c.agent, caller }), (err: SandboxError) => {
        assert.equal(err.code, 'sandbox-isolation-unavailable');
        assert.match(err.fix ?? '', c.fix);
        return true;
      });
      assert.equal(f.microvm.created.length + f.bubblewrap.created.length, 0, 'no sandbox was created anywhere');
    });
  }

  test('a deployment without the named back end refuses rather than falling back', async () => {
    const bubblewrap = new HostAgentBackend('bubblewrap', 'bubblewrap');
    const manager = createSandboxManager({ home: dir, config: CONFIG, audit: { append: async () => undefined }, backends: { bubblewrap } });
    await assert.rejects(manager.create({ agent: 'vm', caller }), (err: SandboxError) => {
      assert.equal(err.code, 'sandbox-isolation-unavailable');
      assert.match(err.message, /needs microvm isolation, and this deployment has no microvm back end/);
      assert.match(err.fix ?? '', /qemu-system-x86/);
      return true;
    });
    assert.equal(bubblewrap.created.length, 0);
  });

  test('a lifetime beyond the agent limit is refused', async () => {
    const f = await fixture();
    await assert.rejects(f.manager.create({ agent: 'vm', caller, timeoutMs: 600_001 }), (err: InvalidInputError) => {
      assert.match(err.message, /outside 1\.\.600000 ms/);
      assert.match(err.fix ?? '', /agents\.vm\.resources\.timeout/);
      return true;
    });
  });

  test('run: default user agent, agent env, audited argv/cwd/user then the result', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'dev', caller });
    const out: Buffer[] = [];
    const r = await f.manager.run(info.id, { argv: ['sh', '-c', 'echo "$GREETING $EXTRA"'], env: { EXTRA: 'world' }, cwd: '/', onStdout: (b) => out.push(b) }, caller);
    assert.equal(Buffer.concat(out).toString(), 'hello world\n');
    assert.equal(r.exitCode, 0);
    const sent = f.bubblewrap.sandboxes[0]!.execs[0]!;
    assert.equal(sent.user, 'agent');
    assert.ok((sent.timeoutMs ?? 0) <= 600_000 && (sent.timeoutMs ?? 0) > 590_000, `timeout ${sent.timeoutMs}`);
    const ev = forSandbox(await f.events(), info.id).filter((e) => e.type.startsWith('sandbox.exec'));
    assert.deepEqual(ev.map((e) => e.type), ['sandbox.exec', 'sandbox.exec.result']);
    assert.deepEqual([ev[0]!.data.argv, ev[0]!.data.cwd, ev[0]!.data.user, ev[0]!.data.envNames], [['sh', '-c', 'echo "$GREETING $EXTRA"'], '/', 'agent', ['EXTRA']]);
    assert.equal(ev[0]!.actor, caller.actor);
    assert.deepEqual([ev[1]!.data.exitCode, ev[1]!.data.timedOut, ev[1]!.data.outputTruncated, ev[1]!.data.bytes], [0, false, false, { stdout: 12, stderr: 0 }]);
  });

  test('run: the command timeout is capped by the remaining lifetime', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'vm', caller, timeoutMs: 5_000 });
    await f.manager.run(info.id, { argv: ['true'], timeoutMs: 60_000 }, caller);
    const t = f.microvm.sandboxes[0]!.execs[0]!.timeoutMs ?? 0;
    assert.ok(t <= 5_000 && t > 3_000, `capped to the ${t} ms left`);
  });

  test('run: output is limited to the agent maxOutputBytes, and more is refused', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'vm', caller });
    const r = await f.manager.run(info.id, { argv: ['head', '-c', '100000', '/dev/zero'] }, caller);
    assert.deepEqual([r.stdoutBytes, r.outputTruncated], [4096, true]);
    await assert.rejects(f.manager.run(info.id, { argv: ['true'], maxOutputBytes: 4097 }, caller), /exceeds the agent's limit of 4096/);
  });

  const badRuns: { name: string; opts: Record<string, unknown>; message: RegExp }[] = [
    { name: 'empty argv', opts: { argv: [] }, message: /argv/ },
    { name: 'relative cwd', opts: { argv: ['true'], cwd: 'tmp' }, message: /cwd must be an absolute path/ },
    { name: 'bad user name', opts: { argv: ['true'], user: 'Root;rm' }, message: /user must be a user name/ },
    { name: 'proxy variable', opts: { argv: ['true'], env: { https_proxy: 'http://evil' } }, message: /https_proxy is set by cordon/ },
  ];
  for (const c of badRuns) {
    test(`run refuses ${c.name} before anything is audited or run`, async () => {
      const f = await fixture();
      const info = await f.manager.create({ agent: 'vm', caller });
      await assert.rejects(f.manager.run(info.id, c.opts as never, caller), c.message);
      assert.equal(f.microvm.sandboxes[0]!.execs.length, 0);
      assert.equal(forSandbox(await f.events(), info.id).filter((e) => e.type === 'sandbox.exec').length, 0);
    });
  }

  test('files: write and read are audited with path and bytes', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'vm', caller });
    const path = join(dir, `file-${info.id}`);
    await f.manager.writeFile(info.id, path, Buffer.from('twelve bytes'), { mode: 0o600 }, caller);
    assert.equal(readFileSync(path, 'utf8'), 'twelve bytes');
    const back = await f.manager.readFile(info.id, path, {}, caller);
    assert.equal(back.toString(), 'twelve bytes');
    const ev = forSandbox(await f.events(), info.id).filter((e) => e.type.startsWith('sandbox.file'));
    assert.deepEqual(ev.map((e) => [e.type, e.data.path, e.data.bytes]), [['sandbox.file.write', path, 12], ['sandbox.file.read', path, 12]]);
  });

  const refusals: { name: string; type: string; act: (f: Fixture, id: string, marker: string) => Promise<unknown>; check: (f: Fixture, marker: string) => void }[] = [
    { name: 'create', type: 'sandbox.create', act: (f) => f.manager.create({ agent: 'vm', caller }),
      check: (f) => assert.equal(f.microvm.created.length, 1, 'only the fixture sandbox was created') },
    { name: 'exec', type: 'sandbox.exec', act: (f, id, marker) => f.manager.run(id, { argv: ['touch', marker] }, caller),
      check: (_f, marker) => assert.equal(existsSync(marker), false, 'the command did not run') },
    { name: 'file write', type: 'sandbox.file.write', act: (f, id, marker) => f.manager.writeFile(id, marker, Buffer.from('x'), {}, caller),
      check: (_f, marker) => assert.equal(existsSync(marker), false, 'the file was not written') },
    { name: 'file read', type: 'sandbox.file.read', act: (f, id) => f.manager.readFile(id, agentBin, {}, caller),
      check: () => undefined },
    { name: 'pause', type: 'sandbox.pause', act: (f, id) => f.manager.pause(id, caller),
      check: (f) => assert.equal(f.microvm.sandboxes[0]!.paused, 0, 'the back end was not paused') },
  ];
  for (const c of refusals) {
    test(`an audit write failure refuses the ${c.name}`, async () => {
      const f = await fixture();
      const info = await f.manager.create({ agent: 'vm', caller });
      const marker = join(dir, `marker-${info.id}`);
      f.failing.add(c.type);
      await assert.rejects(c.act(f, info.id, marker), (err: AuditError) => {
        assert.equal(err.code, 'audit-write-failed');
        return true;
      });
      f.failing.clear();
      c.check(f, marker);
      assert.equal(f.manager.get(info.id).state, 'running', 'the sandbox itself is untouched');
    });
  }

  test('a failed ready audit destroys the new sandbox', async () => {
    const f = await fixture();
    f.failing.add('sandbox.ready');
    await assert.rejects(f.manager.create({ agent: 'vm', caller }), /audit-write-failed|disk full/);
    f.failing.clear();
    const s = f.microvm.sandboxes[0]!;
    assert.deepEqual(s.destroyReasons, ['audit-failed']);
    assert.deepEqual(f.manager.list(), []);
  });

  test('pause and resume are audited; a paused sandbox runs nothing', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'vm', caller });
    assert.equal((await f.manager.pause(info.id, caller)).state, 'paused');
    await assert.rejects(f.manager.run(info.id, { argv: ['true'] }, caller), (err: SandboxError) => err.code === 'sandbox-paused');
    assert.equal((await f.manager.resume(info.id, caller)).state, 'running');
    const s = f.microvm.sandboxes[0]!;
    assert.deepEqual([s.paused, s.resumed], [1, 1]);
    const types = forSandbox(await f.events(), info.id).map((e) => e.type);
    assert.deepEqual(types.slice(2), ['sandbox.pause', 'sandbox.resume']);
  });

  test('the wall-clock lifetime destroys the sandbox with reason timeout', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'vm', caller, timeoutMs: 1_000 });
    await sleep(1_400);
    const after = f.manager.get(info.id);
    assert.deepEqual([after.state, after.endReason], ['destroyed', 'timeout']);
    assert.deepEqual(f.microvm.sandboxes[0]!.destroyReasons, ['timeout']);
    const destroy = forSandbox(await f.events(), info.id).find((e) => e.type === 'sandbox.destroy');
    assert.deepEqual([destroy?.reason, destroy?.actor], ['timeout', 'system']);
    assert.equal(existsSync(join(f.home, 'run', info.id)), false, 'run directory removed');
    await assert.rejects(f.manager.run(info.id, { argv: ['true'] }, caller), /has ended \(timeout\)/);
  });

  test('a guest protocol error destroys only that sandbox, audited', async () => {
    const f = await fixture();
    const bad = await f.manager.create({ agent: 'vm', caller });
    const good = await f.manager.create({ agent: 'vm', caller });
    const header = Buffer.alloc(9);
    header.writeUInt32BE(0xffff_ffff, 0); // a length field far beyond the frame limit
    f.microvm.sandboxes[0]!.inject(header);
    await f.microvm.sandboxes[0]!.exited;
    await sleep(50);
    assert.deepEqual([f.manager.get(bad.id).state, f.manager.get(bad.id).endReason], ['destroyed', 'protocol-error']);
    const ev = forSandbox(await f.events(), bad.id);
    assert.deepEqual(ev.slice(-2).map((e) => [e.type, e.reason]), [['sandbox.protocol-error', 'frame-too-large'], ['sandbox.destroy', 'protocol-error']]);
    const r = await f.manager.run(good.id, { argv: ['true'] }, caller);
    assert.equal(r.exitCode, 0, 'the other sandbox still works');
  });

  test('destroy is audited before it happens, idempotent, and close destroys the rest and closes back ends', async () => {
    const f = await fixture();
    const a = await f.manager.create({ agent: 'vm', caller });
    const b = await f.manager.create({ agent: 'dev', caller });
    await f.manager.destroy(a.id, caller, 'done');
    await f.manager.destroy(a.id, caller, 'again');
    assert.deepEqual(f.microvm.sandboxes[0]!.destroyReasons, ['done']);
    assert.deepEqual(f.manager.list().map((s) => s.id), [b.id]);
    await f.manager.close();
    assert.equal(f.manager.get(b.id).endReason, 'shutdown');
    assert.deepEqual([f.microvm.closed, f.bubblewrap.closed], [true, true]);
    await assert.rejects(f.manager.create({ agent: 'vm', caller }), (err: SandboxError) => err.code === 'sandbox-closed');
    const destroys = (await f.events()).filter((e) => e.type === 'sandbox.destroy' && (e.sandbox === a.id || e.sandbox === b.id));
    assert.deepEqual(destroys.map((e) => [e.sandbox, e.reason]), [[a.id, 'done'], [b.id, 'shutdown']]);
  });

  test('prewarm hands each agent shape to back ends that can warm, once per shape', async () => {
    const warmed: unknown[] = [];
    const microvm = Object.assign(new HostAgentBackend('microvm', 'microvm-tcg'), { warm: async (shape: unknown) => void warmed.push(shape) });
    const config = parseConfig(`
version: 1
agents:
  a: { isolation: microvm, resources: { memoryMiB: 256 } }
  b: { isolation: microvm, resources: { memoryMiB: 256 } }
  c: { isolation: microvm, resources: { memoryMiB: 1024, vcpus: 2 } }
  d: { isolation: bubblewrap }
`);
    const manager = createSandboxManager({ home: dir, config, audit: { append: async () => undefined }, backends: { microvm }, prewarm: true });
    for (let i = 0; i < 50 && warmed.length < 3; i++) await sleep(10);
    assert.deepEqual(warmed, [
      { vcpus: 1, memoryMiB: 256, diskMiB: 2048 },
      { vcpus: 2, memoryMiB: 1024, diskMiB: 2048 },
      { vcpus: 1, memoryMiB: 512, diskMiB: 2048 },
    ], 'a and b share a shape; the built-in default agent is a microvm agent too');
    await manager.close();
  });

  test('unknown ids are NotFound; an unknown agent names the known ones', async () => {
    const f = await fixture();
    assert.throws(() => f.manager.get('sb-aaaaaaaaaaaaaaaaaaaa'), /no sandbox sb-aaaaaaaaaaaaaaaaaaaa/);
    await assert.rejects(f.manager.create({ agent: 'vn', caller }), /no agent named "vn" \(did you mean "vm"\?\)/);
  });
});

describe('sandbox manager: egress through the sandbox\'s own door', { skip }, () => {
  let dir: string;
  let upstream: HttpServer;
  let upstreamPort: number;
  const proxies: EgressProxy[] = [];
  const managers: SandboxManager[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordon-manager-egress-'));
    upstream = createHttpServer((req, res) => res.end(`upstream saw ${req.method} ${req.url}`));
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    upstreamPort = (upstream.address() as AddressInfo).port;
  });
  after(async () => {
    for (const m of managers) await m.close();
    for (const p of proxies) await p.close();
    upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A manager whose stand-in guests listen like a VM's agent. `net` may reach
   * allowed.test (mapped to 127.0.0.1) on the upstream's port; `closed` has no
   * egress rules. The proxy is passed without a CA: the stand-in guest is the
   * host, whose trust store must not be touched.
   */
  async function egressFixture(o: { proxy: boolean; limits?: { maxConnections: number }; caCertPem?: string }) {
    const home = mkdtempSync(join(dir, 'home-'));
    const store = await openStore({ kind: 'sqlite', path: join(home, 'cordon.db') });
    const log = await AuditLog.open({ store, keyDir: join(home, 'keys'), checkpointIntervalMs: 60_000 });
    const config = parseConfig(`
version: 1
agents:
  net: { isolation: microvm, egress: [ { host: allowed.test, ports: [${upstreamPort}] }, { cidr: 127.0.0.1/32, ports: [${upstreamPort}] } ] }
  closed: { isolation: microvm }
  crawler:
    isolation: microvm
    egress: [ { host: allowed.test, ports: [${upstreamPort}] }, { cidr: 127.0.0.1/32, ports: [${upstreamPort}] } ]
    egressLimits: { maxRequestsPerSecond: 0.001, requestBurst: 2 }
`);
    const proxy = createEgressProxy({ lookup: async (h) => (h === 'allowed.test' ? [{ address: '127.0.0.1', family: 4 }] : []), ...(o.limits ? { limits: o.limits } : {}) });
    proxies.push(proxy);
    const doors: { sandboxId: string; door: EgressDoor; closed: boolean }[] = [];
    const egress = {
      ...(o.caCertPem ? { caCertPem: o.caCertPem } : {}),
      openDoor: (opts: Parameters<EgressProxy['openDoor']>[0]) => {
        const door = proxy.openDoor(opts);
        const d = { sandboxId: opts.sandboxId, door, closed: false };
        doors.push(d);
        const close = door.close.bind(door);
        door.close = async () => {
          d.closed = true;
          await close();
        };
        return door;
      },
    };
    const microvm = new HostAgentBackend('microvm', 'microvm-tcg', true);
    const failing = new Set<string>();
    const audit = { append: (e: Parameters<AuditLog['append']>[0]) => (failing.has(e.type) ? Promise.reject(new Error(`disk full while writing ${e.type}`)) : log.append(e)) };
    const manager = createSandboxManager({ home, config, audit, backends: { microvm }, ...(o.proxy ? { egress } : {}) });
    managers.push(manager);
    after(async () => {
      await manager.close();
      await log.close();
      await store.close();
    });
    const guestPort = (id: string) => microvm.sandboxes.find((s) => s.id === id)!.proxyPort!;
    return { manager, microvm, doors, log, guestPort, failing, config };
  }

  /** What a guest's curl does with http_proxy set: an absolute-URI request to the listener. */
  function viaGuestListener(port: number, url: string): Promise<{ status: number; error?: string; headers: Record<string, unknown>; body: string }> {
    return new Promise((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: url, headers: { host: new URL(url).host }, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')));
      req.on('error', (err: NodeJS.ErrnoException) => resolve({ status: 0, error: err.code ?? err.message, headers: {}, body: '' }));
      req.end();
    });
  }

  async function egressEvents(log: AuditLog, sandbox: string): Promise<AuditEvent[]> {
    for (let i = 0; i < 100; i++) {
      const ev = (await log.query({ limit: 1000 })).filter((e) => e.type === 'egress.request' && e.sandbox === sandbox);
      if (ev.length > 0) return ev;
      await sleep(20);
    }
    return [];
  }

  test('a guest connection reaches its own sandbox\'s door: allowed and denied requests are attributed by channel', async () => {
    const f = await egressFixture({ proxy: true });
    const open = await f.manager.create({ agent: 'net', caller });
    const shut = await f.manager.create({ agent: 'closed', caller });
    const url = `http://allowed.test:${upstreamPort}/hello`;

    const ok = await viaGuestListener(f.guestPort(open.id), url);
    assert.deepEqual([ok.status, ok.body], [200, 'upstream saw GET /hello']);
    const denied = await viaGuestListener(f.guestPort(shut.id), url);
    assert.equal(denied.status, 403);
    assert.equal(denied.headers['x-cordon-error'], 'host-not-allowed');

    const [allowEv] = await egressEvents(f.log, open.id);
    assert.deepEqual([allowEv?.decision, allowEv?.agent, allowEv?.data.host, allowEv?.data.port], ['allow', 'net', 'allowed.test', upstreamPort]);
    const [denyEv] = await egressEvents(f.log, shut.id);
    assert.deepEqual([denyEv?.decision, denyEv?.reason, denyEv?.agent], ['deny', 'host-not-allowed', 'closed']);
    assert.deepEqual(f.doors.map((d) => d.sandboxId), [open.id, shut.id], 'one door per sandbox');
    const ready = (await f.log.query({ limit: 1000 })).find((e) => e.type === 'sandbox.ready' && e.sandbox === open.id);
    assert.deepEqual(ready?.data.egress, { door: true, proxyPort: f.guestPort(open.id), ca: null });
  });

  test('cordon.yaml agents.<name>.egressLimits reach that agent\'s doors: the crawler\'s 3rd request gets 429 request-rate-limit, the net agent\'s do not', async () => {
    const f = await egressFixture({ proxy: true });
    const crawler = await f.manager.create({ agent: 'crawler', caller });
    const net = await f.manager.create({ agent: 'net', caller });
    const url = `http://allowed.test:${upstreamPort}/page`;
    const answers = async (id: string) => {
      const out: string[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await viaGuestListener(f.guestPort(id), url);
        out.push(`${r.status} ${String(r.headers['x-cordon-error'] ?? '-')}`);
      }
      return out;
    };
    assert.deepEqual(await answers(crawler.id), ['200 -', '200 -', '429 request-rate-limit', '429 request-rate-limit'], 'the crawler\'s burst of 2, from its own egressLimits');
    assert.deepEqual(await answers(net.id), ['200 -', '200 -', '200 -', '200 -'], 'the net agent keeps the deployment\'s limits (the defaults here)');
    const refused = (await egressEvents(f.log, crawler.id)).find((e) => e.reason === 'request-rate-limit');
    assert.deepEqual([refused?.decision, refused?.agent], ['deny', 'crawler']);
  });

  test('an agent whose egressLimits the door refuses gets no sandbox: create fails, the sandbox is destroyed, no door was opened', async () => {
    const f = await egressFixture({ proxy: true });
    // Past the config loader (a config built in code): the door still checks the override and opens nothing.
    Object.assign(f.config.agents.crawler!, { egressLimits: { maxConnections: 0 } });
    await assert.rejects(f.manager.create({ agent: 'crawler', caller }), (err: unknown) => {
      assert.equal((err as InvalidInputError).name, 'InvalidInputError');
      assert.match((err as Error).message, /agents\.crawler\.egressLimits\.maxConnections/);
      return true;
    });
    const [s] = f.microvm.sandboxes;
    assert.deepEqual(s?.destroyReasons, ['setup-failed']);
    assert.deepEqual([f.manager.get(s!.id).state, f.manager.get(s!.id).endReason], ['destroyed', 'setup-failed']);
    assert.equal(f.doors.length, 0, 'no door');
  });

  test('commands get the proxy variables; the agent cannot override them', async () => {
    const f = await egressFixture({ proxy: true });
    const info = await f.manager.create({ agent: 'net', caller });
    const out: Buffer[] = [];
    await f.manager.run(info.id, { argv: ['sh', '-c', 'printf "%s|%s|%s|%s|%s|%s" "$HTTP_PROXY" "$HTTPS_PROXY" "$http_proxy" "$https_proxy" "$NO_PROXY" "$no_proxy"'], onStdout: (b) => out.push(b) }, caller);
    const url = 'http://127.0.0.1:3128';
    assert.equal(Buffer.concat(out).toString(), [url, url, url, url, 'localhost,127.0.0.1,::1', 'localhost,127.0.0.1,::1'].join('|'));
    await assert.rejects(f.manager.run(info.id, { argv: ['true'], env: { NO_PROXY: '*' } }, caller), /NO_PROXY is set by cordon/);
  });

  const endings: { name: string; reason: string; end: (f: Awaited<ReturnType<typeof egressFixture>>, id: string) => Promise<unknown> }[] = [
    { name: 'destroy', reason: 'requested', end: (f, id) => f.manager.destroy(id, caller) },
    { name: 'lifetime timeout', reason: 'timeout', end: () => sleep(1_300) },
    { name: 'guest protocol error', reason: 'protocol-error', end: async (f) => {
      const header = Buffer.alloc(9);
      header.writeUInt32BE(0xffff_ffff, 0);
      f.microvm.sandboxes[0]!.inject(header);
      await f.microvm.sandboxes[0]!.exited;
    } },
    { name: 'the back end ends it (VMM exit)', reason: 'vmm-exited', end: async (f) => f.microvm.sandboxes[0]!.destroy('vmm-exited') },
  ];
  for (const c of endings) {
    test(`the door closes when the sandbox ends: ${c.name}`, async () => {
      const f = await egressFixture({ proxy: true });
      const info = await f.manager.create({ agent: 'net', caller, timeoutMs: c.reason === 'timeout' ? 1_000 : 60_000 });
      assert.equal((await viaGuestListener(f.guestPort(info.id), `http://allowed.test:${upstreamPort}/`)).status, 200);
      await c.end(f, info.id);
      for (let i = 0; i < 100 && f.manager.get(info.id).state !== 'destroyed'; i++) await sleep(20);
      assert.deepEqual([f.manager.get(info.id).state, f.manager.get(info.id).endReason], ['destroyed', c.reason]);
      assert.deepEqual(f.doors.map((d) => [d.sandboxId, d.closed]), [[info.id, true]]);
      for (let i = 0; i < 50 && f.doors[0]!.door.activeConnections > 0; i++) await sleep(10);
      assert.equal(f.doors[0]!.door.activeConnections, 0, 'the door\'s connections are gone');
    });
  }

  test('a guest that resets connections the door refuses (over its connection cap) cannot take the daemon down', async () => {
    const f = await egressFixture({ proxy: true, limits: { maxConnections: 2 } });
    const info = await f.manager.create({ agent: 'net', caller });
    const port = f.guestPort(info.id);
    const held = await Promise.all([0, 1].map(async () => {
      const s = netConnect({ port, host: '127.0.0.1' });
      await once(s, 'connect');
      s.write('GET http://allowed.test/ HTTP/1.1\r\n'); // an unfinished head keeps the slot taken
      return s;
    }));
    await sleep(200);
    for (let i = 0; i < 20; i++) {
      const s = netConnect({ port, host: '127.0.0.1' });
      s.on('error', () => undefined);
      await once(s, 'connect');
      s.resetAndDestroy();
    }
    await sleep(500);
    for (const s of held) s.destroy();
    await sleep(200);
    const r = await viaGuestListener(port, `http://allowed.test:${upstreamPort}/after`);
    assert.deepEqual([r.status, r.body], [200, 'upstream saw GET /after']);
    assert.equal(f.manager.get(info.id).state, 'running');
  });

  test('an audit failure while the CA is installed refuses the sandbox: destroyed, door closed', async () => {
    // The stand-in guest is the host: every setup event fails, so no write (audited first) can reach the host's trust store.
    const f = await egressFixture({ proxy: true, caCertPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' });
    f.failing.add('sandbox.setup');
    await assert.rejects(f.manager.create({ agent: 'net', caller }), /disk full while writing sandbox\.setup/);
    const [s] = f.microvm.sandboxes;
    assert.deepEqual(s?.destroyReasons, ['setup-failed']);
    assert.deepEqual(f.doors.map((d) => [d.sandboxId, d.closed]), [[s!.id, true]]);
    assert.deepEqual([f.manager.get(s!.id).state, f.manager.get(s!.id).endReason], ['destroyed', 'setup-failed']);
  });

  test('without an egress proxy, guest connections are refused at once (fail closed)', async () => {
    const f = await egressFixture({ proxy: false });
    const info = await f.manager.create({ agent: 'net', caller });
    const started = performance.now();
    const r = await viaGuestListener(f.guestPort(info.id), `http://allowed.test:${upstreamPort}/`);
    assert.equal(r.status, 0, 'no response at all');
    assert.match(r.error ?? '', /ECONNRESET|socket hang up/);
    assert.ok(performance.now() - started < 3_000, 'closed at once, not left to time out');
    const ready = (await f.log.query({ limit: 1000 })).find((e) => e.type === 'sandbox.ready' && e.sandbox === info.id);
    assert.deepEqual(ready?.data.egress, { door: false, proxyPort: f.guestPort(info.id) });
    assert.equal(f.doors.length, 0);
  });
});

describe('sandbox manager: identity, secrets and service keys', { skip }, () => {
  const REAL = 'demo-REAL-value-0123456789abcdef';
  let dir: string;
  let upstream: HttpServer;
  let upstreamPort: number;
  /** Authorization headers the upstream received. */
  const received: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cordon-manager-secrets-'));
    upstream = createHttpServer((req, res) => {
      received.push(String(req.headers.authorization ?? ''));
      res.end('ok');
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    upstreamPort = (upstream.address() as AddressInfo).port;
  });
  after(() => {
    upstream.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function fixture(o: { identity?: Pick<IdentityService, 'startRefresh' | 'revoke'>; env?: NodeJS.ProcessEnv; secretsLayer?: boolean } = {}) {
    const home = mkdtempSync(join(dir, 'home-'));
    const store = await openStore({ kind: 'sqlite', path: join(home, 'cordon.db') });
    const log = await AuditLog.open({ store, keyDir: join(home, 'keys'), checkpointIntervalMs: 60_000 });
    const config = parseConfig(`
version: 1
agents:
  holder:
    isolation: microvm
    env: { DEMO_TOKEN: "{{secret.demo}}", PLAIN: hello }
    egress:
      - { host: api.test, ports: [${upstreamPort}], secrets: { authorization: "Bearer {{secret.demo}}" } }
      - { host: other.test, ports: [${upstreamPort}] }
      - { cidr: 127.0.0.1/32, ports: [${upstreamPort}] }
  plain: { isolation: microvm, env: { PLAIN: hello } }
secrets:
  demo: { from: env, name: DEMO }
`);
    const router = createSecretsRouter();
    const proxy = createEgressProxy({
      lookup: async (h) => (['api.test', 'other.test'].includes(h) ? [{ address: '127.0.0.1', family: 4 }] : []),
      requestHook: router.requestHook, connectHook: router.connectHook, auditScrub: router.scrubAudit,
    });
    const identity = o.identity ?? createIdentityService({ home, trustDomain: 'test.local', audiences: ['llm.cordon.internal'] });
    const keys = createSandboxKeys();
    const microvm = new HostAgentBackend('microvm', 'microvm-tcg', true);
    const manager = createSandboxManager({
      home, config, audit: log, backends: { microvm }, egress: proxy, identity, serviceKeys: keys,
      ...(o.secretsLayer === false ? {} : {
        secrets: { resolve: (agent: string) => resolveAgentSecrets(config, agent, { home, env: o.env ?? { DEMO: REAL } }), router },
      }),
    });
    after(async () => {
      await manager.close();
      await proxy.close();
      await log.close();
      await store.close();
    });
    const guest = (id: string) => microvm.sandboxes.find((s) => s.id === id)!;
    const run = async (id: string, argv: string[]) => {
      const out: Buffer[] = [];
      await manager.run(id, { argv, onStdout: (b) => out.push(b) }, caller);
      return Buffer.concat(out).toString();
    };
    return { manager, microvm, log, identity, keys, router, guest, run, config };
  }

  function viaGuest(port: number, url: string, headers: Record<string, string> = {}): Promise<{ status: number; reason: string }> {
    return new Promise((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: url, headers: { host: new URL(url).host, ...headers }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: String(res.headers['x-cordon-error'] ?? '') }));
      });
      req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')));
      req.on('error', (err) => resolve({ status: 0, reason: err.message }));
      req.end();
    });
  }

  test('a token is audited (never its text), delivered before the sandbox is handed out, bound to its channel, revoked at the end', async () => {
    const f = await fixture();
    const ids = f.identity as IdentityService;
    const info = await f.manager.create({ agent: 'plain', caller });
    const token = readFileSync(f.guest(info.id).tokenPath, 'utf8');
    const ok = await ids.verify(token, { audience: 'llm.cordon.internal', channelSandboxId: info.id });
    assert.equal(ok.ok, true, JSON.stringify(ok));
    const other = await ids.verify(token, { audience: 'llm.cordon.internal', channelSandboxId: 'sb-aaaaaaaaaaaaaaaaaaaa' });
    assert.deepEqual(other.ok ? 'ok' : other.reason, 'wrong-channel');
    const events = (await f.log.query({ limit: 1000 })).filter((e) => e.sandbox === info.id);
    const types = events.map((e) => e.type);
    assert.ok(types.indexOf('sandbox.token') < types.indexOf('sandbox.ready'), types.join(','));
    const tokenEvent = events.find((e) => e.type === 'sandbox.token')!;
    assert.deepEqual(Object.keys(tokenEvent.data).sort(), ['expiresAt', 'jti', 'kid', 'spiffeId']);
    assert.equal(tokenEvent.data.spiffeId, `spiffe://test.local/agent/plain/sandbox/${info.id}`);
    assert.ok(!JSON.stringify(events).includes(token), 'the token itself is in no audit event');
    await f.manager.destroy(info.id, caller);
    const after = await ids.verify(token, { audience: 'llm.cordon.internal', channelSandboxId: info.id });
    assert.deepEqual(after.ok ? 'ok' : after.reason, 'revoked');
  });

  test('no first token: the sandbox is destroyed (setup-failed) and its identity revoked', async () => {
    const revoked: string[] = [];
    const identity = {
      startRefresh: () => {
        const first = Promise.reject(new Error('the signing key is unreadable'));
        first.catch(() => undefined);
        return { first, sandboxId: 'x', current: () => undefined, stop: () => undefined, stopped: false } as unknown as TokenRefresher;
      },
      revoke: (id: string) => void revoked.push(id),
    };
    const f = await fixture({ identity });
    await assert.rejects(f.manager.create({ agent: 'plain', caller }), /signing key is unreadable/);
    const id = f.microvm.created[0]!.id;
    assert.deepEqual(f.manager.get(id).endReason, 'setup-failed');
    assert.deepEqual(revoked, [id]);
    assert.deepEqual(f.microvm.sandboxes[0]!.destroyReasons, ['setup-failed']);
  });

  test('secrets: the guest sees only placeholders; the bound host gets the real value; elsewhere it is refused and audited by name', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'holder', caller });
    const env = await f.run(info.id, ['env']);
    const placeholder = /^DEMO_TOKEN=(.*)$/m.exec(env)?.[1] ?? '';
    assert.match(placeholder, PLACEHOLDER_PATTERN);
    assert.ok(!env.includes(REAL), 'the real value is not in the guest env');
    assert.match(env, /^PLAIN=hello$/m);
    assert.match(/^OPENAI_API_KEY=(.*)$/m.exec(env)?.[1] ?? '', SANDBOX_KEY_PATTERN);
    assert.match(env, /^OPENAI_BASE_URL=http:\/\/llm\.cordon\.internal\/v1$/m);
    const port = f.guest(info.id).proxyPort!;
    received.length = 0;
    const bound = await viaGuest(port, `http://api.test:${upstreamPort}/`, { authorization: `Bearer ${placeholder}` });
    assert.equal(bound.status, 200);
    assert.deepEqual(received, [`Bearer ${REAL}`], 'the upstream got the real value in place of the placeholder');
    const cases: Array<{ name: string; url: string; headers: Record<string, string>; kind: string }> = [
      { name: 'placeholder to another allowed host', url: `http://other.test:${upstreamPort}/`, headers: { authorization: `Bearer ${placeholder}` }, kind: 'placeholder-wrong-host' },
      { name: 'real value raw in the query', url: `http://other.test:${upstreamPort}/?q=${REAL}`, headers: {}, kind: 'secret-value' },
      { name: 'real value base64 in a header', url: `http://other.test:${upstreamPort}/`, headers: { 'x-data': Buffer.from(REAL).toString('base64') }, kind: 'secret-value' },
    ];
    received.length = 0;
    for (const c of cases) {
      const r = await viaGuest(port, c.url, c.headers);
      assert.deepEqual([r.status, r.reason], [403, 'secret-exfiltration'], c.name);
    }
    assert.deepEqual(received, [], 'no refused request reached the upstream');
    const events = (await f.log.query({ limit: 1000 })).filter((e) => e.sandbox === info.id);
    const exf = events.filter((e) => e.type === 'egress.exfiltration');
    assert.deepEqual(exf.map((e) => [e.data.secret, e.data.kind, e.data.host]), cases.map((c) => ['demo', c.kind, 'other.test']));
    assert.ok(!JSON.stringify(events).includes(REAL), 'the real value is in no audit event');
    assert.ok(!JSON.stringify(events).includes(Buffer.from(REAL).toString('base64')), 'nor its base64');
    const create = events.find((e) => e.type === 'sandbox.create')!;
    assert.deepEqual(create.data.secrets, ['demo']);
  });

  test('secrets: a flood of exfiltration attempts is refused each time; past 50 the events are counted, none lost', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'holder', caller });
    const placeholder = /^DEMO_TOKEN=(.*)$/m.exec(await f.run(info.id, ['env']))?.[1] ?? '';
    const port = f.guest(info.id).proxyPort!;
    const attempts = 120;
    for (let i = 0; i < attempts; i++) {
      const r = await viaGuest(port, `http://other.test:${upstreamPort}/`, { authorization: `Bearer ${placeholder}` });
      assert.deepEqual([r.status, r.reason], [403, 'secret-exfiltration'], `attempt ${i}`);
    }
    await f.manager.destroy(info.id, caller); // writes what is still counted
    let exf: AuditEvent[] = [];
    for (let i = 0; i < 100; i++) {
      exf = (await f.log.query({ limit: 5000 })).filter((e) => e.sandbox === info.id && e.type === 'egress.exfiltration');
      if (exf.reduce((n, e) => n + (e.data.summarised === true ? (e.data.count as number) : 1), 0) >= attempts) break;
      await sleep(20);
    }
    const single = exf.filter((e) => e.data.summarised !== true);
    const summaries = exf.filter((e) => e.data.summarised === true);
    assert.ok(single.length >= 50 && single.length < 60, `about the burst one by one (${single.length})`);
    assert.ok(summaries.length >= 1, 'the rest in summaries');
    assert.equal(single.length + summaries.reduce((n, e) => n + (e.data.count as number), 0), attempts, 'every attempt is on record');
    for (const s of summaries) {
      assert.deepEqual(s.data.bySecret, { demo: { 'placeholder-wrong-host': s.data.count } });
      assert.deepEqual(s.data.hosts, ['other.test']);
      assert.equal(s.reason, 'secret-exfiltration');
    }
  });

  test('secrets: the sandbox\'s hook is removed when it ends', async () => {
    const f = await fixture();
    const info = await f.manager.create({ agent: 'holder', caller });
    assert.equal(f.router.size, 1);
    await f.manager.destroy(info.id, caller);
    assert.equal(f.router.size, 0);
  });

  const unresolved = [
    { name: 'a secret missing from the env source', env: {}, problem: /DEMO/ },
    { name: 'a secret too short to be a credential', env: { DEMO: 'x' }, problem: /short|at least|bytes/ },
  ];
  for (const c of unresolved) {
    test(`create fails before anything boots: ${c.name}`, async () => {
      const f = await fixture({ env: c.env });
      await assert.rejects(f.manager.create({ agent: 'holder', caller }), (e: unknown) => {
        assert.ok(e instanceof SecretError && e.code === 'secret-unresolved', String(e));
        assert.deepEqual(e.problems.map((p) => p.secret), ['demo']);
        assert.match(e.describe(), c.problem);
        return true;
      });
      assert.equal(f.microvm.created.length, 0, 'no back end was asked to start');
      const ev = await f.log.query({ limit: 1000 });
      assert.deepEqual(ev.filter((e) => e.type.startsWith('sandbox.')).map((e) => [e.type, e.reason ?? null]), [['sandbox.create', null], ['sandbox.destroy', 'create-failed']]);
    });
  }

  test('an agent with secrets cannot start where there is no secrets layer (never blank)', async () => {
    const f = await fixture({ secretsLayer: false });
    await assert.rejects(f.manager.create({ agent: 'holder', caller }), (e: unknown) => e instanceof SecretError && e.code === 'secret-unresolved');
    assert.equal(f.microvm.created.length, 0);
    const plain = await f.manager.create({ agent: 'plain', caller });
    assert.equal(plain.state, 'running', 'agents without secrets still start');
  });

  test('the service key works on its own channel only, and not after the sandbox ends', async () => {
    const f = await fixture();
    const a = await f.manager.create({ agent: 'plain', caller });
    const b = await f.manager.create({ agent: 'plain', caller });
    const keyOf = async (id: string) => /^OPENAI_API_KEY=(.*)$/m.exec(await f.run(id, ['env']))?.[1] ?? '';
    const ka = await keyOf(a.id);
    assert.deepEqual(f.keys.check(ka, a.id), { ok: true, sandboxId: a.id });
    assert.deepEqual(f.keys.check(ka, b.id), { ok: false, reason: 'wrong-channel' });
    await f.manager.destroy(a.id, caller);
    assert.deepEqual(f.keys.check(ka, a.id), { ok: false, reason: 'unknown-key' });
    assert.equal(resolveAgent(f.config, 'plain').env.PLAIN, 'hello');
  });
});
