/**
 * The refusal audit budget (`refusals.ts`): the token bucket and the summary
 * on their own, then a door flooded with refused requests on a real audit
 * log: every refusal still answered, the log bounded, every refusal accounted
 * for (one by one or counted), allowed requests still each on record; and a
 * door that closes writes what is counted and each refusal still to come.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { AuditLog, queryEvents } from '../audit/index.js';
import { openStore, type Store } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { createEgressCa, createEgressProxy, type EgressProxy } from './index.js';
import { createRefusalBudget, SUMMARY_MAX_HOSTS, type RefusalSummary } from './refusals.js';

test('the budget: a burst, then the rate; what is past it is counted by decision and reason, hosts bounded', () => {
  let t = 1_000_000;
  const written: RefusalSummary[] = [];
  const budget = createRefusalBudget({ perSecond: 2, burst: 3, write: (s) => written.push(s), now: () => t });
  assert.deepEqual([budget.admit(), budget.admit(), budget.admit(), budget.admit()], [true, true, true, false], 'a burst of 3');
  t += 499;
  assert.equal(budget.admit(), false, 'not yet one token back');
  t += 1;
  assert.equal(budget.admit(), true, 'one token back after 500 ms at 2 a second');
  t += 60_000;
  assert.deepEqual([budget.admit(), budget.admit(), budget.admit(), budget.admit()], [true, true, true, false], 'a quiet minute refills only up to the burst');

  for (let i = 0; i < 25; i++) budget.count('deny', 'host-not-allowed', `h${i % 15}.example`);
  t += 10;
  budget.count('error', 'dns-failed', 'x'.repeat(1000));
  budget.count('deny', 'bad-request');
  assert.equal(written.length, 0, 'nothing is written before the summary is due');
  budget.flush();
  assert.equal(written.length, 1);
  const s = written[0]!;
  assert.equal(s.count, 27);
  assert.deepEqual(JSON.parse(JSON.stringify(s.byDecision)), { deny: { 'host-not-allowed': 25, 'bad-request': 1 }, error: { 'dns-failed': 1 } });
  assert.equal(s.hosts.length, SUMMARY_MAX_HOSTS);
  assert.deepEqual(s.hosts.slice(0, 3), ['h0.example', 'h1.example', 'h2.example']);
  assert.equal(s.moreHosts, 6, '5 more distinct example hosts and the long one, each once');
  assert.deepEqual([s.firstAt, s.lastAt], [t - 10, t]);
  budget.flush();
  assert.equal(written.length, 1, 'an empty flush writes nothing');
});

test('keys that are names of Object.prototype are counted like any other and touch no prototype', () => {
  const written: RefusalSummary[] = [];
  const budget = createRefusalBudget({ perSecond: 1, burst: 1, write: (s) => written.push(s) });
  budget.count('__proto__', 'constructor', 'a.example');
  budget.count('__proto__', 'toString');
  budget.count('deny', '__proto__');
  budget.flush();
  assert.equal(({} as Record<string, unknown>).constructor, Object, 'Object.prototype untouched');
  assert.equal(JSON.stringify(written[0]!.byDecision), '{"__proto__":{"constructor":1,"toString":1},"deny":{"__proto__":1}}');
});

test('a wall clock set back does not spend the budget: tokens come back at the rate from the new time', () => {
  let t = 1_000_000_000;
  const budget = createRefusalBudget({ perSecond: 2, burst: 3, write: () => undefined, now: () => t });
  assert.deepEqual([budget.admit(), budget.admit(), budget.admit(), budget.admit()], [true, true, true, false]);
  t -= 3_600_000; // the clock is stepped back an hour
  assert.equal(budget.admit(), false, 'still spent');
  t += 500;
  assert.equal(budget.admit(), true, 'one token back 500 ms later, not an hour and 500 ms later');
  budget.flush();
});

test('the summary is written within a second of the first refusal past the budget, then again for later ones', async () => {
  const written: RefusalSummary[] = [];
  const budget = createRefusalBudget({ perSecond: 1, burst: 1, write: (s) => written.push(s) });
  // Waits for `n` summaries, up to 3 s (a loaded machine may run the 1 s timer late); returns how long that took.
  const summaries = async (n: number): Promise<number> => {
    const from = Date.now();
    while (written.length < n && Date.now() - from < 3_000) await sleep(20);
    return Date.now() - from;
  };
  budget.count('deny', 'host-not-allowed', 'a.example');
  budget.count('deny', 'host-not-allowed', 'a.example');
  assert.ok((await summaries(1)) >= 900, 'not before the second is over');
  assert.deepEqual(written.map((s) => [s.count, s.hosts]), [[2, ['a.example']]]);
  budget.count('deny', 'port-not-allowed', 'a.example');
  await summaries(2);
  assert.deepEqual(written.map((s) => [s.count, s.hosts]), [[2, ['a.example']], [1, ['a.example']]], 'a host is named again in a later summary');
  budget.flush();
});

let dir: { path: string; cleanup: () => void };
let store: Store;
let audit: AuditLog;
let upstream: HttpServer;
let upstreamPort: number;
const proxies: EgressProxy[] = [];

before(async () => {
  dir = tempDir('cordon-refusals-');
  store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys'), checkpointIntervalMs: 60_000 });
  upstream = createHttpServer((_req, res) => res.end('ok'));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamPort = (upstream.address() as { port: number }).port;
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  upstream.close();
  await audit.close();
  await store.close();
  dir.cleanup();
});

/**
 * Send one request head on a new connection; resolves with the status line and the X-Cordon-Error value.
 * `close` false: the connection is left open (and returned) after the answer's head.
 */
