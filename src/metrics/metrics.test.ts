/**
 * Metrics from the audit stream: real events appended to a real audit log
 * (temporary SQLite) are followed and counted; the exposition text carries the
 * right values; label values stay bounded under a flood; sandboxes by state
 * are read at scrape time; the append timer passes results and errors through.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { AuditLog, type AuditEvent, type AuditEventInput } from '../audit/index.js';
import { openStore, type Store } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { createMetrics, startMetricsFeed, timedAppends, type Metrics } from './index.js';
import { samples, valueOf } from './testing.js';

async function withLog(f: (audit: AuditLog, store: Store) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys') });
  try {
    await f(audit, store);
  } finally {
    await audit.close().catch(() => undefined);
    await store.close();
    dir.cleanup();
  }
}

/** Wait until the feed has counted `n` events (the sum of cordon_audit_events_total). */
async function counted(m: Metrics, n: number, ms = 5000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const text = await m.registry.metrics();
    const total = samples(text, 'cordon_audit_events_total').reduce((a, s) => a + s.value, 0);
    if (total >= n || Date.now() > end) return text;
    await sleep(20);
  }
}

const at = { agent: 'coder', sandbox: 'sb-aaaaaaaaaaaaaaaaaaaa' };
const agentActor = { actor: 'agent:coder', ...at };
const sys = { actor: 'system', ...at };

const SESSION: AuditEventInput[] = [
  { type: 'sandbox.create', actor: 'operator', ...at, data: {} },
  { type: 'sandbox.create', actor: 'operator', ...at, data: {} },
  { type: 'sandbox.ready', ...sys, data: {} },
  { type: 'sandbox.pause', actor: 'operator', ...at, data: {} },
  { type: 'sandbox.resume', actor: 'operator', ...at, data: {} },
  { type: 'sandbox.exec', actor: 'operator', ...at, data: { argv: ['true'] } },
  { type: 'sandbox.exec.result', actor: 'operator', ...at, data: { exitCode: 0, timedOut: false, durationMs: 120 } },
  { type: 'sandbox.exec.result', actor: 'operator', ...at, data: { exitCode: 2, timedOut: false, durationMs: 30 } },
  { type: 'sandbox.exec.result', actor: 'operator', ...at, data: { exitCode: null, timedOut: true, durationMs: 5000 } },
  { type: 'sandbox.exec.result', actor: 'operator', ...at, data: { error: 'sandbox-ended', message: 'gone' } },
  ...Array.from({ length: 3 }, (): AuditEventInput => ({ type: 'egress.request', ...agentActor, decision: 'allow', reason: 'host-allowed', data: { host: 'pypi.org', port: 443 } })),
  ...Array.from({ length: 2 }, (): AuditEventInput => ({ type: 'egress.request', ...agentActor, decision: 'deny', reason: 'host-not-allowed', data: { host: 'evil.example', port: 443 } })),
  { type: 'egress.request', ...agentActor, decision: 'deny', reason: 'sni-mismatch', data: { host: 'pypi.org', port: 443 } },
  { type: 'egress.request', ...agentActor, decision: 'deny', reason: 'a reason nobody listed', data: { host: 'x.example', port: 443 } },
  { type: 'egress.close', ...agentActor, decision: 'allow', reason: 'client-closed', data: { bytesIn: 1000, bytesOut: 200 } },
  { type: 'egress.close', ...agentActor, decision: 'allow', reason: 'client-closed', data: { bytesIn: 24, bytesOut: 0 } },
  { type: 'llm.request', ...agentActor, decision: 'allow', reason: 'forwarded', data: { requestId: 'r1', provider: 'openai', model: 'm' } },
  { type: 'llm.request', ...agentActor, decision: 'allow', reason: 'forwarded', data: { requestId: 'r2', provider: 'openai', model: 'm' } },
  { type: 'llm.request', ...agentActor, decision: 'deny', reason: 'limit-requests-per-minute', data: { requestId: 'r3' } },
  { type: 'llm.response', ...agentActor, decision: 'allow', reason: 'ok', data: { requestId: 'r1', provider: 'openai', outcome: 'ok', tokensIn: 100, tokensOut: 50, latencyMs: 1500 } },
  { type: 'llm.response', ...agentActor, decision: 'allow', reason: 'ok', data: { requestId: 'r2', provider: 'openai', outcome: 'ok', tokensIn: 20, tokensOut: 5, latencyMs: 500 } },
  { type: 'llm.auth', actor: 'anonymous', decision: 'deny', reason: 'token-not-bound-to-channel', data: { requestId: 'r4', path: '/v1/models' } },
  { type: 'approval.requested', ...agentActor, decision: 'approve', reason: 'held', data: { id: 'ap-1' } },
  { type: 'approval.decided', actor: 'operator:a', ...at, decision: 'approve', reason: 'first-of-two', data: { id: 'ap-1', final: false } },
  { type: 'approval.decided', actor: 'operator:b', ...at, decision: 'approve', reason: 'approved', data: { id: 'ap-1', final: true } },
  { type: 'approval.consumed', ...agentActor, decision: 'allow', reason: 'approved', data: { id: 'ap-1' } },
  { type: 'approval.requested', ...agentActor, decision: 'approve', reason: 'held', data: { id: 'ap-2' } },
  { type: 'approval.expired', ...sys, decision: 'deny', reason: 'timeout', data: { id: 'ap-2' } },
  { type: 'detect.alert', ...sys, decision: 'pause', reason: 'novelty:domain', data: { kind: 'novelty', feature: 'domain', action: 'pause' } },
  { type: 'sandbox.destroy', actor: 'operator', ...at, data: { reason: 'requested' } },
  // An agent that is not in the configuration is counted as `other`.
  { type: 'egress.request', actor: 'agent:intruder', agent: 'intruder', sandbox: 'sb-bbbbbbbbbbbbbbbbbbbb', decision: 'allow', reason: 'host-allowed', data: {} },
];

