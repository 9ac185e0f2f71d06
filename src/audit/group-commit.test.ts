/**
 * Group commit tests: concurrent appends share bounded transactions, resolve
 * only once their event is committed (seen from another connection), a
 * failure inside a batch rolls that batch back and rejects exactly its
 * appends, and the chain goes on without a gap or a fork; on SQLite and on
 * PostgreSQL (`[sqlite] …`, `[postgres] …`).
 */
import assert from 'node:assert/strict';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import pg from 'pg';
import { AuditError } from '../errors/index.js';
import type { AuditRow, Store, StoreOptions } from '../store/index.js';
import { eachStore, type StoreUnderTest, type TestStoreLocation } from '../store/testing/each-store.js';
import { AuditLog, verifyAudit, type AuditEvent, type AuditEventInput } from './index.js';

interface Fixture {
  loc: TestStoreLocation;
  store: Store;
  keyDir: string;
  /** Sizes of the batches handed to the store, in order. */
  batches: number[];
  /** Highest seq of a batch whose write the store has reported done. */
  storedUpTo(): number;
}

/** A store of this kind whose insertEvents is the real one, counted. */
async function withFixture(s: StoreUnderTest, fn: (f: Fixture) => Promise<void>): Promise<void> {
  await s.withStore(async ({ store: real, keyDir, loc }) => {
    const batches: number[] = [];
    let storedUpTo = 0;
    const store: Store = {
      ...real,
      audit: {
        ...real.audit,
        async insertEvents(rows: readonly AuditRow[]) {
          batches.push(rows.length);
          await real.audit.insertEvents(rows);
          storedUpTo = Math.max(storedUpTo, rows.at(-1)?.seq ?? 0);
        },
      },
    };
    await fn({ loc, store, keyDir, batches, storedUpTo: () => storedUpTo });
  });
}

/** Reads on a connection of its own, which sees only committed rows: better-sqlite3 answers at once, node-postgres a moment later. */
interface CommitReader {
  committed(seq: number): boolean | Promise<boolean>;
  close(): Promise<void>;
}

/** How long each commit into audit_events is held on PostgreSQL (see {@link commitReader}). */
const HOLD_COMMIT_MS = 50;

async function commitReader(options: StoreOptions): Promise<CommitReader> {
  if (options.kind === 'sqlite') {
    const reader = new BetterSqlite3(options.path, { readonly: true });
    const count = reader.prepare('select count(*) from audit_events where seq = ?').pluck();
    return { committed: (seq) => count.get(seq) === 1, close: async () => void reader.close() };
  }
  // A pool, as one node-postgres client must not be given a query while another is under way.
  const reader = new pg.Pool({ connectionString: options.url, max: 4 });
  // The read is asynchronous, so an append that resolved just before its commit would be seen as
  // committed all the same once the commit catches up: hold every commit into audit_events a while
  // (a deferred trigger runs at commit, once per transaction), so such an append resolves, and is
  // read, while its event is still invisible. Connected beforehand, the reads start at once.
  await reader.query(`create function hold_commit() returns trigger language plpgsql as $$
    begin
      if coalesce(current_setting('cordon_test.held', true), '') = '' then
        perform set_config('cordon_test.held', 'y', true);
        perform pg_sleep(${HOLD_COMMIT_MS / 1000});
      end if;
      return null;
    end $$`);
  await reader.query('create constraint trigger hold_commit after insert on audit_events deferrable initially deferred for each row execute function hold_commit()');
  await Promise.all(Array.from({ length: 4 }, () => reader.query('select 1')));
  return {
    committed: async (seq) => (await reader.query('select 1 from audit_events where seq = $1', [seq])).rowCount === 1,
    close: () => reader.end(),
  };
}

const event = (i: number, extra: Record<string, unknown> = {}): AuditEventInput => ({
  type: 'egress.request',
  actor: `agent:a${i % 3}`,
  agent: `a${i % 3}`,
  sandbox: `sb-${i % 5}`,
  decision: 'allow',
  data: { n: i, ...extra },
});

