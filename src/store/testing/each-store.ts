/**
 * The stores a test of a layer above the store (the audit log) runs on:
 * `[sqlite]`, a temporary file, and `[postgres]`, a fresh database on one
 * throw-away server per test file (see postgres.ts; skipped, saying why,
 * without PostgreSQL binaries). Each test gets its own file or database, so
 * tests stay independent; a database is dropped when its test is done. The
 * server starts with the file's first `[postgres]` test, so a server that
 * cannot start fails the `[postgres]` tests only, never the SQLite ones,
 * and so does a server older than PostgreSQL 13 (the drop needs `with (force)`).
 * An error of a test's cleanup never hides the test's own error
 * (see {@link runThenCleanup}).
 *
 * @example
 * for (const s of eachStore('cordon_log')) {
 *   s.test('appends chain and verify', async () => {
 *     await s.withStore(async ({ store, keyDir }) => { … });
 *   });
 * }
 */
import { after, test, type TestContext } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { openStore } from '../index.js';
import type { Database, Store, StoreOptions } from '../types.js';
import type { StoreLocation } from './contract.js';
import { findPostgresBin, postgresSkipReason, postgresVersion, startTestPostgres, type TestPostgres } from './postgres.js';

/** `drop database … with (force)`, which ends a failed test's sessions, came with PostgreSQL 13. */
export const MIN_POSTGRES_MAJOR = 13;

/** One test's store: a file or a database that can be opened (again), and a private directory. */
export interface TestStoreLocation extends StoreLocation {
  /** What {@link StoreLocation.open} opens (the file's path, or the database's URL). */
  readonly options: StoreOptions;
  /** A private temporary directory (for key directories), removed by `cleanup()`. */
  readonly dir: string;
  /**
   * Run `fn` on a connection of its own, outside the store, as someone with
   * write access to the database would (better-sqlite3 on the file, or a
   * node-postgres session); the connection is closed afterwards.
   */
  outside<T>(fn: (db: Kysely<Database>) => Promise<T>): Promise<T>;
}

/** What {@link StoreUnderTest.withStore} hands to its callback. */
export interface OpenTestStore {
  store: Store;
  /** A key directory (not created yet) inside the location's directory. */
  keyDir: string;
  loc: TestStoreLocation;
}

export interface StoreUnderTest {
  readonly kind: Store['kind'];
  /** Why this store's tests skip here, or false. */
  readonly skip: string | false;
  /** A new, empty location. */
  fresh(): Promise<TestStoreLocation>;
  /** A fresh store, opened for `fn`, then closed and removed. */
  withStore(fn: (f: OpenTestStore) => Promise<void>): Promise<void>;
  /** Register `[kind] name` with node:test, skipped (saying why) where this store cannot run. */
  test(name: string, fn: (t: TestContext) => Promise<void>): void;
}

/**
 * The file's PostgreSQL server, started by the first call of `server()` (a
 * start that failed fails each later call the same way), stopped by an
 * `after` hook of the file.
 */
function lazyPostgresServer(): { skipReason: string | undefined; server(): Promise<TestPostgres> } {
  let starting: Promise<TestPostgres> | undefined;
  after(async function stopTestPostgres() {
    await (await starting?.catch(() => undefined))?.stop();
  });
  return {
    skipReason: postgresSkipReason(),
    server: () => (starting ??= startFixturePostgres()),
  };
}

/** {@link startTestPostgres}, after refusing (saying why) a server older than {@link MIN_POSTGRES_MAJOR}. */
async function startFixturePostgres(): Promise<TestPostgres> {
  const bin = findPostgresBin();
  if (bin === undefined) throw new Error(postgresSkipReason());
  const version = await postgresVersion(bin);
  if (version.major < MIN_POSTGRES_MAJOR) {
    throw new Error(
      `PostgreSQL ${version.text} (${join(bin, 'postgres')}) is too old: the [postgres] test fixture drops each test's database ` +
        `with "drop database … with (force)", which needs PostgreSQL ${MIN_POSTGRES_MAJOR} or newer; point CORDON_TEST_PG_BIN at a newer install`,
    );
  }
  return startTestPostgres();
}

