/**
 * Persistence: alerts and baselines survive a reopen of the store, acks are
 * recorded, and a detector resumed from a stored baseline judges at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../store/index.js';
import { NotFoundError, StoreError } from '../errors/index.js';
import { createDetectService, createDetector, openDetectStore, type Alert, type DetectEvent } from './index.js';

const ts = (m: number) => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString();

function learningStream(): DetectEvent[] {
  const out: DetectEvent[] = [];
  for (let m = 0; m < 60; m++) {
    out.push({ ts: ts(m), type: 'egress.request', agent: 'a', sandbox: `s${m}`, data: { host: 'github.com', port: 443 } });
    out.push({ ts: ts(m), type: 'sandbox.file.read', agent: 'a', sandbox: `s${m}`, data: { path: '/workspace/x.py' } });
  }
  return out;
}

test('alerts and baselines persist across a reopen; ack records who and when', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-detect-'));
  const path = join(dir, 'cordon.db');
  try {
    let store = await openStore({ kind: 'sqlite', path });
    const seen: Alert[] = [];
    const svc = await createDetectService({ store, options: { learnEvents: 120 }, onAlert: (a) => { seen.push(a); } });
    for (const e of learningStream()) assert.deepEqual(await svc.observe(e), []);
    const raised = await svc.observe({ seq: 500, ts: ts(70), type: 'sandbox.file.read', agent: 'a', sandbox: 'late', data: { path: '/root/.ssh/id_rsa' } });
    assert.deepEqual(raised.map((a) => [a.feature, a.value]), [['path', '~/.ssh']], 'one alert for the event, its strongest novelty');
    assert.deepEqual((raised[0]!.evidence.alsoNew as { feature: string; value: string }[]).map((n) => [n.feature, n.value]).sort(),
      [['path.area', '~'], ['sensitive', 'ssh']], 'a new area and a new credential class, named in the evidence');
    assert.deepEqual(seen, raised, 'onAlert saw the stored alert');
    await svc.save();
    await store.close();

    store = await openStore({ kind: 'sqlite', path });
    const repo = await openDetectStore(store);
    const stored = (await repo.listAlerts()).find((a) => a.feature === 'path');
    assert.equal(stored?.id, raised[0]!.id);
    assert.equal(stored?.value, '~/.ssh');
    assert.equal(stored?.evidence.raw, '/root/.ssh/id_rsa');
    assert.equal((await repo.listAlerts({ acked: true })).length, 0);
    const acked = await repo.ack(stored!.id, 'operator:alice', new Date('2026-02-01T00:00:00Z'));
    assert.deepEqual([acked.ackedBy, acked.ackedAt], ['operator:alice', '2026-02-01T00:00:00.000Z']);
    assert.deepEqual((await repo.listAlerts({ acked: false })).map((a) => a.id), []);
    assert.deepEqual((await repo.listAlerts({ acked: true })).map((a) => a.id), [raised[0]!.id]);
    await assert.rejects(repo.ack('nope', 'operator:alice'), NotFoundError);

    const b = await repo.loadBaseline('a');
    assert.ok(b?.learnedAt, 'the learned baseline was saved');
    const resumed = createDetector({ baselines: [b!] });
    const again = resumed.observe({ ts: ts(80), type: 'egress.request', agent: 'a', sandbox: 'z', data: { host: 'drop.example', port: 443 } });
    assert.deepEqual(again.map((a) => a.feature), ['domain'], 'judged at once, no new learning window');
    assert.deepEqual((again[0]!.evidence.alsoNew as { feature: string }[]).map((n) => n.feature), ['suffix']);

    await store.db.updateTable('detect_baselines' as never).set({ body: '{"version":9}' } as never).execute();
    await assert.rejects(repo.loadBaselines(), StoreError);
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
