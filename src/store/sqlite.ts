/**
 * The embedded SQLite back end (better-sqlite3): opens the file in WAL mode,
 * refuses files that are not SQLite databases without writing to them, caches
 * prepared statements under Kysely, runs the store's migrations, and writes
 * audit events on a path of its own that skips Kysely (the hot path of every
 * door: see {@link rawEventWriter}).
 *
 * This is the only file that knows it is talking to SQLite.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, SqliteDialect, type SqliteDatabase, type SqliteStatement } from 'kysely';
import { StoreError } from '../errors/index.js';
import { ensurePrivateDir } from '../util/index.js';
import { createKyselyStore, type EventWriter, type RowReader } from './kysely-store.js';
import { MIGRATION_TABLE, migrateStore } from './migrations.js';
import type { AuditRow, Database, Store } from './types.js';

/** The first 16 bytes of every SQLite 3 database file. */
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');
/** Prepared statements kept per connection. */
const STATEMENT_CACHE_SIZE = 256;

export interface SqliteStoreOptions {
  path: string;
  /** @default 5000 */
  busyTimeoutMs?: number;
}

/** Open (creating if needed) and migrate a SQLite store. */
export async function openSqliteStore(opts: SqliteStoreOptions): Promise<Store> {
  const path = resolve(opts.path);
  prepareFile(path);
  const raw = openConnection(path, opts.busyTimeoutMs ?? 5000);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: cachingDatabase(raw) }) });
  let eventWriter: EventWriter;
  try {
    await migrateStore(db, { seqType: 'integer' }, path);
    eventWriter = rawEventWriter(db, raw);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return createKyselyStore('sqlite', db, { rowReader: rawRowReader(db, raw), eventWriter });
}

/**
 * Write audit rows with one prepared INSERT per row inside one better-sqlite3
 * transaction (`BEGIN IMMEDIATE` … `COMMIT`, rolled back on any error): no
 * query building, no round trips through Kysely's driver. The promise settles
 * after COMMIT returned, i.e. with the connection's durability
 * (WAL, synchronous=NORMAL).
 *
 * The connection is shared with Kysely. When nothing else holds a transaction
 * open on it, the whole write runs synchronously, so nothing can interleave.
 * When another layer's Kysely transaction is open (it awaits between its
 * statements), the rows must not join it (its rollback would undo them, and
 * better-sqlite3 would only nest a savepoint): the write then waits for
 * Kysely's connection, which is free only once that transaction has ended.
 */
function rawEventWriter(db: Kysely<Database>, raw: BetterSqlite3.Database): EventWriter {
  const insert = raw.prepare(
    'insert into "audit_events" ("seq", "ts", "type", "sandbox", "agent", "actor", "decision", "prev_hash", "hash", "body") values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const insertAll = raw.transaction(function insertAll(rows: readonly AuditRow[]): void {
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      insert.run(r.seq, r.ts, r.type, r.sandbox, r.agent, r.actor, r.decision, r.prevHash, r.hash, r.body);
    }
  });
  const writeOwnTransaction = (rows: readonly AuditRow[]): void => {
    if (raw.inTransaction) {
      throw new StoreError('store-busy', 'a transaction opened outside Kysely is still open on the store connection; audit rows were not written', {
        fix: 'end that transaction (commit or roll back) before recording audit events; report this as a bug',
      });
    }
    insertAll.immediate(rows);
  };
  return function insertEventsRaw(rows) {
    if (rows.length === 0) return Promise.resolve();
    if (raw.inTransaction) return db.connection().execute(async () => writeOwnTransaction(rows));
    try {
      insertAll.immediate(rows);
    } catch (err) {
      return Promise.reject(err);
    }
    return Promise.resolve();
  };
}

/**
 * Run Kysely-compiled SELECTs in better-sqlite3's raw (array) mode. The
 * statement runs while holding Kysely's connection, so it never sees the
 * uncommitted rows of a transaction in progress on the same connection.
 */
function rawRowReader(db: Kysely<Database>, raw: BetterSqlite3.Database): RowReader {
  const cache = new Map<string, BetterSqlite3.Statement>();
  return function readRawRows(query) {
    return db.connection().execute(async () => {
      const stmt = cached(cache, query.sql, () => raw.prepare(query.sql).raw(true));
      return stmt.all(...query.parameters) as unknown[][];
    });
  };
}

/**
 * Make sure the directory exists and that an existing file really is a SQLite
 * database, reading only its header: a file that is not is never opened, so
 * SQLite cannot add a journal to it or change it.
 */
