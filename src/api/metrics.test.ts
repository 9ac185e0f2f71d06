/**
 * `GET /v1/metrics` in process against a real store and audit log: 401 (and an
 * `api.auth` event) without the operator token; with it, the Prometheus text
 * of a real metrics registry, audited as `api.request` before the handler
 * runs; a scrape whose audit event cannot be written is refused and the
 * metrics are never read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createApi, operatorTokenChecker } from './index.js';
import { AuditLog, queryEvents } from '../audit/index.js';
import { createMetrics } from '../metrics/index.js';
import { valueOf } from '../metrics/testing.js';
import { openStore } from '../store/index.js';
import { tempDir } from '../testkit/index.js';

const TOKEN = 'cop_' + 'M'.repeat(43);

async function setup(opts: { failWrites?: () => boolean } = {}) {
  const dir = tempDir();
  const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  if (opts.failWrites) {
    const repo = store.audit;
    const insert = repo.insertEvents.bind(repo);
    repo.insertEvents = async (rows) => {
      if (opts.failWrites!()) throw new Error('disk I/O error (injected)');
      return insert(rows);
    };
  }
  const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys') });
  const metrics = createMetrics({ agents: ['coder'], sandboxes: () => [{ state: 'running' }], processMetrics: false });
  let reads = 0;
  const source = {
    contentType: metrics.registry.contentType,
    metrics: () => {
      reads++;
      return metrics.registry.metrics();
    },
  };
  const app = createApi({ audit, isOperatorToken: operatorTokenChecker(TOKEN), version: '0.0.0-test', metrics: source });
  return {
    app, audit, store, metrics,
    reads: () => reads,
    async close() {
      await audit.close().catch(() => undefined);
      await store.close();
      dir.cleanup();
    },
  };
}

for (const c of [
  { name: 'no token', headers: {} as Record<string, string>, reason: 'missing-token' },
  { name: 'a wrong token', headers: { authorization: 'Bearer cop_' + 'X'.repeat(43) }, reason: 'invalid-token' },
]) {
  test(`GET /v1/metrics with ${c.name}: 401, audited, metrics not read`, async () => {
    const t = await setup();
    try {
      const res = await t.app.request('/v1/metrics', { headers: c.headers });
      assert.equal(res.status, 401);
      assert.equal(((await res.json()) as { error: string }).error, 'unauthenticated');
      assert.equal(t.reads(), 0);
      const [last] = await queryEvents(t.store, { limit: 1, order: 'desc' });
      assert.equal(last?.type, 'api.auth');
      assert.equal(last?.reason, c.reason);
      assert.deepEqual(last?.data, { method: 'GET', path: '/v1/metrics' });
    } finally {
      await t.close();
    }
  });
}

test('GET /v1/metrics with the operator token: Prometheus text, audited before the handler', async () => {
  const t = await setup();
  try {
    t.metrics.observe(await t.audit.append({ type: 'egress.request', actor: 'agent:coder', agent: 'coder', sandbox: 'sb-1', decision: 'deny', reason: 'host-not-allowed', data: {} }));
    const res = await t.app.request('/v1/metrics', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const text = await res.text();
    assert.match(text, /^# HELP cordon_egress_requests_total /m);
    assert.equal(valueOf(text, 'cordon_egress_requests_total', { agent: 'coder', decision: 'deny', reason: 'host-not-allowed' }), 1);
    assert.equal(valueOf(text, 'cordon_sandboxes', { state: 'running' }), 1);
    assert.equal(t.reads(), 1);
    const [last] = await queryEvents(t.store, { limit: 1, order: 'desc' });
    assert.equal(last?.type, 'api.request');
    assert.equal(last?.actor, 'operator');
    assert.deepEqual(last?.data, { method: 'GET', path: '/v1/metrics' });
  } finally {
    await t.close();
  }
});

test('GET /v1/metrics whose audit event cannot be written: 503, metrics never read', async () => {
  const t = await setup({ failWrites: () => true });
  try {
    const res = await t.app.request('/v1/metrics', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 503);
    assert.equal(t.reads(), 0);
  } finally {
    await t.close();
  }
});

test('without metrics configured, /v1/metrics is 404 (after the token check)', async () => {
  const dir = tempDir();
  const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys') });
  try {
    const app = createApi({ audit, isOperatorToken: operatorTokenChecker(TOKEN), version: '0.0.0-test' });
    assert.equal((await app.request('/v1/metrics')).status, 401);
    assert.equal((await app.request('/v1/metrics', { headers: { authorization: `Bearer ${TOKEN}` } })).status, 404);
  } finally {
    await audit.close();
    await store.close();
    dir.cleanup();
  }
});
