/**
 * A throw-away PostgreSQL server for tests: `initdb` into a temporary
 * directory, `postgres` on a free loopback port with fsync off, password
 * (SCRAM) authentication, and a teardown that stops the server and removes
 * the directory. PostgreSQL refuses to run as root: under root the server
 * runs as the `postgres` user (or `nobody`), which owns the directory.
 *
 * @example
 * const skip = postgresSkipReason();
 * const server = skip ? undefined : await startTestPostgres();
 * after(() => server?.stop());
 * const url = await server!.createDatabase('t1'); // owned by a non-superuser role
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import pg from 'pg';

/** Where Debian installs each PostgreSQL major version. */
const DEBIAN_ROOT = '/usr/lib/postgresql';
/** Password of the test cluster's superuser and of the roles it creates. */
export const TEST_PASSWORD = 'cordon-test-pw';
/** The role that owns the databases made by {@link TestPostgres.createDatabase}. */
export const TEST_ROLE = 'cordon_app';
const SUPERUSER = 'cordon_admin';

export interface TestPostgres {
  /** Loopback port of the server. */
  port: number;
  /** Temporary directory of the server (data and socket), removed by {@link TestPostgres.stop}. */
  dir: string;
  /** URL of the superuser (for setup and for poking at the server). */
  adminUrl(database?: string): string;
  /** Create a database owned by {@link TEST_ROLE}; returns its URL (with the password). */
  createDatabase(name: string): Promise<string>;
  /** URL of {@link TEST_ROLE} for any database name (which may not exist). */
  appUrl(database: string, password?: string): string;
  /** Run one statement as the superuser. */
  admin<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[], database?: string): Promise<R[]>;
  /** Stop the server (fast shutdown, then SIGKILL) and remove its directory. Idempotent. */
  stop(): Promise<void>;
}

/** Names a directory holding initdb and postgres, for installs outside Debian's layout. */
const BIN_ENV = 'CORDON_TEST_PG_BIN';

/** The `bin` directory to use: {@link BIN_ENV} when set, else the newest Debian one with initdb and postgres. */
export function findPostgresBin(): string | undefined {
  const chosen = process.env[BIN_ENV];
  if (chosen !== undefined && chosen !== '') {
    return existsSync(join(chosen, 'initdb')) && existsSync(join(chosen, 'postgres')) ? chosen : undefined;
  }
  if (!existsSync(DEBIAN_ROOT)) return undefined;
  const versions = readdirSync(DEBIAN_ROOT).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = join(DEBIAN_ROOT, v, 'bin');
    if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'postgres'))) return bin;
  }
  return undefined;
}

/** Why PostgreSQL tests cannot run here, or undefined when they can. */
export function postgresSkipReason(): string | undefined {
  if (findPostgresBin() === undefined) {
    const where = process.env[BIN_ENV] ? `${process.env[BIN_ENV]} (from ${BIN_ENV})` : `${DEBIAN_ROOT}/<version>/bin`;
    return `no PostgreSQL server binaries (initdb, postgres) in ${where}: install the postgresql package, or set ${BIN_ENV}, to run these tests`;
  }
  if (process.getuid?.() === 0 && serverUser() === undefined) return 'running as root and no unprivileged user (postgres or nobody) to run PostgreSQL as';
  return undefined;
}

/**
 * The version of the server binary in `bin`, from `postgres --version`
 * (e.g. `postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)` gives major 15, text `15.8`).
 * @throws when the binary does not run or does not say its version
 */
