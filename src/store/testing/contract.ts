/**
 * The behaviour every `Store` must show, as one suite that each back end's
 * test file runs with its own harness (SQLite in index.test.ts, PostgreSQL in
 * postgres.test.ts): open/migrate/reopen, refusal of a newer schema,
 * all-or-nothing inserts, paging and filters, checkpoints, layer migrations,
 * isolation from other layers' transactions, and closing.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { StoreError } from '../../errors/index.js';
import { createKyselyStore } from '../kysely-store.js';
import { MIGRATION_TABLE, migrateLayer } from '../migrations.js';
import type { AuditRow, Store } from '../types.js';

/** A place for one store that can be opened again (a file, a database). */
export interface StoreLocation {
  open(): Promise<Store>;
  /** Remove what the test left (files); a no-op where the whole server is thrown away. */
  cleanup(): Promise<void>;
}

export interface StoreHarness {
  kind: Store['kind'];
  /** A new, empty location. */
  fresh(): Promise<StoreLocation>;
  /** Why the suite cannot run here (shown as the skip reason). */
  skip?: () => string | undefined;
}

/** A deterministic audit row; `extra` overrides fields. */
export function row(seq: number, extra: Partial<AuditRow> = {}): AuditRow {
  return {
    seq,
    ts: new Date(1_700_000_000_000 + seq).toISOString(),
    type: seq % 2 === 0 ? 'egress.request' : 'tool.call',
    sandbox: `sb-${seq % 3}`,
    agent: seq % 2 === 0 ? 'reviewer' : 'builder',
    actor: 'agent',
    decision: seq % 5 === 0 ? 'deny' : 'allow',
    prevHash: '0'.repeat(64),
    hash: seq.toString(16).padStart(64, '0'),
    body: `{"seq":${seq}}`,
    ...extra,
  };
}

