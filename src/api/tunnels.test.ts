/**
 * The tunnel routes in-process (`app.request()`): operators open, list and
 * close tunnels (the token is in the open answer only); agent credentials get
 * 403 and a `tunnel.forbidden` event; no token gets 401; bad bodies get 400
 * with the path of the problem. The tunnel manager runs for real over a
 * stand-in guest port (an HTTP server on the host's loopback).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { AuditEventInput } from '../audit/index.js';
import { NotFoundError } from '../errors/index.js';
import { createIdentityService, createSandboxKeys, type IdentityService } from '../identity/index.js';
import { createTunnelManager, type TunnelManager } from '../ingress/index.js';
import { tempDir } from '../testkit/index.js';
import { createApi, operatorTokenChecker } from './index.js';

const TOKEN = 'cop_' + 'A'.repeat(43);
const SB = { id: 'sb-aaaaaaaaaaaaaaaaaaaa', agent: 'web' };

describe('tunnel routes', () => {
  const events: AuditEventInput[] = [];
  const audit = {
    append: async (e: AuditEventInput) => { events.push(e); return e; },
    query: async () => [],
  };
  let guest: Server;
  let guestPort: number;
  let tunnels: TunnelManager;
  let ids: IdentityService;
  let idHome: { path: string; cleanup: () => void };
  let app: ReturnType<typeof createApi>;
  const op = (init: RequestInit = {}): RequestInit => ({ ...init, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers as Record<string, string> | undefined) } });

  before(async () => {
    guest = createServer((_req, res) => res.end('guest page\n')).listen(0, '127.0.0.1');
    await once(guest, 'listening');
    guestPort = (guest.address() as AddressInfo).port;
    tunnels = createTunnelManager({
      audit,
      sandboxes: {
        get(id) {
          if (id !== SB.id) throw new NotFoundError(`no sandbox ${id}`, { fix: 'list sandboxes with `cordon sandbox ls`' });
          return {
            id, agent: SB.agent, isolation: 'microvm', tier: 'microvm-tcg', state: 'running', createdAt: new Date().toISOString(),
            expiresAt: new Date(Date.now() + 60_000).toISOString(), startedFrom: 'boot', startMs: 1,
          };
        },
        async openPort(_id, port) {
          const s = connect(port, '127.0.0.1');
          await once(s, 'connect');
          return s;
        },
        onEnded: () => () => undefined,
      },
    });
    idHome = tempDir('cordon-api-tunnels-');
    ids = createIdentityService({ home: idHome.path, trustDomain: 'agents.example.org', audiences: ['llm.cordon.internal'] });
    app = createApi({ audit, isOperatorToken: operatorTokenChecker(TOKEN), version: '0.0.0-test', tunnels });
  });

  after(async () => {
    await tunnels.stop();
    guest.close();
    ids.close();
    idHome.cleanup();
  });

  test('an operator opens (201, token once), lists (no token), reads and closes a tunnel', async () => {
    const res = await app.request(`/v1/sandboxes/${SB.id}/tunnels`, op({ method: 'POST', body: JSON.stringify({ port: guestPort, ttlMs: 60_000 }) }));
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const { tunnel } = (await res.json()) as { tunnel: { id: string; token: string; url: string; urlWithToken: string; sandboxId: string } };
    assert.equal(tunnel.sandboxId, SB.id);
    assert.ok(tunnel.urlWithToken.endsWith(`?cordon_tunnel_token=${tunnel.token}`));
    const page = await fetch(tunnel.url, { headers: { authorization: `Bearer ${tunnel.token}` } });
    assert.deepEqual([page.status, await page.text()], [200, 'guest page\n']);

    const list = await app.request('/v1/tunnels', op());
    const listed = await list.text();
    assert.equal(list.status, 200);
    assert.ok(listed.includes(tunnel.id));
    assert.ok(!listed.includes(tunnel.token), 'the token is never listed');
    const one = (await (await app.request(`/v1/tunnels/${tunnel.id}`, op())).json()) as { tunnel: { tokenUsed: boolean } };
    assert.equal(one.tunnel.tokenUsed, true);

    const del = await app.request(`/v1/tunnels/${tunnel.id}`, op({ method: 'DELETE' }));
    assert.deepEqual([del.status, await del.json()], [200, { closed: tunnel.id }]);
    assert.equal(events.find((e) => e.type === 'tunnel.close' && e.data?.tunnel === tunnel.id)?.reason, 'operator');
    assert.equal((await app.request(`/v1/tunnels/${tunnel.id}`, op())).status, 404);
    const body = await app.request('/v1/tunnels', op({ method: 'POST', body: JSON.stringify({ sandboxId: SB.id, port: guestPort }) }));
    assert.equal(body.status, 201, 'POST /v1/tunnels with sandboxId in the body');
  });

  test('agent credentials get 403 and a tunnel.forbidden event; no token gets 401', async () => {
    const key = createSandboxKeys().issue(SB.id);
    const { token } = await ids.issue(SB);
    const before = events.filter((e) => e.type === 'tunnel.forbidden').length;
    const cases = [
      { name: 'service key, open', auth: `Bearer ${key}`, path: `/v1/sandboxes/${SB.id}/tunnels`, method: 'POST', credential: 'sandbox-key' },
      { name: 'identity token, list', auth: `Bearer ${token}`, path: '/v1/tunnels', method: 'GET', credential: 'sandbox-token' },
      { name: 'identity token, close', auth: `Bearer ${token}`, path: '/v1/tunnels/tn-aaaaaaaaaaaaaaaaaaaa', method: 'DELETE', credential: 'sandbox-token' },
    ];
    for (const c of cases) {
      const res = await app.request(c.path, { method: c.method, headers: { authorization: c.auth, 'content-type': 'application/json' }, ...(c.method === 'POST' ? { body: JSON.stringify({ port: guestPort }) } : {}) });
      assert.equal(res.status, 403, c.name);
    }
    const forbidden = events.filter((e) => e.type === 'tunnel.forbidden').slice(before);
    assert.deepEqual(forbidden.map((e) => [e.decision, e.reason, e.data?.credential]), cases.map((c) => ['deny', 'agent-token', c.credential]));
    assert.equal((await app.request('/v1/tunnels')).status, 401);
    assert.equal(tunnels.list().length, 1, 'only the tunnel the operator opened above');
  });

  const bad: { name: string; body: unknown; path?: string; status: number; match: RegExp }[] = [
    { name: 'port 0', body: { port: 0 }, status: 400, match: /port/ },
    { name: 'port as a string', body: { port: '8000' }, status: 400, match: /port/ },
    { name: 'unknown member', body: { port: 8000, open: true }, status: 400, match: /Unrecognized key/ },
    { name: 'a bind address that is a host name', body: { port: 8000, bind: 'example.com' }, status: 400, match: /bind/ },
    { name: 'a TTL under a second', body: { port: 8000, ttlMs: 10 }, status: 400, match: /ttlMs/ },
    { name: 'another sandbox in the body', body: { port: 8000, sandboxId: 'sb-bbbbbbbbbbbbbbbbbbbb' }, status: 400, match: /another sandbox/ },
    { name: 'no sandbox on POST /v1/tunnels', body: { port: 8000 }, path: '/v1/tunnels', status: 400, match: /sandboxId is missing/ },
    { name: 'a sandbox that does not exist', body: { port: 8000 }, path: '/v1/sandboxes/sb-cccccccccccccccccccc/tunnels', status: 404, match: /no sandbox/ },
    { name: 'not JSON', body: 'port=8000', status: 400, match: /not JSON/ },
  ];
  for (const c of bad) {
    test(`bad request: ${c.name} → ${c.status}`, async () => {
      const res = await app.request(c.path ?? `/v1/sandboxes/${SB.id}/tunnels`, op({ method: 'POST', body: typeof c.body === 'string' ? c.body : JSON.stringify(c.body) }));
      const body = (await res.json()) as { message: string };
      assert.equal(res.status, c.status, body.message);
      assert.match(body.message, c.match);
    });
  }
});