function ask(port: number, head: string, close = true): Promise<{ status: number; reason?: string; retryAfter?: string; socket?: Socket }> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ port, host: '127.0.0.1' }, () => s.write(head));
    let text = '';
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (close) s.destroy();
      const headText = text.slice(0, end);
      const retryAfter = /^Retry-After: (.+)$/im.exec(headText)?.[1]?.trim();
      resolve({ status: Number(text.split(' ')[1]), reason: /^X-Cordon-Error: (.+)$/im.exec(headText)?.[1]?.trim(), ...(retryAfter ? { retryAfter } : {}), ...(close ? {} : { socket: s }) });
    });
    s.once('error', reject);
  });
}

test('a door flooded with refused requests: every one refused, 10 written one by one, the rest counted, allowed ones still recorded', async () => {
  const proxy = createEgressProxy({
    lookup: async (h) => (h === 'ok.example' ? [{ address: '127.0.0.1', family: 4 }] : []),
    limits: { maxRefusalEventsPerSecond: 1, refusalEventBurst: 10 },
  });
  proxies.push(proxy);
  const door = proxy.openDoor({
    sandboxId: 'sb-flood', agent: 'tester', audit,
    agentConfig: { egress: [{ host: 'ok.example', ports: [upstreamPort] }, { cidr: '127.0.0.1/32', ports: [upstreamPort] }] },
  });
  const { port } = await door.listen(0, '127.0.0.1');
  const flood = 300;
  const answers: Array<{ status: number; reason?: string }> = [];
  for (let wave = 0; wave < flood / 30; wave++) {
    answers.push(...(await Promise.all(Array.from({ length: 30 }, (_, i) => ask(port, `CONNECT probe-${(wave * 30 + i) % 40}.evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n`)))));
  }
  assert.equal(answers.length, flood);
  assert.ok(answers.every((a) => a.status === 403 && a.reason === 'host-not-allowed'), 'each refusal is answered as before, budget or not');

  // An allowed request after the flood still has its own event.
  const ok = await ask(port, `GET http://ok.example:${upstreamPort}/ HTTP/1.1\r\nHost: ok.example:${upstreamPort}\r\n\r\n`);
  assert.equal(ok.status, 200);

  await door.close(); // writes what is still counted
  let summaries: Awaited<ReturnType<typeof queryEvents>> = [];
  for (let i = 0; i < 100; i++) {
    summaries = await queryEvents(store, { sandbox: 'sb-flood', type: 'egress.refusals', limit: 1000 });
    if (summaries.reduce((n, e) => n + (e.data.count as number), 0) + 10 >= flood) break;
    await sleep(20);
  }
  const single = await queryEvents(store, { sandbox: 'sb-flood', type: 'egress.request', limit: 1000 });
  const denied = single.filter((e) => e.decision === 'deny');
  const counted = summaries.reduce((n, e) => n + (e.data.count as number), 0);
  assert.ok(denied.length >= 10 && denied.length <= 12, `about the burst written one by one (${denied.length}; one more a second)`);
  assert.equal(denied.length + counted, flood, 'every refusal is on record, one by one or counted');
  assert.ok(summaries.length >= 1 && summaries.length <= 4, `a few summaries, not one per refusal (${summaries.length})`);
  for (const s of summaries) {
    assert.equal(s.decision, 'deny');
    assert.equal(s.reason, 'refusal-budget');
    assert.deepEqual(Object.keys(s.data.byDecision as object), ['deny']);
    assert.ok((s.data.hosts as string[]).every((h) => /^probe-\d+\.evil\.example$/.test(h)));
  }
  assert.deepEqual(single.filter((e) => e.decision === 'allow').map((e) => e.data.host), ['ok.example'], 'the allowed request is recorded on its own');
});

