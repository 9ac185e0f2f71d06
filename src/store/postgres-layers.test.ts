/**
 * The layers that keep their own tables through `store.db` (approvals with
 * supervision, detector alerts and baselines) on a PostgreSQL store: their
 * migrations run, 64-bit times read back as numbers, upserts and conditional
 * updates behave as on SQLite, and state survives a reopen. A real server is
 * started by the test (see testing/postgres.ts); skips, saying why, without
 * PostgreSQL binaries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApprovals, type ApprovalsConfig } from '../approvals/approvals.js';
import { deployAction } from '../approvals/testing.js';
import { AuditLog, queryEvents, verifyAudit } from '../audit/index.js';
import { createDetectService, openDetectStore, type DetectEvent } from '../detect/index.js';
import { openStore } from './index.js';
import { usePostgresServer } from './testing/postgres.js';

const { opts, freshUrl } = usePostgresServer('cordon_l');

const config: ApprovalsConfig = { ttlMs: 60_000, holdTimeoutMs: 5_000, twoApprovers: false };

test('approvals on PostgreSQL: decide, use once, expire by the clock, supervise, and survive a reopen', opts, async () => {
  const url = await freshUrl();
  const dir = mkdtempSync(join(tmpdir(), 'cordon-pg-layers-'));
  const keyDir = join(dir, 'keys');
  let offsetMs = 0;
  const now = (): number => Date.now() + offsetMs;
  try {
    let store = await openStore({ kind: 'postgres', url });
    let audit = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    let approvals = await createApprovals({ store, audit, config, now, sweepIntervalMs: 60_000 });

    const t = await approvals.request(deployAction('{"env":"prod"}'));
    const waiting = t.wait(5000);
    assert.equal((await approvals.decide(t.id, 'operator', 'approve', 'ok')).state, 'approved');
    assert.equal(await waiting, 'approved');
    assert.deepEqual(await approvals.consume(t.id, t.hash), { ok: true });
    assert.deepEqual(await approvals.consume(t.id, t.hash), { ok: false, reason: 'approval-used' });

    const late = await approvals.request(deployAction('{"env":"staging"}'));
    const pendingLeft = await approvals.request(deployAction('{"env":"dev"}'));
    offsetMs += 61_000; // past the TTL: the next request sweeps both as expired
    const fresh = await approvals.request(deployAction('{"env":"qa"}'));
    assert.equal((await approvals.get(late.id))?.state, 'expired');
    assert.equal((await approvals.get(pendingLeft.id))?.state, 'expired');
    assert.equal((await approvals.get(fresh.id))?.state, 'pending');
    const created = (await approvals.get(fresh.id))!.createdAt;
    assert.ok(Math.abs(Date.parse(created) - now()) < 60_000, `created_at (bigint) reads back as a time: ${created}`);

    await approvals.supervise({ sandboxId: 'sb-watch', agent: 'reviewer', alertId: 'al-1', reason: 'new domain' });
    assert.equal(approvals.isSupervised('sb-watch'), true);

    approvals.close();
    await audit.close();
    await store.close();

    store = await openStore({ kind: 'postgres', url });
    audit = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    approvals = await createApprovals({ store, audit, config, now, sweepIntervalMs: 60_000 });
    try {
      assert.equal((await approvals.get(fresh.id))?.state, 'pending', 'pending survives the reopen');
      assert.deepEqual((await approvals.list({ state: 'approved' })).map((a) => a.id), [t.id]);
      assert.equal(approvals.isSupervised('sb-watch'), true, 'the supervision mark survives the reopen');
      assert.deepEqual((await approvals.listSupervised()).map((m) => m.sandboxId), ['sb-watch']);
      await approvals.unsupervise('sb-watch', 'operator:alice');
      assert.equal(approvals.isSupervised('sb-watch'), false);
      const kinds = new Set((await queryEvents(store, { limit: 1000 })).map((e) => e.type));
      for (const k of ['approval.requested', 'approval.decided', 'approval.consumed', 'approval.expired', 'sandbox.supervised', 'sandbox.unsupervised']) {
        assert.ok(kinds.has(k), `${k} was audited`);
      }
    } finally {
      approvals.close();
      await audit.close();
      assert.equal((await verifyAudit(store, { keyDir })).ok, true);
      await store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('detector alerts and baselines on PostgreSQL persist across a reopen; ack records who and when', opts, async () => {
  const url = await freshUrl();
  const ts = (m: number): string => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString();
  const learning: DetectEvent[] = [];
  for (let m = 0; m < 60; m++) {
    learning.push({ ts: ts(m), type: 'egress.request', agent: 'a', sandbox: `s${m}`, data: { host: 'github.com', port: 443 } });
    learning.push({ ts: ts(m), type: 'sandbox.file.read', agent: 'a', sandbox: `s${m}`, data: { path: '/workspace/x.py' } });
  }
  let store = await openStore({ kind: 'postgres', url });
  const svc = await createDetectService({ store, options: { learnEvents: 120 } });
  for (const e of learning) await svc.observe(e);
  const raised = await svc.observe({ seq: 500, ts: ts(70), type: 'sandbox.file.read', agent: 'a', sandbox: 'late', data: { path: '/root/.ssh/id_rsa' } });
  assert.equal(raised.length, 1);
  await svc.save();
  await svc.save(); // the baseline upsert runs twice
  await store.close();

  store = await openStore({ kind: 'postgres', url });
  try {
    const repo = await openDetectStore(store);
    assert.deepEqual((await repo.listAlerts()).map((a) => a.id), [raised[0]!.id]);
    const acked = await repo.ack(raised[0]!.id, 'operator:alice', new Date('2026-02-01T00:00:00Z'));
    assert.deepEqual([acked.ackedBy, acked.ackedAt], ['operator:alice', '2026-02-01T00:00:00.000Z']);
    assert.deepEqual((await repo.listAlerts({ acked: false })).length, 0);
    assert.ok((await repo.loadBaseline('a'))?.learnedAt, 'the learned baseline was saved');
    assert.equal((await repo.loadBaselines()).length, 1);
  } finally {
    await store.close();
  }
});
