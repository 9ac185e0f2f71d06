/**
 * Dropped audit events are counted and reported, never lost unseen: a failed
 * batch reaches `onDropped` with exactly its types, sandboxes and agents (not
 * its data) before its appends reject, refusals up front are reported with
 * their code, a failing hook changes nothing for callers (it becomes a
 * process warning), and `droppedEventLines` writes one line per code per
 * interval with the count since the last line. What reaches the store (a
 * failed batch and the chain after it, refusals up front) runs on SQLite and
 * on PostgreSQL (`[sqlite] …`, `[postgres] …`); the hooks' own failures and
 * the line writer do not depend on the store and run once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { AuditError } from '../errors/index.js';
import type { AuditRow, Store } from '../store/index.js';
import { eachStore, type StoreUnderTest } from '../store/testing/each-store.js';
import {
  AuditLog,
  droppedEventLines,
  verifyAudit,
  type AuditEventInput,
  type DroppedCode,
  type DroppedReport,
} from './index.js';

interface Fixture {
  store: Store;
  keyDir: string;
  /** Make the next insertEvents fail (once) with this message. */
  failNextWrite(message: string): void;
}

const stores = eachStore('cordon_dropped');
/** For the tests that do not depend on the store. */
const sqlite = stores[0]!;

/** A real store of this kind whose insertEvents can be made to fail for one batch. */
async function withFixture(s: StoreUnderTest, fn: (f: Fixture) => Promise<void>): Promise<void> {
  await s.withStore(async ({ store: real, keyDir }) => {
    let failure: string | undefined;
    const store: Store = {
      ...real,
      audit: {
        ...real.audit,
        insertEvents(rows: readonly AuditRow[]) {
          if (failure !== undefined) {
            const message = failure;
            failure = undefined;
            return Promise.reject(new Error(message));
          }
          return real.audit.insertEvents(rows);
        },
      },
    };
    await fn({ store, keyDir, failNextWrite: (m) => void (failure = m) });
  });
}

/** The next process warning with this code (others, e.g. from the test runner, are passed over). */
function nextWarning(code: string, timeoutMs = 5000): Promise<Error & { code?: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.off('warning', onWarning);
      reject(new Error(`no ${code} warning within ${timeoutMs} ms`));
    }, timeoutMs);
    function onWarning(w: Error & { code?: string }): void {
      if (w.code !== code) return;
      clearTimeout(timer);
      process.off('warning', onWarning);
      resolve(w);
    }
    process.on('warning', onWarning);
  });
}

const SECRET = 'hunter2-must-not-appear';

interface RefusalCase {
  name: string;
  code: DroppedCode;
  types: string[];
  /** Make the refused append; returns its promise. */
  refuse(log: AuditLog): Promise<unknown>;
  maxQueued?: number;
  closeFirst?: boolean;
}

const valid: AuditEventInput = { type: 'tool.call', actor: 'agent:a', agent: 'a', sandbox: 'sb-9' };

const refusals: RefusalCase[] = [
  { name: 'the log is closed', code: 'audit-closed', types: ['tool.call'], closeFirst: true, refuse: (log) => log.append(valid) },
  {
    name: 'the queue is full',
    code: 'audit-overloaded',
    types: ['tool.call'],
    maxQueued: 1,
    refuse: async (log) => {
      const [first, second] = await Promise.allSettled([log.append({ ...valid, type: 'egress.close' }), log.append(valid)]);
      assert.equal(first.status, 'fulfilled', 'the append that fits in the queue is written');
      if (second.status === 'rejected') throw second.reason;
      return second.value;
    },
  },
  { name: 'the type is not a valid name', code: 'audit-invalid-event', types: ['(invalid)'], refuse: (log) => log.append({ type: 'Bad\nType', actor: 'x' }) },
  {
    // a value passed where the type belongs (a bug in a door) must not reach stderr
    name: 'the type is printable but not a type name',
    code: 'audit-invalid-event',
    types: ['(invalid)'],
    refuse: (log) => log.append({ type: 'Bearer sk-live-DEADBEEF', actor: 'x' }),
  },
  {
    name: 'the data is not JSON (bigint)',
    code: 'audit-invalid-event',
    types: ['tool.call'],
    refuse: (log) => log.append({ ...valid, data: { n: 1n } }),
  },
  { name: 'the event is not an object', code: 'audit-invalid-event', types: ['(invalid)'], refuse: (log) => log.append(null as unknown as AuditEventInput) },
];