test('a session of real audit events becomes the right counters, histograms and labels', async () => {
  await withLog(async (audit, store) => {
    await audit.append({ type: 'daemon.start', actor: 'system', data: {} }); // before the feed: not counted
    const m = createMetrics({ agents: ['coder', 'default'], processMetrics: false });
    const feed = await startMetricsFeed({ store, metrics: m, pollIntervalMs: 10 });
    try {
      for (const e of SESSION) await audit.append(e);
      const text = await counted(m, SESSION.length);
      const v = (name: string, labels: Record<string, string> = {}) => valueOf(text, name, labels);
      const c = { agent: 'coder' };

      assert.equal(samples(text, 'cordon_audit_events_total').reduce((a, s) => a + s.value, 0), SESSION.length, 'the event before the feed started is not counted');
      assert.equal(v('cordon_audit_events_total', { type: 'daemon.start' }), undefined);
      assert.equal(v('cordon_audit_events_total', { type: 'egress.request' }), 8);

      for (const [event, n] of [['create', 2], ['ready', 1], ['pause', 1], ['resume', 1], ['destroy', 1]] as const) {
        assert.equal(v('cordon_sandbox_lifecycle_total', { ...c, event }), n, event);
      }
      for (const [outcome, n] of [['ok', 1], ['nonzero', 1], ['timeout', 1], ['error', 1]] as const) {
        assert.equal(v('cordon_sandbox_execs_total', { ...c, outcome }), n, outcome);
      }
      assert.equal(v('cordon_sandbox_exec_duration_seconds_count', c), 3, 'a command that failed to run has no duration');
      assert.equal(v('cordon_sandbox_exec_duration_seconds_sum', c), 5.15);
      assert.equal(v('cordon_sandbox_exec_duration_seconds_bucket', { ...c, le: '0.05' }), 1);

      assert.equal(v('cordon_egress_requests_total', { ...c, decision: 'allow', reason: 'host-allowed' }), 3);
      assert.equal(v('cordon_egress_requests_total', { ...c, decision: 'deny', reason: 'host-not-allowed' }), 2);
      assert.equal(v('cordon_egress_requests_total', { ...c, decision: 'deny', reason: 'sni-mismatch' }), 1, 'a proxy reason is a known reason');
      assert.equal(v('cordon_egress_requests_total', { ...c, decision: 'deny', reason: 'other' }), 1, 'an unlisted reason is bucketed');
      assert.equal(v('cordon_egress_requests_total', { agent: 'other', decision: 'allow', reason: 'host-allowed' }), 1, 'an unconfigured agent is bucketed');
      assert.equal(v('cordon_egress_bytes_total', { ...c, direction: 'in' }), 1024);
      assert.equal(v('cordon_egress_bytes_total', { ...c, direction: 'out' }), 200);

      assert.equal(v('cordon_llm_requests_total', { ...c, decision: 'allow', reason: 'forwarded' }), 2);
      assert.equal(v('cordon_llm_requests_total', { ...c, decision: 'deny', reason: 'limit-requests-per-minute' }), 1);
      assert.equal(v('cordon_llm_auth_refusals_total', { reason: 'token-not-bound-to-channel' }), 1);
      assert.equal(v('cordon_llm_responses_total', { ...c, provider: 'openai', outcome: 'ok' }), 2);
      assert.equal(v('cordon_llm_tokens_total', { ...c, provider: 'openai', direction: 'in' }), 120);
      assert.equal(v('cordon_llm_tokens_total', { ...c, provider: 'openai', direction: 'out' }), 55);
      assert.equal(v('cordon_llm_request_duration_seconds_count', { ...c, provider: 'openai' }), 2);
      assert.equal(v('cordon_llm_request_duration_seconds_sum', { ...c, provider: 'openai' }), 2);

      for (const [state, n] of [['requested', 2], ['partly-approved', 1], ['approved', 1], ['consumed', 1], ['expired', 1]] as const) {
        assert.equal(v('cordon_approvals_total', { ...c, state }), n, state);
      }
      assert.equal(v('cordon_approvals_total', { ...c, state: 'denied' }), undefined, 'no approval was denied');
      assert.equal(v('cordon_alerts_total', { ...c, kind: 'novelty', action: 'pause' }), 1);
      assert.equal(v('cordon_metrics_observe_failures_total'), 0);

      assert.doesNotMatch(text, /pypi\.org|evil\.example|sb-a{20}|r1/, 'no host, sandbox id or request id becomes a label');
    } finally {
      await feed.stop();
    }
  });
});

