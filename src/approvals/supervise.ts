/**
 * Supervised sandboxes: an anomaly alert whose action is `approve` marks its
 * sandbox, and from then on every door action that the sandbox's policy
 * would allow (an HTTP request, a plain CONNECT tunnel, a tool call) is held
 * for an operator instead, for the rest of the session or until an operator
 * lifts the mark. A denial stays a denial, and an approval keeps its binding
 * (one approval, one execution of exactly that action).
 *
 * The mark is a row of `approvals_supervised` (it survives a restart), also
 * kept in memory so that doors ask without I/O; the memory copy follows the
 * table at every sweep (marks set or lifted by another control plane on a
 * shared store). Setting a mark takes effect at once, before its
 * `sandbox.supervised` event and its row are written: a restriction is never
 * held up by a failing log (the failure is reported to the caller). Lifting
 * is recorded first (`sandbox.unsupervised`): a lift whose event cannot be
 * written does not happen.
 *
 * @example
 * await approvals.supervise({ sandboxId: 'sb-1', agent: 'coder', alertId: 'al-9', reason: 'novelty:domain' });
 * underSupervision('allow', approvals.isSupervised('sb-1')); // 'approve'
 */
import type { Kysely } from 'kysely';
import type { ApprovalsAudit } from './approvals.js';
import { ApprovalError } from './errors.js';
import type { ApprovalsDatabase, SupervisedTable } from './table.js';

/** What a door decided for one action. */
export type DoorResult = 'allow' | 'deny' | 'approve';

/** A sandbox under supervision, as callers see it. */
export interface SupervisedMark {
  sandboxId: string;
  agent: string;
  /** The alert that set the mark. */
  alertId: string;
  /** Why, e.g. `novelty:domain`. */
  reason: string;
  since: string;
}

export interface SupervisionInput {
  sandboxId: string;
  agent: string;
  alertId: string;
  reason: string;
  /** Who sets it. @default 'system:detect' */
  actor?: string;
}

export interface Supervision {
  /** True while the sandbox is supervised (memory only: cheap enough for every request). */
  isSupervised(sandboxId: string): boolean;
  /** The mark of a supervised sandbox (memory only), else undefined. */
  supervisedMark(sandboxId: string): SupervisedMark | undefined;
  /**
   * Mark a sandbox; effective before this resolves or rejects. A sandbox
   * already supervised keeps its first mark (no second event).
   * @throws the audit or store error, after the mark took effect in memory
   */
  supervise(input: SupervisionInput): Promise<SupervisedMark>;
  /** @throws ApprovalError `approval-forbidden` (403), `approval-not-supervised` (404), or the audit error (nothing lifted) */
  unsupervise(sandboxId: string, operator: string, note?: string): Promise<SupervisedMark>;
  listSupervised(): Promise<SupervisedMark[]>;
  /** Make the memory copy follow the table (marks of other control planes). */
  reloadSupervised(): Promise<void>;
}

/**
 * The decision table of a supervised sandbox: what the policy allows is held
 * for approval; what it denies or already holds is unchanged.
 */
export function underSupervision(result: DoorResult, supervised: boolean): DoorResult {
  return supervised && result === 'allow' ? 'approve' : result;
}

/** An operator identity (`operator` or `operator:<name>`): the only callers that decide approvals or lift supervision. */
export const OPERATOR_ID = /^operator(:[A-Za-z0-9._@-]{1,64})?$/;
/** A sandbox id as the manager makes them (`sb-…`); anything else is never supervised or lifted. */
export const SANDBOX_ID_SHAPE = /^sb-[A-Za-z0-9_-]{1,64}$/;

interface SupervisionDeps {
  db: Kysely<ApprovalsDatabase>;
  audit: ApprovalsAudit;
  now: () => number;
  /** Runs store changes one at a time (the approvals' queue). */
  serial: <T>(fn: () => Promise<T>) => Promise<T>;
}

function markOf(r: SupervisedTable): SupervisedMark {
  return { sandboxId: r.sandbox, agent: r.agent, alertId: r.alert_id, reason: r.reason, since: new Date(Number(r.since)).toISOString() };
}