test('a refusal that comes while the door closes is written on its own, not left to a summary timer that may outlive the audit log', async () => {
  const proxy = createEgressProxy({ lookup: async () => [], limits: { maxRefusalEventsPerSecond: 1, refusalEventBurst: 1 } });
  proxies.push(proxy);
  const door = proxy.openDoor({
    sandboxId: 'sb-closing', agent: 'tester', audit,
    agentConfig: { egress: [{ cidr: '127.0.0.1/32', ports: [upstreamPort] }] },
  });
  const { port } = await door.listen(0, '127.0.0.1');
  // The budget is spent: one refusal written, one counted.
  for (const n of [1, 2]) assert.equal((await ask(port, `CONNECT probe-${n}.evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n`)).status, 403);
  // A tunnel that is open but has sent no ClientHello: closing the door refuses it (client-closed).
  const waiting = await ask(port, `CONNECT 127.0.0.1:${upstreamPort} HTTP/1.1\r\nHost: x\r\n\r\n`, false);
  assert.equal(waiting.status, 200);
  await door.close();
  let own: Awaited<ReturnType<typeof queryEvents>> = [];
  for (let i = 0; i < 25 && own.length === 0; i++) {
    own = (await queryEvents(store, { sandbox: 'sb-closing', type: 'egress.request', limit: 100 })).filter((e) => e.reason === 'client-closed');
    if (own.length === 0) await sleep(20);
  }
  waiting.socket?.destroy();
  assert.equal(own.length, 1, 'the refusal that came after the flush has its own event');
  const counted = (await queryEvents(store, { sandbox: 'sb-closing', type: 'egress.refusals', limit: 100 })).reduce((n, e) => n + (e.data.count as number), 0);
  assert.equal(counted, 1, 'what was counted before the close is written by the close');
});

test('requests to cordon\'s own services past the door\'s rate get 429 internal-rate-limit with Retry-After, recorded as refusals; the service never sees them', async () => {
  let served = 0;
  const proxy = createEgressProxy({
    lookup: async () => [],
    limits: { maxInternalRequestsPerSecond: 1, internalRequestBurst: 5 },
    internal: { 'llm.cordon.internal': { name: 'llm', handle: (_req, res) => { served += 1; res.end('ok'); } } },
  });
  proxies.push(proxy);
  const door = proxy.openDoor({ sandboxId: 'sb-internal-rate', agent: 'tester', audit, agentConfig: { egress: [] } });
  const { port } = await door.listen(0, '127.0.0.1');
  const head = 'GET http://llm.cordon.internal/v1/models HTTP/1.1\r\nHost: llm.cordon.internal\r\n\r\n';
  const answers = [];
  for (let i = 0; i < 12; i++) answers.push(await ask(port, head));
  const ok = answers.filter((a) => a.status === 200).length;
  // A slow machine may see one token come back during the 12 requests (one a second), anywhere after the burst.
  assert.ok(ok >= 5 && ok <= 6, `the burst of 5 (and at most one token back meanwhile) is served: ${ok}`);
  assert.ok(answers.slice(0, 5).every((a) => a.status === 200), `the burst first: ${JSON.stringify(answers)}`);
  assert.ok(answers.every((a) => a.status === 200 || (a.status === 429 && a.reason === 'internal-rate-limit' && a.retryAfter === '1')), JSON.stringify(answers));
  assert.equal(served, ok, 'refused requests never reach the service');
  await sleep(1_100);
  assert.equal((await ask(port, head)).status, 200, 'a token comes back at 1 a second');
  await door.close();
  const events = await queryEvents(store, { sandbox: 'sb-internal-rate', type: 'egress.request', limit: 1000 });
  assert.equal(events.filter((e) => e.decision === 'allow').length, ok + 1, 'one allowed event per served request');
  assert.equal(events.filter((e) => e.decision === 'deny' && e.reason === 'internal-rate-limit').length, 12 - ok, 'each refusal recorded (within the refusal budget)');
});