export function postgresVersion(bin: string): Promise<{ major: number; text: string }> {
  const postgres = join(bin, 'postgres');
  return new Promise((resolve, reject) => {
    execFile(postgres, ['--version'], { env: serverEnv(), timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${postgres} --version failed: ${err.message.trim()} ${String(stderr).trim()}`.trim()));
      const m = /\(PostgreSQL\)\s+((\d+)(?:\.\d+)*)/.exec(String(stdout));
      if (!m) return reject(new Error(`${postgres} --version did not say its version: ${JSON.stringify(String(stdout).trim())}`));
      resolve({ major: Number(m[2]), text: m[1]! });
    });
  });
}

/** uid/gid to run the server as when we are root (PostgreSQL refuses root). */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':'));
  for (const name of ['postgres', 'nobody']) {
    const e = passwd.find((f) => f[0] === name);
    if (e && e[2] && e[3]) return { uid: Number(e[2]), gid: Number(e[3]) };
  }
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Directories of servers not stopped yet, with the server once it runs. */
const running = new Map<string, ChildProcess | undefined>();
let exitHookInstalled = false;
/** Signals that end a test run (Ctrl-C, a runner's timeout, a closed terminal); SIGKILL cannot be caught. */
const ENDING_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function killAll(): void {
  for (const [dir, p] of running) {
    p?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  }
  running.clear();
}

/**
 * Last resort when a test process ends without stop(): no server outlives it,
 * no directory stays. A process killed by a signal runs no `exit` handlers,
 * so the ending signals are caught too, then raised again (the process still
 * dies of the signal, with its usual status).
 */
function killOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', killAll);
  const onSignal = function stopTestServersOnSignal(sig: NodeJS.Signals): void {
    killAll();
    for (const s of ENDING_SIGNALS) process.off(s, onSignal);
    // Unless someone else handles the signal, die of it as if we had not been here.
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  for (const sig of ENDING_SIGNALS) process.on(sig, onSignal);
}

function run(cmd: string, args: string[], user: { uid: number; gid: number } | undefined, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: serverEnv(), ...(user ?? {}), timeout: timeoutMs });
    let err = '';
    p.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    p.once('error', reject);
    p.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code ?? signal}: ${err.slice(-2000)}`))));
  });
}

function serverEnv(): NodeJS.ProcessEnv {
  return { PATH: '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C', TZ: 'UTC' };
}

export interface StartTestPostgresOptions {
  /** Give up when the server is not up by then. @default 30000 */
  timeoutMs?: number;
  /** Picks the port of each attempt (tests of the fixture). @default a free loopback port */
  pickPort?: () => Promise<number>;
}

/** Attempts at a port: another test file may take the free port we picked before the server binds it. */
const PORT_ATTEMPTS = 3;

