/**
 * The audit log's core behaviour on a PostgreSQL store (a real server started
 * by the test, see testing/postgres.ts): group-committed appends chain and
 * verify, checkpoints are signed where expected, reopening continues the
 * chain, queries filter, tampering done with SQL is found, and a second
 * process cannot append to the same chain. Skips, saying why, where no
 * PostgreSQL binaries are installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { AuditLog, GENESIS_HASH, queryEvents, verifyAudit, type AuditEventInput, type VerifyProblem } from '../audit/index.js';
import { AuditError, StoreError } from '../errors/index.js';
import { openStore, type Store } from './index.js';
import { usePostgresServer } from './testing/postgres.js';

const { opts, freshUrl } = usePostgresServer('cordon_a');

interface Fixture {
  url: string;
  store: Store;
  keyDir: string;
}

/** A fresh database, a store on it and a key directory; everything closed and removed afterwards. */
async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const url = await freshUrl();
  const dir = mkdtempSync(join(tmpdir(), 'cordon-pg-audit-'));
  const store = await openStore({ kind: 'postgres', url });
  try {
    await fn({ url, store, keyDir: join(dir, 'keys') });
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const event = (i: number): AuditEventInput => ({
  type: i % 2 === 0 ? 'egress.request' : 'tool.call',
  actor: `agent:a${i % 3}`,
  agent: `a${i % 3}`,
  sandbox: `sb-${i % 5}`,
  decision: i % 4 === 0 ? 'deny' : 'allow',
  data: { n: i, text: 'quote " backslash \\ brace { é' },
});

/** Append `n` events, 1,000 at a time concurrently (each group shares commits). */
async function appendMany(log: AuditLog, from: number, n: number): Promise<void> {
  for (let start = 0; start < n; start += 1000) {
    await Promise.all(Array.from({ length: Math.min(1000, n - start) }, (_, i) => log.append(event(from + start + i))));
  }
}

test('2,500 group-committed appends chain, are sealed by checkpoints, and verify', opts, async () => {
  await withFixture(async ({ store, keyDir }) => {
    const log = await AuditLog.open({ store, keyDir, checkpointEvery: 1000, checkpointIntervalMs: 60_000 });
    const first = await log.append(event(0));
    assert.deepEqual([first.seq, first.prevHash], [1, GENESIS_HASH]);
    await appendMany(log, 1, 2499);
    await log.close();
    assert.deepEqual((await store.audit.listCheckpoints()).map((c) => c.seq), [1001, 2001, 2500]);
    const report = await verifyAudit(store, { keyDir });
    assert.equal(report.ok, true, report.message);
    assert.deepEqual([report.events, report.lastSeq, report.checkpoints, report.unsealedEvents], [2500, 2500, 3, 0]);
  });
});

test('concurrent appends get contiguous seqs on one chain; reopening continues it', opts, async () => {
  await withFixture(async ({ url, store, keyDir }) => {
    const log = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    const got = await Promise.all(Array.from({ length: 500 }, (_, i) => log.append(event(i))));
    assert.deepEqual(got.map((e) => e.seq).sort((a, b) => a - b), Array.from({ length: 500 }, (_, i) => i + 1));
    const bySeq = new Map(got.map((e) => [e.seq, e]));
    for (let s = 2; s <= 500; s++) assert.equal(bySeq.get(s)!.prevHash, bySeq.get(s - 1)!.hash, `event ${s} links to ${s - 1}`);
    await log.close();
    await store.close();

    const again = await openStore({ kind: 'postgres', url });
    try {
      const reopened = await AuditLog.open({ store: again, keyDir, checkpointIntervalMs: 60_000 });
      assert.deepEqual(reopened.head, { seq: 500, hash: bySeq.get(500)!.hash });
      const next = await reopened.append(event(500));
      assert.deepEqual([next.seq, next.prevHash], [501, bySeq.get(500)!.hash]);
      await reopened.close();
      const report = await verifyAudit(again, { keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 501);
    } finally {
      await again.close();
    }
  });
});

test('queryEvents filters and orders on PostgreSQL as on SQLite', opts, async () => {
  await withFixture(async ({ store, keyDir }) => {
    const log = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    await appendMany(log, 1, 40);
    await log.close();
    const cases: { name: string; filter: Parameters<typeof queryEvents>[1]; seqs: number[] }[] = [
      { name: 'agent, limited', filter: { agent: 'a0', limit: 4 }, seqs: [3, 6, 9, 12] },
      { name: 'decision, descending', filter: { decision: 'deny', order: 'desc', limit: 3 }, seqs: [40, 36, 32] },
      { name: 'type in a seq window', filter: { type: 'tool.call', afterSeq: 10, beforeSeq: 16 }, seqs: [11, 13, 15] },
      { name: 'no match', filter: { sandbox: 'sb-none' }, seqs: [] },
    ];
    for (const c of cases) {
      const events = await queryEvents(store, c.filter);
      assert.deepEqual(events.map((e) => e.seq), c.seqs, c.name);
    }
    const [one] = await queryEvents(store, { afterSeq: 6, limit: 1 });
    assert.deepEqual(one?.data, event(7).data, 'the event body round-trips');
  });
});

test('tampering done with SQL on PostgreSQL is found at the first bad seq', opts, async (t) => {
  const cases: { name: string; tamper: (s: Store) => Promise<unknown>; problem: VerifyProblem; firstBadSeq: number }[] = [
    { name: 'edited body', tamper: (s) => sql`update audit_events set body = replace(body, '"n":150', '"n":-1') where seq = 150`.execute(s.db), problem: 'edited', firstBadSeq: 150 },
    { name: 'edited decision column', tamper: (s) => sql`update audit_events set decision = 'allow' where seq = 120`.execute(s.db), problem: 'edited', firstBadSeq: 120 },
    { name: 'deleted event', tamper: (s) => sql`delete from audit_events where seq = 77`.execute(s.db), problem: 'deleted', firstBadSeq: 77 },
    {
      name: 'seq columns of two rows swapped',
      tamper: async (s) => {
        await sql`update audit_events set seq = -1 where seq = 50`.execute(s.db);
        await sql`update audit_events set seq = 50 where seq = 60`.execute(s.db);
        await sql`update audit_events set seq = 60 where seq = -1`.execute(s.db);
      },
      problem: 'reordered',
      firstBadSeq: 50,
    },
    { name: 'sealed tail truncated', tamper: (s) => sql`delete from audit_events where seq > 180`.execute(s.db), problem: 'truncated', firstBadSeq: 181 },
    {
      name: 'checkpoint signature altered',
      tamper: (s) => sql`update audit_checkpoints set signature = ${Buffer.alloc(64, 7).toString('base64')} where seq = 100`.execute(s.db),
      problem: 'forged-checkpoint',
      firstBadSeq: 100,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      await withFixture(async ({ store, keyDir }) => {
        const log = await AuditLog.open({ store, keyDir, checkpointEvery: 100, checkpointIntervalMs: 60_000 });
        await appendMany(log, 1, 100);
        await appendMany(log, 101, 100);
        await log.close();
        assert.deepEqual((await store.audit.listCheckpoints()).map((cp) => cp.seq), [100, 200]);
        assert.equal((await verifyAudit(store, { keyDir })).ok, true, 'intact before tampering');
        await c.tamper(store);
        const report = await verifyAudit(store, { keyDir, pageSize: 70 });
        assert.equal(report.ok, false, 'tampering must be detected');
        assert.equal(report.problem, c.problem, report.message);
        assert.equal(report.firstBadSeq, c.firstBadSeq, report.message);
      });
    });
  }
});

test('two logs in one process share the writer and interleave into one chain', opts, async () => {
  await withFixture(async ({ store, keyDir }) => {
    const a = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    const b = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    const e1 = await a.append(event(1));
    const e2 = await b.append(event(2)); // b's head was stale: it chains again on a's event
    const e3 = await a.append(event(3));
    assert.deepEqual([e1.seq, e2.seq, e3.seq], [1, 2, 3]);
    assert.deepEqual([e2.prevHash, e3.prevHash], [e1.hash, e2.hash]);
    await b.close();
    await a.close();
    const report = await verifyAudit(store, { keyDir });
    assert.equal(report.ok, true, report.message);
  });
});

test('a second cordon process cannot append to a chain another one writes (no fork): its appends are refused', opts, async () => {
  await withFixture(async ({ url, store, keyDir }) => {
    const first = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    await first.append(event(1));
    const other = await openStore({ kind: 'postgres', url }); // as another machine would
    const otherDir = mkdtempSync(join(tmpdir(), 'cordon-pg-audit-'));
    try {
      const second = await AuditLog.open({ store: other, keyDir: join(otherDir, 'keys'), checkpointIntervalMs: 60_000, onDropped: () => undefined });
      await assert.rejects(second.append(event(2)), (err: unknown) => {
        assert.ok(err instanceof AuditError);
        assert.equal(err.code, 'audit-write-failed');
        assert.ok(err.cause instanceof StoreError && err.cause.code === 'store-locked', `cause: ${String(err.cause)}`);
        return true;
      });
      assert.equal(second.droppedEvents, 1);
      await first.append(event(3));
      await first.close();
      const report = await verifyAudit(store, { keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 2, 'only the lock holder\'s events are in the log');
      await second.close().catch(() => undefined); // its final checkpoint is refused as well
      assert.deepEqual((await store.audit.listCheckpoints()).map((c) => c.seq), [2], 'no checkpoint of the second process was stored');
    } finally {
      await other.close();
      rmSync(otherDir, { recursive: true, force: true });
    }
  });
});
