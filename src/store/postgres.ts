/**
 * The PostgreSQL back end (node-postgres under Kysely's PostgresDialect): a
 * bounded pool for queries, the store's migrations, 64-bit integers read as
 * numbers, and one audit writer per database.
 *
 * One writer: the audit chain and its signed checkpoints must have a single
 * author at a time (two control planes on two machines would interleave
 * checkpoints signed with different keys). `claimWriter()` or the first
 * audit write takes a session advisory lock (`pg_try_advisory_lock`) on a
 * connection of its own and keeps it for the store's lifetime; every audit
 * write (events and checkpoints) runs on that connection, so no write lands
 * without the lock. Another process that writes gets `store-locked` naming
 * the holder (fail closed); reading (`cordon audit verify`, `tail`,
 * `doctor`) takes no lock. If the locked connection dies, the next write
 * connects again and must win the lock again. Each write is one statement,
 * atomic by itself, committed synchronously, cancelled after `writeTimeoutMs`
 * (and abandoned, with its connection, when the server does not answer at
 * all). A write whose connection was lost is looked up on a new session: if
 * it committed, it succeeded (a retry would record it twice).
 *
 * This is the only file that knows it is talking to PostgreSQL.
 */
import { hostname } from 'node:os';
import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
import { boundedPool, type AnswerBound } from './postgres-pool.js';
import { StoreError } from '../errors/index.js';
import { createKyselyStore, type CheckpointWriter, type EventWriter } from './kysely-store.js';
import { migrateStore } from './migrations.js';
import { parsePostgresUrl, postgresOpenError, scrub, withPostgresFix, type PostgresTarget } from './postgres-errors.js';
import type { AuditRow, Database, Store } from './types.js';

export interface PostgresStoreOptions {
  /** Connection URL; the password may also come from PGPASSWORD or ~/.pgpass. */
  url: string;
  /** Pooled connections for queries (the audit writer holds one more). @default 10 */
  maxConnections?: number;
  /** How long to wait for a connection (new, or a free one of the pool). @default 5000 */
  connectTimeoutMs?: number;
  /** An audit write that takes longer (e.g. waiting for a table lock) is cancelled and rolled back. @default 30000 */
  writeTimeoutMs?: number;
}

/** Key of the writer lock, `cordon` + 1 in ASCII as a signed 64-bit number (advisory locks are per database). */
export const WRITER_LOCK_KEY = BigInt('0x636f72646f6e0001').toString();
const INT8_OID = 20;

/** Open (migrating if needed) a PostgreSQL store. */
export async function openPostgresStore(opts: PostgresStoreOptions): Promise<Store> {
  const target = parsePostgresUrl(opts.url);
  const config: pg.PoolConfig = {
    connectionString: opts.url,
    max: Math.max(1, Math.floor(opts.maxConnections ?? 10)),
    connectionTimeoutMillis: Math.max(1, Math.floor(opts.connectTimeoutMs ?? 5000)),
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    application_name: `cordon@${hostname()}:${process.pid}`.slice(0, 63),
    types: { getTypeParser: typeParser },
  };
  const pool = new pg.Pool(config);
  // A pooled idle connection that breaks is dropped by the pool; the next query opens another and reports its own error.
  pool.on('error', () => undefined);
  const writeTimeoutMs = Math.max(1, Math.floor(opts.writeTimeoutMs ?? 30_000));
  // Once open, queries through the pool get the audit writer's bound on silence; migrations at open may take longer.
  const bound: AnswerBound = { answerMs: Infinity };
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: boundedPool(pool, bound, target) }) });
  try {
    await checkConnection(pool);
    await migrateStore(db, { seqType: 'bigint' }, target.description);
  } catch (err) {
    await db.destroy().catch(() => undefined);
    throw openFailure(err, target);
  }
  bound.answerMs = writeTimeoutMs + NO_ANSWER_GRACE_MS;
  const writer = createWriter(config, target, writeTimeoutMs);
  return createKyselyStore('postgres', db, {
    eventWriter: writer.insertEvents,
    checkpointWriter: writer.insertCheckpoint,
    claimWriter: writer.claim,
    onClose: async () => {
      await writer.close();
      await db.destroy();
    },
  });
}

/** 64-bit integers as numbers when exact (sequence numbers, epoch milliseconds, counts); other types as node-postgres reads them. */
function typeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown {
  if (oid === INT8_OID && format !== 'binary') {
    return function parseInt8(value: string): number | string {
      const n = Number(value);
      return Number.isSafeInteger(n) ? n : value;
    };
  }
  return pg.types.getTypeParser(oid, format as 'text') as (value: string) => unknown;
}

async function checkConnection(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  client.release();
}

/** Errors of the schema step carry the server's error as their cause: map that when it says why. */
function openFailure(err: unknown, t: PostgresTarget): StoreError {
  if (err instanceof StoreError) {
    const causeCode = String((err.cause as { code?: unknown } | undefined)?.code ?? '');
    if (['42501', '28P01', '3D000', '57P03', '53300'].includes(causeCode)) return postgresOpenError(err.cause, t);
    return postgresOpenError(withPostgresFix(err, t), t);
  }
  return postgresOpenError(err, t);
}

