/**
 * AuditLog tests: chaining, group commit under concurrency, write failures,
 * input validation, checkpoints and reopening. Everything that reaches the
 * store runs on SQLite and on PostgreSQL (`[sqlite] …`, `[postgres] …`, see
 * store/testing/each-store.ts); what is refused before the store is touched
 * runs once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { AuditError } from '../errors/index.js';
import { openStore, type Store } from '../store/index.js';
import { eachStore } from '../store/testing/each-store.js';
import { canonicalJson } from '../util/index.js';
import { AuditLog, GENESIS_HASH, verifyAudit, type AuditEventInput } from './index.js';
import { sha256Hex } from './event.js';

/** A SQLite store and key directory for the tests that end before any write (validation, options). */
async function withSqlite(fn: (f: { store: Store; keyDir: string }) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-audit-'));
  const store = await openStore({ kind: 'sqlite', path: join(dir, 'cordon.db') });
  try {
    await fn({ store, keyDir: join(dir, 'keys') });
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const event = (i: number): AuditEventInput => ({
  type: 'tool.call',
  actor: `agent:a${i % 3}`,
  agent: `a${i % 3}`,
  sandbox: `sb-${i % 5}`,
  decision: i % 4 === 0 ? 'deny' : 'allow',
  data: { tool: 'github.merge', n: i },
});

for (const s of eachStore('cordon_log')) {
  const withFixture = s.withStore;

  s.test('2,500 appends with checkpointEvery=1000 form a chain that verifies', async () => {
    await withFixture(async ({ store, keyDir }) => {
      const log = await AuditLog.open({ store, keyDir, checkpointEvery: 1000, checkpointIntervalMs: 60_000 });
      const first = await log.append(event(0));
      assert.equal(first.seq, 1);
      assert.equal(first.prevHash, GENESIS_HASH);
      for (let chunk = 0; chunk < 3; chunk++) {
        const n = chunk < 2 ? 1000 : 499;
        await Promise.all(Array.from({ length: n }, (_, i) => log.append(event(chunk * 1000 + i + 1))));
      }
      await log.close();
      const cps = await store.audit.listCheckpoints();
      assert.deepEqual(cps.map((c) => c.seq), [1001, 2001, 2500], 'a checkpoint each time 1000 events are unsealed, and one on close');
      const report = await verifyAudit(store, { keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 2500);
      assert.equal(report.lastSeq, 2500);
      assert.equal(report.checkpoints, 3);
      assert.equal(report.unsealedEvents, 0);
      assert.deepEqual(report.warnings, []);
    });
  });

  s.test('the stored body is canonical JSON of the event without hash, and hash is its SHA-256', async (t) => {
    const cases: { name: string; input: AuditEventInput }[] = [
      { name: 'only required fields', input: { type: 'system.start', actor: 'system' } },
      { name: 'every field', input: { type: 'egress.request', actor: 'agent:x', agent: 'x', sandbox: 's', decision: 'deny', reason: 'not allowed', data: { z: 1, a: [1, { b: null }] } } },
      { name: 'reason without decision', input: { type: 'note', actor: 'operator:ann', reason: 'r' } },
      { name: 'unicode and escapes', input: { type: 'file.write', actor: 'agent:é', data: { path: '/tmp/"q"\n', emoji: '🙂', ctl: '\u0001', odd: 'back\\slash {brace}, comma' } } },
    ];
    await withFixture(async ({ store, keyDir }) => {
      const log = await AuditLog.open({ store, keyDir });
      for (const c of cases) {
        await t.test(c.name, async () => {
          const e = await log.append(c.input);
          const [row] = await store.audit.query({ afterSeq: e.seq - 1, limit: 1 });
          assert.ok(row);
          const { hash, ...withoutHash } = e;
          assert.equal(row.body, canonicalJson(withoutHash));
          assert.equal(row.body, canonicalJson(JSON.parse(row.body)));
          assert.equal(hash, sha256Hex(row.body));
          assert.equal(row.hash, hash);
        });
      }
      await log.close();
    });
  });

  s.test('1,000 concurrent appends get contiguous seqs and one chain', async () => {
    await withFixture(async ({ store, keyDir }) => {
      const log = await AuditLog.open({ store, keyDir });
      const events = await Promise.all(Array.from({ length: 1000 }, (_, i) => log.append(event(i))));
      assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 1000 }, (_, i) => i + 1), 'seq follows call order');
      for (let i = 1; i < events.length; i++) assert.equal(events[i]!.prevHash, events[i - 1]!.hash);
      assert.deepEqual(log.head, { seq: 1000, hash: events[999]!.hash });
      await log.close();
      assert.equal((await verifyAudit(store, { keyDir })).ok, true);
    });
  });

  s.test('a write that landed though the store reported a failure (a lost reply) is not chained again: each event once, the appends resolve', async () => {
    await withFixture(async ({ store, keyDir }) => {
      let loseReply = false;
      let attempts = 0;
      const lossy: Store = {
        ...store,
        audit: {
          ...store.audit,
          async insertEvents(rows) {
            attempts++;
            await store.audit.insertEvents(rows);
            if (loseReply) {
              loseReply = false;
              throw new Error('connection lost after COMMIT');
            }
          },
        },
      };
      const log = await AuditLog.open({ store: lossy, keyDir, checkpointIntervalMs: 60_000 });
      await log.append(event(1));
      loseReply = true;
      attempts = 0;
      const [a, b] = await Promise.all([log.append(event(2)), log.append(event(3))]);
      assert.deepEqual([a.seq, b.seq], [2, 3], 'the appends resolve with the seqs that landed');
      assert.equal(attempts, 1, 'the batch was not written a second time');
      assert.equal(await store.audit.count(), 3, 'each event is in the store once');
      assert.deepEqual(log.head, { seq: 3, hash: b.hash });
      const next = await log.append(event(4));
      assert.equal(next.prevHash, b.hash, 'the chain goes on from what landed');
      await log.close();
      assert.equal((await verifyAudit(store, { keyDir })).ok, true);
    });
  });

  s.test('a failed write rejects the whole batch, keeps the head, and the chain continues without a gap', async () => {
    await withFixture(async ({ store, keyDir }) => {
      let failing = false;
      const flaky: Store = {
        ...store,
        audit: {
          ...store.audit,
          async insertEvents(rows) {
            if (failing) throw new Error('disk I/O error');
            return store.audit.insertEvents(rows);
          },
        },
      };
      const log = await AuditLog.open({ store: flaky, keyDir, checkpointIntervalMs: 60_000 });
      await Promise.all([log.append(event(1)), log.append(event(2)), log.append(event(3))]);
      const before = log.head;
      failing = true;
      const results = await Promise.allSettled([log.append(event(4)), log.append(event(5))]);
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        const err = (r as PromiseRejectedResult).reason;
        assert.ok(err instanceof AuditError);
        assert.equal(err.code, 'audit-write-failed');
        assert.match(err.message, /could not write 2 audit event\(s\): disk I\/O error/);
        assert.match(err.fix ?? '', /check the store/);
      }
      assert.deepEqual(log.head, before, 'head unchanged');
      assert.equal(await store.audit.count(), 3);
      failing = false;
      const next = await log.append(event(6));
      assert.equal(next.seq, 4, 'no gap');
      assert.equal(next.prevHash, before.hash, 'no fork');
      await log.close();
      const report = await verifyAudit(store, { keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 4);
    });
  });

  s.test('appends after close are refused; close seals the tail', async () => {
    await withFixture(async ({ store, keyDir }) => {
      const log = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
      const pending = log.append(event(1));
      await log.close();
      assert.equal((await pending).seq, 1, 'an append queued before close is written');
      assert.equal((await store.audit.lastCheckpoint())?.seq, 1);
      await assert.rejects(log.append(event(2)), (err: unknown) => err instanceof AuditError && err.code === 'audit-closed');
      await log.close(); // idempotent
    });
  });

  s.test('the interval timer seals unsealed events', async () => {
    await withFixture(async ({ store, keyDir }) => {
      const log = await AuditLog.open({ store, keyDir, checkpointEvery: 1000, checkpointIntervalMs: 20 });
      await Promise.all([1, 2, 3].map((i) => log.append(event(i))));
      const deadline = Date.now() + 2000;
      while ((await store.audit.lastCheckpoint())?.seq !== 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const cp = await store.audit.lastCheckpoint();
      assert.equal(cp?.seq, 3);
      assert.equal(cp?.keyId, log.keyId);
      await log.close();
      assert.equal((await store.audit.listCheckpoints()).length, 1, 'close adds no checkpoint when nothing is unsealed');
    });
  });

  s.test('too many queued appends are refused instead of growing without bound', async () => {
    await withFixture(async ({ store, keyDir }) => {
      const log = await AuditLog.open({ store, keyDir, maxQueued: 10 });
      const ok = Array.from({ length: 10 }, (_, i) => log.append(event(i)));
      await assert.rejects(log.append(event(11)), (err: unknown) => err instanceof AuditError && err.code === 'audit-overloaded');
      await Promise.all(ok);
      await log.close();
    });
  });

  s.test('reopening continues the chain from the stored head, in the same store and after reopening the store', async () => {
    await withFixture(async ({ store, keyDir, loc }) => {
      const a = await AuditLog.open({ store, keyDir });
      const last = (await Promise.all([1, 2, 3].map((i) => a.append(event(i))))).at(-1)!;
      await a.close();
      const b = await AuditLog.open({ store, keyDir });
      assert.deepEqual(b.head, { seq: 3, hash: last.hash });
      const next = await b.append(event(4));
      assert.equal(next.seq, 4);
      assert.equal(next.prevHash, last.hash);
      await b.close();
      await store.close(); // as a restart of cordon would
      const again = await loc.open();
      try {
        const c = await AuditLog.open({ store: again, keyDir });
        assert.deepEqual(c.head, { seq: 4, hash: next.hash });
        const after = await c.append(event(5));
        assert.deepEqual([after.seq, after.prevHash], [5, next.hash]);
        await c.close();
        const report = await verifyAudit(again, { keyDir });
        assert.equal(report.ok, true, report.message);
        assert.deepEqual([report.events, report.checkpoints], [5, 3]);
      } finally {
        await again.close();
      }
    });
  });

  s.test('reopening refuses a log whose unsealed tail does not chain', async () => {
    await withFixture(async ({ store, keyDir, loc }) => {
      const a = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
      await a.append(event(1));
      await a.checkpoint();
      await a.append(event(2));
      await a.append(event(3));
      // Simulate a crash (no close) followed by tampering with the unsealed tail, on a connection of its own.
      await loc.outside((db) => sql`update audit_events set body = replace(body, '"n":2', '"n":9') where seq = 2`.execute(db));
      await assert.rejects(AuditLog.open({ store, keyDir }), (err: unknown) => {
        assert.ok(err instanceof AuditError);
        assert.equal(err.code, 'audit-chain-broken');
        assert.match(err.message, /damaged at seq 2/);
        assert.match(err.fix ?? '', /cordon audit verify/);
        return true;
      });
      await a.close();
    });
  });

  s.test('query returns parsed events with filters', async () => {
    await withFixture(async ({ store, keyDir }) => {
      const log = await AuditLog.open({ store, keyDir });
      await Promise.all(Array.from({ length: 20 }, (_, i) => log.append(event(i + 1))));
      const denied = await log.query({ decision: 'deny', order: 'desc', limit: 2 });
      assert.deepEqual(denied.map((e) => e.seq), [20, 16]);
      assert.deepEqual(denied[0]?.data, { tool: 'github.merge', n: 20 });
      assert.equal(denied[0]?.agent, 'a2');
      await assert.rejects(log.query({ limit: 0 }), /invalid audit query: limit/);
      await log.close();
    });
  });

  s.test('two writers on one store (e.g. the daemon and a CLI command) interleave into one chain', async () => {
    await withFixture(async ({ store, keyDir }) => {
      const a = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
      const b = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
      const e1 = await a.append(event(1));
      const e2 = await b.append(event(2)); // b's head was stale: it re-chains on a's event
      const e3 = await a.append(event(3));
      assert.deepEqual([e1.seq, e2.seq, e3.seq], [1, 2, 3]);
      assert.equal(e2.prevHash, e1.hash);
      assert.equal(e3.prevHash, e2.hash);
      await b.close();
      await a.close();
      const report = await verifyAudit(store, { keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 3);
    });
  });
}

// Refused before the store is touched: the same on every store.
test('invalid events are refused with audit-invalid-event naming the field', async (t) => {
  const cases: { name: string; input: unknown; path: string }[] = [
    { name: 'type with upper case', input: { type: 'Tool.Call', actor: 'a' }, path: 'type' },
    { name: 'type starting with a digit', input: { type: '1call', actor: 'a' }, path: 'type' },
    { name: 'missing actor', input: { type: 'tool.call' }, path: 'actor' },
    { name: 'empty actor', input: { type: 'tool.call', actor: '' }, path: 'actor' },
    { name: 'actor with a control character', input: { type: 'tool.call', actor: 'a\u001fb' }, path: 'actor' },
    { name: 'agent with a newline', input: { type: 'tool.call', actor: 'a', agent: 'x\ny' }, path: 'agent' },
    { name: 'data is an array', input: { type: 'x', actor: 'a', data: [1, 2] }, path: 'data' },
    { name: 'data is a string', input: { type: 'x', actor: 'a', data: 'hello' }, path: 'data' },
    { name: 'data holds a non-finite number', input: { type: 'x', actor: 'a', data: { n: Infinity } }, path: 'data' },
    { name: 'data holds a bigint', input: { type: 'x', actor: 'a', data: { n: 1n } }, path: 'data' },
    { name: 'an unknown field (seq cannot be chosen)', input: { type: 'x', actor: 'a', seq: 5 }, path: '(event)' },
    { name: 'a body over 64 KiB', input: { type: 'x', actor: 'a', data: { blob: 'x'.repeat(70_000) } }, path: 'data' },
  ];
  await withSqlite(async ({ store, keyDir }) => {
    const log = await AuditLog.open({ store, keyDir });
    for (const c of cases) {
      await t.test(c.name, async () => {
        await assert.rejects(log.append(c.input as AuditEventInput), (err: unknown) => {
          assert.ok(err instanceof AuditError);
          assert.equal(err.code, 'audit-invalid-event');
          assert.equal(err.details?.path, c.path);
          return true;
        });
      });
    }
    assert.equal(log.head.seq, 0, 'nothing was written');
    await log.close();
  });
});

test('bad options are refused before any key is created', async (t) => {
  const cases: { name: string; opts: Record<string, number>; message: RegExp }[] = [
    { name: 'checkpointEvery 0', opts: { checkpointEvery: 0 }, message: /checkpointEvery must be a positive integer/ },
    { name: 'fractional interval', opts: { checkpointIntervalMs: 0.5 }, message: /checkpointIntervalMs/ },
    { name: 'negative maxBatch', opts: { maxBatch: -1 }, message: /maxBatch/ },
  ];
  await withSqlite(async ({ store, keyDir }) => {
    for (const c of cases) {
      await t.test(c.name, async () => {
        await assert.rejects(AuditLog.open({ store, keyDir, ...c.opts }), (err: unknown) => {
          assert.ok(err instanceof AuditError);
          assert.equal(err.code, 'audit-invalid-option');
          assert.match(err.message, c.message);
          return true;
        });
      });
    }
    assert.equal(existsSync(keyDir), false);
  });
});
