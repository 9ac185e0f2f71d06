/**
 * Read-side tests: filters and order, JSONL export and following new events,
 * on SQLite and on PostgreSQL (`[sqlite] …`, `[postgres] …`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { openStore, type Store } from '../store/index.js';
import { sql } from 'kysely';
import { cleanupAll, eachStore, undoOnThrow, withFixture, type StoreUnderTest, type TestStoreLocation } from '../store/testing/each-store.js';
import { canonicalJson } from '../util/index.js';
import { AuditLog, exportJsonl, followAudit, queryEvents, type AuditEvent, type AuditEventInput } from './index.js';
import { sha256Hex } from './event.js';

/**
 * An open log on a fresh store of this kind; `cleanup` closes and removes
 * both. When opening the store or the log throws, what was made is closed
 * and removed before the error is rethrown.
 */
async function fixture(s: StoreUnderTest): Promise<{ store: Store; log: AuditLog; cleanup(): Promise<void> }> {
  const loc = await s.fresh();
  return undoOnThrow(async () => {
    const store = await loc.open();
    const log = await undoOnThrow(() => AuditLog.open({ store, keyDir: join(loc.dir, 'keys') }), () => store.close());
    const cleanup = () => cleanupAll(() => log.close(), () => store.close(), () => loc.cleanup());
    return { store, log, cleanup };
  }, () => loc.cleanup());
}

const event = (i: number): AuditEventInput => ({
  type: i % 2 === 0 ? 'egress.request' : 'tool.call',
  actor: `agent:a${i % 3}`,
  agent: `a${i % 3}`,
  sandbox: `sb-${i % 5}`,
  decision: i % 4 === 0 ? 'deny' : 'allow',
  data: { n: i, text: 'quote " backslash \\ brace { é' },
});

/** Run `fn` on a fresh fixture, then clean up (a cleanup error never hides `fn`'s own). */
const withStoreFixture = (s: StoreUnderTest, fn: (f: { store: Store; log: AuditLog }) => Promise<void>): Promise<void> => withFixture(() => fixture(s), fn);

