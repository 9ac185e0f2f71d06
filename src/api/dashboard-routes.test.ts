/**
 * The routes the dashboard reads, in process (`app.request`) against the real
 * SQLite store, audit log and detect store: alerts (list, ack audited first),
 * the live event stream, the audit export, the red-team scorecard and
 * sandbox resource use; each refuses requests without the operator token and
 * names the parameter of bad input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuditLog } from '../audit/index.js';
import { openDetectStore } from '../detect/index.js';
import type { SandboxInfo } from '../sandbox/index.js';
import { openStore } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { createApi, operatorTokenChecker } from './index.js';
import { processTreeUse } from './usage.js';

const TOKEN = 'cop_' + 'B'.repeat(43);
const auth = { authorization: `Bearer ${TOKEN}` };

async function setup(o: { sandboxes?: SandboxInfo[]; failWrites?: () => boolean } = {}) {
  const dir = tempDir();
  const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  if (o.failWrites) {
    const repo = store.audit;
    const insert = repo.insertEvents.bind(repo);
    repo.insertEvents = async (rows) => {
      if (o.failWrites!()) throw new Error('disk I/O error (injected)');
      return insert(rows);
    };
  }
  const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys') });
  const alerts = await openDetectStore(store);
  const reportFile = join(dir.path, 'redteam', 'latest.json');
  const list = o.sandboxes ?? [];
  const app = createApi({
    audit, isOperatorToken: operatorTokenChecker(TOKEN), version: '0.0.0-test', alerts, redteamReportFile: reportFile,
    // Only list() is reached by the usage route.
    sandboxes: { list: () => list } as never,
    sandboxLimits: (agent) => (agent === 'dev' ? { vcpus: 2, memoryMiB: 768, diskMiB: 4096 } : undefined),
  });
  return {
    app, audit, store, alerts, reportFile,
    async close() {
      await audit.close().catch(() => undefined);
      await store.close();
      dir.cleanup();
    },
  };
}

const alert = (id: string, agent = 'dev') => ({
  id, ts: new Date().toISOString(), agent, sandbox: 'sb-aaaaaaaaaaaaaaaaaaaa', kind: 'novelty' as const, feature: 'domain',
  value: 'new.example', score: 3.5, evidence: { seen: ['old.example'] }, action: 'none' as const,
});

test('every dashboard route refuses a request without the operator token', async () => {
  const t = await setup();
  try {
    for (const path of ['/v1/alerts', '/v1/events/stream', '/v1/audit/export', '/v1/redteam/latest', '/v1/usage/sandboxes']) {
      const res = await t.app.request(path, { headers: { authorization: 'Bearer cordon-sk-' + 'x'.repeat(43) } });
      assert.equal(res.status, 401, path);
    }
    const res = await t.app.request('/v1/alerts/al-1/ack', { method: 'POST' });
    assert.equal(res.status, 401);
  } finally {
    await t.close();
  }
});

test('alerts: listed newest first with evidence; an ack is audited before it is stored, and refused when the log cannot write', async () => {
  let fail = false;
  const t = await setup({ failWrites: () => fail });
  try {
    await t.alerts.insertAlert({ ...alert('al-1'), ts: '2026-01-01T00:00:00.000Z' });
    await t.alerts.insertAlert({ ...alert('al-2', 'other'), ts: '2026-01-02T00:00:00.000Z' });
    const all = (await (await t.app.request('/v1/alerts', { headers: auth })).json()) as { alerts: Array<{ id: string; evidence: unknown }> };
    assert.deepEqual(all.alerts.map((a) => a.id), ['al-2', 'al-1']);
    assert.deepEqual(all.alerts[0]!.evidence, { seen: ['old.example'] });
    const dev = (await (await t.app.request('/v1/alerts?agent=dev', { headers: auth })).json()) as { alerts: Array<{ id: string }> };
    assert.deepEqual(dev.alerts.map((a) => a.id), ['al-1']);

    fail = true;
    const refused = await t.app.request('/v1/alerts/al-1/ack', { method: 'POST', headers: auth });
    assert.equal(refused.status, 503, 'no audit event, no ack');
    fail = false;
    assert.equal((await t.alerts.listAlerts({ acked: true })).length, 0);

    const acked = await t.app.request('/v1/alerts/al-1/ack', { method: 'POST', headers: auth });
    assert.equal(acked.status, 200);
    assert.equal(((await acked.json()) as { ackedBy: string }).ackedBy, 'operator');
    const events = await t.audit.query({ type: 'alert.acked' });
    assert.equal(events.length, 1);
    assert.deepEqual([events[0]!.agent, (events[0]!.data as { alert: string }).alert], ['dev', 'al-1']);
    const open = (await (await t.app.request('/v1/alerts?acked=false', { headers: auth })).json()) as { alerts: Array<{ id: string }> };
    assert.deepEqual(open.alerts.map((a) => a.id), ['al-2']);

    const missing = await t.app.request('/v1/alerts/al-nope/ack', { method: 'POST', headers: auth });
    assert.equal(missing.status, 404);
  } finally {
    await t.close();
  }
});

test('bad query parameters get a 400 naming them', async () => {
  const t = await setup();
  try {
    const cases: Array<{ name: string; path: string; says: RegExp }> = [
      { name: 'alerts: acked is not a boolean', path: '/v1/alerts?acked=maybe', says: /acked/ },
      { name: 'alerts: limit too large', path: '/v1/alerts?limit=5000', says: /limit/ },
      { name: 'alerts: unknown parameter', path: '/v1/alerts?sort=asc', says: /sort/ },
      { name: 'stream: a type prefix with a space', path: '/v1/events/stream?types=approval.,bad%20one', says: /types/ },
      { name: 'stream: negative afterSeq', path: '/v1/events/stream?afterSeq=-1', says: /afterSeq/ },
      { name: 'export: another format', path: '/v1/audit/export?format=csv', says: /format/ },
      { name: 'export: a type with upper case', path: '/v1/audit/export?type=Egress', says: /type/ },
    ];
    for (const c of cases) {
      const res = await t.app.request(c.path, { headers: auth });
      assert.equal(res.status, 400, c.name);
      assert.match(((await res.json()) as { message: string }).message, c.says, c.name);
    }
  } finally {
    await t.close();
  }
});

test('the event stream sends new events of the asked types as server-sent events, and never the api.* echo by default', async () => {
  const t = await setup();
  try {
    await t.audit.append({ type: 'approval.requested', actor: 'agent:dev', agent: 'dev', data: { id: 'before-the-stream' } });
    const abort = new AbortController();
    const res = await t.app.request('/v1/events/stream', { headers: auth, signal: abort.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    await t.audit.append({ type: 'approval.decided', actor: 'operator', agent: 'dev', decision: 'approve', data: { id: 'ap-1' } });
    await t.audit.append({ type: 'egress.request', actor: 'agent:dev', agent: 'dev', decision: 'allow', data: {} });
    const reader = res.body!.getReader();
    let text = '';
    const decoder = new TextDecoder();
    while (!text.includes('egress.request')) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value);
    }
    abort.abort();
    await reader.cancel().catch(() => undefined);
    const events = text.split('\n\n').filter((b) => b.startsWith('event: audit')).map((b) => JSON.parse(b.slice(b.indexOf('data: ') + 6)) as { type: string; data: { id?: string } });
    assert.deepEqual(events.map((e) => e.type), ['approval.decided', 'egress.request'], 'nothing from before the stream, no api.request of the stream itself');
    assert.equal(events[0]!.data.id, 'ap-1');

    const only = new AbortController();
    const filtered = await t.app.request('/v1/events/stream?types=approval.&afterSeq=0', { headers: auth, signal: only.signal });
    const r2 = filtered.body!.getReader();
    let text2 = '';
    while ((text2.match(/event: audit/g) ?? []).length < 2) text2 += decoder.decode((await r2.read()).value);
    only.abort();
    await r2.cancel().catch(() => undefined);
    assert.deepEqual([...text2.matchAll(/"type":"([a-z.]+)"/g)].map((m) => m[1]), ['approval.requested', 'approval.decided']);
  } finally {
    await t.close();
  }
});

test('the audit export streams every matching event as JSON lines with its hash', async () => {
  const t = await setup();
  try {
    for (let i = 0; i < 1203; i++) await t.audit.append({ type: i % 3 === 0 ? 'egress.request' : 'sandbox.exec', actor: 'agent:dev', agent: 'dev', decision: i % 2 ? 'allow' : 'deny', data: { i } });
    const res = await t.app.request('/v1/audit/export?type=egress.request&decision=deny', { headers: auth });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-disposition') ?? '', /^attachment; filename="cordon-audit-.*\.jsonl"$/);
    const lines = (await res.text()).trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; decision: string; hash: string; seq: number; data: { i: number } });
    const want = Array.from({ length: 1203 }, (_, i) => i).filter((i) => i % 3 === 0 && i % 2 === 0);
    assert.deepEqual(lines.map((l) => l.data.i), want, 'every match across pages, in order');
    assert.ok(lines.every((l) => l.type === 'egress.request' && l.decision === 'deny' && /^[0-9a-f]{64}$/.test(l.hash)));
    const all = await t.app.request('/v1/audit/export', { headers: auth });
    assert.ok((await all.text()).trimEnd().split('\n').length >= 1203);
  } finally {
    await t.close();
  }
});

test('the red-team scorecard: 404 with a plain message when absent, 503 naming the file when broken, the report when valid', async () => {
  const t = await setup();
  try {
    const none = await t.app.request('/v1/redteam/latest', { headers: auth });
    assert.equal(none.status, 404);
    assert.deepEqual(await none.json(), { error: 'redteam-no-report', message: 'no red-team run has been recorded yet', fix: 'run `cordon redteam` against this deployment' });
    mkdirSync(join(t.reportFile, '..'), { recursive: true });
    const valid = {
      startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:01:00Z', profile: 'quick', durationMs: 60000,
      summary: { total: 1, contained: 1, succeeded: 0, errors: 0, notApplicable: 0 },
      attacks: [{ id: 'a', category: 'egress', title: 'T', outcome: 'contained', evidence: ['e'], durationMs: 5 }],
    };
    const broken: Array<{ name: string; text: string; says: RegExp }> = [
      { name: 'not JSON', text: '{"startedAt":', says: /JSON/ },
      { name: 'summary missing', text: JSON.stringify({ ...valid, summary: undefined }), says: /summary/ },
      { name: 'evidence not a list', text: JSON.stringify({ ...valid, attacks: [{ ...valid.attacks[0], evidence: 'x' }] }), says: /attacks\.0\.evidence/ },
    ];
    for (const c of broken) {
      writeFileSync(t.reportFile, c.text);
      const res = await t.app.request('/v1/redteam/latest', { headers: auth });
      assert.equal(res.status, 503, c.name);
      const body = (await res.json()) as { error: string; message: string };
      assert.equal(body.error, 'redteam-report-invalid', c.name);
      assert.ok(body.message.includes(t.reportFile), c.name);
      assert.match(body.message, c.says, c.name);
    }
    writeFileSync(t.reportFile, JSON.stringify(valid));
    const ok = await t.app.request('/v1/redteam/latest', { headers: auth });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), valid);
  } finally {
    await t.close();
  }
});

test('resource use: limits from the config and the measured process tree (a shell and its child)', async () => {
  const child = spawn('sh', ['-c', 'sleep 30 & wait'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 200));
  const now = new Date().toISOString();
  const base = { isolation: 'bubblewrap' as const, tier: 'bubblewrap' as const, createdAt: now, expiresAt: now, startedFrom: 'boot' as const, startMs: 1 };
  const t = await setup({
    sandboxes: [
      { ...base, id: 'sb-aaaaaaaaaaaaaaaaaaaa', agent: 'dev', state: 'running', pid: child.pid! },
      { ...base, id: 'sb-bbbbbbbbbbbbbbbbbbbb', agent: 'unknown', state: 'running' },
    ],
  });
  try {
    const tree = processTreeUse(child.pid!);
    assert.equal(tree?.processes, 2, 'sh and its sleep');
    assert.ok((tree?.rssKiB ?? 0) > 0);
    assert.equal(processTreeUse(2 ** 22 + 12345), undefined, 'a pid that does not exist');
    const res = await t.app.request('/v1/usage/sandboxes', { headers: auth });
    const { usage } = (await res.json()) as { usage: Array<Record<string, unknown>> };
    assert.deepEqual({ ...usage[0], rssMiB: typeof usage[0]!.rssMiB, cpuSeconds: typeof usage[0]!.cpuSeconds },
      { id: 'sb-aaaaaaaaaaaaaaaaaaaa', vcpus: 2, memoryMiB: 768, diskMiB: 4096, rssMiB: 'number', cpuSeconds: 'number', processes: 2 });
    assert.deepEqual(usage[1], { id: 'sb-bbbbbbbbbbbbbbbbbbbb' }, 'no pid and no known agent: nothing guessed');
  } finally {
    child.kill();
    await t.close();
  }
});
