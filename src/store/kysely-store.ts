/**
 * The dialect-neutral part of the store: the audit repository and the meta
 * table, written only with Kysely's query builder so that any dialect that
 * Kysely supports can sit underneath.
 */
import type { CompiledQuery, Kysely, Transaction } from 'kysely';
import type {
  AuditQuery,
  AuditRepository,
  AuditRow,
  CheckpointRow,
  Database,
  AuditEventsTable,
  AuditCheckpointsTable,
  Store,
} from './types.js';

/** Rows per multi-row INSERT: 500 × 10 parameters stays far below SQLite's and PostgreSQL's limits. */
export const INSERT_CHUNK_ROWS = 500;

const EVENT_COLUMNS = [
  'seq', 'ts', 'type', 'sandbox', 'agent', 'actor', 'decision', 'prev_hash', 'hash', 'body',
] as const;

/**
 * Runs a compiled SELECT and returns its rows as arrays in select-list order.
 * A dialect may offer one when that is much cheaper than row objects (SQLite:
 * better-sqlite3's raw mode reads pages of events about twice as fast).
 */
export type RowReader = (query: CompiledQuery) => Promise<unknown[][]>;

/**
 * Writes audit rows in one transaction, all or nothing, and resolves only
 * once they are committed. A dialect may offer one that skips the query
 * builder (SQLite: one cached prepared INSERT inside a better-sqlite3
 * transaction); the portable one is a Kysely transaction of multi-row INSERTs.
 */
export type EventWriter = (rows: readonly AuditRow[]) => Promise<void>;

/** Writes one checkpoint. A dialect may route it like its events (PostgreSQL: through the writer-locked connection). */
export type CheckpointWriter = (cp: CheckpointRow) => Promise<void>;

export interface KyselyStoreOptions {
  /** Called once by `close()`. @default destroys the Kysely instance */
  onClose?: () => Promise<void>;
  rowReader?: RowReader;
  /** @default multi-row INSERTs of {@link INSERT_CHUNK_ROWS} rows in a Kysely transaction */
  eventWriter?: EventWriter;
  /** @default one Kysely INSERT */
  checkpointWriter?: CheckpointWriter;
  /** See {@link Store.claimWriter}. @default resolves at once */
  claimWriter?: () => Promise<void>;
}

/** Build a `Store` on a Kysely instance whose schema is already migrated. */
export function createKyselyStore(kind: Store['kind'], db: Kysely<Database>, opts: KyselyStoreOptions = {}): Store {
  const onClose = opts.onClose ?? (() => db.destroy());
  const audit = createAuditRepository(db, opts.rowReader, opts.eventWriter, opts.checkpointWriter);
  let closed = false;
  return {
    kind,
    db,
    audit,
    claimWriter: opts.claimWriter ?? (async () => undefined),
    async getMeta(key) {
      const row = await db.selectFrom('cordon_meta').select('value').where('key', '=', key).executeTakeFirst();
      return row?.value;
    },
    async setMeta(key, value) {
      await db
        .insertInto('cordon_meta')
        .values({ key, value })
        .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
        .execute();
    },
    async close() {
      if (closed) return;
      closed = true;
      await onClose();
    },
  };
}