test('tunnels to cordon\'s own services spend from the same rate: past it, CONNECT gets 429 internal-rate-limit and no tunnel is recorded as allowed', async () => {
  const ca = createEgressCa({ commonName: 'cordon test egress CA' });
  const proxy = createEgressProxy({
    lookup: async () => [], ca,
    limits: { maxInternalRequestsPerSecond: 1, internalRequestBurst: 3 },
    internal: { 'llm.cordon.internal': { name: 'llm', handle: (_req, res) => { res.end('ok'); } } },
  });
  proxies.push(proxy);
  const door = proxy.openDoor({ sandboxId: 'sb-internal-connect', agent: 'tester', audit, agentConfig: { egress: [] } });
  const { port } = await door.listen(0, '127.0.0.1');
  const head = 'CONNECT llm.cordon.internal:443 HTTP/1.1\r\nHost: llm.cordon.internal:443\r\n\r\n';
  const statuses: string[] = [];
  for (let i = 0; i < 10; i++) {
    const a = await ask(port, head, false);
    if (a.status !== 200) {
      statuses.push(`${a.status} ${a.reason} ${a.retryAfter}`);
      continue;
    }
    statuses.push('200');
    // Only a checked ClientHello gets the tunnel recorded as allowed: finish the handshake, then leave.
    const t = tlsConnect({ socket: a.socket!, servername: 'llm.cordon.internal', ca: ca.certPem });
    t.on('error', () => undefined);
    await once(t, 'secureConnect');
    t.destroy();
  }
  const refused = statuses.filter((s) => s !== '200');
  assert.ok(refused.length >= 6, `a guest looping on CONNECT is held to the rate: ${statuses.join(', ')}`);
  assert.ok(refused.every((s) => s === '429 internal-rate-limit 1'), statuses.join(', '));
  await door.close();
  const events = await queryEvents(store, { sandbox: 'sb-internal-connect', type: 'egress.request', limit: 1000 });
  assert.equal(events.filter((e) => e.decision === 'allow').length, 10 - refused.length, 'one allowed event per tunnel opened, none for the refused');
});

