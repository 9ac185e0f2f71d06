/**
 * API tests, in process (`app.request`), against the real SQLite store and the
 * real audit log. The failing-store case proves that a request whose audit
 * event cannot be written never reaches its handler.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createApi, operatorTokenChecker } from './index.js';
import { AuditLog, queryEvents } from '../audit/index.js';
import { openStore, type Store } from '../store/index.js';
import { tempDir } from '../testkit/index.js';

const TOKEN = 'cop_' + 'A'.repeat(43);

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
  let verifyCalls = 0;
  const app = createApi({
    audit,
    isOperatorToken: operatorTokenChecker(TOKEN),
    version: '0.0.0-test',
    verifyAudit: async () => {
      verifyCalls++;
      return { ok: true };
    },
  });
  return {
    app,
    audit,
    store,
    verifyCalls: () => verifyCalls,
    async close() {
      await audit.close().catch(() => undefined);
      await store.close();
      dir.cleanup();
    },
  };
}

async function lastEvents(store: Store, n: number) {
  return queryEvents(store, { limit: n, order: 'desc' });
}

test('GET /healthz needs no token and reveals nothing', async () => {
  const t = await setup();
  try {
    const res = await t.app.request('/healthz');
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok' });
  } finally {
    await t.close();
  }
});

const unauthenticated: Array<{ name: string; headers: Record<string, string>; reason: string }> = [
  { name: 'no header', headers: {}, reason: 'missing-token' },
  { name: 'wrong token', headers: { authorization: 'Bearer cop_' + 'B'.repeat(43) }, reason: 'invalid-token' },
  { name: 'agent-style token', headers: { authorization: 'Bearer eyJhbGciOiJFZERTQSJ9.e30.sig' }, reason: 'invalid-token' },
  { name: 'basic auth', headers: { authorization: 'Basic ' + Buffer.from('a:b').toString('base64') }, reason: 'missing-token' },
  { name: 'token as query string', headers: {}, reason: 'missing-token' },
];

for (const c of unauthenticated) {
  test(`401 and an audit event: ${c.name}`, async () => {
    const t = await setup();
    try {
      const res = await t.app.request('/v1/audit/verify?token=' + TOKEN, { headers: c.headers });
      assert.equal(res.status, 401);
      const body = (await res.json()) as { error: string; fix: string };
      assert.equal(body.error, 'unauthenticated');
      assert.match(body.fix, /Authorization: Bearer/);
      assert.equal(t.verifyCalls(), 0, 'the handler must not run');
      const [ev] = await lastEvents(t.store, 1);
      assert.equal(ev?.type, 'api.auth');
      assert.equal(ev?.decision, 'deny');
      assert.equal(ev?.reason, c.reason);
      assert.equal(ev?.actor, 'anonymous');
    } finally {
      await t.close();
    }
  });
}

test('an operator request is audited before its handler runs', async () => {
  const t = await setup();
  try {
    const res = await t.app.request('/v1/audit/events?type=api.request&order=desc&limit=5', {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { events: Array<{ type: string; data: { path: string } }> };
    // The handler's own query already sees the event for this very request.
    assert.equal(body.events[0]?.type, 'api.request');
    assert.equal(body.events[0]?.data.path, '/v1/audit/events');
  } finally {
    await t.close();
  }
});

test('if the audit write fails, the request is refused with 503 and the handler never runs', async () => {
  let fail = false;
  const t = await setup({ failWrites: () => fail });
  try {
    fail = true;
    const res = await t.app.request('/v1/audit/verify', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: string; message: string; fix?: string };
    assert.equal(body.error, 'audit-write-failed');
    assert.ok(body.fix && body.fix.length > 0, 'the error says how to fix it');
    assert.equal(t.verifyCalls(), 0, 'the action must not happen unaudited');
    fail = false;
    const ok = await t.app.request('/v1/audit/verify', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.status, 200);
    assert.equal(t.verifyCalls(), 1);
  } finally {
    await t.close();
  }
});

const badQueries = [
  { name: 'limit too large', q: 'limit=100000', param: 'limit' },
  { name: 'negative afterSeq', q: 'afterSeq=-1', param: 'afterSeq' },
  { name: 'afterSeq not a number', q: 'afterSeq=abc', param: 'afterSeq' },
  { name: 'unknown parameter', q: 'sql=drop', param: '' },
  { name: 'bad order', q: 'order=sideways', param: 'order' },
  { name: 'type with bad characters', q: 'type=A%20B', param: 'type' },
];
for (const c of badQueries) {
  test(`GET /v1/audit/events rejects ${c.name} with 400`, async () => {
    const t = await setup();
    try {
      const res = await t.app.request(`/v1/audit/events?${c.q}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(res.status, 400);
      const body = (await res.json()) as { error: string; message: string; fix: string };
      assert.equal(body.error, 'invalid-input');
      assert.ok(body.message.includes(c.param), `message names ${c.param}: ${body.message}`);
      assert.match(body.fix, /allowed:/);
    } finally {
      await t.close();
    }
  });
}

test('unknown routes are 404 JSON, after authentication', async () => {
  const t = await setup();
  try {
    const anon = await t.app.request('/v1/nope');
    assert.equal(anon.status, 401);
    const res = await t.app.request('/v1/nope', { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: string }).error, 'not-found');
  } finally {
    await t.close();
  }
});
