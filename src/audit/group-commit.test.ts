/**
 * Group commit tests: concurrent appends share bounded transactions, resolve
 * only once their event is committed (seen from another connection), a
 * failure inside a batch rolls that batch back and rejects exactly its
 * appends, and the chain goes on without a gap or a fork.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import { AuditError } from '../errors/index.js';
import { openStore, type AuditRow, type Store } from '../store/index.js';
import { AuditLog, verifyAudit, type AuditEvent, type AuditEventInput } from './index.js';

interface Fixture {
  path: string;
  store: Store;
  keyDir: string;
  /** Sizes of the batches handed to the store, in order. */
  batches: number[];
}

/** A SQLite store whose insertEvents is the real one, counted. */
async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-group-commit-'));
  const path = join(dir, 'cordon.db');
  const real = await openStore({ kind: 'sqlite', path });
  const batches: number[] = [];
  const store: Store = {
    ...real,
    audit: {
      ...real.audit,
      insertEvents(rows: readonly AuditRow[]) {
        batches.push(rows.length);
        return real.audit.insertEvents(rows);
      },
    },
  };
  try {
    await fn({ path, store, keyDir: join(dir, 'keys'), batches });
  } finally {
    await real.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const event = (i: number, extra: Record<string, unknown> = {}): AuditEventInput => ({
  type: 'egress.request',
  actor: `agent:a${i % 3}`,
  agent: `a${i % 3}`,
  sandbox: `sb-${i % 5}`,
  decision: 'allow',
  data: { n: i, ...extra },
});

test('500 concurrent appends: batches of at most maxBatch, seq in call order, each resolved after its commit', async () => {
  await withFixture(async ({ path, store, keyDir, batches }) => {
    const log = await AuditLog.open({ store, keyDir, maxBatch: 128, checkpointIntervalMs: 60_000 });
    const reader = new BetterSqlite3(path, { readonly: true });
    const committed = reader.prepare('select count(*) from audit_events where seq = ?').pluck();
    try {
      const seenCommitted: boolean[] = [];
      const events = await Promise.all(
        Array.from({ length: 500 }, (_, i) =>
          log.append(event(i)).then((e) => {
            // Another connection sees only committed rows.
            seenCommitted[i] = committed.get(e.seq) === 1;
            return e;
          }),
        ),
      );
      assert.deepEqual(batches, [128, 128, 128, 116], 'one transaction per batch, none larger than maxBatch');
      assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 500 }, (_, i) => i + 1));
      assert.deepEqual(events.map((e) => (e.data as { n: number }).n), Array.from({ length: 500 }, (_, i) => i));
      for (let i = 1; i < events.length; i++) assert.equal(events[i]!.prevHash, events[i - 1]!.hash, `link ${i}`);
      assert.equal(seenCommitted.filter(Boolean).length, 500, 'every append resolved after its event was committed');
    } finally {
      reader.close();
    }
    await log.close();
    const report = await verifyAudit(store, { keyDir });
    assert.equal(report.ok, true, report.message);
    assert.equal(report.events, 500);
  });
});

test('appends made while a flush is under way are written together in the next transaction', async () => {
  await withFixture(async ({ store, keyDir, batches }) => {
    const log = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    const later: Promise<AuditEvent>[] = [];
    const first = Array.from({ length: 10 }, (_, i) =>
      log.append(event(i)).then((e) => {
        if (i === 0) for (let j = 10; j < 15; j++) later.push(log.append(event(j)));
        return e;
      }),
    );
    await Promise.all(first);
    const rest = await Promise.all(later);
    assert.deepEqual(rest.map((e) => e.seq), [11, 12, 13, 14, 15]);
    assert.deepEqual(batches, [10, 5]);
    await log.close();
  });
});