function createAuditRepository(
  db: Kysely<Database>,
  rowReader: RowReader | undefined,
  eventWriter: EventWriter | undefined,
  checkpointWriter: CheckpointWriter | undefined,
): AuditRepository {
  type EventSelect = ReturnType<typeof selectEvents>;
  const selectEvents = () => db.selectFrom('audit_events').select(EVENT_COLUMNS);
  const run = async (q: EventSelect): Promise<AuditRow[]> => {
    if (rowReader !== undefined) return (await rowReader(q.compile())).map(fromEventArray);
    return (await q.execute()).map(fromEventRecord);
  };
  return {
    async head() {
      const row = await db
        .selectFrom('audit_events')
        .select(['seq', 'hash'])
        .orderBy('seq', 'desc')
        .limit(1)
        .executeTakeFirst();
      return row ? { seq: Number(row.seq), hash: row.hash } : undefined;
    },

    insertEvents: eventWriter ?? async function insertEvents(rows) {
      if (rows.length === 0) return;
      await db.transaction().execute(async (trx: Transaction<Database>) => {
        for (let i = 0; i < rows.length; i += INSERT_CHUNK_ROWS) {
          const chunk = rows.slice(i, i + INSERT_CHUNK_ROWS).map(toEventRecord);
          await trx.insertInto('audit_events').values(chunk).execute();
        }
      });
    },

    readAfter(afterSeq, limit) {
      return run(selectEvents().where('seq', '>', afterSeq).orderBy('seq', 'asc').limit(limit));
    },

    query(f: AuditQuery) {
      let q = selectEvents();
      if (f.afterSeq !== undefined) q = q.where('seq', '>', f.afterSeq);
      if (f.beforeSeq !== undefined) q = q.where('seq', '<', f.beforeSeq);
      if (f.type !== undefined) q = q.where('type', '=', f.type);
      if (f.agent !== undefined) q = q.where('agent', '=', f.agent);
      if (f.sandbox !== undefined) q = q.where('sandbox', '=', f.sandbox);
      if (f.decision !== undefined) q = q.where('decision', '=', f.decision);
      return run(q.orderBy('seq', f.order ?? 'asc').limit(f.limit));
    },

    async count() {
      const row = await db
        .selectFrom('audit_events')
        .select((eb) => eb.fn.countAll<number | string | bigint>().as('n'))
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },

    insertCheckpoint: checkpointWriter ?? async function insertCheckpoint(cp) {
      await db.insertInto('audit_checkpoints').values(toCheckpointRecord(cp)).execute();
    },

    async listCheckpoints() {
      const rows = await db.selectFrom('audit_checkpoints').selectAll().orderBy('seq', 'asc').execute();
      return rows.map(fromCheckpointRecord);
    },

    async lastCheckpoint() {
      const row = await db
        .selectFrom('audit_checkpoints')
        .selectAll()
        .orderBy('seq', 'desc')
        .limit(1)
        .executeTakeFirst();
      return row ? fromCheckpointRecord(row) : undefined;
    },
  };
}

function toEventRecord(r: AuditRow): AuditEventsTable {
  return {
    seq: r.seq,
    ts: r.ts,
    type: r.type,
    sandbox: r.sandbox,
    agent: r.agent,
    actor: r.actor,
    decision: r.decision,
    prev_hash: r.prevHash,
    hash: r.hash,
    body: r.body,
  };
}

function fromEventRecord(r: AuditEventsTable): AuditRow {
  return {
    // PostgreSQL drivers return bigint columns as strings; SQLite gives numbers.
    seq: typeof r.seq === 'number' ? r.seq : Number(r.seq),
    ts: r.ts,
    type: r.type,
    sandbox: r.sandbox,
    agent: r.agent,
    actor: r.actor,
    decision: r.decision,
    prevHash: r.prev_hash,
    hash: r.hash,
    body: r.body,
  };
}

/** A row read as an array, in {@link EVENT_COLUMNS} order. */
function fromEventArray(a: unknown[]): AuditRow {
  return {
    seq: Number(a[0]),
    ts: a[1] as string,
    type: a[2] as string,
    sandbox: a[3] as string | null,
    agent: a[4] as string | null,
    actor: a[5] as string,
    decision: a[6] as string | null,
    prevHash: a[7] as string,
    hash: a[8] as string,
    body: a[9] as string,
  };
}

function toCheckpointRecord(c: CheckpointRow): AuditCheckpointsTable {
  return { seq: c.seq, hash: c.hash, ts: c.ts, key_id: c.keyId, signature: c.signature };
}

function fromCheckpointRecord(r: AuditCheckpointsTable): CheckpointRow {
  return { seq: Number(r.seq), hash: r.hash, ts: r.ts, keyId: r.key_id, signature: r.signature };
}