for (const s of stores) {
  s.test('a failed batch reaches onDropped with exactly its types, sandboxes and agents; later appends chain on', async () => {
    await withFixture(s, async ({ store, keyDir, failNextWrite }) => {
      const reports: DroppedReport[] = [];
      const log = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000, onDropped: (r) => void reports.push(r) });
      const ok = await Promise.all([1, 2].map((n) => log.append({ type: 'sandbox.create', actor: 'system', data: { n } })));
      assert.equal(reports.length, 0, 'nothing is reported while appends succeed');
      assert.equal(log.droppedEvents, 0);

      failNextWrite('disk full (injected)');
      const batch: AuditEventInput[] = [
        { type: 'tunnel.refused', actor: 'system', sandbox: 'sb-2', agent: 'bob', data: { token: SECRET } },
        { type: 'egress.close', actor: 'agent:alice', sandbox: 'sb-1', agent: 'alice', data: { host: SECRET } },
        { type: 'egress.close', actor: 'agent:alice', sandbox: 'sb-1', agent: 'alice', data: {} },
        { type: 'tool.refused', actor: 'system', data: { why: SECRET } },
      ];
      const seenAtRejection: number[] = [];
      const results = await Promise.allSettled(
        batch.map((e) =>
          log.append(e).catch((err: unknown) => {
            seenAtRejection.push(reports.length);
            throw err;
          }),
        ),
      );
      for (const [i, r] of results.entries()) {
        assert.equal(r.status, 'rejected', `append ${i} of the failed batch`);
        const err = (r as PromiseRejectedResult).reason;
        assert.ok(err instanceof AuditError);
        assert.equal(err.code, 'audit-write-failed', 'callers get the same rejection as without a hook');
      }
      assert.deepEqual(seenAtRejection, [1, 1, 1, 1], 'the hook ran before the appends rejected');
      assert.equal(reports.length, 1, 'one report for the batch');
      const [report] = reports;
      assert.deepEqual(
        { code: report!.code, count: report!.count, types: report!.types, sandboxes: report!.sandboxes, agents: report!.agents },
        { code: 'audit-write-failed', count: 4, types: ['egress.close', 'tool.refused', 'tunnel.refused'], sandboxes: ['sb-1', 'sb-2'], agents: ['alice', 'bob'] },
      );
      assert.match(report!.message, /could not write 4 audit event\(s\): disk full \(injected\)/);
      assert.match(report!.fix, /check the store/);
      assert.ok(!JSON.stringify(report).includes(SECRET), 'the report never carries event data');
      assert.equal(log.droppedEvents, 4);

      const after = await Promise.all([3, 4].map((n) => log.append({ type: 'sandbox.destroy', actor: 'system', data: { n } })));
      assert.deepEqual(after.map((e) => e.seq), [3, 4], 'the failed batch left no gap');
      assert.equal(after[0]!.prevHash, ok[1]!.hash, 'no fork: the next batch chains on the last committed event');
      assert.equal(reports.length, 1);
      assert.equal(log.droppedEvents, 4, 'successful appends add nothing');
      await log.close();
      const verified = await verifyAudit(store, { keyDir });
      assert.equal(verified.ok, true, verified.message);
      assert.equal(verified.events, 4);
    });
  });

  for (const c of refusals) {
    s.test(`a refused append is reported with its code: ${c.name}`, async () => {
      await withFixture(s, async ({ store, keyDir }) => {
        const reports: DroppedReport[] = [];
        const log = await AuditLog.open({
          store, keyDir, checkpointIntervalMs: 60_000, onDropped: (r) => void reports.push(r),
          ...(c.maxQueued !== undefined ? { maxQueued: c.maxQueued } : {}),
        });
        if (c.closeFirst) await log.close();
        let rejected: unknown;
        await assert.rejects(c.refuse(log), (err: unknown) => {
          rejected = err;
          return err instanceof AuditError && err.code === c.code;
        });
        assert.equal(reports.length, 1);
        assert.equal(reports[0]!.code, c.code);
        assert.equal(reports[0]!.count, 1);
        assert.deepEqual(reports[0]!.types, c.types);
        assert.equal(reports[0]!.message, (rejected as AuditError).message);
        assert.equal(reports[0]!.fix, (rejected as AuditError).fix);
        assert.equal(log.droppedEvents, 1);
        await log.close();
      });
    });
  }
}