test('a store failure inside a batch rolls the batch back, rejects its appends only, and the chain continues', async () => {
  await withFixture(async ({ store, keyDir, batches }) => {
    const log = await AuditLog.open({ store, keyDir, maxBatch: 5, checkpointIntervalMs: 60_000 });
    const before = (await Promise.all([1, 2, 3].map((i) => log.append(event(i))))).at(-1)!;
    // The third row of the next batch fails inside SQLite, after two rows were inserted.
    await sql
      .raw(`create temp trigger poison before insert on audit_events when new.body like '%"poison":true%' begin select raise(abort, 'injected failure'); end`)
      .execute(store.db);
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) => log.append(event(10 + i, i === 2 ? { poison: true } : {}))),
    );
    assert.deepEqual(batches.slice(-2), [5, 5]);
    for (const [i, r] of results.slice(0, 5).entries()) {
      assert.equal(r.status, 'rejected', `append ${i} of the failed batch`);
      const err = (r as PromiseRejectedResult).reason;
      assert.ok(err instanceof AuditError);
      assert.equal(err.code, 'audit-write-failed');
      assert.match(err.message, /could not write 5 audit event\(s\): injected failure; the actions they record must not proceed/);
    }
    const written = results.slice(5).map((r) => {
      assert.equal(r.status, 'fulfilled');
      return (r as PromiseFulfilledResult<AuditEvent>).value;
    });
    assert.deepEqual(written.map((e) => e.seq), [4, 5, 6, 7, 8], 'the next batch takes the seqs the failed one did not keep');
    assert.equal(written[0]!.prevHash, before.hash, 'no fork: it chains on the last committed event');
    assert.deepEqual(written.map((e) => (e.data as { n: number }).n), [15, 16, 17, 18, 19]);
    const stored = await store.audit.readAfter(3, 100);
    assert.equal(stored.length, 5, 'nothing of the failed batch was kept');
    assert.ok(stored.every((r) => !r.body.includes('"n":10,') && !r.body.includes('"n":11,')));

    await sql.raw('drop trigger poison').execute(store.db);
    const next = await log.append(event(99));
    assert.equal(next.seq, 9);
    assert.equal(next.prevHash, written[4]!.hash);
    assert.deepEqual(log.head, { seq: 9, hash: next.hash });
    await log.close();
    const report = await verifyAudit(store, { keyDir });
    assert.equal(report.ok, true, report.message);
    assert.equal(report.events, 9);
  });
});

test('close writes the appends already made, then refuses new ones', async () => {
  await withFixture(async ({ store, keyDir }) => {
    const log = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    const inFlight = Array.from({ length: 200 }, (_, i) => log.append(event(i)));
    const closing = log.close();
    await assert.rejects(log.append(event(200)), (err: unknown) => {
      assert.ok(err instanceof AuditError);
      assert.equal(err.code, 'audit-closed');
      assert.match(err.fix ?? '', /open the audit log again/);
      return true;
    });
    await closing;
    assert.deepEqual((await Promise.all(inFlight)).map((e) => e.seq), Array.from({ length: 200 }, (_, i) => i + 1));
    await assert.rejects(log.append(event(201)), (err: unknown) => err instanceof AuditError && err.code === 'audit-closed');
    assert.equal(await store.audit.count(), 200);
    assert.equal((await store.audit.lastCheckpoint())?.seq, 200, 'close sealed the tail');
    assert.equal((await verifyAudit(store, { keyDir })).ok, true);
  });
});

test('append renders data when it is called: later changes to the object do not reach the stored event', async () => {
  await withFixture(async ({ store, keyDir }) => {
    const log = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    const data: Record<string, unknown> = { host: 'example.com' };
    const pending = log.append({ type: 'egress.request', actor: 'agent:a', data });
    data.host = 'changed.example';
    const e = await pending;
    assert.equal(e.data, data, 'the returned event holds the caller\'s object (no copy)');
    const [row] = await store.audit.readAfter(0, 1);
    assert.match(row!.body, /"host":"example.com"/);
    await log.close();
    assert.equal((await verifyAudit(store, { keyDir })).ok, true);
  });
});