/** Register the shared suite for one back end. */
export function runStoreContract(h: StoreHarness): void {
  const skip = (): string | false => h.skip?.() ?? false;
  const it = (name: string, fn: (t: TestContext) => Promise<void>): void => {
    test(`[${h.kind}] ${name}`, { skip: skip() }, fn);
  };
  const withStore = async (fn: (store: Store) => Promise<void>): Promise<void> => {
    const loc = await h.fresh();
    const store = await loc.open();
    try {
      await fn(store);
    } finally {
      await store.close();
      await loc.cleanup();
    }
  };

  it('open migrates, and reopening finds data and metadata intact', async () => {
    const loc = await h.fresh();
    try {
      const a = await loc.open();
      assert.equal(a.kind, h.kind);
      await a.claimWriter(); // the only opener may always become the writer
      await a.audit.insertEvents([row(1), row(2)]);
      await a.setMeta('store.id', 'abc');
      await a.setMeta('store.id', 'def');
      await a.close();
      const b = await loc.open();
      assert.deepEqual(await b.audit.head(), { seq: 2, hash: row(2).hash });
      assert.equal(typeof (await b.audit.head())?.seq, 'number');
      assert.equal(await b.getMeta('store.id'), 'def');
      assert.equal(await b.getMeta('missing'), undefined);
      const migrations = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)}`.execute(b.db);
      assert.deepEqual(migrations.rows.map((r) => r.name), ['0001_audit']);
      await b.close();
    } finally {
      await loc.cleanup();
    }
  });

  it('refuses a store written by a newer cordon', async () => {
    const loc = await h.fresh();
    try {
      const a = await loc.open();
      await sql`insert into ${sql.table(MIGRATION_TABLE)} (name, timestamp) values ('9999_future', '2099-01-01')`.execute(a.db);
      await a.close();
      await assert.rejects(loc.open(), (err: unknown) => {
        assert.ok(err instanceof StoreError);
        assert.equal(err.code, 'store-too-new');
        assert.match(err.message, /newer version of cordon .*9999_future/);
        assert.match(err.fix ?? '', /upgrade cordon/);
        return true;
      });
    } finally {
      await loc.cleanup();
    }
  });

  /** The two ways rows are written: the back end's own path, and the portable Kysely one. */
  const writers: { name: string; repo: (store: Store) => Store['audit'] }[] = [
    { name: 'the back end\'s writer', repo: (store) => store.audit },
    { name: 'portable Kysely INSERTs', repo: (store) => createKyselyStore(store.kind, store.db, { onClose: async () => undefined }).audit },
  ];
  for (const w of writers) {
    it(`insertEvents is all or nothing (${w.name})`, async (t) => {
      const cases: { name: string; batch: () => AuditRow[]; expectCount: number }[] = [
        { name: 'a duplicate seq inside the batch inserts nothing', batch: () => [row(3), row(4), row(4)], expectCount: 2 },
        { name: 'a seq that already exists inserts nothing', batch: () => [row(3), row(2)], expectCount: 2 },
        {
          name: 'a failure in a later chunk rolls back earlier chunks',
          batch: () => [...Array.from({ length: 1200 }, (_, i) => row(i + 3)), row(10)],
          expectCount: 2,
        },
        { name: 'a valid batch larger than one chunk inserts every row', batch: () => Array.from({ length: 1200 }, (_, i) => row(i + 3)), expectCount: 1202 },
      ];
      for (const c of cases) {
        await t.test(c.name, async () => {
          await withStore(async (store) => {
            const audit = w.repo(store);
            await audit.insertEvents([row(1), row(2)]);
            const batch = c.batch();
            if (c.expectCount === 2) await assert.rejects(audit.insertEvents(batch));
            else await audit.insertEvents(batch);
            assert.equal(await store.audit.count(), c.expectCount);
            assert.deepEqual((await store.audit.readAfter(c.expectCount - 1, 1))[0], row(c.expectCount), 'rows round-trip unchanged');
          });
        });
      }
    });
  }

  it('text round-trips byte for byte (quotes, backslashes, braces, commas, NULLs, non-ASCII)', async () => {
    await withStore(async (store) => {
      const odd = row(1, { agent: 'a"b\\c,{d}', sandbox: null, decision: null, actor: 'NULL', body: '{"k":"é ✓ \\u0000 \'q\'"}' });
      await store.audit.insertEvents([odd, row(2, { type: '' })]);
      assert.deepEqual(await store.audit.readAfter(0, 2), [odd, row(2, { type: '' })]);
    });
  });

  it('readAfter pages in seq order and query filters', async () => {
    await withStore(async (store) => {
      await store.audit.insertEvents(Array.from({ length: 30 }, (_, i) => row(i + 1)));
      const page1 = await store.audit.readAfter(0, 10);
      const page2 = await store.audit.readAfter(page1.at(-1)!.seq, 10);
      assert.deepEqual(page1.map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.deepEqual(page2.map((r) => r.seq), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
      assert.deepEqual(page1[0], row(1), 'rows round-trip unchanged');
      assert.equal(await store.audit.count(), 30);
      const cases: { name: string; filter: Parameters<Store['audit']['query']>[0]; seqs: number[] }[] = [
        { name: 'agent', filter: { agent: 'reviewer', limit: 4 }, seqs: [2, 4, 6, 8] },
        { name: 'decision, descending', filter: { decision: 'deny', limit: 10, order: 'desc' }, seqs: [30, 25, 20, 15, 10, 5] },
        { name: 'type within a seq window', filter: { type: 'tool.call', afterSeq: 10, beforeSeq: 16, limit: 10 }, seqs: [11, 13, 15] },
        { name: 'sandbox and agent together', filter: { sandbox: 'sb-0', agent: 'builder', limit: 10 }, seqs: [3, 9, 15, 21, 27] },
        { name: 'no match', filter: { agent: 'nobody', limit: 10 }, seqs: [] },
      ];
      for (const c of cases) {
        const got = await store.audit.query(c.filter);
        assert.deepEqual(got.map((r) => r.seq), c.seqs, c.name);
      }
    });
  });

  it('checkpoints are stored and listed in seq order', async () => {
    await withStore(async (store) => {
      assert.equal(await store.audit.lastCheckpoint(), undefined);
      const cp = (seq: number) => ({ seq, hash: 'h'.repeat(64), ts: '2025-01-01T00:00:00.000Z', keyId: 'k'.repeat(16), signature: 'sig' });
      await store.audit.insertCheckpoint(cp(2000));
      await store.audit.insertCheckpoint(cp(1000));
      await assert.rejects(store.audit.insertCheckpoint(cp(1000)), 'a second checkpoint at the same seq is refused');
      assert.deepEqual((await store.audit.listCheckpoints()).map((c) => c.seq), [1000, 2000]);
      assert.deepEqual(await store.audit.lastCheckpoint(), cp(2000));
    });
  });

  it('migrateLayer applies a layer migration once and refuses unknown ones', async () => {
    await withStore(async (store) => {
      let runs = 0;
      const migrations = {
        '0001_things': {
          async up(db: typeof store.db) {
            runs++;
            await db.schema.createTable('things').addColumn('id', 'text', (c) => c.primaryKey()).addColumn('at', 'bigint').execute();
          },
        },
      };
      await migrateLayer(store.db, 'things', migrations);
      await migrateLayer(store.db, 'things', migrations);
      assert.equal(runs, 1);
      const things = store.db.withTables<{ things: { id: string; at: number } }>();
      await things.insertInto('things').values({ id: 'a', at: 1_700_000_000_123 }).execute();
      const got = await things.selectFrom('things').selectAll().executeTakeFirstOrThrow();
      assert.deepEqual(got, { id: 'a', at: 1_700_000_000_123 }, 'a bigint column reads back as a number');
      await assert.rejects(migrateLayer(store.db, 'things', {}), /newer version of cordon .*0001_things/);
      await assert.rejects(migrateLayer(store.db, 'Bad Name', {}), /invalid migration layer name/);
    });
  });

  it('insertEvents is not held by, nor rolled back with, a transaction that another layer holds open', async () => {
    await withStore(async (store) => {
      await store.audit.insertEvents([row(1)]);
      let insertedWhileOpen: Promise<void> | undefined;
      await assert.rejects(
        store.db.transaction().execute(async (trx) => {
          await trx.insertInto('cordon_meta').values({ key: 'k', value: 'v' }).execute();
          insertedWhileOpen = store.audit.insertEvents([row(2), row(3)]);
          await new Promise((r) => setTimeout(r, 20));
          throw new Error('the other layer rolls back');
        }),
        /the other layer rolls back/,
      );
      await insertedWhileOpen;
      assert.equal(await store.getMeta('k'), undefined, 'the other transaction was rolled back');
      assert.deepEqual((await store.audit.readAfter(0, 10)).map((r) => r.seq), [1, 2, 3], 'the audit rows were committed on their own');
    });
  });

  it('insertEvents fails when the store is closed', async () => {
    const loc = await h.fresh();
    try {
      const store = await loc.open();
      await store.close();
      await store.close(); // idempotent
      await assert.rejects(store.audit.insertEvents([row(1)]), /not open/);
    } finally {
      await loc.cleanup();
    }
  });
}
