/**
 * Tunnels into a real microVM (QEMU; TCG on the development machines): one
 * sandbox serves every case. `python3 -m http.server` runs on the guest's
 * loopback; the guest has no network device, so the tunnel's forward stream
 * over the control channel is the only way to it. The token works once, a
 * tunnel closes at its TTL, when idle and when the sandbox is destroyed (its
 * port stops listening), a closed guest port is a clean 502, and every
 * connection is in the hash-chained audit log. The same ports through the
 * bubblewrap back end (same agent, over stdio) close the file.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, verifyAudit, type AuditEvent } from '../audit/index.js';
import { parseConfig } from '../config/index.js';
import { BubblewrapBackend } from '../sandbox/bubblewrap/index.js';
import { ensureTestImage, testHome } from '../sandbox/image/testing.js';
import { createSandboxManager } from '../sandbox/manager.js';
import { vmFixture, vmSkipReason } from '../sandbox/microvm/testing.js';
import type { SandboxBackend, SandboxInfo, SandboxManager } from '../sandbox/types.js';
import { openStore, type Store } from '../store/index.js';
import { createTunnelManager, type TunnelManager } from './tunnels.js';

const operator = { actor: 'operator:test' };
const GUEST_PORT = 8000;
const PAGE = 'hello from inside the sandbox\n';

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.end();
  });
}

function listening(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  const s = connect(Number(port), hostname);
  return new Promise<boolean>((resolve) => {
    s.on('connect', () => resolve(true));
    s.on('error', () => resolve(false));
  }).finally(() => s.destroy());
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A control plane in miniature: store, audit log, sandbox manager, tunnel manager, one sandbox serving HTTP on its loopback. */
async function rig(backend: SandboxBackend, isolation: 'microvm' | 'bubblewrap') {
  const work = mkdtempSync(join(tmpdir(), `cordon-tunnel-${isolation}-`));
  const store: Store = await openStore({ kind: 'sqlite', path: join(work, 'cordon.db') });
  const audit = await AuditLog.open({ store, keyDir: join(work, 'keys'), checkpointIntervalMs: 60_000 });
  const config = parseConfig(`version: 1\nagents:\n  web:\n    isolation: ${isolation}\n    resources: { vcpus: 1, memoryMiB: 512, timeout: 10m }\n`);
  const manager: SandboxManager = createSandboxManager({ home: testHome(), config, audit, backends: { [isolation]: backend } });
  const tunnels: TunnelManager = createTunnelManager({ sandboxes: manager, audit });
  const sb: SandboxInfo = await manager.create({ agent: 'web', caller: operator });
  const sh = async (command: string) => {
    let out = '';
    const r = await manager.run(sb.id, { argv: ['sh', '-c', command], timeoutMs: 60_000, onStdout: (b) => (out += b), onStderr: (b) => (out += b) }, operator);
    return { exitCode: r.exitCode, out };
  };
  // The server outlives the exec that starts it (its own output goes to a file, so the exec ends at once).
  const started = await sh(`mkdir -p /tmp/www && printf '${PAGE.replace('\n', '\\n')}' > /tmp/www/hello.txt && cd /tmp/www && ` +
    `(python3 -m http.server ${GUEST_PORT} --bind 127.0.0.1 > /tmp/www.log 2>&1 &)`);
  assert.equal(started.exitCode, 0, started.out);
  await waitFor('the guest HTTP server', async () => (await sh(`curl -s --noproxy '*' -o /dev/null -w '%{http_code}' http://127.0.0.1:${GUEST_PORT}/hello.txt`)).out === '200');
  const events = async (match: (e: AuditEvent) => boolean = () => true) => (await audit.query({ limit: 10_000 })).filter((e) => e.type.startsWith('tunnel.') && match(e));
  return {
    manager, tunnels, sb, sh, audit, events,
    verify: () => verifyAudit(store, { keyDir: join(work, 'keys') }),
    async close() {
      await tunnels.stop();
      await manager.close();
      await audit.close();
      await store.close();
      rmSync(work, { recursive: true, force: true });
    },
  };
}