const randomReason = (i: number) => `made-up-${i}-${Math.random().toString(36).slice(2, 10)}`;
const ev = (type: string, decision: string, reason: string, agent = 'coder'): AuditEvent => ({
  seq: 1, ts: new Date().toISOString(), type, actor: `agent:${agent}`, agent, decision, reason, data: {}, prevHash: '0'.repeat(64), hash: '0'.repeat(64),
});

for (const c of [
  { name: 'egress reasons (a closed list): one `other` series', type: 'egress.request', metric: 'cordon_egress_requests_total', label: 'reason', maxSeries: 1 },
  { name: 'gateway reasons (capped at 64 distinct values)', type: 'llm.request', metric: 'cordon_llm_requests_total', label: 'reason', maxSeries: 65 },
  { name: 'agents outside the configuration: one `other` series', type: 'egress.request', metric: 'cordon_egress_requests_total', label: 'agent', maxSeries: 1 },
]) {
  test(`label cardinality stays bounded under a flood of random values: ${c.name}`, async () => {
    const m = createMetrics({ agents: ['coder'], processMetrics: false });
    const flood = 500;
    for (let i = 0; i < flood; i++) {
      m.observe(c.label === 'agent' ? ev(c.type, 'deny', 'host-not-allowed', randomReason(i)) : ev(c.type, 'deny', randomReason(i)));
    }
    const series = samples(await m.registry.metrics(), c.metric);
    assert.ok(series.length <= c.maxSeries, `${series.length} series (at most ${c.maxSeries})`);
    assert.equal(series.reduce((a, s) => a + s.value, 0), flood, 'every event is still counted');
    const other = series.filter((s) => s.labels[c.label] === 'other');
    assert.equal(other.length, 1);
    assert.equal(other[0]!.value, flood - (c.maxSeries - 1));
  });
}

