/**
 * The approvals table: its migrations (the store's per-layer migrations,
 * recorded in `cordon_migration_approvals`), its row type, and the mapping
 * between rows and {@link Approval}. Times are milliseconds since the epoch.
 */
import type { Kysely, Migration } from 'kysely';
import type { ApprovalAction } from './action.js';

export type ApprovalState = 'pending' | 'approved' | 'denied' | 'expired';

/** An approval as callers see it. */
export interface Approval {
  id: string;
  state: ApprovalState;
  /** Hex SHA-256 of the exact action (see action.ts). */
  actionHash: string;
  action: ApprovalAction;
  createdAt: string;
  /** Pending: when it expires undecided. Approved: until when it can be used. */
  expiresAt: string;
  decidedAt?: string;
  decidedBy?: string;
  reason?: string;
  /** Operators who approved so far (two-approver rule). */
  approvers: string[];
  /** Set once the approved action was executed: an approval permits exactly one execution. */
  consumedAt?: string;
}

export interface ApprovalsTable {
  id: string;
  kind: string;
  agent: string;
  sandbox: string;
  action_hash: string;
  action: string;
  state: ApprovalState;
  created_at: number;
  expires_at: number;
  decided_at: number | null;
  decided_by: string | null;
  reason: string | null;
  approvers: string;
  consumed_at: number | null;
}

/** A supervised sandbox: every door action it may take is held for approval until an operator lifts the mark. */
export interface SupervisedTable {
  sandbox: string;
  agent: string;
  /** The alert that set the mark. */
  alert_id: string;
  reason: string;
  since: number;
}

// A type alias (not an interface) so that Kysely's `withTables` accepts it.
export type ApprovalsDatabase = {
  approvals: ApprovalsTable;
  approvals_supervised: SupervisedTable;
};

/** The layer's migrations; never edit one that has shipped, add the next. */
export const approvalMigrations: Record<string, Migration> = {
  '0001_approvals': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('approvals')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('agent', 'text', (c) => c.notNull())
        .addColumn('sandbox', 'text', (c) => c.notNull())
        .addColumn('action_hash', 'text', (c) => c.notNull())
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('decided_at', 'bigint')
        .addColumn('decided_by', 'text')
        .addColumn('reason', 'text')
        .addColumn('approvers', 'text', (c) => c.notNull())
        .addColumn('consumed_at', 'bigint')
        .execute();
      await db.schema.createIndex('approvals_agent_state').on('approvals').columns(['agent', 'state']).execute();
      await db.schema.createIndex('approvals_hash').on('approvals').columns(['action_hash', 'state']).execute();
      await db.schema.createIndex('approvals_state_expiry').on('approvals').columns(['state', 'expires_at']).execute();
    },
  },
  '0002_supervised': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('approvals_supervised')
        .addColumn('sandbox', 'text', (c) => c.primaryKey())
        .addColumn('agent', 'text', (c) => c.notNull())
        .addColumn('alert_id', 'text', (c) => c.notNull())
        .addColumn('reason', 'text', (c) => c.notNull())
        .addColumn('since', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
};

const iso = (ms: number | string | null): string | undefined => (ms === null ? undefined : new Date(Number(ms)).toISOString());

/** A row as an {@link Approval}. */
export function fromRow(r: ApprovalsTable): Approval {
  const a: Approval = {
    id: r.id, state: r.state, actionHash: r.action_hash, action: JSON.parse(r.action) as ApprovalAction,
    createdAt: iso(r.created_at)!, expiresAt: iso(r.expires_at)!, approvers: JSON.parse(r.approvers) as string[],
  };
  if (r.decided_at !== null) a.decidedAt = iso(r.decided_at)!;
  if (r.decided_by !== null) a.decidedBy = r.decided_by;
  if (r.reason !== null) a.reason = r.reason;
  if (r.consumed_at !== null) a.consumedAt = iso(r.consumed_at)!;
  return a;
}