const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * Run `body`, then `cleanup`, whether or not `body` threw. A cleanup error
 * never hides the body's: when both throw, the result is an `AggregateError`
 * of the two (the body's first); when only the cleanup throws, an error that
 * says the body passed, with the cleanup's error as its `cause`.
 */
export async function runThenCleanup<T>(body: () => Promise<T>, cleanup: () => Promise<void>): Promise<T> {
  let result: T;
  try {
    result = await body();
  } catch (err) {
    await undoAfter(err, cleanup);
  }
  try {
    await cleanup();
  } catch (cleanupErr) {
    throw new Error(`the test passed, but its cleanup failed: ${describe(cleanupErr)}`, { cause: cleanupErr });
  }
  return result!;
}

/**
 * Make a fixture, run `fn` on it, then its `cleanup()`, through
 * {@link runThenCleanup}: a cleanup error never hides `fn`'s own.
 */
export async function withFixture<F extends { cleanup(): Promise<void> }>(make: () => Promise<F>, fn: (f: F) => Promise<void>): Promise<void> {
  const f = await make();
  await runThenCleanup(() => fn(f), () => f.cleanup());
}

/**
 * Run `open`; when it throws, run `undo` (remove what was made before it)
 * and rethrow the error of `open`, or an `AggregateError` of both when `undo`
 * throws too. For fixtures that make several things one after the other.
 */
export async function undoOnThrow<T>(open: () => Promise<T>, undo: () => Promise<void>): Promise<T> {
  try {
    return await open();
  } catch (err) {
    return undoAfter(err, undo);
  }
}

/**
 * Run every step, in order, even after one throws; then throw the one error,
 * or an `AggregateError` of all of them. For a fixture's `cleanup()`.
 */
export async function cleanupAll(...steps: (() => Promise<void>)[]): Promise<void> {
  const errors: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, `${errors.length} cleanup steps failed: ${errors.map(describe).join('; ')}`);
}

async function undoAfter(err: unknown, undo: () => Promise<void>): Promise<never> {
  try {
    await undo();
  } catch (undoErr) {
    throw new AggregateError([err, undoErr], `${describe(err)}; and then the cleanup failed too: ${describe(undoErr)}`);
  }
  throw err;
}

/**
 * The SQLite store and the PostgreSQL store, in that order. Call once, at the
 * top level of a test file: it registers the file's `after` hook that stops
 * its PostgreSQL server.
 * @param prefix names this file's databases, e.g. `cordon_log` (lower case, unique per file)
 */
export function eachStore(prefix: string): StoreUnderTest[] {
  const pgServer = lazyPostgresServer();
  let databases = 0;
  const tempDir = (): string => mkdtempSync(join(tmpdir(), `${prefix.replace(/_/g, '-')}-`));
  return [
    makeStoreUnderTest('sqlite', false, async () => {
      const dir = tempDir();
      const path = join(dir, 'cordon.db');
      return {
        options: { kind: 'sqlite', path },
        dir,
        open: () => openStore({ kind: 'sqlite', path }),
        cleanup: async () => rmSync(dir, { recursive: true, force: true }),
        async outside(fn) {
          const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: new BetterSqlite3(path) }) });
          try {
            return await fn(db);
          } finally {
            await db.destroy();
          }
        },
      };
    }),
    makeStoreUnderTest('postgres', pgServer.skipReason ?? false, async () => {
      const server = await pgServer.server();
      const url = await server.createDatabase(`${prefix}${++databases}`);
      const name = new URL(url).pathname.slice(1);
      const dir = tempDir();
      return {
        options: { kind: 'postgres', url },
        dir,
        open: () => openStore({ kind: 'postgres', url }),
        async cleanup() {
          rmSync(dir, { recursive: true, force: true });
          // Ends what a failed test left connected; keeps the server's directory small over a file's tests.
          await server.admin(`drop database if exists ${name} with (force)`);
        },
        async outside(fn) {
          const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) });
          try {
            return await fn(db);
          } finally {
            await db.destroy();
          }
        },
      };
    }),
  ];
}

function makeStoreUnderTest(kind: Store['kind'], skip: string | false, fresh: () => Promise<TestStoreLocation>): StoreUnderTest {
  return {
    kind,
    skip,
    fresh,
    async withStore(fn) {
      const loc = await fresh();
      await runThenCleanup(async () => {
        const store = await loc.open();
        await runThenCleanup(() => fn({ store, keyDir: join(loc.dir, 'keys'), loc }), () => store.close());
      }, () => loc.cleanup());
    },
    test(name, fn) {
      test(`[${kind}] ${name}`, { skip }, fn);
    },
  };
}
