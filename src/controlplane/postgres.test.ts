/**
 * `cordon up` on a PostgreSQL store (a real server the test starts; skipped,
 * saying why, without PostgreSQL binaries): the control plane runs and audits
 * its API on it, the log verifies, a second control plane on the same
 * database (another home, another host in real life) is refused at start,
 * and a standby takes over once the first has stopped and it holds the
 * audit signing key.
 */
import { cpSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startControlPlane, keyDir } from './index.js';
import { parseConfig } from '../config/index.js';
import { verifyAudit } from '../audit/index.js';
import { openStore } from '../store/index.js';
import { StoreError } from '../errors/index.js';
import { usePostgresServer } from '../store/testing/postgres.js';
import { tempDir } from '../testkit/index.js';

const { opts, freshUrl } = usePostgresServer('cordon_cp');

test('cordon up on PostgreSQL: audited API on the database, a second control plane on it refused at start, the log verifies', opts, async () => {
  const url = await freshUrl();
  const config = parseConfig(JSON.stringify({ version: 1, store: { kind: 'postgres', url } }));
  const a = tempDir();
  const b = tempDir();
  try {
    const cp = await startControlPlane({ home: a.path, config, port: 0, dashboardDir: false });
    try {
      const res = await fetch(cp.url + '/v1/health', { headers: { authorization: `Bearer ${cp.operatorToken.token}` } });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { store: string }).store, 'postgres');
      await assert.rejects(startControlPlane({ home: b.path, config, port: 0, dashboardDir: false }), (err: unknown) => {
        assert.ok(err instanceof StoreError, String(err));
        assert.equal(err.code, 'store-locked');
        return true;
      });
    } finally {
      await cp.stop();
    }
    const store = await openStore({ kind: 'postgres', url });
    try {
      const types = (await store.audit.query({ limit: 100, order: 'asc' })).map((e) => e.type);
      assert.deepEqual(types, ['daemon.start', 'api.request', 'daemon.stop'], 'the second control plane wrote nothing');
      const report = await verifyAudit(store, { keyDir: keyDir(a.path) });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.unsealedEvents ?? 0, 0, 'the shutdown checkpoint covers every event');
    } finally {
      await store.close();
    }
    // The lock went with the first control plane, but a standby needs its audit signing key (docs/operations.md):
    // without it the store's checkpoints name a key it does not hold, and it refuses to start.
    await assert.rejects(startControlPlane({ home: b.path, config, port: 0, dashboardDir: false }), (err: unknown) => {
      assert.equal((err as { code?: string }).code, 'key-missing', String(err));
      return true;
    });
    mkdirSync(join(b.path, 'keys'), { recursive: true, mode: 0o700 });
    cpSync(join(a.path, 'keys', 'audit-ed25519.key'), join(b.path, 'keys', 'audit-ed25519.key'));
    cpSync(join(a.path, 'keys', 'audit-ed25519.pub'), join(b.path, 'keys', 'audit-ed25519.pub'));
    const standby = await startControlPlane({ home: b.path, config, port: 0, dashboardDir: false });
    await standby.stop();
    const after = await openStore({ kind: 'postgres', url });
    try {
      const report = await verifyAudit(after, { keyDir: keyDir(b.path) });
      assert.equal(report.ok, true, report.message);
    } finally {
      await after.close();
    }
  } finally {
    a.cleanup();
    b.cleanup();
  }
});