test('sandboxes by state are read at scrape time, every state present', async () => {
  let list: { state: 'starting' | 'running' | 'paused' | 'stopping' | 'destroyed' }[] = [{ state: 'running' }, { state: 'running' }, { state: 'paused' }];
  const m = createMetrics({ sandboxes: () => list, processMetrics: false });
  let text = await m.registry.metrics();
  assert.equal(valueOf(text, 'cordon_sandboxes', { state: 'running' }), 2);
  assert.equal(valueOf(text, 'cordon_sandboxes', { state: 'paused' }), 1);
  assert.equal(valueOf(text, 'cordon_sandboxes', { state: 'starting' }), 0);
  list = [{ state: 'stopping' }];
  text = await m.registry.metrics();
  assert.equal(valueOf(text, 'cordon_sandboxes', { state: 'running' }), 0, 'a gauge, not a counter');
  assert.equal(valueOf(text, 'cordon_sandboxes', { state: 'stopping' }), 1);
});

test('pending approvals are read at scrape time; process metrics are prefixed', async () => {
  let pending = 3;
  const m = createMetrics({ pendingApprovals: async () => pending });
  assert.equal(valueOf(await m.registry.metrics(), 'cordon_approvals_pending'), 3);
  pending = 0;
  const text = await m.registry.metrics();
  assert.equal(valueOf(text, 'cordon_approvals_pending'), 0);
  assert.ok(valueOf(text, 'cordon_process_resident_memory_bytes') ?? valueOf(text, 'cordon_nodejs_heap_size_total_bytes'), 'process metrics are there');
});

test('two instances keep separate registries (nothing in the global one)', async () => {
  const a = createMetrics({ processMetrics: false });
  const b = createMetrics({ processMetrics: false });
  a.observe(ev('egress.request', 'allow', 'host-allowed'));
  assert.equal(valueOf(await a.registry.metrics(), 'cordon_audit_events_total', { type: 'egress.request' }), 1);
  assert.equal(valueOf(await b.registry.metrics(), 'cordon_audit_events_total', { type: 'egress.request' }), undefined);
});

test('odd event data is skipped field by field; an event that cannot be read is counted as a failure, not thrown', async () => {
  const m = createMetrics({ processMetrics: false });
  m.observe({ ...ev('egress.close', 'allow', 'client-closed'), data: null as unknown as Record<string, unknown> });
  m.observe({ ...ev('egress.close', 'allow', 'client-closed'), data: { bytesIn: 'lots', bytesOut: Number.NaN } });
  m.observe({ ...ev('sandbox.exec.result', 'allow', 'x'), data: { exitCode: 0, durationMs: -5 } });
  m.observe(null as unknown as AuditEvent);
  const text = await m.registry.metrics();
  assert.equal(valueOf(text, 'cordon_metrics_observe_failures_total'), 1);
  assert.equal(valueOf(text, 'cordon_audit_events_total', { type: 'egress.close' }), 2);
  assert.equal(samples(text, 'cordon_egress_bytes_total').length, 0, 'no bytes from non-numbers');
  assert.equal(valueOf(text, 'cordon_sandbox_execs_total', { agent: 'coder', outcome: 'ok' }), 1);
  assert.equal(valueOf(text, 'cordon_sandbox_exec_duration_seconds_count', { agent: 'coder' }), undefined, 'a negative duration is not observed');
});

test('egress.refusals: every refusal a door only counted is in the egress counter, by decision and reason; odd values are skipped', async () => {
  const m = createMetrics({ agents: ['coder'], processMetrics: false });
  m.observe({ ...ev('egress.refusals', 'deny', 'refusal-budget'), data: { count: 7, byDecision: { deny: { 'host-not-allowed': 5, 'made-up': 1, bad: 'x' }, error: { 'dns-failed': 1 }, odd: 3 } } });
  m.observe({ ...ev('egress.refusals', 'deny', 'refusal-budget'), data: { count: 1, byDecision: 'none' } });
  const text = await m.registry.metrics();
  assert.equal(valueOf(text, 'cordon_egress_requests_total', { agent: 'coder', decision: 'deny', reason: 'host-not-allowed' }), 5);
  assert.equal(valueOf(text, 'cordon_egress_requests_total', { agent: 'coder', decision: 'deny', reason: 'other' }), 1);
  assert.equal(valueOf(text, 'cordon_egress_requests_total', { agent: 'coder', decision: 'error', reason: 'dns-failed' }), 1);
  assert.equal(samples(text, 'cordon_egress_requests_total').reduce((a, x) => a + x.value, 0), 7);
  assert.equal(valueOf(text, 'cordon_metrics_observe_failures_total'), 0);
});

