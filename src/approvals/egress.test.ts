/**
 * The egress proxy holding requests for approval, end to end over loopback:
 * a client that trusts only the egress CA, an intercepted upstream with the
 * rule `{ method: POST, path: /deploy, action: approve }`, a plain-HTTP
 * upstream with the same rule, the real SQLite store and audit log. The test
 * plays the operator through `decide`; the upstream counts what reaches it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { queryEvents } from '../audit/index.js';
import { createEgressCa, createEgressProxy, type EgressCa, type EgressProxy } from '../egress/index.js';
import type { EgressRuleInput } from '../policy/index.js';
import { sleep } from '../util/index.js';
import { egressApprovalHook } from './egress.js';
import type { Approval } from './table.js';
import { approvalsHarness, loopbackUpstreams, type ApprovalsHarness, type LoopbackUpstreams } from './testing.js';

let h: ApprovalsHarness;
let ca: EgressCa;
let upstreams: LoopbackUpstreams;
let httpsPort: number;
let plainPort: number;
const received: { method: string; url: string; body: string; authorization?: string }[] = [];
const proxies: EgressProxy[] = [];

function upstream(req: IncomingMessage, res: ServerResponse): void {
  let body = '';
  req.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => {
    received.push({ method: req.method ?? '', url: req.url ?? '', body, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    res.end(JSON.stringify({ deployed: true }));
  });
}

before(async () => {
  h = await approvalsHarness({ maxPendingPerAgent: 1 });
  ca = createEgressCa({ commonName: 'cordon test egress CA' });
  upstreams = await loopbackUpstreams(upstream, ['api.example.com']);
  ({ httpsPort, plainPort } = upstreams);
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  upstreams.close();
  await h.close();
});

async function door(sandboxId: string, o: { holdTimeoutMs: number; maxApprovalBodyBytes?: number; withHook?: boolean }) {
  const rules: EgressRuleInput['rules'] = [{ method: 'POST', path: '/deploy', action: 'approve' }, { method: 'GET', path: '/status', action: 'allow' }];
  const proxy = createEgressProxy({
    lookup: async () => [{ address: '127.0.0.1', family: 4 }], ca, upstreamCa: upstreams.caPem,
    limits: { maxApprovalBodyBytes: o.maxApprovalBodyBytes ?? 1024 * 1024 },
    ...(o.withHook === false ? {} : { approve: egressApprovalHook(h.approvals, { holdTimeoutMs: o.holdTimeoutMs }) }),
  });
  proxies.push(proxy);
  const d = proxy.openDoor({
    sandboxId, agent: 'reviewer', audit: h.audit,
    // The upstreams listen on loopback: the CIDR entry lets the address check pass (as in the proxy's own tests).
    agentConfig: { egress: [{ host: 'api.example.com', ports: [httpsPort, plainPort], rules }, { cidr: '127.0.0.1/32', ports: [httpsPort, plainPort], rules }] },
  });
  return (await d.listen(0, '127.0.0.1')).port;
}

interface Reply { status: number; error?: string; body: string }

/** Read one response (Content-Length body) from a socket. */
async function readReply(s: Socket | TLSSocket): Promise<Reply> {
  let buf = Buffer.alloc(0);
  for (;;) {
    const end = buf.indexOf('\r\n\r\n');
    if (end >= 0) {
      const head = buf.subarray(0, end).toString('latin1');
      const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length >= end + 4 + len) {
        const error = /\r\nx-cordon-error:\s*(\S+)/i.exec(head)?.[1];
        return { status: Number(head.split(' ')[1]), ...(error ? { error } : {}), body: buf.subarray(end + 4, end + 4 + len).toString() };
      }
    }
    const chunk = await Promise.race([once(s, 'data').then(([c]) => c as Buffer), once(s, 'close').then(() => undefined)]);
    if (!chunk) return { status: 0, body: buf.toString() };
    buf = Buffer.concat([buf, chunk]);
  }
}

/** One POST through an intercepted tunnel. */
async function postHttps(port: number, path: string, body: string, extra = ''): Promise<Reply> {
  const raw = netConnect({ port, host: '127.0.0.1' });
  raw.on('error', () => undefined);
  raw.write(`CONNECT api.example.com:${httpsPort} HTTP/1.1\r\nHost: api.example.com:${httpsPort}\r\n\r\n`);
  const connectReply = await readReply(raw);
  assert.equal(connectReply.status, 200, 'the CONNECT is allowed');
  const t = tlsConnect({ socket: raw, servername: 'api.example.com', ca: ca.certPem });
  await once(t, 'secureConnect');
  t.write(`POST ${path} HTTP/1.1\r\nHost: api.example.com:${httpsPort}\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  try {
    return await readReply(t);
  } finally {
    t.destroy();
  }
}

/** One plain-HTTP proxy POST. */
async function postHttp(port: number, path: string, body: string): Promise<Reply> {
  const s = netConnect({ port, host: '127.0.0.1' });
  s.on('error', () => undefined);
  s.write(`POST http://api.example.com:${plainPort}${path} HTTP/1.1\r\nHost: api.example.com:${plainPort}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  try {
    return await readReply(s);
  } finally {
    s.destroy();
  }
}

/** Wait until a pending approval for this sandbox appears. */
async function pendingFor(sandboxId: string): Promise<Approval> {
  for (let i = 0; i < 300; i++) {
    const found = (await h.approvals.list({ state: 'pending' })).find((a) => a.action.sandboxId === sandboxId);
    if (found) return found;
    await sleep(10);
  }
  throw new Error(`no pending approval for ${sandboxId}`);
}