interface Writer {
  insertEvents: EventWriter;
  insertCheckpoint: CheckpointWriter;
  /** Take the lock (if not held) without writing. */
  claim(): Promise<void>;
  close(): Promise<void>;
}

const INSERT_EVENTS_SQL =
  'insert into "audit_events" ("seq", "ts", "type", "sandbox", "agent", "actor", "decision", "prev_hash", "hash", "body") ' +
  'select * from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])';
const INSERT_CHECKPOINT_SQL =
  'insert into "audit_checkpoints" ("seq", "hash", "ts", "key_id", "signature") values ($1, $2, $3, $4, $5)';

/**
 * The audit writer: a connection outside the pool that holds the writer
 * lock. Writes run one at a time; each is a single INSERT (one array per
 * column for events), so a batch is all or nothing without BEGIN/COMMIT.
 * The session commits synchronously whatever the server's default (an
 * append resolves only once its event is durable) and cancels a write that
 * exceeds `writeTimeoutMs` (the appends fail; nothing waits forever).
 */
function createWriter(config: pg.PoolConfig, t: PostgresTarget, writeTimeoutMs: number): Writer {
  const answerMs = writeTimeoutMs + NO_ANSWER_GRACE_MS;
  let client: pg.Client | undefined;
  let queue: Promise<unknown> = Promise.resolve();
  let closed = false;

  function serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = queue.then(fn);
    queue = run.catch(() => undefined);
    return run;
  }

  async function lockedClient(): Promise<pg.Client> {
    if (closed) throw new StoreError('store-closed', 'the store is not open', { fix: 'open the store again' });
    if (client !== undefined) return client;
    const c = new pg.Client(config);
    c.on('error', () => {
      // The session (and with it the lock) is gone: the next write must connect and win the lock again.
      if (client === c) client = undefined;
      void c.end().catch(() => undefined);
    });
    try {
      await c.connect();
      await answeredWithin(c, c.query("select set_config('synchronous_commit', 'on', false), set_config('statement_timeout', $1, false)", [`${writeTimeoutMs}ms`]), answerMs);
      const res = await answeredWithin(c, c.query<{ locked: boolean }>('select pg_try_advisory_lock($1::bigint) as locked', [WRITER_LOCK_KEY]), answerMs);
      if (res.rows[0]?.locked !== true) throw await lockedError(c, t);
    } catch (err) {
      await endWithin(c, NO_ANSWER_GRACE_MS);
      throw err instanceof StoreError ? err : postgresOpenError(err, t);
    }
    client = c;
    return c;
  }

  /**
   * After the connection was lost during a write, ask on a new one whether
   * the write committed all the same (the server may have committed and then
   * lost the reply): then it succeeded, and retrying it would record it twice.
   */
  async function committedAnyway(landed: (probe: pg.Client) => Promise<boolean>): Promise<boolean> {
    // Bounded on the server too: a read queued behind a table lock must not linger there.
    const probe = new pg.Client({ ...config, statement_timeout: PROBE_TIMEOUT_MS });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      return await answeredWithin(probe, landed(probe), PROBE_TIMEOUT_MS + NO_ANSWER_GRACE_MS);
    } catch {
      return false; // unknown: report the write as failed (fail closed)
    } finally {
      await endWithin(probe, NO_ANSWER_GRACE_MS);
    }
  }

  /** Run one write on the locked session; `landed` tells, on another session, whether it committed. */
  async function run(text: string, values: unknown[], landed: (probe: pg.Client) => Promise<boolean>, name?: string): Promise<void> {
    const c = await lockedClient();
    try {
      await answeredWithin(c, c.query({ text, values, ...(name ? { name } : {}) }), answerMs);
    } catch (err) {
      // A broken connection no longer holds the lock: drop it so the next write starts over.
      if (!sessionSurvives(err)) {
        if (client === c) client = undefined;
        await endWithin(c, NO_ANSWER_GRACE_MS);
        if (await committedAnyway(landed)) return;
      }
      if (err instanceof NoAnswerError) {
        throw new StoreError('store-timeout', `the PostgreSQL server of ${t.description} did not answer an audit write within ${answerMs} ms; the connection, and with it the writer lock, was dropped (the write may or may not have been committed)`, {
          fix: 'check the network path to the server and its health; the next write connects again and must win the writer lock again',
        });
      }
      if ((err as { code?: unknown }).code === '57014') {
        throw new StoreError('store-timeout', `an audit write to ${t.description} was cancelled after ${writeTimeoutMs} ms (statement timeout, or an administrator) and rolled back: ${scrub((err as Error).message, t)}`, {
          fix: 'look for sessions that hold locks on audit_events (`select * from pg_locks where not granted`) and for server load; later events are retried',
          cause: scrubbed(err, t),
        });
      }
      throw scrubbed(err, t);
    }
  }

  return {
    insertEvents: function insertEventsPostgres(rows: readonly AuditRow[]) {
      if (rows.length === 0) return Promise.resolve();
      const cols: unknown[][] = Array.from({ length: 10 }, () => new Array<unknown>(rows.length));
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i]!;
        cols[0]![i] = r.seq; cols[1]![i] = r.ts; cols[2]![i] = r.type; cols[3]![i] = r.sandbox; cols[4]![i] = r.agent;
        cols[5]![i] = r.actor; cols[6]![i] = r.decision; cols[7]![i] = r.prevHash; cols[8]![i] = r.hash; cols[9]![i] = r.body;
      }
      // One statement: when its last row is there with its hash, all of it is.
      const last = rows[rows.length - 1]!;
      const landed = async (probe: pg.Client): Promise<boolean> =>
        (await probe.query<{ hash: string }>('select "hash" from "audit_events" where "seq" = $1', [last.seq])).rows[0]?.hash === last.hash;
      return serial(() => run(INSERT_EVENTS_SQL, cols, landed, 'cordon_insert_events'));
    },
    insertCheckpoint: function insertCheckpointPostgres(cp) {
      const landed = async (probe: pg.Client): Promise<boolean> =>
        (await probe.query<{ signature: string }>('select "signature" from "audit_checkpoints" where "seq" = $1', [cp.seq])).rows[0]?.signature === cp.signature;
      return serial(() => run(INSERT_CHECKPOINT_SQL, [cp.seq, cp.hash, cp.ts, cp.keyId, cp.signature], landed));
    },
    claim: function claimWriterLock() {
      return serial(async () => void (await lockedClient()));
    },
    close: () =>
      serial(async () => {
        closed = true;
        const c = client;
        client = undefined;
        // Ending the session releases the advisory lock.
        if (c) await endWithin(c, NO_ANSWER_GRACE_MS);
      }),
  };
}