/** Start a server; rejects (leaving nothing behind) when it does not come up within `timeoutMs`. */
export async function startTestPostgres(opts: StartTestPostgresOptions = {}): Promise<TestPostgres> {
  const { timeoutMs = 30_000, pickPort = freePort } = opts;
  const bin = findPostgresBin();
  if (bin === undefined) throw new Error(postgresSkipReason());
  const user = serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'cordon-pg-'));
  running.set(dir, undefined);
  killOnExit();
  const data = join(dir, 'data');
  const pwfile = join(dir, 'pw');
  writeFileSync(pwfile, `${TEST_PASSWORD}\n`, { mode: 0o600 });
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chownSync(pwfile, user.uid, user.gid);
  }
  let server: ChildProcess | undefined;
  const stop = async (): Promise<void> => {
    const p = server;
    server = undefined;
    if (p && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGINT'); // fast shutdown: ends sessions, no checkpoint wait beyond a quick one
      const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    running.delete(dir);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await run(join(bin, 'initdb'), ['-D', data, '-U', SUPERUSER, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--no-sync', '--no-instructions'], user, timeoutMs);
    for (let attempt = 1; ; attempt++) {
      const port = await pickPort();
      const p = spawn(join(bin, 'postgres'), [
        '-D', data, '-p', String(port), '-k', dir,
        '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
        '-c', 'shared_buffers=16MB', '-c', 'max_connections=40', '-c', 'logging_collector=off',
      ], { stdio: ['ignore', 'ignore', 'pipe'], env: serverEnv(), ...(user ?? {}) });
      server = p;
      running.set(dir, p);
      let log = '';
      p.stderr!.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-4000); });
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      try {
        await waitReady(p, port, data, () => log, timeoutMs);
        return makeHandle(port, dir, stop);
      } catch (err) {
        if (attempt >= PORT_ATTEMPTS || !/could not bind|could not create any TCP\/IP sockets/.test(log)) throw err;
        await exited; // lost the port to someone else: try another
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Wait until our server (not another test file's on the same port) accepts connections. */
async function waitReady(p: ChildProcess, port: number, data: string, log: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (p.exitCode !== null || p.signalCode !== null) throw new Error(`postgres exited during start: ${log()}`);
    const c = new pg.Client({ connectionString: adminUrlFor(port, 'postgres'), connectionTimeoutMillis: 1000 });
    try {
      await c.connect();
      const res = await c.query<{ dir: string }>("select current_setting('data_directory') as dir");
      await c.end();
      if (res.rows[0]?.dir !== data) throw new Error(`port ${port} answers for another server (${res.rows[0]?.dir})`);
      return;
    } catch (err) {
      await c.end().catch(() => undefined);
      if (Date.now() > deadline) throw new Error(`postgres did not accept connections in ${timeoutMs} ms: ${(err as Error).message}\n${log()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function adminUrlFor(port: number, database: string): string {
  return `postgres://${SUPERUSER}:${TEST_PASSWORD}@127.0.0.1:${port}/${database}`;
}

function makeHandle(port: number, dir: string, stop: () => Promise<void>): TestPostgres {
  let roleMade = false;
  const appUrl = (database: string, password = TEST_PASSWORD): string =>
    `postgres://${TEST_ROLE}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
  const admin = async <R extends pg.QueryResultRow>(sql: string, params: unknown[] = [], database = 'postgres'): Promise<R[]> => {
    const c = new pg.Client({ connectionString: adminUrlFor(port, database) });
    await c.connect();
    try {
      return (await c.query<R>(sql, params)).rows;
    } finally {
      await c.end();
    }
  };
  const ensureRole = async (): Promise<void> => {
    if (roleMade) return;
    await admin(`create role ${TEST_ROLE} login password '${TEST_PASSWORD}'`);
    roleMade = true;
  };
  return {
    port,
    dir,
    adminUrl: (database = 'postgres') => adminUrlFor(port, database),
    appUrl,
    admin,
    async createDatabase(name) {
      if (!/^[a-z][a-z0-9_]{0,40}$/.test(name)) throw new Error(`bad test database name ${name}`);
      await ensureRole();
      await admin(`create database ${name} owner ${TEST_ROLE}`);
      return appUrl(name);
    },
    stop,
  };
}

/** One test file's server: started before its tests, stopped after them (see {@link usePostgresServer}). */
export interface PostgresForTests {
  /** Why the file's tests skip (no PostgreSQL binaries), or undefined. */
  readonly skipReason: string | undefined;
  /** Options for `test(name, opts, fn)`: skipped, saying why, without PostgreSQL. */
  readonly opts: { skip: string | false };
  /** The running server. @throws when it did not start */
  server(): TestPostgres;
  /** A fresh database on it, named `<prefix><n>`, owned by the test role. */
  freshUrl(): Promise<string>;
}

/**
 * Start a throw-away server for the calling test file (node:test `before`
 * and `after` hooks), unless PostgreSQL is missing.
 * @param prefix names this file's databases, e.g. `cordon_a`
 */
export function usePostgresServer(prefix: string): PostgresForTests {
  const skipReason = postgresSkipReason();
  let current: TestPostgres | undefined;
  let databases = 0;
  before(async () => {
    if (skipReason === undefined) current = await startTestPostgres();
  });
  after(async () => {
    await current?.stop();
  });
  const server = (): TestPostgres => {
    if (current === undefined) throw new Error('the test PostgreSQL server did not start');
    return current;
  };
  return {
    skipReason,
    opts: { skip: skipReason ?? false },
    server,
    freshUrl: () => server().createDatabase(`${prefix}${++databases}`),
  };
}