describe('tunnels into a microVM', { skip: vmSkipReason(), timeout: 6 * 60_000 }, () => {
  let r: Awaited<ReturnType<typeof rig>>;

  before(async () => {
    const fx = await vmFixture();
    r = await rig(fx.backend(), 'microvm');
  });
  after(async () => {
    await r?.close();
  });

  test('the token opens the tunnel once: 200 with the guest\'s file, then the session cookie; missing, wrong and reused tokens are refused', async () => {
    const t = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT, ttlMs: 120_000 }, operator);
    assert.match(t.url, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'loopback by default');
    const refusedFirst = await get(t.url + 'hello.txt');
    assert.deepEqual([refusedFirst.status, refusedFirst.headers['x-cordon-error']], [401, 'missing-token']);
    const wrong = await get(t.url + 'hello.txt', { authorization: `Bearer ${'x'.repeat(43)}` });
    assert.deepEqual([wrong.status, wrong.headers['x-cordon-error']], [401, 'bad-token']);
    const ok = await get(t.url + 'hello.txt', { authorization: `Bearer ${t.token}` });
    assert.deepEqual([ok.status, ok.body], [200, PAGE]);
    const cookie = (ok.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
    const again = await get(t.url + 'hello.txt', { cookie });
    assert.deepEqual([again.status, again.body], [200, PAGE]);
    const reused = await get(t.urlWithToken);
    assert.deepEqual([reused.status, reused.headers['x-cordon-error']], [401, 'token-used']);
    await r.tunnels.close(t.id, operator);
    const ev = await r.events((e) => e.data.tunnel === t.id);
    assert.deepEqual(ev.filter((e) => e.type === 'tunnel.refused').map((e) => e.reason), ['missing-token', 'bad-token', 'token-used']);
    assert.ok(ev.every((e) => e.sandbox === r.sb.id && e.agent === 'web'), 'every event names the sandbox and agent');
    assert.equal(ev.at(-1)?.type, 'tunnel.close');
    assert.equal(ev.at(-1)?.reason, 'operator');
    assert.equal(await listening(t.url), false);
  });

  test('every connection is in the audit log: connect and disconnect with bytes, in pairs', async () => {
    const t = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT, ttlMs: 120_000 }, operator);
    const first = await get(t.urlWithToken.replace('/?', '/hello.txt?'));
    assert.equal(first.status, 303);
    assert.equal(first.headers.location, '/hello.txt');
    const cookie = (first.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
    for (let i = 0; i < 3; i++) assert.equal((await get(t.url + 'hello.txt', { cookie })).body, PAGE);
    await r.tunnels.close(t.id, operator);
    const ev = await r.events((e) => e.data.tunnel === t.id);
    const connects = ev.filter((e) => e.type === 'tunnel.connect').map((e) => e.data.connection);
    const disconnects = ev.filter((e) => e.type === 'tunnel.disconnect');
    assert.deepEqual(connects, [1, 2, 3, 4]);
    assert.deepEqual(disconnects.map((e) => e.data.connection).sort(), [1, 2, 3, 4]);
    for (const d of disconnects.slice(1)) assert.ok((d.data.bytesOut as number) > PAGE.length, `bytes out recorded: ${JSON.stringify(d.data)}`);
    const close = ev.find((e) => e.type === 'tunnel.close');
    assert.deepEqual([close?.data.connections, close?.data.requests], [4, 4]);
    const verified = await r.verify();
    assert.equal(verified.ok, true, `the chain with the tunnel events verifies: ${verified.message}`);
  });

  test('a guest port with nothing listening: 502 guest-connection-refused; the sandbox keeps running', async () => {
    const t = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT + 1, ttlMs: 60_000 }, operator);
    const res = await get(t.url, { authorization: `Bearer ${t.token}` });
    assert.equal(res.status, 502);
    assert.equal(res.headers['x-cordon-error'], 'guest-connection-refused');
    assert.match(res.body, /127\.0\.0\.1:8001/);
    assert.equal(r.manager.get(r.sb.id).state, 'running');
    await r.tunnels.close(t.id, operator);
    // The guest's egress listener is not a program of the guest: host traffic there would leave as the sandbox's.
    const proxy = await r.tunnels.open({ sandboxId: r.sb.id, port: 3128, ttlMs: 60_000 }, operator);
    const refused = await get(proxy.url, { authorization: `Bearer ${proxy.token}` });
    assert.equal(refused.status, 502);
    assert.match(refused.body, /egress listener/);
    await r.tunnels.close(proxy.id, operator);
  });

  test('TTL and idle: each closes the tunnel with its reason and the port stops listening', async () => {
    const ttl = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT, ttlMs: 2000 }, operator);
    const idle = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT, ttlMs: 60_000, idleMs: 1500 }, operator);
    assert.equal((await get(idle.url + 'hello.txt', { authorization: `Bearer ${idle.token}` })).status, 200);
    await waitFor('both closes', async () => (await r.events((e) => e.type === 'tunnel.close' && [ttl.id, idle.id].includes(e.data.tunnel as string))).length === 2);
    const closes = await r.events((e) => e.type === 'tunnel.close');
    assert.equal(closes.find((e) => e.data.tunnel === ttl.id)?.reason, 'ttl');
    assert.equal(closes.find((e) => e.data.tunnel === idle.id)?.reason, 'idle');
    assert.equal(await listening(ttl.url), false);
    assert.equal(await listening(idle.url), false);
  });

  test('TCP mode: the first line is the token, then raw bytes to the guest port (one connection)', async () => {
    const t = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT, ttlMs: 60_000, mode: 'tcp' }, operator);
    const [host, port] = t.url.slice('tcp://'.length).split(':');
    const talk = (first: string): Promise<string> => new Promise((resolve) => {
      const s = connect(Number(port), host!);
      let got = '';
      s.on('data', (b: Buffer) => (got += b.toString()));
      s.on('error', () => undefined);
      s.on('close', () => resolve(got));
      s.on('connect', () => s.write(first));
    });
    const answer = await talk(`${t.token}\nGET /hello.txt HTTP/1.0\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.0 200 OK\r\n/);
    assert.ok(answer.endsWith(`\r\n\r\n${PAGE}`), answer);
    assert.equal(await talk(`${t.token}\nGET / HTTP/1.0\r\n\r\n`), 'cordon-tunnel: refused (token-used)\n');
    await r.tunnels.close(t.id, operator);
    const ev = await r.events((e) => e.data.tunnel === t.id);
    const count = (type: string) => ev.filter((e) => e.type === type).length;
    assert.deepEqual(['tunnel.open', 'tunnel.connect', 'tunnel.session', 'tunnel.refused', 'tunnel.disconnect', 'tunnel.close'].map(count), [1, 2, 1, 1, 2, 1]);
    assert.deepEqual([ev[0]?.type, ev.at(-1)?.type], ['tunnel.open', 'tunnel.close']);
    assert.equal(ev.find((e) => e.type === 'tunnel.refused')?.reason, 'token-used');
  });

  test('another bind address only when asked (recorded as exposed)', async () => {
    const t = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT, ttlMs: 60_000, bind: '0.0.0.0' }, operator);
    assert.equal(t.exposed, true);
    assert.match(t.url, /^http:\/\/0\.0\.0\.0:\d+\/$/);
    const res = await get(t.url.replace('0.0.0.0', '127.0.0.1') + 'hello.txt', { authorization: `Bearer ${t.token}` });
    assert.equal(res.body, PAGE);
    const [open] = await r.events((e) => e.type === 'tunnel.open' && e.data.tunnel === t.id);
    assert.deepEqual([open?.data.bind, open?.data.exposed], ['0.0.0.0', true]);
    await r.tunnels.close(t.id, operator);
  });

  test('destroying the sandbox closes its tunnel, held connections included; the port stops listening', async () => {
    const t = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT, ttlMs: 120_000 }, operator);
    assert.equal((await get(t.url + 'hello.txt', { authorization: `Bearer ${t.token}` })).status, 200);
    const held = connect(Number(new URL(t.url).port), '127.0.0.1');
    held.on('error', () => undefined);
    const heldClosed = new Promise((resolve) => held.on('close', resolve));
    await waitFor('the held connection', async () => (await r.events((e) => e.type === 'tunnel.connect' && e.data.tunnel === t.id)).length === 2);
    await r.manager.destroy(r.sb.id, operator);
    await heldClosed;
    await waitFor('the close record', async () => (await r.events((e) => e.type === 'tunnel.close' && e.data.tunnel === t.id)).length === 1);
    const [close] = await r.events((e) => e.type === 'tunnel.close' && e.data.tunnel === t.id);
    assert.equal(close?.reason, 'sandbox-ended');
    assert.equal(await listening(t.url), false);
    assert.deepEqual(r.tunnels.list(), []);
    await assert.rejects(r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT }, operator), /needs a running sandbox|has ended/);
  });
});

describe('tunnels into a bubblewrap sandbox (same agent over stdio)', { skip: process.getuid?.() === 0 ? false : 'the test image needs root (debootstrap)', timeout: 4 * 60_000 }, () => {
  let r: Awaited<ReturnType<typeof rig>> | undefined;
  let unavailable: string | undefined;

  before(async () => {
    await ensureTestImage(testHome());
    const backend = new BubblewrapBackend({ home: testHome() });
    const a = await backend.available();
    if (!a.ok) {
      unavailable = `bubblewrap is not usable here: ${a.reason ?? 'unknown reason'}`;
      return;
    }
    r = await rig(backend, 'bubblewrap');
  });
  after(async () => {
    await r?.close();
  });

  test('fetch through the tunnel with the token; refused without; the sandbox ending closes it', async (t) => {
    if (!r) return t.skip(unavailable);
    const tn = await r.tunnels.open({ sandboxId: r.sb.id, port: GUEST_PORT, ttlMs: 60_000 }, operator);
    assert.equal((await get(tn.url + 'hello.txt')).status, 401);
    const ok = await get(tn.url + 'hello.txt', { authorization: `Bearer ${tn.token}` });
    assert.deepEqual([ok.status, ok.body], [200, PAGE]);
    await r.manager.destroy(r.sb.id, operator);
    await waitFor('the close record', async () => (await r!.events((e) => e.type === 'tunnel.close' && e.data.tunnel === tn.id)).length === 1);
    assert.equal(await listening(tn.url), false);
  });
});
