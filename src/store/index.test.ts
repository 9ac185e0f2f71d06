/**
 * Store tests: open, migrate, reopen, WAL, refusal of foreign/newer files,
 * transactional inserts, queries and metadata.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import { StoreError } from '../errors/index.js';
import { openStore, migrateLayer, MIGRATION_TABLE, type AuditRow, type Store } from './index.js';
import { createKyselyStore } from './kysely-store.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'cordon-store-'));
}

function row(seq: number, extra: Partial<AuditRow> = {}): AuditRow {
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

async function withStore(fn: (store: Store, path: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const path = join(dir, 'state', 'cordon.db');
  const store = await openStore({ kind: 'sqlite', path });
  try {
    await fn(store, path);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('open creates a private directory and file, migrates, and reopens with data intact', async () => {
  const dir = tempDir();
  const path = join(dir, 'nested', 'cordon.db');
  try {
    const a = await openStore({ kind: 'sqlite', path });
    assert.equal(a.kind, 'sqlite');
    await a.audit.insertEvents([row(1), row(2)]);
    await a.setMeta('store.id', 'abc');
    await a.setMeta('store.id', 'def');
    await a.close();
    assert.equal(statSync(join(dir, 'nested')).mode & 0o777, 0o700);
    assert.equal(statSync(path).mode & 0o777, 0o600);

    const b = await openStore({ kind: 'sqlite', path });
    assert.deepEqual(await b.audit.head(), { seq: 2, hash: row(2).hash });
    assert.equal(await b.getMeta('store.id'), 'def');
    assert.equal(await b.getMeta('missing'), undefined);
    const migrations = await sql<{ name: string }>`select name from ${sql.table(MIGRATION_TABLE)}`.execute(b.db);
    assert.deepEqual(migrations.rows.map((r) => r.name), ['0001_audit']);
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the SQLite connection runs in WAL mode with foreign keys on', async () => {
  await withStore(async (store) => {
    const mode = await sql<{ journal_mode: string }>`pragma journal_mode`.execute(store.db);
    assert.equal(mode.rows[0]?.journal_mode, 'wal');
    const fk = await sql<{ foreign_keys: number }>`pragma foreign_keys`.execute(store.db);
    assert.equal(fk.rows[0]?.foreign_keys, 1);
    const sync = await sql<{ synchronous: number }>`pragma synchronous`.execute(store.db);
    assert.equal(sync.rows[0]?.synchronous, 1, 'synchronous=NORMAL is 1');
  });
});

test('refuses bad store files without modifying them', async (t) => {
  const cases: { name: string; content: string | Buffer; code: string; message: RegExp }[] = [
    { name: 'a text file', content: 'hello, this is not a database\n', code: 'store-corrupt', message: /is not a cordon database: file is not a database/ },
    { name: 'a short binary file', content: Buffer.from([1, 2, 3]), code: 'store-corrupt', message: /file is not a database/ },
    {
      name: 'a SQLite header followed by garbage',
      content: Buffer.concat([Buffer.from('SQLite format 3\0', 'latin1'), Buffer.alloc(4096, 0xab)]),
      code: 'store-corrupt',
      message: /is not a cordon database/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const dir = tempDir();
      const path = join(dir, 'cordon.db');
      writeFileSync(path, c.content);
      const before = readFileSync(path);
      try {
        await assert.rejects(openStore({ kind: 'sqlite', path }), (err: unknown) => {
          assert.ok(err instanceof StoreError, `expected StoreError, got ${String(err)}`);
          assert.equal(err.code, c.code);
          assert.match(err.message, c.message);
          assert.ok(err.message.includes(path), 'the message names the file');
          assert.match(err.fix ?? '', /move it aside|store\.path/);
          return true;
        });
        assert.deepEqual(readFileSync(path), before, 'the file is byte-identical');
        assert.equal(existsSync(`${path}-wal`), false, 'no WAL file was created beside it');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

test('refuses a SQLite database that belongs to another program', async () => {
  const dir = tempDir();
  const path = join(dir, 'other.db');
  const other = new BetterSqlite3(path);
  other.exec('create table invoices (id integer primary key, total real)');
  other.close();
  const before = readFileSync(path);
  try {
    await assert.rejects(openStore({ kind: 'sqlite', path }), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, 'store-corrupt');
      assert.match(err.message, /not a cordon database: it holds other tables \(invoices\)/);
      return true;
    });
    assert.deepEqual(readFileSync(path), before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('refuses a database written by a newer cordon', async () => {
  const dir = tempDir();
  const path = join(dir, 'cordon.db');
  try {
    const a = await openStore({ kind: 'sqlite', path });
    await sql`insert into ${sql.table(MIGRATION_TABLE)} (name, timestamp) values ('9999_future', '2099-01-01')`.execute(a.db);
    await a.close();
    await assert.rejects(openStore({ kind: 'sqlite', path }), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, 'store-too-new');
      assert.match(err.message, /newer version of cordon .*9999_future/);
      assert.match(err.fix ?? '', /upgrade cordon/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a directory that cannot be created gives store-unwritable', async () => {
  const dir = tempDir();
  const blocker = join(dir, 'a-file');
  writeFileSync(blocker, 'x');
  try {
    await assert.rejects(openStore({ kind: 'sqlite', path: join(blocker, 'sub', 'cordon.db') }), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, 'store-unwritable');
      assert.match(err.message, /cannot create the store directory/);
      assert.match(err.fix ?? '', /writable/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('postgres is refused with a fix until it is implemented', async () => {
  await assert.rejects(openStore({ kind: 'postgres', url: 'postgres://localhost/cordon' }), (err: unknown) => {
    assert.ok(err instanceof StoreError);
    assert.equal(err.code, 'store-unsupported');
    assert.match(err.fix ?? '', /sqlite/);
    return true;
  });
});

/** The two ways rows are written: SQLite's own path, and the portable Kysely one (for other dialects). */
const writers: { name: string; repo: (store: Store) => Store['audit'] }[] = [
  { name: 'SQLite prepared INSERT', repo: (store) => store.audit },
  { name: 'portable Kysely INSERTs', repo: (store) => createKyselyStore('sqlite', store.db, { onClose: async () => undefined }).audit },
];