test('a flood past the request rate: every request refused with 429 request-rate-limit, written under the refusal budget, the rest counted; the upstream sees only the allowed one', async () => {
  let served = 0;
  const counting = createHttpServer((_req, res) => { served += 1; res.end('ok'); });
  counting.listen(0, '127.0.0.1');
  await once(counting, 'listening');
  const countingPort = (counting.address() as { port: number }).port;
  // One request token, and one back every 1,000 s: the test does not depend on the machine's speed.
  const proxy = createEgressProxy({
    lookup: async (h) => (h === 'ok.example' ? [{ address: '127.0.0.1', family: 4 }] : []),
    limits: { maxRequestsPerSecond: 0.001, requestBurst: 1, maxRefusalEventsPerSecond: 1, refusalEventBurst: 2 },
  });
  proxies.push(proxy);
  const door = proxy.openDoor({
    sandboxId: 'sb-rate-flood', agent: 'tester', audit,
    agentConfig: { egress: [{ host: 'ok.example', ports: [countingPort] }, { cidr: '127.0.0.1/32', ports: [countingPort] }] },
  });
  const { port } = await door.listen(0, '127.0.0.1');
  const head = `GET http://ok.example:${countingPort}/ HTTP/1.1\r\nHost: ok.example:${countingPort}\r\n\r\n`;
  const first = await ask(port, head);
  const flood = 30;
  const answers = await Promise.all(Array.from({ length: flood }, () => ask(port, head)));
  // Closed before any assertion: a failing one must not leave the counting server holding the test file open.
  await door.close(); // writes what is still counted
  counting.close();
  assert.equal(first.status, 200);
  assert.ok(answers.every((a) => a.status === 429 && a.reason === 'request-rate-limit' && a.retryAfter === '1000'), JSON.stringify(answers));
  assert.equal(served, 1, 'only the allowed request reached the upstream');
  // The close writes the last summary without waiting for it: look until every refusal is accounted for (bounded).
  let single: Awaited<ReturnType<typeof queryEvents>> = [];
  let summaries: Awaited<ReturnType<typeof queryEvents>> = [];
  for (let i = 0; i < 100; i++) {
    single = await queryEvents(store, { sandbox: 'sb-rate-flood', type: 'egress.request', limit: 1000 });
    summaries = await queryEvents(store, { sandbox: 'sb-rate-flood', type: 'egress.refusals', limit: 1000 });
    if (summaries.reduce((n, e) => n + (e.data.count as number), 0) + single.length > flood) break;
    await sleep(20);
  }
  const denied = single.filter((e) => e.decision === 'deny');
  const counted = summaries.reduce((n, e) => n + (e.data.count as number), 0);
  assert.equal(single.filter((e) => e.decision === 'allow').length, 1, 'one allowed event');
  assert.ok(denied.every((e) => e.reason === 'request-rate-limit'));
  assert.ok(denied.length >= 2 && denied.length < flood / 2, `about the refusal burst written one by one (${denied.length})`);
  assert.equal(denied.length + counted, flood, 'every refusal is on record, one by one or counted');
  assert.deepEqual(summaries.map((s) => Object.keys(s.data.byDecision as object)), summaries.map(() => ['deny']));
  assert.equal(summaries.reduce((n, s) => n + ((s.data.byDecision as Record<string, Record<string, number>>).deny?.['request-rate-limit'] ?? 0), 0), counted);
});

test('cordon\'s own services and the internet have separate rates: neither spends the other\'s tokens', async () => {
  let served = 0;
  const counting = createHttpServer((_req, res) => res.end('ok'));
  counting.listen(0, '127.0.0.1');
  await once(counting, 'listening');
  const countingPort = (counting.address() as { port: number }).port;
  const proxy = createEgressProxy({
    lookup: async (h) => (h === 'ok.example' ? [{ address: '127.0.0.1', family: 4 }] : []),
    // A burst of 10 at the services and one request token for the internet, none back during the test.
    limits: { maxInternalRequestsPerSecond: 1, internalRequestBurst: 10, maxRequestsPerSecond: 0.001, requestBurst: 1 },
    internal: { 'llm.cordon.internal': { name: 'llm', handle: (_req, res) => { served += 1; res.end('ok'); } } },
  });
  proxies.push(proxy);
  const door = proxy.openDoor({
    sandboxId: 'sb-two-rates', agent: 'tester', audit,
    agentConfig: { egress: [{ host: 'ok.example', ports: [countingPort] }, { cidr: '127.0.0.1/32', ports: [countingPort] }] },
  });
  const { port } = await door.listen(0, '127.0.0.1');
  const service = 'GET http://llm.cordon.internal/v1/models HTTP/1.1\r\nHost: llm.cordon.internal\r\n\r\n';
  const internet = `GET http://ok.example:${countingPort}/ HTTP/1.1\r\nHost: ok.example:${countingPort}\r\n\r\n`;
  const statuses: string[] = [];
  for (const head of [service, service, service, internet, internet, service, service]) {
    const a = await ask(port, head);
    statuses.push(`${a.status}${a.reason ? ` ${a.reason}` : ''}`);
  }
  await door.close();
  counting.close();
  assert.deepEqual(statuses, ['200', '200', '200', '200', '429 request-rate-limit', '200', '200']);
  assert.equal(served, 5);
});