function prepareFile(path: string): void {
  const dir = dirname(path);
  try {
    ensurePrivateDir(dir);
  } catch (err) {
    throw new StoreError('store-unwritable', `cannot create the store directory ${dir}: ${(err as Error).message}`, {
      fix: `create ${dir} and make it writable by this user, or set store.path to a writable location`,
      cause: err,
    });
  }
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw notADatabase(path, 'it is not a regular file');
    size = st.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw asStoreError(err, path);
    createEmptyPrivateFile(path);
    return;
  }
  if (size === 0) return; // SQLite treats an empty file as an empty database
  const header = Buffer.alloc(SQLITE_HEADER.length);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw asStoreError(err, path);
  }
  try {
    const n = readSync(fd, header, 0, header.length, 0);
    if (n < header.length || !header.equals(SQLITE_HEADER)) throw notADatabase(path, 'file is not a database');
  } finally {
    closeSync(fd);
  }
}

/** Create the database file owner-only before SQLite does (SQLite would use the umask). */
function createEmptyPrivateFile(path: string): void {
  try {
    closeSync(openSync(path, 'wx', 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return; // another process won the race
    throw new StoreError('store-unwritable', `cannot create the store file ${path}: ${(err as Error).message}`, {
      fix: `make ${dirname(path)} writable by this user, or set store.path to a writable location`,
      cause: err,
    });
  }
}

function openConnection(path: string, busyTimeoutMs: number): BetterSqlite3.Database {
  let raw: BetterSqlite3.Database | undefined;
  try {
    raw = new BetterSqlite3(path);
    raw.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    refuseForeignDatabase(raw, path); // before WAL: switching modes rewrites the header
    const mode = raw.pragma('journal_mode = WAL', { simple: true });
    if (String(mode).toLowerCase() !== 'wal') {
      throw new StoreError('store-unwritable', `${path}: SQLite refused WAL mode (journal_mode is ${String(mode)})`, {
        fix: 'put the store on a local file system that supports shared memory (not a network share)',
      });
    }
    raw.pragma('synchronous = NORMAL');
    raw.pragma('foreign_keys = ON');
    return raw;
  } catch (err) {
    raw?.close();
    throw asStoreError(err, path);
  }
}

/** A database with tables but no cordon migration table belongs to someone else. */
function refuseForeignDatabase(raw: BetterSqlite3.Database, path: string): void {
  const names = raw
    .prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite\\_%' escape '\\'")
    .pluck()
    .all() as string[];
  if (names.length > 0 && !names.includes(MIGRATION_TABLE)) {
    throw notADatabase(path, `it holds other tables (${names.slice(0, 5).join(', ')})`);
  }
}

/**
 * Kysely's SQLite driver prepares every statement it runs; keep the prepared
 * statements so that hot queries (inserts, pages of events) are compiled once.
 */
function cachingDatabase(raw: BetterSqlite3.Database): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>();
  return {
    close: () => raw.close(),
    prepare(sql: string): SqliteStatement {
      return cached(cache, sql, () => raw.prepare(sql) as unknown as SqliteStatement);
    },
  };
}

/** Least-recently-used lookup: a hit moves to the back, the front is evicted. */
function cached<T>(cache: Map<string, T>, sql: string, prepare: () => T): T {
  let stmt = cache.get(sql);
  if (stmt !== undefined) {
    cache.delete(sql);
  } else {
    stmt = prepare();
    if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  }
  cache.set(sql, stmt);
  return stmt;
}

function notADatabase(path: string, why: string): StoreError {
  return new StoreError('store-corrupt', `${path} is not a cordon database: ${why}`, {
    fix: `move it aside (e.g. mv ${path} ${path}.bak) or set store.path to another file`,
    details: { path },
  });
}

/** Map file-system and SQLite errors to StoreErrors that say what to do. */
function asStoreError(err: unknown, path: string): StoreError {
  if (err instanceof StoreError) return err;
  const code = (err as { code?: string }).code ?? '';
  const msg = (err as Error).message ?? String(err);
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) return notADatabase(path, msg);
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code.startsWith('SQLITE_READONLY') || code.startsWith('SQLITE_CANTOPEN')) {
    return new StoreError('store-unwritable', `cannot open ${path} for writing: ${msg}`, {
      fix: `make ${path} and its directory writable by this user, or set store.path to a writable location`,
      cause: err,
    });
  }
  return new StoreError('store-open-failed', `cannot open the store ${path}: ${msg}`, {
    fix: 'check the path and the disk, then retry',
    cause: err,
  });
}
