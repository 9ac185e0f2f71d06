/**
 * Supervised sandboxes: the decision table (allow → approve, deny and
 * approve unchanged), the durable mark (survives reopening the store,
 * audited with the alert id, lifted only by an operator), the API routes,
 * and the egress proxy over loopback carrying out the table for plain HTTP,
 * intercepted HTTPS and plain CONNECT tunnels with the real approvals hook,
 * and the tools gateway doing the same for tool calls.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { createApi, operatorTokenChecker } from '../api/index.js';
import { queryEvents } from '../audit/index.js';
import { createEgressCa, createEgressProxy, type EgressCa, type EgressProxy } from '../egress/index.js';
import { createSandboxKeys } from '../identity/index.js';
import { localUpstream, resultText, SANDBOX_A, SANDBOX_B, startToolsHarness, type ToolsHarness } from '../tools/testing/harness.js';
import { sleep } from '../util/index.js';
import { egressApprovalHook } from './egress.js';
import { createApprovals } from './approvals.js';
import { underSupervision, type DoorResult } from './supervise.js';
import type { Approval } from './table.js';
import { approvalsHarness, loopbackUpstreams, type ApprovalsHarness, type LoopbackUpstreams } from './testing.js';

describe('the decision table of a supervised sandbox', () => {
  const cases: { name: string; result: DoorResult; supervised: boolean; want: DoorResult }[] = [
    { name: 'allowed, not supervised: allowed', result: 'allow', supervised: false, want: 'allow' },
    { name: 'allowed, supervised: held for approval', result: 'allow', supervised: true, want: 'approve' },
    { name: 'denied, supervised: still denied (supervision never opens anything)', result: 'deny', supervised: true, want: 'deny' },
    { name: 'denied, not supervised: denied', result: 'deny', supervised: false, want: 'deny' },
    { name: 'a rule marked approve, supervised: held, as before', result: 'approve', supervised: true, want: 'approve' },
    { name: 'a rule marked approve, not supervised: held', result: 'approve', supervised: false, want: 'approve' },
  ];
  for (const c of cases) test(c.name, () => assert.equal(underSupervision(c.result, c.supervised), c.want));
});

describe('the supervised mark', () => {
  let h: ApprovalsHarness;
  before(async () => { h = await approvalsHarness(); });
  after(async () => { await h.close(); });

  test('durable and audited: set by an alert, survives a reopen, lifted by an operator only', async () => {
    const mark = await h.approvals.supervise({ sandboxId: 'sb-one', agent: 'coder', alertId: 'al-123', reason: 'novelty:domain' });
    assert.deepEqual([mark.sandboxId, mark.agent, mark.alertId, mark.reason], ['sb-one', 'coder', 'al-123', 'novelty:domain']);
    assert.equal(h.approvals.isSupervised('sb-one'), true);
    assert.equal(h.approvals.isSupervised('sb-two'), false, 'another sandbox of the same agent is not supervised');
    await h.approvals.supervise({ sandboxId: 'sb-one', agent: 'coder', alertId: 'al-456', reason: 'rate:requests' });
    const set = await h.events('sandbox.supervised');
    assert.deepEqual(set.map((e) => [e.actor, e.sandbox, e.agent, e.data.alert, e.data.reason]), [['system:detect', 'sb-one', 'coder', 'al-123', 'novelty:domain']],
      'one event, with the alert that set the mark; a second alert keeps the first mark');

    await h.reopen();
    assert.equal(h.approvals.isSupervised('sb-one'), true, 'the mark survives a restart');
    assert.deepEqual((await h.approvals.listSupervised()).map((m) => [m.sandboxId, m.alertId]), [['sb-one', 'al-123']]);

    const refusals: { name: string; sandbox: string; operator: string; code: string }[] = [
      { name: 'an agent identity', sandbox: 'sb-one', operator: 'agent:coder', code: 'approval-forbidden' },
      { name: 'a sandbox that is not supervised', sandbox: 'sb-two', operator: 'operator', code: 'approval-not-supervised' },
      { name: 'not a sandbox id', sandbox: '../etc', operator: 'operator', code: 'approval-not-supervised' },
    ];
    for (const c of refusals) await assert.rejects(h.approvals.unsupervise(c.sandbox, c.operator), (err: { code?: string }) => err.code === c.code, c.name);
    assert.equal(h.approvals.isSupervised('sb-one'), true, 'no refused lift lifted anything');

    await h.approvals.unsupervise('sb-one', 'operator:alice', 'looked at it');
    assert.equal(h.approvals.isSupervised('sb-one'), false);
    const lifted = await h.events('sandbox.unsupervised');
    assert.deepEqual(lifted.map((e) => [e.actor, e.sandbox, e.data.alert, e.data.note]), [['operator:alice', 'sb-one', 'al-123', 'looked at it']]);
    await h.reopen();
    assert.equal(h.approvals.isSupervised('sb-one'), false, 'the lift is durable too');
  });

  test('a mark set by another control plane on the same store is seen after the next reload', async () => {
    const other = await createApprovals({ store: h.store, audit: h.audit, config: { ttlMs: 60_000, holdTimeoutMs: 1000, twoApprovers: false } });
    try {
      await other.supervise({ sandboxId: 'sb-elsewhere', agent: 'coder', alertId: 'al-9', reason: 'volume:bytesOut' });
      assert.equal(h.approvals.isSupervised('sb-elsewhere'), false, 'not yet: the memory copy follows the table at the sweep');
      await h.approvals.reloadSupervised();
      assert.equal(h.approvals.isSupervised('sb-elsewhere'), true);
      await other.unsupervise('sb-elsewhere', 'operator');
      await h.approvals.reloadSupervised();
      assert.equal(h.approvals.isSupervised('sb-elsewhere'), false);
    } finally {
      other.close();
    }
  });

  test('a mark whose event cannot be written still takes effect, and the failure is reported', async () => {
    const failing = { append: async () => { throw new Error('disk full'); } };
    const other = await createApprovals({ store: h.store, audit: failing, config: { ttlMs: 60_000, holdTimeoutMs: 1000, twoApprovers: false } });
    try {
      await assert.rejects(other.supervise({ sandboxId: 'sb-nolog', agent: 'coder', alertId: 'al-1', reason: 'novelty:domain' }), /disk full/);
      assert.equal(other.isSupervised('sb-nolog'), true, 'a restriction is never held up by the log');
      await assert.rejects(other.unsupervise('sb-nolog', 'operator'), /disk full/);
      assert.equal(other.isSupervised('sb-nolog'), true, 'a lift that cannot be recorded does not happen');
    } finally {
      other.close();
    }
  });

  test('API: operators list and lift; an agent credential gets 403 and lifts nothing', async () => {
    const TOKEN = 'cop_' + 'B'.repeat(43);
    const API_SB = `sb-${'a'.repeat(20)}`;
    const app = createApi({ audit: h.audit, isOperatorToken: operatorTokenChecker(TOKEN), version: '0.0.0-test', approvals: h.approvals });
    const op = { authorization: `Bearer ${TOKEN}` };
    await h.approvals.supervise({ sandboxId: API_SB, agent: 'coder', alertId: 'al-api', reason: 'novelty:domain' });
    const list = await app.request('/v1/approvals/supervised', { headers: op });
    assert.equal(list.status, 200);
    assert.ok(((await list.json()) as { supervised: { sandboxId: string }[] }).supervised.some((m) => m.sandboxId === API_SB));
    const agentKey = createSandboxKeys().issue(API_SB);
    const bad: { name: string; path: string; headers: Record<string, string>; body?: string; status: number; error: string }[] = [
      { name: 'agent credential', path: `/v1/approvals/supervised/${API_SB}/lift`, headers: { authorization: `Bearer ${agentKey}` }, status: 403, error: 'forbidden' },
      { name: 'no token', path: `/v1/approvals/supervised/${API_SB}/lift`, headers: {}, status: 401, error: 'unauthenticated' },
      { name: 'not a sandbox id', path: '/v1/approvals/supervised/x..y/lift', headers: op, status: 404, error: 'not-found' },
      { name: 'not supervised', path: '/v1/approvals/supervised/sb-other/lift', headers: op, status: 404, error: 'approval-not-supervised' },
      { name: 'unknown body field', path: `/v1/approvals/supervised/${API_SB}/lift`, headers: op, body: '{"by":"me"}', status: 400, error: 'invalid-input' },
    ];
    for (const c of bad) {
      const res = await app.request(c.path, { method: 'POST', headers: c.headers, ...(c.body ? { body: c.body } : {}) });
      assert.equal(res.status, c.status, c.name);
      assert.equal(((await res.json()) as { error: string }).error, c.error, c.name);
    }
    assert.equal(h.approvals.isSupervised(API_SB), true, 'no refused request lifted the mark');
    const ok = await app.request(`/v1/approvals/supervised/${API_SB}/lift`, { method: 'POST', headers: op, body: '{"reason":"false alarm"}' });
    assert.equal(ok.status, 200);
    assert.equal(h.approvals.isSupervised(API_SB), false);
    const lifted = (await h.events('sandbox.unsupervised')).filter((e) => e.sandbox === API_SB);
    assert.deepEqual(lifted.map((e) => [e.actor, e.data.note]), [['operator', 'false alarm']]);
  });
});

describe('the egress proxy carries out the table', () => {
  let h: ApprovalsHarness;
  let ca: EgressCa;
  let upstreams: LoopbackUpstreams;
  let httpsPort: number;
  let plainPort: number;
  let upstreamCaPem: string;
  const received: string[] = [];
  const proxies: EgressProxy[] = [];

  const upstream = (req: IncomingMessage, res: ServerResponse): void => {
    req.resume().on('end', () => {
      received.push(`${req.method} ${req.headers.host} ${req.url}`);
      res.end('ok');
    });
  };

  before(async () => {
    h = await approvalsHarness();
    ca = createEgressCa({ commonName: 'cordon test egress CA' });
    upstreams = await loopbackUpstreams(upstream, ['api.example.com', 'plain.example.com']);
    ({ caPem: upstreamCaPem, httpsPort, plainPort } = upstreams);
  });

  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    upstreams.close();
    await h.close();
  });

  async function door(sandboxId: string, holdTimeoutMs = 4000): Promise<number> {
    const proxy = createEgressProxy({
      lookup: async () => [{ address: '127.0.0.1', family: 4 }], ca, upstreamCa: upstreamCaPem,
      approve: egressApprovalHook(h.approvals, { holdTimeoutMs }),
      supervised: (id) => h.approvals.isSupervised(id),
    });
    proxies.push(proxy);
    const ports = [httpsPort, plainPort];
    const d = proxy.openDoor({
      sandboxId, agent: 'coder', audit: h.audit,
      agentConfig: {
        egress: [
          { host: 'api.example.com', ports, rules: [{ method: 'POST', path: '/deploy', action: 'approve' }, { method: 'GET', path: '/status', action: 'allow' }] },
          { host: 'plain.example.com', ports },
          { cidr: '127.0.0.1/32', ports },
        ],
      },
    });
    return (await d.listen(0, '127.0.0.1')).port;
  }

  interface Reply { status: number; error?: string }
  async function readHead(s: Socket | TLSSocket): Promise<Reply> {
    let buf = '';
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end >= 0) {
        const head = buf.slice(0, end);
        const error = /\r\nx-cordon-error:\s*(\S+)/i.exec(head)?.[1];
        return { status: Number(head.split(' ')[1]), ...(error ? { error } : {}) };
      }
      const chunk = await Promise.race([once(s, 'data').then(([c]) => String(c)), once(s, 'close').then(() => undefined)]);
      if (chunk === undefined) return { status: 0 };
      buf += chunk;
    }
  }

  /** One request: `http` (plain proxy GET), `https` (GET inside an intercepted tunnel) or `tunnel` (plain CONNECT, then GET over TLS end to end). */
  async function request(port: number, kind: 'http' | 'https' | 'tunnel', host: string, path: string, method = 'GET'): Promise<Reply> {
    const raw = netConnect({ port, host: '127.0.0.1' });
    raw.on('error', () => undefined);
    try {
      if (kind === 'http') {
        raw.write(`${method} http://${host}:${plainPort}${path} HTTP/1.1\r\nHost: ${host}:${plainPort}\r\nContent-Length: 0\r\n\r\n`);
        return await readHead(raw);
      }
      raw.write(`CONNECT ${host}:${httpsPort} HTTP/1.1\r\nHost: ${host}:${httpsPort}\r\n\r\n`);
      const connected = await readHead(raw);
      if (connected.status !== 200) return connected;
      const t = tlsConnect({ socket: raw, servername: host, ca: kind === 'https' ? ca.certPem : upstreamCaPem });
      t.on('error', () => undefined);
      await once(t, 'secureConnect');
      t.write(`${method} ${path} HTTP/1.1\r\nHost: ${host}:${httpsPort}\r\nContent-Length: 0\r\n\r\n`);
      return await readHead(t);
    } finally {
      raw.destroy();
    }
  }

  async function pendingFor(sandboxId: string): Promise<Approval> {
    for (let i = 0; i < 300; i++) {
      const found = (await h.approvals.list({ state: 'pending' })).find((a) => a.action.sandboxId === sandboxId);
      if (found) return found;
      await sleep(10);
    }
    throw new Error(`no pending approval for ${sandboxId}`);
  }

  const cases: {
    name: string; supervised: boolean; kind: 'http' | 'https' | 'tunnel'; host: string; path: string; method?: string;
    verdict?: 'approve' | 'deny'; shown?: string; want: Reply; reaches: boolean;
  }[] = [
    { name: 'plain HTTP, allowed, not supervised: forwarded at once', supervised: false, kind: 'http', host: 'plain.example.com', path: '/a', want: { status: 200 }, reaches: true },
    { name: 'plain HTTP, allowed, supervised: held, approved, forwarded', supervised: true, kind: 'http', host: 'plain.example.com', path: '/b', verdict: 'approve', shown: 'GET http://plain.example.com:PLAIN/b', want: { status: 200 }, reaches: true },
    { name: 'plain HTTP, denied host, supervised: denied, nothing held', supervised: true, kind: 'http', host: 'evil.example.net', path: '/c', want: { status: 403, error: 'host-not-allowed' }, reaches: false },
    { name: 'intercepted, allowed path, supervised: held, denied, never sent', supervised: true, kind: 'https', host: 'api.example.com', path: '/status', verdict: 'deny', shown: 'GET https://api.example.com:HTTPS/status', want: { status: 403, error: 'approval-denied' }, reaches: false },
    { name: 'intercepted, path no rule allows, supervised: still denied', supervised: true, kind: 'https', host: 'api.example.com', path: '/admin', want: { status: 403, error: 'no-path-rule' }, reaches: false },
    { name: 'intercepted, rule marked approve, not supervised: held as before', supervised: false, kind: 'https', host: 'api.example.com', path: '/deploy', method: 'POST', verdict: 'approve', shown: 'POST https://api.example.com:HTTPS/deploy', want: { status: 200 }, reaches: true },
    { name: 'plain CONNECT tunnel, supervised: CONNECT host:port held, approved, tunnel opens', supervised: true, kind: 'tunnel', host: 'plain.example.com', path: '/d', verdict: 'approve', shown: 'CONNECT plain.example.com:HTTPS', want: { status: 200 }, reaches: true },
    { name: 'plain CONNECT tunnel, supervised: denied, nothing dialled', supervised: true, kind: 'tunnel', host: 'plain.example.com', path: '/e', verdict: 'deny', shown: 'CONNECT plain.example.com:HTTPS', want: { status: 403, error: 'approval-denied' }, reaches: false },
    { name: 'plain CONNECT tunnel, not supervised: opens at once', supervised: false, kind: 'tunnel', host: 'plain.example.com', path: '/f', want: { status: 200 }, reaches: true },
  ];
  for (const [i, c] of cases.entries()) {
    test(c.name, async () => {
      const sandboxId = `sb-table-${i}`;
      if (c.supervised) await h.approvals.supervise({ sandboxId, agent: 'coder', alertId: `al-${i}`, reason: 'novelty:domain' });
      const port = await door(sandboxId);
      const before = received.length;
      const reply = request(port, c.kind, c.host, c.path, c.method);
      if (c.verdict) {
        const pending = await pendingFor(sandboxId);
        assert.equal(received.length, before, 'nothing reached the upstream while held');
        const shown = `${pending.action.method} ${pending.action.url}`.replace(`:${plainPort}`, ':PLAIN').replace(`:${httpsPort}`, ':HTTPS');
        assert.equal(shown, c.shown, 'the approver sees the exact action');
        assert.deepEqual(pending.action.supervised, c.supervised ? { alertId: `al-${i}`, reason: 'novelty:domain' } : undefined, 'and why it is held');
        await h.approvals.decide(pending.id, 'operator', c.verdict);
      }
      assert.deepEqual(await reply, c.want);
      await sleep(20);
      assert.equal(received.length - before, c.reaches ? 1 : 0, c.reaches ? 'the upstream got the request once' : 'the upstream got nothing');
      const all = await h.approvals.list({ limit: 1000 });
      assert.equal(all.filter((a) => a.action.sandboxId === sandboxId).length, c.verdict ? 1 : 0, 'approvals asked for');
      if (c.verdict === 'approve') {
        const allowed = (await queryEvents(h.store, { sandbox: sandboxId, type: 'egress.request', limit: 100 })).filter((e) => e.decision === 'allow' && e.data.approval);
        assert.equal(allowed.length, 1, 'the forwarded action is recorded with its approval');
      }
    });
  }

  test('a plain tunnel opened before the mark carries nothing more out once the sandbox is supervised', async () => {
    const port = await door('sb-open-tunnel');
    const raw = netConnect({ port, host: '127.0.0.1' });
    raw.on('error', () => undefined);
    try {
      raw.write(`CONNECT plain.example.com:${httpsPort} HTTP/1.1\r\nHost: plain.example.com:${httpsPort}\r\n\r\n`);
      assert.equal((await readHead(raw)).status, 200);
      const t = tlsConnect({ socket: raw, servername: 'plain.example.com', ca: upstreamCaPem });
      t.on('error', () => undefined);
      await once(t, 'secureConnect');
      const before = received.length;
      t.write(`GET /one HTTP/1.1\r\nHost: plain.example.com:${httpsPort}\r\n\r\n`);
      assert.equal((await readHead(t)).status, 200, 'not supervised yet: the tunnel works');
      await h.approvals.supervise({ sandboxId: 'sb-open-tunnel', agent: 'coder', alertId: 'al-open', reason: 'novelty:domain' });
      t.write(`GET /two HTTP/1.1\r\nHost: plain.example.com:${httpsPort}\r\n\r\n`);
      assert.equal((await readHead(t)).status, 0, 'the tunnel is closed instead of carrying the request');
      assert.equal(received.length - before, 1, 'only the request before the mark reached the upstream');
      let closed;
      for (let i = 0; i < 100 && !closed; i++) {
        closed = (await queryEvents(h.store, { sandbox: 'sb-open-tunnel', type: 'egress.close', limit: 10 }))[0];
        if (!closed) await sleep(20);
      }
      assert.equal(closed?.reason, 'supervised');
    } finally {
      raw.destroy();
    }
  });

  test('a supervised request nobody decides is denied at the hold timeout', async () => {
    await h.approvals.supervise({ sandboxId: 'sb-late', agent: 'coder', alertId: 'al-late', reason: 'rate:requests' });
    const port = await door('sb-late', 300);
    const before = received.length;
    assert.deepEqual(await request(port, 'http', 'plain.example.com', '/late'), { status: 403, error: 'approval-timeout' });
    assert.equal(received.length, before);
  });

  test('a supervised check that throws holds the request (fails closed)', async () => {
    const proxy = createEgressProxy({
      lookup: async () => [{ address: '127.0.0.1', family: 4 }],
      approve: egressApprovalHook(h.approvals, { holdTimeoutMs: 300 }),
      supervised: () => { throw new Error('store gone'); },
    });
    proxies.push(proxy);
    const d = proxy.openDoor({ sandboxId: 'sb-throws', agent: 'coder', audit: h.audit, agentConfig: { egress: [{ host: 'plain.example.com', ports: [plainPort] }, { cidr: '127.0.0.1/32', ports: [plainPort] }] } });
    const port = (await d.listen(0, '127.0.0.1')).port;
    const before = received.length;
    assert.deepEqual(await request(port, 'http', 'plain.example.com', '/x'), { status: 403, error: 'approval-timeout' });
    assert.equal(received.length, before);
  });
});