// The hooks' failures below are the log's own handling, whatever the store: run once, on SQLite.
test('a hook that throws: the append rejects with the original error and a warning names the hook failure', async () => {
  await withFixture(sqlite, async ({ store, keyDir, failNextWrite }) => {
    const log = await AuditLog.open({
      store, keyDir, checkpointIntervalMs: 60_000,
      onDropped: () => {
        throw new Error('hook exploded');
      },
    });
    failNextWrite('injected write failure');
    const warned = nextWarning('CORDON_AUDIT_HOOK_FAILED');
    await assert.rejects(log.append(valid), (err: unknown) => err instanceof AuditError && err.code === 'audit-write-failed' && /injected write failure/.test(err.message));
    const warning = await warned;
    assert.equal(warning.code, 'CORDON_AUDIT_HOOK_FAILED');
    assert.match(warning.message, /hook exploded/);
    assert.equal(log.droppedEvents, 1, 'counted even though the hook failed');
    assert.equal((await log.append(valid)).seq, 1, 'the log goes on');

    const closedWarning = nextWarning('CORDON_AUDIT_HOOK_FAILED');
    await log.close();
    await assert.rejects(log.append(valid), (err: unknown) => err instanceof AuditError && err.code === 'audit-closed');
    const second = await closedWarning;
    assert.match(second.message, /hook exploded/, 'the refusal after close is reported (and its hook failure warned) too');
    assert.equal(log.droppedEvents, 2);
  });
});

test('a hook that throws a value with no string form: appends still settle (never hang, never throw synchronously)', async () => {
  await withFixture(sqlite, async ({ store, keyDir, failNextWrite }) => {
    const log = await AuditLog.open({
      store, keyDir, checkpointIntervalMs: 60_000,
      onDropped: () => {
        throw Object.create(null); // String() of it throws a TypeError
      },
    });
    failNextWrite('injected write failure');
    const warned = nextWarning('CORDON_AUDIT_HOOK_FAILED');
    const settled = Promise.race([
      log.append(valid).then(() => 'resolved', (err: unknown) => (err instanceof AuditError ? err.code : `other: ${String(err)}`)),
      delay(3000).then(() => 'hung'),
    ]);
    assert.equal(await settled, 'audit-write-failed', 'the failed batch rejects with its own error');
    assert.match((await warned).message, /onDropped hook failed/);
    assert.equal(log.droppedEvents, 1);
    await log.close();
    const warnedAgain = nextWarning('CORDON_AUDIT_HOOK_FAILED');
    let refused: Promise<unknown> | undefined;
    assert.doesNotThrow(() => void (refused = log.append(valid)), 'a refused append rejects, it does not throw at the caller');
    await assert.rejects(refused!, (err: unknown) => err instanceof AuditError && err.code === 'audit-closed');
    assert.match((await warnedAgain).message, /no string form/);
  });
});