test('intercepted host: the request waits, an operator approves, the upstream gets exactly that request once; a replay needs a new approval', async () => {
  const port = await door('sb-approve', { holdTimeoutMs: 4000 });
  const before = received.length;
  const body = '{"env":"prod","version":"1.2.3"}';
  const reply = postHttps(port, '/deploy', body, 'Authorization: Bearer agent-secret-value\r\n');
  const pending = await pendingFor('sb-approve');
  assert.equal(received.length, before, 'nothing reached the upstream while the request is held');
  assert.equal(pending.action.method, 'POST');
  assert.equal(pending.action.url, `https://api.example.com:${httpsPort}/deploy`);
  assert.equal(pending.action.bodyExcerpt, body);
  assert.equal(pending.action.headers?.authorization, '[masked]');
  assert.equal(pending.action.agent, 'reviewer');
  await h.approvals.decide(pending.id, 'operator', 'approve');
  const r = await reply;
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(received.slice(before), [{ method: 'POST', url: '/deploy', body, authorization: 'Bearer agent-secret-value' }]);
  assert.ok((await h.approvals.get(pending.id))?.consumedAt, 'the approval is used');
  const forwarded = (await queryEvents(h.store, { sandbox: 'sb-approve', type: 'egress.request' })).filter((e) => e.data.approval === pending.id && e.decision === 'allow');
  assert.equal(forwarded.length, 1, 'the forwarded request is recorded with its approval');

  // The same request again: the used approval does not cover it; nobody decides, so it times out.
  const replay = postHttps(port, '/deploy', body, 'Authorization: Bearer agent-secret-value\r\n');
  const second = await pendingFor('sb-approve');
  assert.notEqual(second.id, pending.id, 'a replay asks for a new approval');
  await h.approvals.decide(second.id, 'operator', 'deny', 'not twice');
  const denied = await replay;
  assert.deepEqual([denied.status, denied.error], [403, 'approval-denied']);
  assert.equal(received.length, before + 1, 'the upstream received the request exactly once');
});

test('plain HTTP: approve forwards the buffered body; deny is 403 approval-denied; nobody deciding is 403 approval-timeout', async () => {
  const port = await door('sb-plain', { holdTimeoutMs: 4000 });
  const before = received.length;
  const ok = postHttp(port, '/deploy', 'exact-bytes');
  await h.approvals.decide((await pendingFor('sb-plain')).id, 'operator', 'approve');
  assert.equal((await ok).status, 200);
  assert.deepEqual(received.slice(before).map((x) => [x.method, x.url, x.body]), [['POST', '/deploy', 'exact-bytes']]);

  const no = postHttp(port, '/deploy', 'other-bytes');
  await h.approvals.decide((await pendingFor('sb-plain')).id, 'operator', 'deny');
  assert.deepEqual([(await no).status, (await no).error], [403, 'approval-denied']);

  const shortPort = await door('sb-timeout', { holdTimeoutMs: 300 });
  const started = Date.now();
  const late = await postHttp(shortPort, '/deploy', 'nobody-looks');
  assert.deepEqual([late.status, late.error], [403, 'approval-timeout']);
  assert.ok(Date.now() - started >= 280, 'the request waited for the hold timeout');
  const expired = (await h.approvals.list({ state: 'expired' })).filter((a) => a.action.sandboxId === 'sb-timeout');
  assert.deepEqual(expired.map((a) => a.reason), ['hold-timeout'], 'a timeout denies: the approval expired');
  assert.equal(received.length, before + 1, 'only the approved request reached the upstream');
});

test('bad input at the proxy: oversized held body, a flood, a client that gives up, no approvals running: clear refusals, nothing forwarded', async () => {
  const before = received.length;
  const small = await door('sb-big', { holdTimeoutMs: 2000, maxApprovalBodyBytes: 64 });
  const big = await postHttp(small, '/deploy', 'x'.repeat(65));
  assert.deepEqual([big.status, big.error], [413, 'approval-body-too-large']);
  assert.equal((await h.approvals.list()).filter((a) => a.action.sandboxId === 'sb-big').length, 0, 'no approval for a refused body');

  // maxPendingPerAgent is 1 in this file: a second held request of the same agent is refused at once.
  const port = await door('sb-flood', { holdTimeoutMs: 3000 });
  const first = postHttp(port, '/deploy', 'one');
  const held = await pendingFor('sb-flood');
  const flood = await postHttp(port, '/deploy', 'two');
  assert.deepEqual([flood.status, flood.error], [429, 'approval-flood']);
  await h.approvals.decide(held.id, 'operator', 'deny');
  assert.equal((await first).error, 'approval-denied');

  // A client that gives up while held abandons its approval: approving it afterwards is refused, nothing is sent.
  const gone = await door('sb-gone', { holdTimeoutMs: 3000 });
  const s = netConnect({ port: gone, host: '127.0.0.1' });
  s.on('error', () => undefined);
  s.write(`POST http://api.example.com:${plainPort}/deploy HTTP/1.1\r\nHost: api.example.com:${plainPort}\r\nContent-Length: 4\r\n\r\ngone`);
  const abandoned = await pendingFor('sb-gone');
  s.destroy();
  for (let i = 0; i < 200 && (await h.approvals.get(abandoned.id))?.state === 'pending'; i++) await sleep(10);
  assert.deepEqual([(await h.approvals.get(abandoned.id))?.state, (await h.approvals.get(abandoned.id))?.reason], ['expired', 'abandoned']);
  await assert.rejects(h.approvals.decide(abandoned.id, 'operator', 'approve'), /already expired/);

  const none = await door('sb-none', { holdTimeoutMs: 1000, withHook: false });
  const refused = await postHttp(none, '/deploy', 'x');
  assert.deepEqual([refused.status, refused.error], [403, 'approval-not-available']);
  assert.equal(received.length, before, 'nothing reached the upstream');
});
