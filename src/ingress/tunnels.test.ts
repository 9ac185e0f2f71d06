/**
 * The tunnel manager against a sandbox manager stand-in whose guest port is a
 * plain HTTP server on the host's loopback: authentication (token once, the
 * session after, every wrong form refused and audited with its reason), the
 * audit trail of every connection, audit failures refusing, and each way a
 * tunnel closes (TTL, idle, sandbox end, operator, stop) leaving nothing
 * listening; then the tunnel limits under concurrent opens, and every way an
 * open can fail giving its slot back. The same behaviour through a real
 * microVM is in tunnel-vm.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { Server as NetServer, connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import type { AuditEventInput } from '../audit/index.js';
import { LimitError, NotFoundError } from '../errors/index.js';
import type { SandboxInfo } from '../sandbox/index.js';
import { cookieName } from './token.js';
import { createTunnelManager, type TunnelManager, type TunnelSandboxes } from './tunnels.js';

const SB = 'sb-aaaaaaaaaaaaaaaaaaaa';
const operator = { actor: 'operator:test' };

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection. */
function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Whether anything accepts TCP connections at this URL's port. */
async function listening(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  const s = connect(Number(port), hostname.replace(/^\[|\]$/g, ''));
  const r = await new Promise<boolean>((resolve) => {
    s.on('connect', () => resolve(true));
    s.on('error', () => resolve(false));
  });
  s.destroy();
  return r;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('tunnels (guest port stand-in on the host)', () => {
  let guestServer: Server;
  let guestPort: number;
  /** Headers the guest app saw, per request. */
  const seen: IncomingHttpHeaders[] = [];
  const events: AuditEventInput[] = [];
  let failAudit: ((e: AuditEventInput) => boolean) | undefined;
  let state: SandboxInfo['state'] = 'running';
  const endedListeners = new Set<(id: string, reason: string) => void>();
  let tunnels: TunnelManager;

  const sandboxes: TunnelSandboxes = {
    get(id) {
      if (id !== SB) throw new NotFoundError(`no sandbox ${id}`);
      return {
        id: SB, agent: 'dev', isolation: 'microvm', tier: 'microvm-tcg', state, createdAt: new Date().toISOString(),
        expiresAt: new Date(Date.now() + 3_600_000).toISOString(), startedFrom: 'boot', startMs: 1,
      };
    },
    async openPort(_id, port) {
      const s = connect(port, '127.0.0.1');
      await Promise.race([once(s, 'connect'), once(s, 'error').then(([e]) => { throw e; })]);
      return s;
    },
    onEnded(listener) {
      endedListeners.add(listener);
      return () => endedListeners.delete(listener);
    },
  };
  /** Extra time an append takes (ms), per event. */
  let slowAudit: ((e: AuditEventInput) => number) | undefined;
  const audit = {
    async append(e: AuditEventInput) {
      await new Promise((r) => setTimeout(r, 5 + (slowAudit?.(e) ?? 0))); // a real log takes a moment: nothing may run ahead of it
      if (failAudit?.(e)) throw new Error('audit store unavailable');
      events.push(e);
      return e;
    },
  };
  const of = (tunnel: string, type?: string) => events.filter((e) => e.data?.tunnel === tunnel && (type === undefined || e.type === type));

  before(async () => {
    guestServer = createServer((req, res) => {
      seen.push(req.headers);
      if (req.url === '/big') return void res.end(Buffer.alloc(300_000, 'b'));
      if (req.url === '/cookies') {
        res.setHeader('set-cookie', ['app=1; Path=/', 'cordon_tunnel_aaaaaaaaaaaaaaaaaaaa=planted; Path=/', ' Cordon_Tunnel_x=y']);
        return void res.end('cookies\n');
      }
      res.end(`guest says hi: ${req.method} ${req.url}\n`);
    });
    // A WebSocket-style upgrade: 101, then every byte is echoed back.
    guestServer.on('upgrade', (req, socket: import('node:net').Socket, head: Buffer) => {
      seen.push(req.headers);
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
      if (head.length > 0) socket.write(head);
      socket.pipe(socket);
    });
    guestServer.listen(0, '127.0.0.1');
    await once(guestServer, 'listening');
    guestPort = (guestServer.address() as AddressInfo).port;
    tunnels = createTunnelManager({ sandboxes, audit, maxConnections: 4 });
  });

  after(async () => {
    await tunnels.stop();
    guestServer.close();
  });

  test('Bearer token: 200 at once with a session cookie; the guest sees neither the token nor the cookie', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000 }, operator);
    assert.match(t.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.equal(t.exposed, false);
    assert.match(t.token, /^[A-Za-z0-9_-]{43}$/, '256 bits, base64url');
    const r = await get(t.url + 'hello?x=1', { authorization: `Bearer ${t.token}`, cookie: 'app=1' });
    assert.deepEqual([r.status, r.body], [200, 'guest says hi: GET /hello?x=1\n']);
    const setCookie = r.headers['set-cookie']?.[0] ?? '';
    assert.match(setCookie, new RegExp(`^${cookieName(t.id)}=[A-Za-z0-9_-]{43}; Path=/; HttpOnly; SameSite=Strict$`));
    const last = seen.at(-1)!;
    assert.equal(last.authorization, undefined, 'the token stays on the host');
    assert.equal(last.cookie, 'app=1', 'the app\'s own cookies pass');
    const cookie = setCookie.split(';')[0]!;
    const again = await get(t.url + 'again', { cookie: `${cookie}; app=2` });
    assert.deepEqual([again.status, again.body], [200, 'guest says hi: GET /again\n']);
    assert.equal(seen.at(-1)!.cookie, 'app=2', 'the session cookie stays on the host');
    const big = await get(t.url + 'big', { cookie });
    assert.equal(big.body.length, 300_000);
    const planted = await get(t.url + 'cookies', { cookie });
    assert.deepEqual(planted.headers['set-cookie'], ['app=1; Path=/'], 'the guest cannot set or clobber cordon cookies');
    assert.equal(tunnels.get(t.id).tokenUsed, true);
    await tunnels.close(t.id, operator);
  });

  test('query token: 303 to the same URL without it, with the cookie; the cookie then works', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000 }, operator);
    const sneaky = await get(t.url + './/evil.example/?cordon_tunnel_token=' + 'A'.repeat(43));
    assert.equal(sneaky.status, 401, 'a wrong token: no redirect at all');
    const r = await get(t.urlWithToken.replace('/?', '/page?a=b&'));
    assert.equal(r.status, 303);
    assert.equal(r.headers.location, '/page?a=b');
    const cookie = (r.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
    const page = await get(t.url + 'page?a=b', { cookie });
    assert.deepEqual([page.status, page.body], [200, 'guest says hi: GET /page?a=b\n']);
    assert.ok(!seen.some((h) => JSON.stringify(h).includes(t.token)), 'the guest never saw the token');
    const raw = await get(t.url + 'b%2Fc?x=%20&y', { cookie });
    assert.equal(raw.body, 'guest says hi: GET /b%2Fc?x=%20&y\n', 'the request target reaches the guest as the client sent it');
    const stray = await get(t.url + 'p?cordon_tunnel_token=whatever&k=v', { cookie });
    assert.equal(stray.body, 'guest says hi: GET /p?k=v\n', 'a token parameter never reaches the guest');
    assert.deepEqual(of(t.id, 'tunnel.session').map((e) => e.data?.via), ['query']);
    await tunnels.close(t.id, operator);
  });

  const refusals: { name: string; reason: string; headers(t: { token: string; id: string }): Record<string, string>; path?: (t: { token: string }) => string }[] = [
    { name: 'no token at all', reason: 'missing-token', headers: () => ({}) },
    { name: 'a wrong token of the right shape', reason: 'bad-token', headers: () => ({ authorization: `Bearer ${'A'.repeat(43)}` }) },
    { name: 'a wrong token in the query', reason: 'bad-token', headers: () => ({}), path: () => '?cordon_tunnel_token=nope' },
    { name: 'the right token a second time', reason: 'token-used', headers: (t) => ({ authorization: `Bearer ${t.token}` }) },
    { name: 'a made-up session cookie', reason: 'bad-session', headers: (t) => ({ cookie: `${cookieName(t.id)}=${'B'.repeat(43)}` }) },
  ];
  test('refused: missing, wrong, reused token and a forged session; 401 with the reason, each audited', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000 }, operator);
    const first = await get(t.url, { authorization: `Bearer ${t.token}` });
    assert.equal(first.status, 200);
    const before = seen.length;
    for (const c of refusals) {
      const r = await get(t.url + (c.path?.(t) ?? ''), c.headers(t));
      assert.equal(r.status, 401, c.name);
      assert.equal(r.headers['x-cordon-error'], c.reason, c.name);
    }
    assert.equal(seen.length, before, 'no refused request reached the guest');
    assert.deepEqual(of(t.id, 'tunnel.refused').map((e) => [e.reason, e.decision]), refusals.map((c) => [c.reason, 'deny']));
    await tunnels.close(t.id, operator);
  });

  test('a client that connects while tunnel.open is being written is refused as opening, recorded after tunnel.open', async () => {
    // A free port, so the test knows where the tunnel will listen before open() returns.
    const probe = createNetServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const listenPort = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    slowAudit = (e) => (e.type === 'tunnel.open' ? 300 : 0);
    try {
      const opening = tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000, listenPort }, operator);
      let early: Answer | Error | undefined;
      for (let i = 0; i < 100 && early === undefined; i++) {
        await new Promise((r) => setTimeout(r, 10));
        if (await listening(`http://127.0.0.1:${listenPort}/`)) early = await get(`http://127.0.0.1:${listenPort}/`).catch((err: Error) => err);
      }
      const t = await opening;
      assert.ok(early instanceof Error, 'the early client is cut off, not served');
      await waitFor('the refusals to be recorded', () => of(t.id, 'tunnel.refused').length >= 2);
      const mine = of(t.id);
      assert.equal(mine[0]?.type, 'tunnel.open', `tunnel.open comes first: ${mine.map((e) => e.type).join(', ')}`);
      assert.ok(of(t.id, 'tunnel.refused').every((e) => e.reason === 'opening'), 'refused because it was opening, not closing');
      assert.equal((await get(t.url, { authorization: `Bearer ${t.token}` })).status, 200, 'once open, the tunnel works');
      await tunnels.close(t.id, operator);
    } finally {
      slowAudit = undefined;
    }
  });

  test('every connection is recorded: connect before use, disconnect with the bytes; open and close with reasons', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000 }, operator);
    await get(t.url, { authorization: `Bearer ${t.token}` });
    await get(t.url);
    await tunnels.close(t.id, operator);
    const types = of(t.id).map((e) => e.type);
    assert.equal(types[0], 'tunnel.open');
    assert.equal(types.at(-1), 'tunnel.close');
    assert.equal(types.filter((x) => x === 'tunnel.connect').length, 2, types.join(','));
    const disconnects = of(t.id, 'tunnel.disconnect');
    assert.equal(disconnects.length, 2, JSON.stringify(of(t.id).map((e) => [e.type, e.data?.connection])));
    for (const d of disconnects) {
      assert.ok((d.data?.bytesIn as number) > 0 && (d.data?.bytesOut as number) > 0, JSON.stringify(d.data));
      assert.equal(d.actor, 'tunnel-client');
    }
    const open = of(t.id, 'tunnel.open')[0]!;
    assert.deepEqual([open.actor, open.sandbox, open.agent, open.data?.bind, open.data?.exposed], [operator.actor, SB, 'dev', '127.0.0.1', false]);
    assert.ok(!JSON.stringify(events).includes(t.token), 'the token is never in the audit log');
    const close = of(t.id, 'tunnel.close')[0]!;
    assert.deepEqual([close.reason, close.data?.connections, close.data?.refused], ['operator', 2, 1]);
  });

  test('audit failures refuse: no tunnel without tunnel.open, no request without tunnel.connect, no session without tunnel.session', async () => {
    failAudit = (e) => e.type === 'tunnel.open';
    const probe = createNetServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const listenPort = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    await assert.rejects(tunnels.open({ sandboxId: SB, port: guestPort, listenPort }, operator), /audit store unavailable/);
    assert.equal(tunnels.list().length, 0, 'no tunnel is listed');
    assert.equal(await listening(`http://127.0.0.1:${listenPort}/`), false, 'nothing is left listening on the port it took');
    failAudit = (e) => e.type === 'tunnel.connect';
    const t = await tunnels.open({ sandboxId: SB, port: guestPort }, operator);
    const count = seen.length;
    await assert.rejects(get(t.url, { authorization: `Bearer ${t.token}` }), /socket hang up|ECONNRESET/);
    assert.equal(seen.length, count);
    failAudit = (e) => e.type === 'tunnel.session';
    const r = await get(t.url, { authorization: `Bearer ${t.token}` });
    assert.deepEqual([r.status, r.headers['x-cordon-error']], [503, 'audit-unavailable'], 'the token was right: not called bad-token');
    assert.equal(seen.length, count, 'the guest saw nothing');
    failAudit = undefined;
    const spent = await get(t.url, { authorization: `Bearer ${t.token}` });
    assert.equal(spent.headers['x-cordon-error'], 'token-used', 'a token whose use could not be recorded stays spent');
    await tunnels.close(t.id, operator);
  });

  const unrecorded: { name: string; send(t: { url: string; urlWithToken: string; token: string }): Promise<{ status: number; reason: unknown; text: string }> }[] = [
    {
      name: 'Bearer header',
      send: async (t) => {
        const r = await get(t.url, { authorization: `Bearer ${t.token}` });
        return { status: r.status, reason: r.headers['x-cordon-error'], text: r.body };
      },
    },
    {
      name: 'query parameter',
      send: async (t) => {
        const r = await get(t.urlWithToken);
        return { status: r.status, reason: r.headers['x-cordon-error'], text: r.body };
      },
    },
    {
      name: 'WebSocket upgrade',
      send: async (t) => {
        const s = connect(Number(new URL(t.url).port), '127.0.0.1');
        s.on('error', () => undefined);
        let got = '';
        s.on('data', (b: Buffer) => (got += b.toString()));
        await once(s, 'connect');
        s.write(`GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nAuthorization: Bearer ${t.token}\r\n\r\n`);
        await once(s, 'close');
        return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(got)?.[1]), reason: /^X-Cordon-Error: (.*)\r$/m.exec(got)?.[1], text: got };
      },
    },
  ];
  for (const c of unrecorded) {
    test(`a right token whose use cannot be recorded (${c.name}): 503 audit-unavailable with the fix, audited, and the token stays spent`, async () => {
      const t = await tunnels.open({ sandboxId: SB, port: guestPort }, operator);
      const count = seen.length;
      try {
        failAudit = (e) => e.type === 'tunnel.session';
        const r = await c.send(t);
        assert.deepEqual([r.status, r.reason], [503, 'audit-unavailable'], r.text);
        if (c.name !== 'WebSocket upgrade') assert.match(r.text, /refused \(audit-unavailable\): .*audit log.*open a new tunnel/);
        failAudit = undefined;
        assert.equal(tunnels.get(t.id).tokenUsed, true);
        const again = await c.send(t);
        assert.deepEqual([again.status, again.reason], [401, 'token-used'], 'the token cannot be tried again');
        assert.equal(seen.length, count, 'the guest saw nothing');
        assert.deepEqual(of(t.id, 'tunnel.session'), []);
        assert.deepEqual(of(t.id, 'tunnel.refused').map((e) => [e.reason, e.decision]), [['audit-unavailable', 'deny'], ['token-used', 'deny']]);
      } finally {
        failAudit = undefined;
        await tunnels.close(t.id, operator);
      }
    });
  }

  test('TTL: the tunnel closes at its end and its port stops listening', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 1000 }, operator);
    assert.equal(await listening(t.url), true);
    await waitFor('the TTL close', () => of(t.id, 'tunnel.close').length > 0);
    assert.equal(of(t.id, 'tunnel.close')[0]?.reason, 'ttl');
    assert.equal(await listening(t.url), false);
    assert.throws(() => tunnels.get(t.id), NotFoundError);
  });

  test('idle: no traffic for idleMs closes it; traffic keeps it open', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000, idleMs: 1000 }, operator);
    const r = await get(t.url, { authorization: `Bearer ${t.token}` });
    const cookie = (r.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
    for (let i = 0; i < 3; i++) {
      await new Promise((res) => setTimeout(res, 500));
      assert.equal((await get(t.url, { cookie })).status, 200, 'still open while used');
    }
    await waitFor('the idle close', () => of(t.id, 'tunnel.close').length > 0);
    assert.equal(of(t.id, 'tunnel.close')[0]?.reason, 'idle');
    assert.equal(await listening(t.url), false);
  });

  test('the sandbox ending closes its tunnels, open connections included; a stopped sandbox gets none', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000 }, operator);
    const held = connect(Number(new URL(t.url).port), '127.0.0.1');
    held.on('error', () => undefined);
    await once(held, 'connect');
    await waitFor('the connect record', () => of(t.id, 'tunnel.connect').length === 1);
    for (const l of endedListeners) l(SB, 'timeout');
    await once(held, 'close');
    await waitFor('the close record', () => of(t.id, 'tunnel.close').length > 0);
    assert.equal(of(t.id, 'tunnel.close')[0]?.reason, 'sandbox-ended');
    assert.equal(of(t.id, 'tunnel.disconnect').length, 1, 'the held connection is recorded as it ends');
    assert.equal(await listening(t.url), false);
    state = 'stopping';
    await assert.rejects(tunnels.open({ sandboxId: SB, port: guestPort }, operator), /needs a running sandbox/);
    state = 'running';
  });

  test('an error on a listening tunnel (an accept failing, as under EMFILE) never crashes the control plane; the tunnel keeps serving', async () => {
    for (const mode of ['http', 'tcp'] as const) {
      // The tunnel's listener is not reachable from outside the manager: catch it as it starts listening.
      const listeners: NetServer[] = [];
      const listen = NetServer.prototype.listen;
      NetServer.prototype.listen = function spyListen(this: NetServer, ...args: unknown[]) {
        listeners.push(this);
        return (listen as (...a: unknown[]) => NetServer).apply(this, args);
      } as typeof listen;
      let t;
      try {
        t = await tunnels.open({ sandboxId: SB, port: guestPort, mode }, operator);
      } finally {
        NetServer.prototype.listen = listen;
      }
      try {
        assert.equal(listeners.length, 1, mode);
        // Node emits accept errors on the server and keeps listening; an 'error' nobody listens to throws.
        for (let i = 0; i < 3; i++) {
          assert.doesNotThrow(() => listeners[0]!.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' })), `${mode}: error ${i + 1}`);
        }
        assert.equal(await listening(t.url.replace('tcp:', 'http:')), true, `${mode}: still listening`);
        assert.equal(tunnels.get(t.id).id, t.id);
      } finally {
        await tunnels.close(t.id, operator);
      }
    }
  });

  test('bind: loopback unless asked; 0.0.0.0 only when named, recorded as exposed', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, bind: '0.0.0.0' }, operator);
    assert.equal(t.exposed, true);
    assert.equal(of(t.id, 'tunnel.open')[0]?.data?.exposed, true);
    await tunnels.close(t.id, operator);
    for (const bad of ['localhost', 'example.com', '127.0.0.1; rm', '']) {
      await assert.rejects(tunnels.open({ sandboxId: SB, port: guestPort, bind: bad }, operator), /bind: an IP address/, bad);
    }
    await assert.rejects(tunnels.open({ sandboxId: SB, port: 0 }, operator), /port/);
    await assert.rejects(tunnels.open({ sandboxId: 'sb-nope', port: 80 }, operator), /sandboxId/);
  });

  test('a guest port with nothing listening: 502 with the reason, and the tunnel stays usable', async () => {
    const closed = createServer().listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    const t = await tunnels.open({ sandboxId: SB, port }, operator);
    const r = await get(t.url, { authorization: `Bearer ${t.token}` });
    assert.equal(r.status, 502);
    assert.match(String(r.headers['x-cordon-error']), /^guest-/);
    assert.match(r.body, /could not be reached/);
    await tunnels.close(t.id, operator);
  });

  test('upgrades (WebSocket) are authenticated like requests, then carried raw both ways', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000 }, operator);
    const port = Number(new URL(t.url).port);
    const upgrade = async (auth: string): Promise<string> => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      let got = '';
      s.on('data', (b: Buffer) => {
        got += b.toString();
        if (got.endsWith('ping')) s.end();
      });
      await once(s, 'connect');
      s.write(`GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n${auth}\r\nping`);
      await once(s, 'close');
      return got;
    };
    const refused = await upgrade('');
    assert.match(refused, /^HTTP\/1\.1 401 Unauthorized\r\nX-Cordon-Error: missing-token\r\n/);
    const count = seen.length;
    const ok = await upgrade(`Authorization: Bearer ${t.token}\r\n`);
    assert.match(ok, /^HTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*\r\n\r\nping$/);
    assert.equal(seen.length, count + 1);
    assert.equal(seen.at(-1)!.authorization, undefined, 'the token stays on the host');
    assert.equal(seen.at(-1)!.upgrade, 'echo');
    const reused = await upgrade(`Authorization: Bearer ${t.token}\r\n`);
    assert.match(reused, /X-Cordon-Error: token-used/);
    await tunnels.close(t.id, operator);
  });

  test('TCP mode: the first line is the token, for exactly one connection; bytes flow raw both ways', async () => {
    const echo = createNetServer((s) => s.pipe(s));
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    const t = await tunnels.open({ sandboxId: SB, port: (echo.address() as AddressInfo).port, mode: 'tcp' }, operator);
    assert.match(t.url, /^tcp:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(t.urlWithToken, t.url, 'no token in any URL');
    const port = Number(t.url.split(':')[2]);
    const talk = async (first: string, then = ''): Promise<string> => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      let got = '';
      s.on('data', (b: Buffer) => {
        got += b.toString();
        if (got === then && then !== '') s.end();
      });
      await once(s, 'connect');
      s.write(first + then);
      await once(s, 'close');
      return got;
    };
    assert.equal(await talk('nope\n'), 'cordon-tunnel: refused (bad-token)\n');
    assert.equal(await talk('x'.repeat(200)), 'cordon-tunnel: refused (bad-token)\n', 'a first line over 128 bytes');
    assert.equal(await talk('\n'), 'cordon-tunnel: refused (missing-token)\n');
    assert.equal(await talk(`${t.token}\r\n`, 'ping over raw tcp'), 'ping over raw tcp');
    assert.equal(await talk(`${t.token}\n`), 'cordon-tunnel: refused (token-used)\n');
    assert.equal(tunnels.get(t.id).tokenUsed, true);
    await tunnels.close(t.id, operator);
    echo.close();
    assert.deepEqual(of(t.id, 'tunnel.refused').map((e) => e.reason), ['bad-token', 'bad-token', 'missing-token', 'token-used']);
    assert.deepEqual(of(t.id, 'tunnel.session').map((e) => e.data?.via), ['tcp']);
    assert.equal(of(t.id, 'tunnel.connect').length, 5);
    assert.equal(of(t.id, 'tunnel.disconnect').length, 5);
    assert.equal(of(t.id, 'tunnel.open')[0]?.data?.mode, 'tcp');
  });

  test('TCP mode, audit failures refuse: no bytes without tunnel.connect, no guest without tunnel.session', { timeout: 15_000 }, async () => {
    let dialled = 0;
    const echo = createNetServer((s) => {
      dialled++;
      s.pipe(s);
    });
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    const t = await tunnels.open({ sandboxId: SB, port: (echo.address() as AddressInfo).port, mode: 'tcp' }, operator);
    const port = Number(t.url.split(':')[2]);
    const talk = async (first: string): Promise<string> => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      let got = '';
      s.on('data', (b: Buffer) => (got += b.toString()));
      // A connection cordon destroys may reset: only its close matters here.
      const closed = new Promise((r) => s.on('close', r));
      s.on('connect', () => s.write(first + 'ping'));
      await closed;
      return got;
    };
    try {
      failAudit = (e) => e.type === 'tunnel.connect';
      assert.equal(await talk(`${t.token}\n`), '', 'closed without a word or an echo');
      assert.equal(tunnels.get(t.id).tokenUsed, false, 'the token was never read');
      failAudit = (e) => e.type === 'tunnel.session';
      assert.equal(await talk(`${t.token}\n`), 'cordon-tunnel: refused (audit-unavailable)\n', 'the token was right: not called bad-token');
      failAudit = undefined;
      assert.equal(await talk(`${t.token}\n`), 'cordon-tunnel: refused (token-used)\n', 'a token whose use could not be recorded stays spent');
      assert.equal(dialled, 0, 'the guest port was never dialled');
      assert.deepEqual(of(t.id, 'tunnel.session'), []);
      await waitFor('the refusals', () => of(t.id, 'tunnel.refused').length === 2);
      assert.deepEqual(of(t.id, 'tunnel.refused').map((e) => e.reason), ['audit-unavailable', 'token-used']);
    } finally {
      failAudit = undefined;
      await tunnels.close(t.id, operator);
      echo.close();
    }
  });

  test('a request target the tunnel cannot parse: 400 bad-request, audited as refused, the guest never asked and the token not spent', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort, ttlMs: 60_000 }, operator);
    const port = Number(new URL(t.url).port);
    const seenBefore = seen.length;
    /** One raw request; the whole answer. */
    const raw = async (head: string): Promise<string> => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      let got = '';
      s.on('data', (b: Buffer) => (got += b.toString()));
      await once(s, 'connect');
      s.write(head);
      await once(s, 'close');
      return got;
    };
    // Targets a URL parser refuses (they once ended as a 502 blaming the guest, with no `tunnel.refused`).
    const cases = [
      { why: 'a bare `//`', target: '//' },
      { why: 'an authority with a broken IPv6 literal', target: '//[' },
      { why: 'an absolute URL with a space in the host', target: 'http://a%20b:x/' },
    ];
    try {
      for (const c of cases) {
        for (const upgrade of [false, true]) {
          const answer = await raw(`GET ${c.target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.token}\r\n`
            + (upgrade ? 'Connection: Upgrade\r\nUpgrade: echo\r\n' : 'Connection: close\r\n') + '\r\n');
          assert.match(answer, /^HTTP\/1\.1 400 /, `${c.why} (upgrade: ${upgrade})`);
          assert.match(answer, /x-cordon-error: bad-request/i, `${c.why} (upgrade: ${upgrade})`);
        }
      }
      assert.equal(seen.length, seenBefore, 'the guest was never asked');
      assert.equal(tunnels.get(t.id).tokenUsed, false, 'the token was not spent by a request that was not looked at');
      await waitFor('the refusals', () => of(t.id, 'tunnel.refused').length === cases.length * 2);
      assert.ok(of(t.id, 'tunnel.refused').every((e) => e.reason === 'bad-request'));
      // The token still works.
      assert.equal((await get(t.url, { authorization: `Bearer ${t.token}` })).status, 200);
    } finally {
      await tunnels.close(t.id, operator);
    }
  });

  test('a refused client cannot keep its connection: it is closed even when the client never ends its side', async () => {
    const echo = createNetServer((s) => s.pipe(s));
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    const unreachable = createNetServer().listen(0, '127.0.0.1');
    await once(unreachable, 'listening');
    const deadPort = (unreachable.address() as AddressInfo).port;
    unreachable.close();
    const echoPort = (echo.address() as AddressInfo).port;
    const upgradeHead = 'GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n';
    // Each refusal once held a client slot (maxConnections) for as long as the client kept its half of the connection open.
    const cases: { why: string; mode: 'http' | 'tcp'; guestPort: number; first: (token: string) => string; answer: RegExp }[] = [
      { why: 'TCP mode, a wrong token', mode: 'tcp', guestPort: echoPort, first: () => 'nope\n', answer: /^cordon-tunnel: refused \(bad-token\)\n$/ },
      { why: 'TCP mode, the guest port unreachable', mode: 'tcp', guestPort: deadPort, first: (tk) => `${tk}\n`, answer: /^cordon-tunnel: the guest port could not be reached/ },
      { why: 'HTTP mode, an upgrade without a token', mode: 'http', guestPort: echoPort, first: () => `${upgradeHead}\r\n`, answer: /^HTTP\/1\.1 401 .*X-Cordon-Error: missing-token/s },
      {
        why: 'HTTP mode, an upgrade to an unreachable guest port', mode: 'http', guestPort: deadPort,
        first: (tk) => `${upgradeHead}Authorization: Bearer ${tk}\r\n\r\n`, answer: /^HTTP\/1\.1 502 .*X-Cordon-Error: guest-unreachable/s,
      },
    ];
    try {
      for (const c of cases) {
        const t = await tunnels.open({ sandboxId: SB, port: c.guestPort, mode: c.mode }, operator);
        try {
          const s = connect({ port: Number(t.url.split(':')[2]?.replace('/', '')), host: '127.0.0.1', allowHalfOpen: true });
          s.on('error', () => undefined);
          let got = '';
          s.on('data', (b: Buffer) => (got += b.toString()));
          await once(s, 'connect');
          s.write(c.first(t.token));
          await waitFor(`${c.why}: the refusal`, () => got.length > 0 && c.answer.test(got));
          // The client never ends its side: cordon must close the connection and free the slot all the same.
          await waitFor(`${c.why}: the slot is freed`, () => tunnels.get(t.id).activeConnections === 0, 3000);
          assert.equal(of(t.id, 'tunnel.disconnect').length, 1, `${c.why}: the close is recorded`);
          s.destroy();
        } finally {
          await tunnels.close(t.id, operator);
        }
      }
    } finally {
      echo.close();
    }
  });

  test('the connection limit refuses more clients (audited); stop() closes everything as daemon-stop', async () => {
    const t = await tunnels.open({ sandboxId: SB, port: guestPort }, operator);
    const port = Number(new URL(t.url).port);
    const held = [];
    for (let i = 0; i < 4; i++) {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      await once(s, 'connect');
      held.push(s);
    }
    await waitFor('four connects', () => of(t.id, 'tunnel.connect').length === 4);
    const extra = connect(port, '127.0.0.1');
    extra.on('error', () => undefined);
    await once(extra, 'close');
    await waitFor('the refusal', () => of(t.id, 'tunnel.refused').length === 1);
    assert.equal(of(t.id, 'tunnel.refused')[0]?.reason, 'connection-limit');
    const other = await tunnels.open({ sandboxId: SB, port: guestPort }, operator);
    await tunnels.stop();
    for (const id of [t.id, other.id]) assert.equal(of(id, 'tunnel.close')[0]?.reason, 'daemon-stop');
    assert.equal(of(t.id, 'tunnel.disconnect').length, 4);
    assert.equal(await listening(t.url), false);
    await assert.rejects(tunnels.open({ sandboxId: SB, port: guestPort }, operator), /stopping/);
    tunnels = createTunnelManager({ sandboxes, audit });
  });
});