test('a hook whose promise rejects becomes a warning, not an unhandled rejection', async () => {
  await withFixture(sqlite, async ({ store, keyDir }) => {
    const log = await AuditLog.open({
      store, keyDir, checkpointIntervalMs: 60_000,
      onDropped: (() => Promise.reject(new Error('async hook failed'))) as unknown as (r: DroppedReport) => void,
    });
    const warned = nextWarning('CORDON_AUDIT_HOOK_FAILED');
    await assert.rejects(log.append({ type: 'BAD', actor: 'x' }), (err: unknown) => err instanceof AuditError && err.code === 'audit-invalid-event');
    const warning = await warned;
    assert.equal(warning.code, 'CORDON_AUDIT_HOOK_FAILED');
    assert.match(warning.message, /async hook failed/);
    await log.close();
  });
});

/** Poll (bounded) until `done` holds; timers on a busy machine may fire late. */
async function waitFor(done: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > until) assert.fail(`timed out: ${what}`);
    await delay(20);
  }
}

const report = (code: DroppedCode, count: number, type: string, sandbox?: string): DroppedReport => ({
  code, count, message: `could not write\nthings (${type})`, fix: 'check the store', types: [type], sandboxes: sandbox ? [sandbox] : [], agents: [],
});

test('droppedEventLines: one line per code per interval, later drops summed into the next line', async () => {
  const lines: string[] = [];
  const onDropped = droppedEventLines({ write: (l) => void lines.push(l), intervalMs: 300 });
  onDropped(report('audit-write-failed', 3, 'egress.close', 'sb-1'));
  onDropped(report('audit-write-failed', 2, 'tool.refused', 'sb-2'));
  onDropped(report('audit-write-failed', 4, 'egress.close'));
  onDropped(report('audit-closed', 1, 'tunnel.disconnect'));
  assert.equal(lines.length, 2, 'the first drop of each code is written at once; the rest wait for the interval');
  assert.match(lines[0]!, /^cordon: 3 audit event\(s\) NOT recorded \(audit-write-failed\): egress\.close in sandbox\(es\) sb-1; could not write things/);
  assert.match(lines[0]!, /\| fix: check the store$/);
  assert.ok(!lines[0]!.includes('\n'), 'one line, even when the message has a newline');
  assert.match(lines[1]!, /^cordon: 1 audit event\(s\) NOT recorded \(audit-closed\): tunnel\.disconnect;/);
  await delay(100);
  assert.equal(lines.length, 2, 'nothing more inside the interval');
  await waitFor(() => lines.length === 3, 'the held drops are written once the interval is over');
  assert.match(lines[2]!, /^cordon: 6 audit event\(s\) NOT recorded \(audit-write-failed\): egress\.close, tool\.refused in sandbox\(es\) sb-2;/);
  onDropped(report('audit-write-failed', 1, 'egress.close'));
  assert.equal(lines.length, 3, 'still inside the interval of the last line');
  await waitFor(() => lines.length === 4, 'the next held drop is written after the interval');
  assert.match(lines[3]!, /^cordon: 1 audit event\(s\) NOT recorded/);
});

test('a hook that appends to a closed log is not called again for its own refused append (no recursion)', async () => {
  await withFixture(sqlite, async ({ store, keyDir }) => {
    const reports: DroppedReport[] = [];
    const hookAppends: Promise<unknown>[] = [];
    const log: AuditLog = await AuditLog.open({
      store, keyDir, checkpointIntervalMs: 60_000,
      onDropped: (r) => {
        reports.push(r);
        hookAppends.push(log.append({ type: 'audit.dropped', actor: 'system', data: { count: r.count } }));
      },
    });
    await log.close();
    await assert.rejects(log.append(valid), (err: unknown) => err instanceof AuditError && err.code === 'audit-closed');
    assert.deepEqual(reports.map((r) => r.types), [['tool.call']], "only the caller's refused append is reported");
    assert.equal(hookAppends.length, 1);
    await assert.rejects(hookAppends[0]!, (err: unknown) => err instanceof AuditError && err.code === 'audit-closed');
    assert.equal(log.droppedEvents, 2, "the hook's own refused append is still counted");
  });
});
