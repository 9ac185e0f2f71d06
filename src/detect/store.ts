/**
 * Durable detector state in the store: alerts (`detect_alerts`) and one
 * baseline per agent (`detect_baselines`), created by this layer's own
 * migrations (`cordon_migration_detect`).
 *
 * @example
 * const ds = await openDetectStore(store);
 * await ds.insertAlert(alert);
 * await ds.ack(alert.id, 'operator:alice');
 */
import type { Kysely } from 'kysely';
import { NotFoundError, StoreError } from '../errors/index.js';
import { migrateLayer, type Store } from '../store/index.js';
import type { BaselineState } from './baseline.js';
import type { Alert } from './detector.js';

/** An alert as stored, with its acknowledgement. */
export interface StoredAlert extends Alert {
  ackedAt?: string;
  ackedBy?: string;
}

export interface AlertFilter {
  agent?: string;
  /** Only unacknowledged (false) or acknowledged (true) alerts. */
  acked?: boolean;
  /** @default 100 */
  limit?: number;
}

export interface DetectStore {
  insertAlert(a: Alert): Promise<void>;
  /** Newest first. */
  listAlerts(filter?: AlertFilter): Promise<StoredAlert[]>;
  /** @throws NotFoundError when no alert has this id */
  ack(id: string, by: string, at?: Date): Promise<StoredAlert>;
  saveBaseline(b: BaselineState, at?: Date): Promise<void>;
  loadBaseline(agent: string): Promise<BaselineState | undefined>;
  loadBaselines(): Promise<BaselineState[]>;
}

const migrations = {
  '0001_detect': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('detect_alerts')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('ts', 'text', (c) => c.notNull())
        .addColumn('agent', 'text', (c) => c.notNull())
        .addColumn('sandbox', 'text')
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('feature', 'text', (c) => c.notNull())
        .addColumn('score', 'real', (c) => c.notNull())
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('acked_at', 'text')
        .addColumn('acked_by', 'text')
        .execute();
      await db.schema.createIndex('detect_alerts_ts').on('detect_alerts').columns(['ts']).execute();
      await db.schema.createIndex('detect_alerts_agent').on('detect_alerts').columns(['agent', 'ts']).execute();
      await db.schema
        .createTable('detect_baselines')
        .addColumn('agent', 'text', (c) => c.primaryKey())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .execute();
    },
  },
};

interface AlertRow {
  id: string;
  body: string;
  acked_at: string | null;
  acked_by: string | null;
}

function fromRow(r: AlertRow): StoredAlert {
  const a = JSON.parse(r.body) as StoredAlert;
  if (r.acked_at) a.ackedAt = r.acked_at;
  if (r.acked_by) a.ackedBy = r.acked_by;
  return a;
}

/** Migrate this layer's tables (idempotent) and return its repository. */
export async function openDetectStore(store: Store): Promise<DetectStore> {
  const db = store.db as unknown as Kysely<any>;
  await migrateLayer(db, 'detect', migrations);
  return {
    async insertAlert(a) {
      await db.insertInto('detect_alerts').values({
        id: a.id, ts: a.ts, agent: a.agent, sandbox: a.sandbox ?? null, kind: a.kind, feature: a.feature,
        score: a.score, action: a.action, body: JSON.stringify(a), acked_at: null, acked_by: null,
      }).execute();
    },
    async listAlerts(filter = {}) {
      let q = db.selectFrom('detect_alerts').select(['id', 'body', 'acked_at', 'acked_by']);
      if (filter.agent !== undefined) q = q.where('agent', '=', filter.agent);
      if (filter.acked === true) q = q.where('acked_at', 'is not', null);
      if (filter.acked === false) q = q.where('acked_at', 'is', null);
      const rows = (await q.orderBy('ts', 'desc').orderBy('id').limit(filter.limit ?? 100).execute()) as AlertRow[];
      return rows.map(fromRow);
    },
    async ack(id, by, at = new Date()) {
      const row = (await db.selectFrom('detect_alerts').select(['id', 'body', 'acked_at', 'acked_by']).where('id', '=', id).executeTakeFirst()) as AlertRow | undefined;
      if (!row) throw new NotFoundError(`no alert with id ${JSON.stringify(id)}`, { fix: 'list alerts with `cordon alerts ls` and pass one of their ids' });
      if (row.acked_at) return fromRow(row);
      await db.updateTable('detect_alerts').set({ acked_at: at.toISOString(), acked_by: by }).where('id', '=', id).execute();
      return fromRow({ ...row, acked_at: at.toISOString(), acked_by: by });
    },
    async saveBaseline(b, at = new Date()) {
      const body = JSON.stringify(b);
      await db.insertInto('detect_baselines').values({ agent: b.agent, updated_at: at.toISOString(), body })
        .onConflict((oc) => oc.column('agent').doUpdateSet({ updated_at: at.toISOString(), body }))
        .execute();
    },
    async loadBaseline(agent) {
      const row = await db.selectFrom('detect_baselines').select('body').where('agent', '=', agent).executeTakeFirst();
      return row ? parseBaseline(String(row.body)) : undefined;
    },
    async loadBaselines() {
      const rows = await db.selectFrom('detect_baselines').select('body').orderBy('agent').execute();
      return rows.map((r) => parseBaseline(String(r.body)));
    },
  };
}

/** A stored baseline, checked for the shape this version writes. */
function parseBaseline(text: string): BaselineState {
  let b: unknown;
  try {
    b = JSON.parse(text);
  } catch {
    b = undefined;
  }
  const ok = typeof b === 'object' && b !== null && (b as BaselineState).version === 1 && typeof (b as BaselineState).agent === 'string' &&
    typeof (b as BaselineState).categories === 'object' && typeof (b as BaselineState).minutes === 'object' && typeof (b as BaselineState).profile === 'object';
  if (!ok) {
    throw new StoreError('store-detect-baseline-invalid', 'a stored baseline is unreadable or of an unknown version', {
      fix: 'upgrade cordon, or delete the row from detect_baselines so the agent is learned again',
    });
  }
  return b as BaselineState;
}
