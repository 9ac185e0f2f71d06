/**
 * Store tests: the shared store suite on SQLite (testing/contract.ts), the
 * SQLite specifics (file modes, WAL, refusal of foreign or broken files), and
 * what openStore says about PostgreSQL URLs and servers it cannot use (no
 * server needed; postgres.test.ts runs the suite on a real one).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { createServer, type Server } from 'node:net';
import { inspect } from 'node:util';
import { sql } from 'kysely';
import { StoreError } from '../errors/index.js';
import { openStore, MIGRATION_TABLE, type Store } from './index.js';
import { row, runStoreContract } from './testing/contract.js';

runStoreContract({
  kind: 'sqlite',
  async fresh() {
    const dir = tempDir();
    return {
      open: () => openStore({ kind: 'sqlite', path: join(dir, 'state', 'cordon.db') }),
      cleanup: async () => rmSync(dir, { recursive: true, force: true }),
    };
  },
});

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'cordon-store-'));
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

// Migrating and reopening with data intact is the shared contract's "[sqlite] open migrates, and reopening…".
test('open creates a private directory and file', async () => {
  const dir = tempDir();
  const path = join(dir, 'nested', 'cordon.db');
  try {
    const a = await openStore({ kind: 'sqlite', path });
    assert.equal(a.kind, 'sqlite');
    await a.audit.insertEvents([row(1), row(2)]);
    await a.close();
    assert.equal(statSync(join(dir, 'nested')).mode & 0o777, 0o700);
    assert.equal(statSync(path).mode & 0o777, 0o600);
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

/** A loopback listener that accepts connections and never answers (a server that hangs). */
async function silentServer(): Promise<{ port: number; server: Server }> {
  const server = createServer(() => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, server };
}

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const { port, server } = await silentServer();
  await new Promise((r) => server.close(r));
  return port;
}

test('a PostgreSQL store that cannot be used is refused with a code and a fix, never showing the password', async (t) => {
  const password = 'Sup3r-secret%21pw';
  const cases: { name: string; url: () => Promise<string>; code: string; message: RegExp; fix: RegExp }[] = [
    { name: 'not a URL', url: async () => `postgres//cordon:${password}@db`, code: 'store-url-invalid', message: /not a valid PostgreSQL connection URL: it is not a URL/, fix: /postgres:\/\// },
    { name: 'another scheme', url: async () => `mysql://cordon:${password}@db/cordon`, code: 'store-url-invalid', message: /scheme is "mysql"/, fix: /PGPASSWORD/ },
    ...['/', '?', '#'].map((c) => ({
      name: `a password with an unescaped "${c}" after digits (URL parsers read "cordon:2024" as host and port, and the rest as path)`,
      url: async () => `postgres://cordon:2024${c}${password}@127.0.0.1:5432/cordon`,
      code: 'store-url-invalid',
      message: /an "@" follows the host: .*percent-encoded/,
      fix: /PGPASSWORD/,
    })),
    {
      name: 'nothing listens on the port',
      url: async () => `postgres://cordon:${password}@127.0.0.1:${await closedPort()}/cordon`,
      code: 'store-unreachable',
      message: /cannot reach the PostgreSQL server of postgres:\/\/cordon@127\.0\.0\.1:\d+\/cordon: .*ECONNREFUSED/,
      fix: /pg_isready -h 127\.0\.0\.1 -p \d+/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const url = await c.url();
      await assert.rejects(openStore({ kind: 'postgres', url }), (err: unknown) => {
        assert.ok(err instanceof StoreError, `expected StoreError, got ${String(err)}`);
        assert.equal(err.code, c.code);
        assert.match(err.message, c.message);
        assert.match(err.fix ?? '', c.fix);
        for (const shown of [err.message, err.fix ?? '', JSON.stringify(err), inspect(err, { depth: 5 })]) {
          assert.ok(!shown.includes('Sup3r') && !shown.includes(password), `the password leaked: ${shown}`);
        }
        return true;
      });
    });
  }
});

test('a PostgreSQL server that accepts but never answers times out as store-unreachable', async () => {
  const { port, server } = await silentServer();
  const started = Date.now();
  try {
    await assert.rejects(
      openStore({ kind: 'postgres', url: `postgres://cordon@127.0.0.1:${port}/cordon`, connectTimeoutMs: 300 }),
      (err: unknown) => {
        assert.ok(err instanceof StoreError);
        assert.equal(err.code, 'store-unreachable');
        assert.match(err.message, /timeout/i);
        return true;
      },
    );
    assert.ok(Date.now() - started < 5000, 'connectTimeoutMs bounds the wait');
  } finally {
    server.close();
  }
});