/** A trigger that fails an insert whose body holds `"poison":true`, inside the database (SQLite: a temp trigger; PostgreSQL: a PL/pgSQL one). */
interface Poison {
  add(store: Store): Promise<void>;
  remove(store: Store): Promise<void>;
}

const sqlitePoison: Poison = {
  add: async (store) =>
    void (await sql
      .raw(`create temp trigger poison before insert on audit_events when new.body like '%"poison":true%' begin select raise(abort, 'injected failure'); end`)
      .execute(store.db)),
  remove: async (store) => void (await sql.raw('drop trigger poison').execute(store.db)),
};

const postgresPoison: Poison = {
  async add(store) {
    await sql
      .raw(
        `create function poison() returns trigger language plpgsql as $$
         begin
           if new.body like '%"poison":true%' then raise exception 'injected failure'; end if;
           return new;
         end $$`,
      )
      .execute(store.db);
    await sql.raw('create trigger poison before insert on audit_events for each row execute function poison()').execute(store.db);
  },
  async remove(store) {
    await sql.raw('drop trigger poison on audit_events').execute(store.db);
    await sql.raw('drop function poison()').execute(store.db);
  },
};

for (const s of eachStore('cordon_group')) {
  const poison = s.kind === 'sqlite' ? sqlitePoison : postgresPoison;

  s.test('500 concurrent appends: batches of at most maxBatch, seq in call order, each resolved after its commit', async () => {
    await withFixture(s, async ({ loc, store, keyDir, batches, storedUpTo }) => {
      const log = await AuditLog.open({ store, keyDir, maxBatch: 128, checkpointIntervalMs: 60_000 });
      const reader = await commitReader(loc.options);
      try {
        const afterStoreWrite: boolean[] = [];
        const seenCommitted: (boolean | Promise<boolean>)[] = [];
        const events = await Promise.all(
          Array.from({ length: 500 }, (_, i) =>
            log.append(event(i)).then((e) => {
              // At once, when the append resolves: the store had reported the write done…
              afterStoreWrite[i] = e.seq <= storedUpTo();
              // …and another connection, which sees only committed rows, finds the event.
              seenCommitted[i] = reader.committed(e.seq);
              return e;
            }),
          ),
        );
        assert.deepEqual(batches, [128, 128, 128, 116], 'one transaction per batch, none larger than maxBatch');
        assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 500 }, (_, i) => i + 1));
        assert.deepEqual(events.map((e) => (e.data as { n: number }).n), Array.from({ length: 500 }, (_, i) => i));
        for (let i = 1; i < events.length; i++) assert.equal(events[i]!.prevHash, events[i - 1]!.hash, `link ${i}`);
        assert.equal(afterStoreWrite.filter(Boolean).length, 500, 'no append resolved before the store had written its event');
        assert.equal((await Promise.all(seenCommitted)).filter(Boolean).length, 500, 'every append resolved after its event was committed');
      } finally {
        await reader.close();
      }
      await log.close();
      const report = await verifyAudit(store, { keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 500);
    });
  });

  s.test('appends made while a flush is under way are written together in the next transaction', async () => {
    await withFixture(s, async ({ store, keyDir, batches }) => {
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

  s.test('a store failure inside a batch rolls the batch back, rejects its appends only, and the chain continues', async () => {
    await withFixture(s, async ({ store, keyDir, batches }) => {
      const log = await AuditLog.open({ store, keyDir, maxBatch: 5, checkpointIntervalMs: 60_000 });
      const before = (await Promise.all([1, 2, 3].map((i) => log.append(event(i))))).at(-1)!;
      // The third row of the next batch fails inside the database, after two rows were inserted.
      await poison.add(store);
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

      await poison.remove(store);
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

  s.test('close writes the appends already made, then refuses new ones', async () => {
    await withFixture(s, async ({ store, keyDir }) => {
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

  s.test('append renders data when it is called: later changes to the object do not reach the stored event', async () => {
    await withFixture(s, async ({ store, keyDir }) => {
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
}
