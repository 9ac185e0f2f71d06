/**
 * Live detection as the control plane runs it: events appended to a real
 * audit log are followed, a new destination after the learning window raises
 * an alert that is recorded as `detect.alert` and pauses the sandbox; the
 * same destination during learning raises nothing; a pause that fails is
 * recorded as `detect.action-failed`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createApprovals } from '../approvals/index.js';
import { AuditLog } from '../audit/index.js';
import { parseConfig } from '../config/index.js';
import { fastestIsolation, sandboxTestHome, type SandboxTestHome } from '../sdk/testing.js';
import { openStore } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { startDetection } from './detect.js';
import { startControlPlane, type ControlPlane } from './index.js';

const sid = (n: number) => `sb-${n.toString(32).padStart(20, 'a')}`;

async function session(audit: Pick<AuditLog, 'append'>, n: number, hosts: string[], end = true, agent = 'coder'): Promise<void> {
  const sandbox = sid(n);
  const at = { agent, sandbox };
  await audit.append({ type: 'sandbox.create', actor: 'operator', ...at, data: {} });
  for (const host of hosts) await audit.append({ type: 'egress.request', actor: `agent:${agent}`, ...at, decision: 'allow', reason: 'host-allowed', data: { host, port: 443 } });
  if (end) await audit.append({ type: 'sandbox.destroy', actor: 'operator', ...at, data: {} });
}

async function until<T>(f: () => Promise<T | undefined>, ms = 5000): Promise<T | undefined> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await f();
    if (v !== undefined) return v;
    await sleep(25);
  }
  return undefined;
}

for (const c of [
  { name: 'a pause that works', pauseFails: false, expect: 'paused' },
  { name: 'a pause that fails (the sandbox is gone)', pauseFails: true, expect: 'detect.action-failed' },
]) {
  test(`a new domain after learning: detect.alert recorded, then ${c.name}`, async () => {
    const dir = tempDir('cordon-detect-cp-');
    const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
    const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys'), checkpointIntervalMs: 60_000 });
    const paused: string[] = [];
    const watch = await startDetection({
      store, audit, pollIntervalMs: 20,
      options: { learnEvents: 150, actions: { novelty: 'pause' } },
      pause: async (id) => {
        if (c.pauseFails) throw new Error(`sandbox ${id} is not running`);
        paused.push(id);
      },
    });
    try {
      for (let n = 1; n <= 60; n++) await session(audit, n, ['pypi.org', 'files.pythonhosted.org', 'github.com']);
      await until(async () => ((await audit.query({ limit: 10_000 })).length >= 300 ? true : undefined));
      await sleep(200);
      assert.equal((await audit.query({ limit: 10_000 })).filter((e) => e.type === 'detect.alert').length, 0, 'known destinations raise nothing');
      await session(audit, 61, ['pypi.org', 'exfil.example.net'], false);
      const alert = await until(async () => (await audit.query({ limit: 10_000 })).find((e) => e.type === 'detect.alert'));
      assert.ok(alert, 'the new domain raised an alert');
      assert.equal(alert.sandbox, sid(61));
      assert.equal(alert.reason, 'novelty:domain');
      assert.equal(alert.decision, 'pause');
      if (c.pauseFails) {
        const failed = await until(async () => (await audit.query({ limit: 10_000 })).find((e) => e.type === 'detect.action-failed'));
        assert.match(String(failed?.data.problem), /not running/);
      } else {
        assert.deepEqual(await until(async () => (paused.length ? paused : undefined)), [sid(61)]);
      }
    } finally {
      await watch.stop();
      await audit.close();
      await store.close();
      dir.cleanup();
    }
  });
}

/** A loopback webhook receiver: answers each POST by `answer(n)` (status, or 'hang' to never answer). */
async function receiver(answer: (n: number) => number | 'hang') {
  const { createServer } = await import('node:http');
  const bodies: Record<string, any>[] = [];
  const hung: import('node:http').ServerResponse[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      const a = answer(bodies.length);
      if (a === 'hang') hung.push(res);
      else res.writeHead(a).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as import('node:net').AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook`, bodies,
    close: () => new Promise<void>((r) => { for (const res of hung) res.destroy(); server.closeAllConnections(); server.close(() => r()); }),
  };
}

async function withDetection(
  extra: { webhook?: Record<string, unknown>; store?: (s: Awaited<ReturnType<typeof openStore>>) => Awaited<ReturnType<typeof openStore>> },
  body: (audit: AuditLog) => Promise<void>,
): Promise<void> {
  const dir = tempDir('cordon-detect-cp-');
  const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys'), checkpointIntervalMs: 60_000 });
  const watch = await startDetection({
    store: extra.store ? extra.store(store) : store, audit, pollIntervalMs: 20, pause: async () => undefined,
    options: { learnEvents: 30, thresholds: { novelty: 0.5, features: { domain: 0.5 } }, ...(extra.webhook ? { webhook: extra.webhook as { url: string } } : {}) },
  });
  try {
    await body(audit);
  } finally {
    await watch.stop();
    await audit.close();
    await store.close();
    dir.cleanup();
  }
}

const events = async (audit: AuditLog, type: string) => (await audit.query({ limit: 10_000 })).filter((e) => e.type === type);

async function learnThenExfil(audit: AuditLog): Promise<void> {
  for (let n = 1; n <= 12; n++) await session(audit, n, ['pypi.org', 'files.pythonhosted.org', 'github.com']);
  await until(async () => ((await audit.query({ limit: 10_000 })).length >= 60 ? true : undefined));
  await session(audit, 13, ['pypi.org', 'exfil.example.net'], false);
}

test('alert webhook: each alert is POSTed with a Slack-compatible text and the alert; a 500 is retried', async () => {
  const hook = await receiver((n) => (n === 1 ? 500 : 200));
  try {
    await withDetection({ webhook: { url: hook.url, retries: 2, timeoutMs: 2000 } }, async (audit) => {
      await learnThenExfil(audit);
      const alert = await until(async () => (await events(audit, 'detect.alert'))[0]);
      assert.ok(alert, 'the new domain raised an alert');
      const got = await until(async () => (hook.bodies.length >= 2 ? hook.bodies : undefined));
      assert.ok(got, 'the webhook was called again after answering 500');
      assert.equal(got[1]!.alert.id, alert.data.id, 'the retry carries the same alert');
      assert.equal(got[1]!.alert.feature, 'domain');
      assert.match(got[1]!.text, /novelty alert for agent coder .*new domain "example\.net".*cordon alerts ack /);
      await sleep(100);
      assert.equal((await events(audit, 'detect.notify-failed')).length, 0, 'a delivery that succeeded on retry is not a failure');
    });
  } finally {
    await hook.close();
  }
});

for (const c of [
  { name: 'a receiver that always answers 503', answer: () => 503 as const, retries: 1, timeoutMs: 2000, attempts: 2, problem: /answered 503/ },
  { name: 'a receiver that never answers (timeout)', answer: () => 'hang' as const, retries: 0, timeoutMs: 300, attempts: 1, problem: /timeout|aborted/i },
]) {
  test(`alert webhook: ${c.name} is audited as detect.notify-failed and holds up no detection`, async () => {
    const hook = await receiver(c.answer);
    try {
      await withDetection({ webhook: { url: hook.url, retries: c.retries, timeoutMs: c.timeoutMs } }, async (audit) => {
        await learnThenExfil(audit);
        const started = Date.now();
        assert.ok(await until(async () => (await events(audit, 'detect.alert'))[0]), 'the alert is recorded while the webhook is failing');
        const failed = await until(async () => (await events(audit, 'detect.notify-failed'))[0], 8000);
        assert.ok(failed, 'the failed delivery is audited');
        assert.equal(failed.data.attempts, c.attempts);
        assert.match(String(failed.data.problem), c.problem);
        assert.equal(failed.data.host, new URL(hook.url).host, 'the host is named, not the full URL (it may hold a token)');
        assert.ok(Date.now() - started < 8000);
        assert.equal(hook.bodies.length, c.attempts);
      });
    } finally {
      await hook.close();
    }
  });
}

test('a follower that cannot read the log records detect.error (follow-failed) and resumes where it stopped', async () => {
  let failures = 0;
  await withDetection({
    store: (real) => {
      // The follower reads through this view; the audit log writes through the real store.
      const audit = Object.create(real.audit, {
        query: { value: async (...args: Parameters<typeof real.audit.query>) => {
          if (failures < 3) { failures++; throw new Error('database is locked'); }
          return real.audit.query(...args);
        } },
      });
      return Object.create(real, { audit: { value: audit } });
    },
  }, async (audit) => {
    const error = await until(async () => (await events(audit, 'detect.error'))[0]);
    assert.ok(error, 'the failure is recorded');
    assert.equal(error.reason, 'follow-failed');
    assert.match(String(error.data.problem), /database is locked/);
    assert.equal((await events(audit, 'detect.error')).length, 1, 'said once a minute, not once per retry');
    await learnThenExfil(audit);
    const alert = await until(async () => (await events(audit, 'detect.alert'))[0]);
    assert.ok(alert, 'after the failures the follower judges events again');
    assert.equal(alert.reason, 'novelty:domain');
    assert.equal(failures, 3);
  });
});

/**
 * The whole path on a real control plane (bubblewrap sandboxes when this
 * machine can run them, else microVMs; the real egress proxy with a loopback
 * upstream): a novelty alert whose action is `approve` marks its sandbox
 * supervised, the sandbox's next request waits until an operator approves
 * it, another sandbox of the same agent is not held, the mark survives a
 * restart of the approvals on the same store, and lifting it restores the
 * normal flow.
 */
describe('an alert with action approve on a real control plane', { skip: process.getuid?.() === 0 ? false : 'the test image is built with debootstrap, which needs root', timeout: 5 * 60_000 }, () => {
  let home: SandboxTestHome;
  let cp: ControlPlane;
  let upstream: Server;
  let port: number;
  const received: string[] = [];
  const caller = { actor: 'operator:test' };

  before(async () => {
    upstream = createServer((req, res) => {
      received.push(`${req.headers.host} ${req.url}`);
      res.end('upstream-ok');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    port = (upstream.address() as AddressInfo).port;
    home = await sandboxTestHome();
    const isolation = await fastestIsolation(home.path);
    const hosts = ['pypi.org', 'github.com', 'files.pythonhosted.org', 'exfil.example.net'];
    const config = parseConfig(JSON.stringify({
      version: 1,
      agents: { dev: { isolation, egress: [...hosts.map((host) => ({ host, ports: [port] })), { cidr: '127.0.0.1/32', ports: [port] }] } },
      approvals: { holdTimeout: '60s' },
      detect: { learnEvents: 30, thresholds: { novelty: 0.5, features: { domain: 0.5 } }, noveltyFeatures: ['domain'], actions: { novelty: 'approve' } },
    }));
    cp = await startControlPlane({ home: home.path, config, port: 0, dashboardDir: false, egressLookup: async () => [{ address: '127.0.0.1', family: 4 }] });
  });
  after(async () => {
    await cp?.stop();
    home?.cleanup();
    upstream?.closeAllConnections();
    upstream?.close();
  });

  const curl = (sandboxId: string, host: string, path: string) => {
    let out = '';
    return cp.sandboxes.run(sandboxId, {
      argv: ['curl', '-sS', '--max-time', '90', '-w', ' %{http_code}', `http://${host}:${port}${path}`], timeoutMs: 120_000,
      onStdout: (b) => (out += b), onStderr: (b) => (out += b),
    }, caller).then(() => out);
  };
  const api = (path: string, init: RequestInit = {}) => fetch(cp.url + path, { ...init, headers: { authorization: `Bearer ${cp.operatorToken.token}` } });
  const pendingOf = async (sandboxId: string) => (await cp.approvals.list({ state: 'pending' })).filter((a) => a.action.sandboxId === sandboxId);

  test('the next request waits for approval; another sandbox is not held; the mark survives a restart; lifting restores the flow', async () => {
    // A learned baseline: twelve past sessions of this agent that used three sites.
    for (let n = 1; n <= 12; n++) await session(cp.audit, n, ['pypi.org', 'files.pythonhosted.org', 'github.com'], true, 'dev');
    await until(async () => ((await cp.store.audit.head())?.seq ?? 0) >= 60 ? true : undefined);
    const a = await cp.sandboxes.create({ agent: 'dev', caller });
    const b = await cp.sandboxes.create({ agent: 'dev', caller });
    assert.match(await curl(a.id, 'pypi.org', '/simple/'), /upstream-ok 200$/, 'a known site, before any alert');

    // A site this agent never used: allowed by policy, so it goes out, and the alert marks the sandbox.
    assert.match(await curl(a.id, 'exfil.example.net', '/drop'), /upstream-ok 200$/);
    const alert = await until(async () => (await cp.audit.query({ type: 'detect.alert', limit: 100 })).find((e) => e.sandbox === a.id), 15_000);
    assert.ok(alert, 'the new site raised an alert');
    assert.deepEqual([alert.decision, alert.reason], ['approve', 'novelty:domain']);
    assert.ok(await until(async () => (cp.approvals.isSupervised(a.id) ? true : undefined)), 'the alert marked the sandbox supervised');
    // The mark takes effect before its event is written: wait for the event.
    const marked = (await until(async () => {
      const found = (await cp.audit.query({ type: 'sandbox.supervised', limit: 10 })).filter((e) => e.sandbox === a.id);
      return found.length > 0 ? found : undefined;
    })) ?? [];
    assert.deepEqual(marked.map((e) => [e.data.alert, e.data.reason]), [[alert.data.id, 'novelty:domain']]);
    assert.equal(cp.sandboxes.list().find((s) => s.id === a.id)?.state, 'running', 'supervised, not paused');

    // The next request of that sandbox, to a known site, waits for an operator.
    const before = received.length;
    const held = curl(a.id, 'pypi.org', '/simple/requests/');
    const pending = await until(async () => (await pendingOf(a.id))[0], 30_000);
    assert.ok(pending, 'the request is held for approval');
    assert.equal(`${pending.action.method} ${pending.action.url}`, `GET http://pypi.org:${port}/simple/requests/`);
    assert.deepEqual(pending.action.supervised, { alertId: alert.data.id, reason: 'novelty:domain' }, 'the approver sees why it is held');
    await sleep(200);
    assert.equal(received.length, before, 'nothing reached the upstream while held');

    // Another sandbox of the same agent is not supervised.
    assert.match(await curl(b.id, 'pypi.org', '/simple/b/'), /upstream-ok 200$/);
    assert.equal((await pendingOf(b.id)).length, 0);

    // The mark is in the store: approvals opened again on the same store (a restart) still see it.
    const reopened = await createApprovals({ store: cp.store, audit: cp.audit, config: { ttlMs: 60_000, holdTimeoutMs: 1000, twoApprovers: false } });
    try {
      assert.equal(reopened.isSupervised(a.id), true);
      assert.equal(reopened.isSupervised(b.id), false);
    } finally {
      reopened.close();
    }

    const decided = await api(`/v1/approvals/${pending.id}/approve`, { method: 'POST' });
    assert.equal(decided.status, 200);
    assert.match(await held, /upstream-ok 200$/, 'approved: the request completes');
    assert.equal(received.at(-1), `pypi.org:${port} /simple/requests/`);

    // Lifted by an operator: the sandbox's requests flow again without approval.
    const lifted = await api(`/v1/approvals/supervised/${a.id}/lift`, { method: 'POST', body: '{"reason":"checked the alert"}' });
    assert.equal(lifted.status, 200);
    assert.match(await curl(a.id, 'pypi.org', '/simple/after/'), /upstream-ok 200$/);
    assert.equal((await pendingOf(a.id)).length, 0);
    const unmarked = (await cp.audit.query({ type: 'sandbox.unsupervised', limit: 10 })).filter((e) => e.sandbox === a.id);
    assert.deepEqual(unmarked.map((e) => [e.actor, e.data.note]), [['operator', 'checked the alert']]);
  });
});