for (const w of writers) {
  test(`insertEvents is all or nothing (${w.name})`, async (t) => {
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

test('readAfter pages in seq order and query filters', async () => {
  await withStore(async (store) => {
    await store.audit.insertEvents(Array.from({ length: 30 }, (_, i) => row(i + 1)));
    const page1 = await store.audit.readAfter(0, 10);
    const page2 = await store.audit.readAfter(page1.at(-1)!.seq, 10);
    assert.deepEqual(page1.map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(page2.map((r) => r.seq), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    assert.deepEqual(page1[0], row(1), 'rows round-trip unchanged');

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

test('checkpoints are stored and listed in seq order', async () => {
  await withStore(async (store) => {
    assert.equal(await store.audit.lastCheckpoint(), undefined);
    const cp = (seq: number) => ({ seq, hash: 'h'.repeat(64), ts: '2025-01-01T00:00:00.000Z', keyId: 'k'.repeat(16), signature: 'sig' });
    await store.audit.insertCheckpoint(cp(2000));
    await store.audit.insertCheckpoint(cp(1000));
    assert.deepEqual((await store.audit.listCheckpoints()).map((c) => c.seq), [1000, 2000]);
    assert.deepEqual(await store.audit.lastCheckpoint(), cp(2000));
  });
});

test('migrateLayer applies a layer migration once and refuses unknown ones', async () => {
  await withStore(async (store) => {
    let runs = 0;
    const migrations = {
      '0001_things': {
        async up(db: typeof store.db) {
          runs++;
          await db.schema.createTable('things').addColumn('id', 'text', (c) => c.primaryKey()).execute();
        },
      },
    };
    await migrateLayer(store.db, 'things', migrations);
    await migrateLayer(store.db, 'things', migrations);
    assert.equal(runs, 1);
    await assert.rejects(migrateLayer(store.db, 'things', {}), /newer version of cordon .*0001_things/);
    await assert.rejects(migrateLayer(store.db, 'Bad Name', {}), /invalid migration layer name/);
  });
});

test('insertEvents waits for a transaction that another layer holds open, and is not rolled back with it', async () => {
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

test('insertEvents refuses to write inside a transaction left open outside Kysely\'s transaction API', async () => {
  await withStore(async (store) => {
    await sql`begin`.execute(store.db);
    await assert.rejects(store.audit.insertEvents([row(1)]), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, 'store-busy');
      return true;
    });
    await sql`rollback`.execute(store.db);
    await store.audit.insertEvents([row(1)]);
    assert.equal(await store.audit.count(), 1);
  });
});

test('insertEvents fails when the store is closed', async () => {
  const dir = tempDir();
  try {
    const store = await openStore({ kind: 'sqlite', path: join(dir, 'cordon.db') });
    await store.close();
    await assert.rejects(store.audit.insertEvents([row(1)]), /not open/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