/** Load the marks of a store and serve them. */
export async function createSupervision(d: SupervisionDeps): Promise<Supervision> {
  const marks = new Map<string, SupervisedTable>();
  /** Set here, row not written yet: a reload must not drop them. */
  const unwritten = new Map<string, SupervisedTable>();
  const load = async (): Promise<void> => {
    const rows = await d.db.selectFrom('approvals_supervised').selectAll().execute();
    marks.clear();
    for (const r of rows) marks.set(r.sandbox, r);
    for (const [id, r] of unwritten) marks.set(id, r);
  };
  await load();

  return {
    isSupervised: function isSupervised(sandboxId) {
      return marks.has(sandboxId);
    },

    supervisedMark: function supervisedMark(sandboxId) {
      const r = marks.get(sandboxId);
      return r ? markOf(r) : undefined;
    },

    supervise: async function supervise(input) {
      if (!SANDBOX_ID_SHAPE.test(input.sandboxId)) throw new ApprovalError('approval-bad-sandbox', 400, `${JSON.stringify(input.sandboxId.slice(0, 80))} is not a sandbox id`);
      const existing = marks.get(input.sandboxId);
      if (existing) return markOf(existing);
      const row: SupervisedTable = {
        sandbox: input.sandboxId, agent: input.agent, alert_id: input.alertId.slice(0, 200), reason: input.reason.slice(0, 500), since: d.now(),
      };
      marks.set(row.sandbox, row);
      unwritten.set(row.sandbox, row);
      return d.serial(async () => {
        let auditError: unknown;
        await d.audit.append({
          type: 'sandbox.supervised', actor: input.actor ?? 'system:detect', agent: row.agent, sandbox: row.sandbox, decision: 'approve', reason: 'alert',
          data: { alert: row.alert_id, reason: row.reason },
        }).catch((err: unknown) => { auditError = err; });
        await d.db.insertInto('approvals_supervised').values(row).onConflict((oc) => oc.column('sandbox').doNothing()).execute();
        unwritten.delete(row.sandbox);
        if (auditError) throw auditError;
        return markOf(row);
      });
    },

    unsupervise: function unsupervise(sandboxId, operator, note) {
      return d.serial(async () => {
        if (!OPERATOR_ID.test(operator)) {
          throw new ApprovalError('approval-forbidden', 403, `${JSON.stringify(operator.slice(0, 80))} is not an operator identity; only operators lift supervision`, {
            fix: 'lift it with an operator token',
          });
        }
        const row = SANDBOX_ID_SHAPE.test(sandboxId)
          ? marks.get(sandboxId) ?? await d.db.selectFrom('approvals_supervised').selectAll().where('sandbox', '=', sandboxId).executeTakeFirst()
          : undefined;
        if (!row) {
          throw new ApprovalError('approval-not-supervised', 404, `sandbox ${JSON.stringify(sandboxId.slice(0, 80))} is not supervised`, {
            fix: 'list supervised sandboxes with GET /v1/approvals/supervised',
          });
        }
        const text = note?.slice(0, 1000);
        await d.audit.append({
          type: 'sandbox.unsupervised', actor: operator, agent: row.agent, sandbox: row.sandbox, decision: 'allow', reason: 'lifted',
          data: { alert: row.alert_id, reason: row.reason, ...(text ? { note: text } : {}) },
        });
        await d.db.deleteFrom('approvals_supervised').where('sandbox', '=', row.sandbox).execute();
        unwritten.delete(row.sandbox);
        marks.delete(row.sandbox);
        return markOf(row);
      });
    },

    listSupervised: async function listSupervised() {
      const rows = await d.db.selectFrom('approvals_supervised').selectAll().orderBy('since', 'desc').limit(1000).execute();
      const seen = new Set(rows.map((r) => r.sandbox));
      return [...rows, ...[...unwritten.values()].filter((r) => !seen.has(r.sandbox))].map(markOf);
    },

    reloadSupervised: function reloadSupervised() {
      return d.serial(load);
    },
  };
}