describe('tunnel limits under concurrent opens (two sandboxes, maxTunnels 5, maxPerSandbox 3)', () => {
  const A = 'sb-bbbbbbbbbbbbbbbbbbbb';
  const B = 'sb-cccccccccccccccccccc';
  const states = new Map<string, SandboxInfo['state']>([[A, 'running'], [B, 'running']]);
  const events: AuditEventInput[] = [];
  /** Runs as each event is appended; a throw fails the append. */
  let onAppend: ((e: AuditEventInput) => void) | undefined;
  const sandboxes: TunnelSandboxes = {
    get(id) {
      const state = states.get(id);
      if (!state) throw new NotFoundError(`no sandbox ${id}`);
      return {
        id, agent: 'dev', isolation: 'microvm', tier: 'microvm-tcg', state, createdAt: new Date().toISOString(),
        expiresAt: new Date(Date.now() + 3_600_000).toISOString(), startedFrom: 'boot', startMs: 1,
      };
    },
    async openPort() {
      throw new Error('no client connects in these tests');
    },
    onEnded: () => () => undefined,
  };
  const audit = {
    async append(e: AuditEventInput) {
      // Writes of different lengths, so concurrent opens finish out of order.
      await new Promise((r) => setTimeout(r, 2 + Math.floor(Math.random() * 10)));
      onAppend?.(e);
      events.push(e);
      return e;
    },
  };
  const limits = { maxTunnels: 5, maxPerSandbox: 3 };
  const newManager = (): TunnelManager => createTunnelManager({ sandboxes, audit, ...limits });
  /** 10 opens for A, then 10 for B, all at once. */
  const burst = (tunnels: TunnelManager, extra: { listenPort?: number } = {}) =>
    Promise.allSettled([A, B].flatMap((sandboxId) => Array.from({ length: 10 }, () => tunnels.open({ sandboxId, port: 8000, ...extra }, operator))));
  const urlsOpened = (since: number) => events.slice(since).filter((e) => e.type === 'tunnel.open').map((e) => String(e.data?.url));

  /** The limits are all free again: exactly 3 + 2 opens succeed, the next one is refused; then they are closed. */
  async function assertAllSlotsFree(tunnels: TunnelManager, why: string): Promise<void> {
    assert.equal(tunnels.list().length, 0, why);
    const results = await burst(tunnels);
    const opened = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    assert.deepEqual([A, B].map((sb) => opened.filter((t) => t.sandboxId === sb).length), [3, 2], `${why}: every slot is free again`);
    await Promise.all(opened.map((t) => tunnels.close(t.id, operator)));
  }

  test('20 concurrent opens: exactly 3 for A and 2 for B succeed, the rest get LimitError naming the limit; closing frees every slot', async () => {
    const tunnels = newManager();
    try {
      const results = await burst(tunnels);
      const opened = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      const refused = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
      assert.deepEqual([A, B].map((sb) => opened.filter((t) => t.sandboxId === sb).length), [3, 2]);
      assert.equal(tunnels.list().length, 5);
      for (const t of opened) assert.equal(await listening(t.url), true, t.url);
      assert.ok(refused.every((e) => e instanceof LimitError), refused.map((e) => e.message).join('; '));
      // A's 4th..10th hit the per-sandbox limit (3 of 5 open); B's 3rd..10th the total.
      assert.equal(refused.filter((e) => /sandbox sb-b+ has 3 tunnels open or opening; the limit is 3 \(maxPerSandbox\)/.test(e.message)).length, 7);
      assert.equal(refused.filter((e) => /^5 tunnels are open or opening; the limit is 5 \(maxTunnels\)$/.test(e.message)).length, 8);
      assert.equal(events.filter((e) => e.type === 'tunnel.open' && opened.some((t) => t.id === e.data?.tunnel)).length, 5);
      await Promise.all(opened.map((t) => tunnels.close(t.id, operator)));
      for (const t of opened) assert.equal(await listening(t.url), false, t.url);
      await assertAllSlotsFree(tunnels, 'after closing them all');
    } finally {
      await tunnels.stop();
    }
  });

  const failures: { name: string; expect: RegExp; listenPort?: boolean; afterCall?: () => void; onAppend?: (e: AuditEventInput) => void; closeReason?: string }[] = [
    { name: 'the listen port is taken', expect: /cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/, listenPort: true },
    {
      name: 'tunnel.open cannot be written', expect: /audit store unavailable/,
      onAppend: (e) => { if (e.type === 'tunnel.open') throw new Error('audit store unavailable'); },
    },
    {
      name: 'the sandbox ends while the listener starts', expect: /ended while its tunnel was opening/,
      afterCall: () => { states.set(A, 'destroyed'); states.set(B, 'destroyed'); },
    },
    {
      name: 'the sandbox ends while tunnel.open is written', expect: /ended while its tunnel was opening/, closeReason: 'sandbox-ended',
      onAppend: (e) => { if (e.type === 'tunnel.open') { states.set(A, 'destroyed'); states.set(B, 'destroyed'); } },
    },
  ];
  for (const c of failures) {
    test(`a failed open frees its slot: ${c.name}`, async () => {
      const tunnels = newManager();
      const taken = createNetServer().listen(0, '127.0.0.1');
      await once(taken, 'listening');
      const since = events.length;
      try {
        onAppend = c.onAppend;
        // 3 for A and 2 for B: had any failure kept its slot, the check below could not open them all again.
        const pending = [A, A, A, B, B].map((sandboxId) =>
          tunnels.open({ sandboxId, port: 8000, ...(c.listenPort ? { listenPort: (taken.address() as AddressInfo).port } : {}) }, operator));
        c.afterCall?.();
        const results = await Promise.allSettled(pending);
        for (const r of results) {
          assert.equal(r.status, 'rejected');
          assert.match((r as PromiseRejectedResult).reason.message, c.expect);
        }
        onAppend = undefined;
        states.set(A, 'running');
        states.set(B, 'running');
        const recorded = events.slice(since).filter((e) => e.type === 'tunnel.open').map((e) => e.data?.tunnel);
        if (c.closeReason) {
          assert.ok(recorded.length > 0, 'at least one open got as far as tunnel.open');
          const closes = events.slice(since).filter((e) => e.type === 'tunnel.close');
          assert.deepEqual(closes.map((e) => e.data?.tunnel).sort(), [...recorded].sort(), 'every recorded open has its close');
          assert.ok(closes.every((e) => e.reason === c.closeReason));
        } else {
          assert.deepEqual(recorded, [], 'nothing was recorded as open');
        }
        for (const url of urlsOpened(since)) assert.equal(await listening(url), false, `nothing listens on ${url}`);
        await assertAllSlotsFree(tunnels, c.name);
      } finally {
        onAppend = undefined;
        states.set(A, 'running');
        states.set(B, 'running');
        taken.close();
        await tunnels.stop();
      }
    });
  }

  test('stop() during opens: they fail, stop() waits for them, nothing listens and every recorded open is closed', async () => {
    for (const when of ['while the listener starts', 'while tunnel.open is written']) {
      const tunnels = newManager();
      const since = events.length;
      let stopping: Promise<void> | undefined;
      onAppend = when === 'while tunnel.open is written' ? (e) => { if (e.type === 'tunnel.open') stopping ??= tunnels.stop(); } : undefined;
      try {
        const pending = [A, A, B].map((sandboxId) => tunnels.open({ sandboxId, port: 8000 }, operator));
        if (!onAppend) stopping = tunnels.stop();
        const results = Promise.allSettled(pending);
        await waitFor('the stop to begin', () => stopping !== undefined);
        await stopping;
        // Checked as soon as stop() resolves, before the opens are awaited: stop() waited for them.
        const opens = events.slice(since).filter((e) => e.type === 'tunnel.open').map((e) => e.data?.tunnel);
        const closes = events.slice(since).filter((e) => e.type === 'tunnel.close');
        assert.deepEqual(closes.map((e) => e.data?.tunnel).sort(), [...opens].sort(), `${when}: every recorded open is closed when stop() resolves`);
        assert.ok(closes.every((e) => e.reason === 'daemon-stop'), when);
        if (onAppend) assert.ok(opens.length > 0, 'the stop came while tunnel.open was written');
        for (const r of await results) assert.match(String((r as PromiseRejectedResult).reason?.message), /stopping/, when);
        assert.equal(tunnels.list().length, 0, when);
        for (const url of urlsOpened(since)) assert.equal(await listening(url), false, `${when}: nothing listens on ${url}`);
      } finally {
        onAppend = undefined;
        await tunnels.stop();
      }
    }
  });
});