test('timedAppends: times every append, passes results and errors through, keeps the log usable', async () => {
  await withLog(async (log) => {
    const m = createMetrics({ processMetrics: false });
    const audit = timedAppends(log, m);
    const stored = await audit.append({ type: 'test.one', actor: 'system', data: {} });
    assert.equal(stored.type, 'test.one');
    assert.equal(stored.seq, 1);
    await audit.append({ type: 'test.two', actor: 'system', data: {} });
    await assert.rejects(audit.append({ type: 'Not A Type', actor: 'system' }), /invalid audit event/);
    let text = await m.registry.metrics();
    assert.equal(valueOf(text, 'cordon_audit_append_duration_seconds_count', { result: 'ok' }), 2);
    assert.equal(valueOf(text, 'cordon_audit_append_duration_seconds_count', { result: 'error' }), 1);
    assert.ok(audit instanceof AuditLog);
    await audit.close(); // a method of the log, run on the log itself
    await assert.rejects(audit.append({ type: 'test.three', actor: 'system' }));
    text = await m.registry.metrics();
    assert.equal(valueOf(text, 'cordon_audit_append_duration_seconds_count', { result: 'error' }), 2, 'a closed log refuses, and that is timed too');
  });
});

test('the feed counts a failed read of the log and goes on from the last event it counted', async () => {
  await withLog(async (audit, store) => {
    const m = createMetrics({ processMetrics: false });
    const repo = store.audit;
    const query = repo.query.bind(repo);
    let failures = 0;
    repo.query = async (q) => {
      if (failures > 0) {
        failures--;
        throw new Error('database is locked (injected)');
      }
      return query(q);
    };
    const feed = await startMetricsFeed({ store, metrics: m, pollIntervalMs: 10, retryMs: 10 });
    try {
      await audit.append({ type: 'test.before', actor: 'system', data: {} });
      await counted(m, 1);
      failures = 3;
      await audit.append({ type: 'test.after', actor: 'system', data: {} });
      await audit.append({ type: 'test.after', actor: 'system', data: {} });
      const text = await counted(m, 3);
      assert.equal(valueOf(text, 'cordon_metrics_feed_errors_total'), 3);
      assert.equal(valueOf(text, 'cordon_audit_events_total', { type: 'test.before' }), 1, 'nothing is counted twice');
      assert.equal(valueOf(text, 'cordon_audit_events_total', { type: 'test.after' }), 2);
    } finally {
      await feed.stop();
    }
  });
});

test('dropped audit events are counted by code; unknown codes are labelled other, bad counts ignored', async () => {
  const m = createMetrics({ processMetrics: false });
  const cases: { name: string; code: string; count: number }[] = [
    { name: 'a failed batch of 3', code: 'audit-write-failed', count: 3 },
    { name: 'another failed batch', code: 'audit-write-failed', count: 2 },
    { name: 'a refused append', code: 'audit-closed', count: 1 },
    { name: 'a code outside the known set', code: 'audit-something-new', count: 1 },
    { name: 'a zero count (nothing dropped)', code: 'audit-overloaded', count: 0 },
    { name: 'a fractional count', code: 'audit-overloaded', count: 0.5 },
  ];
  for (const c of cases) m.observeDropped(c.code, c.count);
  const text = await m.registry.metrics();
  assert.equal(valueOf(text, 'cordon_audit_dropped_events_total', { code: 'audit-write-failed' }), 5);
  assert.equal(valueOf(text, 'cordon_audit_dropped_events_total', { code: 'audit-closed' }), 1);
  assert.equal(valueOf(text, 'cordon_audit_dropped_events_total', { code: 'other' }), 1);
  assert.equal(valueOf(text, 'cordon_audit_dropped_events_total', { code: 'audit-overloaded' }), undefined, 'zero and fractional counts add nothing');
});
