/**
 * JWKS route tests, in process (`app.request`), against the real SQLite store,
 * the real audit log and a real identity service: served without a token,
 * public members only, usable by an outside verifier (jose's local JWK set),
 * updated on rotation, audited before the handler, refused when the audit
 * write fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { AuditLog, queryEvents } from '../audit/index.js';
import { createIdentityService, type IdentityService } from '../identity/index.js';
import { openStore, type Store } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { createApi, operatorTokenChecker } from './index.js';
import { JWKS_PATH } from './jwks.js';

const TOKEN = 'cop_' + 'A'.repeat(43);
const SB = { id: 'sb-aaaaaaaaaaaaaaaaaaaa', agent: 'reviewer' };

async function setup(opts: { failWrites?: () => boolean; wired?: boolean } = {}) {
  const dir = tempDir();
  const store: Store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  if (opts.failWrites) {
    const repo = store.audit;
    const insert = repo.insertEvents.bind(repo);
    repo.insertEvents = async (rows) => {
      if (opts.failWrites!()) throw new Error('disk I/O error (injected)');
      return insert(rows);
    };
  }
  const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys') });
  const ids: IdentityService = createIdentityService({ home: dir.path, trustDomain: 'agents.example.org', audiences: ['llm.cordon.internal'] });
  let jwksCalls = 0;
  const app = createApi({
    audit,
    isOperatorToken: operatorTokenChecker(TOKEN),
    version: '0.0.0-test',
    ...(opts.wired === false ? {} : { jwks: () => (jwksCalls++, ids.jwks()) }),
  });
  return {
    app, ids, store,
    jwksCalls: () => jwksCalls,
    async close() {
      ids.close();
      await audit.close().catch(() => undefined);
      await store.close();
      dir.cleanup();
    },
  };
}

test('GET /.well-known/jwks.json needs no token and serves only public Ed25519 keys', async () => {
  const t = await setup();
  try {
    const res = await t.app.request(JWKS_PATH);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(res.headers.get('cache-control'), 'public, max-age=300');
    const body = (await res.json()) as { keys: Array<Record<string, string>> };
    assert.deepEqual(body, t.ids.jwks());
    assert.equal(body.keys.length, 1);
    assert.deepEqual(Object.keys(body.keys[0]!).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x'], 'no private member (d)');
    assert.deepEqual({ ...body.keys[0], x: undefined, kid: undefined }, { kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig', x: undefined, kid: undefined });
  } finally {
    await t.close();
  }
});

test('an outside verifier checks a sandbox token with the served set, across a rotation', async () => {
  const t = await setup();
  try {
    const before = await t.ids.issue(SB);
    t.ids.rotate();
    const after = await t.ids.issue(SB);
    const body = (await (await t.app.request(JWKS_PATH)).json()) as { keys: Array<{ kid: string }> };
    assert.deepEqual(body.keys.map((k) => k.kid), [after.kid, before.kid], 'the active key first, then the retired one');
    const keySet = createLocalJWKSet(body as Parameters<typeof createLocalJWKSet>[0]);
    for (const issued of [before, after]) {
      const { payload, protectedHeader } = await jwtVerify(issued.token, keySet, { algorithms: ['EdDSA'], issuer: t.ids.issuer, audience: 'llm.cordon.internal' });
      assert.equal(protectedHeader.kid, issued.kid);
      assert.equal(payload.sub, issued.spiffeId);
    }
  } finally {
    await t.close();
  }
});

test('the request is audited (actor anonymous) before the handler runs', async () => {
  const t = await setup();
  try {
    await t.app.request(JWKS_PATH);
    const [ev] = await queryEvents(t.store, { limit: 1, order: 'desc' });
    assert.equal(ev?.type, 'api.request');
    assert.equal(ev?.actor, 'anonymous');
    assert.equal(ev?.decision, 'allow');
    assert.equal((ev?.data as { path?: string } | undefined)?.path, JWKS_PATH);
  } finally {
    await t.close();
  }
});

test('if the audit write fails, the request is refused with 503 and the handler never runs', async () => {
  let fail = true;
  const t = await setup({ failWrites: () => fail });
  try {
    const res = await t.app.request(JWKS_PATH);
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as { error: string }).error, 'audit-write-failed');
    assert.equal(t.jwksCalls(), 0);
    fail = false;
    assert.equal((await t.app.request(JWKS_PATH)).status, 200);
    assert.equal(t.jwksCalls(), 1);
  } finally {
    await t.close();
  }
});

const notServed: Array<{ name: string; path: string; method?: string; wired?: boolean }> = [
  { name: 'not wired (no identity service)', path: JWKS_PATH, wired: false },
  { name: 'POST', path: JWKS_PATH, method: 'POST' },
  { name: 'another .well-known file', path: '/.well-known/openid-configuration' },
];
for (const c of notServed) {
  test(`404 for ${c.name}`, async () => {
    const t = await setup({ wired: c.wired ?? true });
    try {
      const res = await t.app.request(c.path, { method: c.method ?? 'GET' });
      assert.equal(res.status, 404);
      assert.equal(((await res.json()) as { error: string }).error, 'not-found');
      assert.equal(t.jwksCalls(), 0);
    } finally {
      await t.close();
    }
  });
}

test('operator routes still need the operator token when the JWKS route is served', async () => {
  const t = await setup();
  try {
    assert.equal((await t.app.request('/v1/version')).status, 401);
    assert.equal((await t.app.request('/v1/version', { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
  } finally {
    await t.close();
  }
});