describe('the tools gateway carries out the table', () => {
  let t: ToolsHarness;
  let client: Client;
  let other: Client;

  before(async () => {
    t = await startToolsHarness({
      holdTimeoutMs: 4000,
      config: {
        version: 1,
        mcpServers: { local: localUpstream() },
        agents: { coder: { isolation: 'bubblewrap', tools: { local: { allow: ['echo', 'counter'], deny: ['counter'] } } } },
      },
    });
    client = await t.client(t.doors.a, t.keys.issue(SANDBOX_A.sandboxId));
    other = await t.client(t.doors.b, t.keys.issue(SANDBOX_B.sandboxId));
  });
  after(async () => { await t?.close(); });

  const pendingTools = async (sandboxId: string) => (await t.h.approvals.list({ state: 'pending' })).filter((a) => a.action.sandboxId === sandboxId);
  const refusalOf = (r: unknown) => ((r as { _meta?: Record<string, { reason?: string }> })._meta ?? {})['cordon/refusal']?.reason;

  test('allowed calls of a supervised sandbox wait for an operator; denied ones stay denied; other sandboxes and a lifted mark flow', async () => {
    assert.equal(resultText(await client.callTool({ name: 'local__echo', arguments: { text: 'before' } })), 'before', 'not supervised: runs at once');
    await t.h.approvals.supervise({ sandboxId: SANDBOX_A.sandboxId, agent: 'coder', alertId: 'al-tools', reason: 'novelty:tool' });

    const held = client.callTool({ name: 'local__echo', arguments: { text: 'held' } });
    let pending: Approval | undefined;
    for (let i = 0; i < 200 && !pending; i++) {
      pending = (await pendingTools(SANDBOX_A.sandboxId))[0];
      if (!pending) await sleep(20);
    }
    assert.ok(pending, 'the allowed call is held');
    assert.deepEqual([pending.action.kind, pending.action.toolName, pending.action.args], ['tool', 'local__echo', { text: 'held' }]);
    assert.deepEqual(pending.action.supervised, { alertId: 'al-tools', reason: 'novelty:tool' });
    await t.h.approvals.decide(pending.id, 'operator', 'approve');
    assert.equal(resultText(await held), 'held', 'approved: it runs');

    const denied = await client.callTool({ name: 'local__counter', arguments: {} });
    assert.equal(refusalOf(denied), 'tool-denied', 'a denied tool stays denied, nothing is held');
    assert.equal((await pendingTools(SANDBOX_A.sandboxId)).length, 0);

    assert.equal(resultText(await other.callTool({ name: 'local__echo', arguments: { text: 'b' } })), 'b', 'another sandbox of the agent is not held');

    await t.h.approvals.unsupervise(SANDBOX_A.sandboxId, 'operator');
    assert.equal(resultText(await client.callTool({ name: 'local__echo', arguments: { text: 'after' } })), 'after', 'lifted: runs at once');
    assert.equal((await pendingTools(SANDBOX_A.sandboxId)).length, 0);
  });
});