/** How long past `writeTimeoutMs` the writer waits for a server that does not answer at all (its own statement timeout cannot reach us) before it drops the connection. */
const NO_ANSWER_GRACE_MS = 2000;
/** How long the read that checks whether a lost write committed may take (e.g. behind a table lock); then the write counts as failed. */
const PROBE_TIMEOUT_MS = 2000;

class NoAnswerError extends Error {
  constructor(ms: number) {
    super(`no answer from the server within ${ms} ms (timeout)`);
    this.name = 'NoAnswerError';
  }
}

/**
 * Wait for a query on the writer's connection, at most `ms`: a dead network
 * or a frozen server would otherwise hold the write (and `close()`) forever.
 * On expiry the connection is destroyed, which also fails the query.
 */
async function answeredWithin<T>(c: pg.Client, query: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const silence = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      // With a query in flight, node-postgres destroys the socket rather than saying goodbye.
      void c.end().catch(() => undefined);
      reject(new NoAnswerError(ms));
    }, ms);
  });
  try {
    return await Promise.race([query, silence]);
  } finally {
    clearTimeout(timer);
  }
}

/** End a connection, waiting at most `ms` for the server to see it go. */
async function endWithin(c: pg.Client, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([c.end().catch(() => undefined), new Promise<void>((r) => { timer = setTimeout(r, ms); })]);
  clearTimeout(timer);
}

/**
 * An error the server sent about the statement (a SQLSTATE outside the
 * connection-exception class 08 and the shutdown codes 57P): the session,
 * and with it the lock, is still there.
 */
function sessionSurvives(err: unknown): boolean {
  const code = String((err as { code?: unknown })?.code ?? '');
  return /^[0-9A-Z]{5}$/.test(code) && !code.startsWith('08') && !code.startsWith('57P');
}

function scrubbed(err: unknown, t: PostgresTarget): unknown {
  if (!(err instanceof Error)) return err;
  const msg = scrub(err.message, t);
  return msg === err.message ? err : Object.assign(new Error(msg), { code: (err as { code?: unknown }).code });
}

/** Who holds the writer lock, as far as this user may see. */
async function lockedError(c: pg.Client, t: PostgresTarget): Promise<StoreError> {
  const hi = Number(BigInt(WRITER_LOCK_KEY) >> 32n);
  const lo = Number(BigInt(WRITER_LOCK_KEY) & 0xffffffffn);
  let holder = 'another session';
  try {
    const res = await c.query<{ pid: number; app: string | null; addr: string | null }>(
      `select l.pid, a.application_name as app, host(a.client_addr) as addr
         from pg_locks l left join pg_stat_activity a on a.pid = l.pid
        where l.locktype = 'advisory' and l.granted and l.classid = $1 and l.objid = $2 and l.objsubid = 1
          and l.database = (select oid from pg_database where datname = current_database())`,
      [hi, lo],
    );
    const h = res.rows[0];
    if (h) holder = `${h.app ? `${h.app} ` : ''}(server pid ${h.pid}${h.addr ? `, from ${h.addr}` : ''})`;
  } catch {
    // Only the message loses detail; the refusal stands.
  }
  return new StoreError('store-locked', `another cordon process writes the audit log of ${t.description}: ${holder} holds its writer lock; this process may read it but not write it`, {
    fix: 'run one control plane per store (stop the other `cordon up`, or point store.url at another database); read-only commands such as `cordon audit verify` need no lock',
    details: { holder },
  });
}