for (const s of eachStore('cordon_query')) {
  // The fixture itself: a store or a log that cannot be opened leaves no directory, no database and no open store.
  const breakages: { name: string; breakLoc(loc: TestStoreLocation): TestStoreLocation; refusal: RegExp }[] = [
    { name: 'the store cannot be opened', breakLoc: (loc) => ({ ...loc, open: () => Promise.reject(new Error('store refused')) }), refusal: /store refused/ },
    {
      name: 'the audit log cannot be opened (its key directory is a file)',
      breakLoc(loc) {
        writeFileSync(join(loc.dir, 'keys'), 'not a directory');
        return loc;
      },
      refusal: /cannot create the key directory/,
    },
  ];
  for (const b of breakages) {
    s.test(`the fixture removes what it made when ${b.name}`, async () => {
      let made: TestStoreLocation | undefined;
      let opened = 0;
      let closed = 0;
      const counted = (loc: TestStoreLocation): TestStoreLocation => ({
        ...loc,
        async open() {
          const store = await loc.open();
          opened++;
          return { ...store, close: async () => { closed++; await store.close(); } };
        },
      });
      const broken: StoreUnderTest = { ...s, fresh: async () => b.breakLoc(counted((made = await s.fresh()))) };
      await assert.rejects(fixture(broken), b.refusal);
      assert.ok(made !== undefined);
      assert.equal(closed, opened, 'every store opened was closed');
      assert.equal(existsSync(made.dir), false, 'the directory is removed');
      await assert.rejects(made.outside((db) => sql`select 1`.execute(db)), /does not exist/, 'the file or database is gone');
    });
  }

  s.test('queryEvents filters and orders', async () => {
    await withStoreFixture(s, async ({ store, log }) => {
      await Promise.all(Array.from({ length: 40 }, (_, i) => log.append(event(i + 1))));
      const cases: { name: string; filter: Parameters<typeof queryEvents>[1]; seqs: number[] }[] = [
        { name: 'agent, limited', filter: { agent: 'a0', limit: 4 }, seqs: [3, 6, 9, 12] },
        { name: 'decision, descending', filter: { decision: 'deny', order: 'desc', limit: 3 }, seqs: [40, 36, 32] },
        { name: 'type in a seq window', filter: { type: 'tool.call', afterSeq: 10, beforeSeq: 16 }, seqs: [11, 13, 15] },
        { name: 'sandbox and decision together', filter: { sandbox: 'sb-0', decision: 'deny' }, seqs: [20, 40] },
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

  s.test('exportJsonl writes one event per line, each with its hash, honouring back-pressure', async () => {
    await withStoreFixture(s, async ({ store, log }) => {
      const appended = await Promise.all(
        Array.from({ length: 25 }, (_, i) => log.append({ type: 'tool.call', actor: 'agent:r', data: { i, note: 'a\nb' } })),
      );
      let text = '';
      const out = new Writable({
        highWaterMark: 64,
        write(chunk, _enc, cb) {
          text += String(chunk);
          setImmediate(cb); // slow consumer
        },
      });
      const lines = await exportJsonl(store, out, { pageSize: 10 });
      assert.equal(lines, 25);
      const parsed = text.trimEnd().split('\n').map((l) => JSON.parse(l) as AuditEvent);
      assert.deepEqual(parsed, appended);
      for (const e of parsed) {
        const { hash, ...body } = e;
        assert.equal(hash, sha256Hex(canonicalJson(body)), 'each line can be checked on its own');
      }
      const tail = new PassThrough();
      let tailText = '';
      tail.on('data', (d) => (tailText += String(d)));
      assert.equal(await exportJsonl(store, tail, { afterSeq: 23 }), 2);
      assert.deepEqual(tailText.trimEnd().split('\n').map((l) => (JSON.parse(l) as AuditEvent).seq), [24, 25]);
    });
  });

  s.test('followAudit yields new events in order and stops on abort', async () => {
    await withStoreFixture(s, async ({ store, log }) => {
      await log.append({ type: 'new', actor: 'a' }); // matches the filter, but is before the head at start
      // The follower starts after the head it reads first: append only once that read has answered
      // (a fixed pause loses the race on a loaded machine, where the read can take longer).
      let headRead!: () => void;
      const headWasRead = new Promise<void>((r) => (headRead = r));
      const watched: Store = {
        ...store,
        audit: {
          ...store.audit,
          async head() {
            const h = await store.audit.head();
            headRead();
            return h;
          },
        },
      };
      const ac = new AbortController();
      // A follower that misses an event must fail the test, not hold it until the runner's timeout.
      const bound = setTimeout(() => ac.abort(), 10_000).unref();
      const seen: number[] = [];
      const follower = (async () => {
        for await (const e of followAudit(watched, { pollIntervalMs: 10, signal: ac.signal, filter: { type: 'new' } })) {
          seen.push(e.seq);
          if (seen.length === 3) ac.abort();
        }
      })();
      await Promise.race([headWasRead, follower]); // a follower that failed first fails the test here
      await log.append({ type: 'new', actor: 'a' });
      await log.append({ type: 'other', actor: 'a' });
      await Promise.all([log.append({ type: 'new', actor: 'a' }), log.append({ type: 'new', actor: 'a' })]);
      await follower;
      clearTimeout(bound);
      assert.deepEqual(seen, [2, 4, 5], 'only events after the head at start, matching the filter');
    });
  });
}

// The filter is refused before the store is asked: the same on every store.
test('queryEvents validates its filter', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-query-'));
  const store = await openStore({ kind: 'sqlite', path: join(dir, 'cordon.db') });
  const cleanup = async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  };
  const cases: { name: string; filter: unknown; message: RegExp }[] = [
    { name: 'limit above the maximum', filter: { limit: 10_001 }, message: /limit/ },
    { name: 'negative afterSeq', filter: { afterSeq: -1 }, message: /afterSeq/ },
    { name: 'unknown order', filter: { order: 'random' }, message: /order/ },
    { name: 'unknown field', filter: { where: '1=1' }, message: /Unrecognized key/ },
  ];
  try {
    for (const c of cases) {
      await t.test(c.name, async () => {
        await assert.rejects(queryEvents(store, c.filter as never), (err: unknown) => {
          assert.equal((err as { code?: string }).code, 'invalid-input');
          assert.match((err as Error).message, c.message);
          return true;
        });
      });
    }
  } finally {
    await cleanup();
  }
});
