/**
 * Human approvals: held actions, durable in the store, decided by operators.
 *
 * An approval is created `pending` for one exact action (its hash, see
 * action.ts) and becomes `approved`, `denied` or `expired`. A pending one
 * expires at `ttlMs` after its creation, or when the request that waits for
 * it gives up (a timeout denies); an approved one can be used once
 * ({@link Approvals.consume}) until `ttlMs` after the decision. Only operator
 * identities (`operator` or `operator:<name>`) decide; with `twoApprovers`
 * two different operators must approve, and any single denial is final.
 * Pending approvals per agent are bounded (`approval-flood`).
 *
 * Every change is recorded in the audit log before it is written
 * (`approval.requested`, `approval.decided`, `approval.consumed`,
 * `approval.expired`, `approval.refused`); a request or decision whose event
 * cannot be written does not happen. Changes run one at a time in this
 * process, and each UPDATE is conditional on the state it read.
 *
 * @example
 * const approvals = await createApprovals({ store, audit, config: config.approvals });
 * const ticket = await approvals.request(egressAction({ … }));
 * if (await ticket.wait(config.approvals.holdTimeoutMs) === 'approved' && (await approvals.consume(ticket.id, ticket.hash)).ok) send();
 */
import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { migrateLayer, type Store } from '../store/index.js';
import { describeAction, type BuiltAction } from './action.js';
import { ApprovalError } from './errors.js';
import { notifyWebhook, type ApprovalNotifier } from './notify.js';
import { createSupervision, OPERATOR_ID, type Supervision } from './supervise.js';
import { approvalMigrations, fromRow, type Approval, type ApprovalState, type ApprovalsDatabase, type ApprovalsTable } from './table.js';

/** Where approval events go; `AuditLog` fits. Must reject when the event is not durable. */
export interface ApprovalsAudit {
  append(event: { type: string; actor: string; agent?: string; sandbox?: string; decision?: string; reason?: string; data?: Record<string, unknown> }): Promise<unknown>;
}

/** The `approvals:` section of cordon.yaml, as loaded. */
export interface ApprovalsConfig {
  ttlMs: number;
  holdTimeoutMs: number;
  twoApprovers: boolean;
  webhook?: { url: string } | undefined;
}

export interface ApprovalsOptions {
  store: Store;
  audit: ApprovalsAudit;
  config: ApprovalsConfig;
  /** Told of each new pending approval; never awaited by requests. @default a webhook POST when `config.webhook` is set */
  notify?: ApprovalNotifier;
  /** Clock in ms. @default Date.now */
  now?: () => number;
  /** Pending approvals one agent may have at once. @default 20 */
  maxPendingPerAgent?: number;
  /** How often expired approvals are swept (and `approval.expired` written). @default 5000 */
  sweepIntervalMs?: number;
}

export type WaitOutcome = 'approved' | 'denied' | 'expired' | 'timeout';

export interface ApprovalTicket {
  id: string;
  hash: string;
  /** True when an approved, unused approval of the same action was found instead of a new one. */
  reused: boolean;
  /**
   * Wait for the decision. At `timeoutMs` (or when `signal` aborts) a pending
   * approval expires and the outcome is `timeout`.
   */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<WaitOutcome>;
}

export type ConsumeResult = { ok: true } | { ok: false; reason: 'approval-used' | 'approval-mismatch' | 'approval-expired' | 'approval-not-approved' | 'approval-not-found' | 'audit-unavailable' };

/** Approvals, and the sandboxes whose every allowed action is held (see supervise.ts). */
export interface Approvals extends Supervision {
  /** Hold an action for a decision. @throws ApprovalError `approval-flood` (429), or the audit error */
  request(built: BuiltAction): Promise<ApprovalTicket>;
  /** @throws ApprovalError `approval-not-found`, `approval-not-pending`, `approval-same-approver`, `approval-forbidden` */
  decide(id: string, operator: string, verdict: 'approve' | 'deny', reason?: string): Promise<Approval>;
  /** Use an approval for the action with this hash: succeeds exactly once. */
  consume(id: string, actionHash: string): Promise<ConsumeResult>;
  get(id: string): Promise<Approval | undefined>;
  list(filter?: { state?: ApprovalState; limit?: number }): Promise<Approval[]>;
  /** Stop timers; waiting requests end with `timeout`, pending approvals stay pending in the store. */
  close(): void;
}

export const APPROVAL_ID = /^ap-[a-f0-9]{24}$/;

/** Open the approvals of a store (creating its table on first use). */
export async function createApprovals(o: ApprovalsOptions): Promise<Approvals> {
  await migrateLayer(o.store.db, 'approvals', approvalMigrations);
  const db = o.store.db.withTables<ApprovalsDatabase>() as unknown as Kysely<ApprovalsDatabase>;
  const now = o.now ?? Date.now;
  const maxPending = o.maxPendingPerAgent ?? 20;
  const notify = o.notify ?? (o.config.webhook ? notifyWebhook({ url: o.config.webhook.url }) : undefined);
  const waiters = new Map<string, Set<(s: WaitOutcome) => void>>();
  let chain: Promise<unknown> = Promise.resolve();
  let closed = false;

  function serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = chain.then(fn);
    chain = run.catch(() => undefined);
    return run;
  }
  const row = (id: string): Promise<ApprovalsTable | undefined> => db.selectFrom('approvals').selectAll().where('id', '=', id).executeTakeFirst();
  const wake = (id: string, outcome: WaitOutcome): void => {
    for (const w of waiters.get(id) ?? []) w(outcome);
    waiters.delete(id);
  };
  const who = (r: ApprovalsTable) => ({ agent: r.agent, sandbox: r.sandbox });

  /** Expire one row (already read, still pending or approved-unused); audited best effort: expiry never permits anything. */
  async function expire(r: ApprovalsTable, reason: string, outcome: WaitOutcome = 'expired'): Promise<void> {
    await o.audit.append({ type: 'approval.expired', actor: 'system', ...who(r), decision: 'deny', reason, data: { id: r.id, actionHash: r.action_hash, was: r.state } })
      .catch(() => undefined);
    await db.updateTable('approvals').set({ state: 'expired', reason }).where('id', '=', r.id).where('state', '=', r.state).where('consumed_at', 'is', null).execute();
    wake(r.id, outcome);
  }

  async function sweepNow(): Promise<void> {
    const due = await db.selectFrom('approvals').selectAll()
      .where('state', 'in', ['pending', 'approved']).where('consumed_at', 'is', null).where('expires_at', '<=', now()).limit(500).execute();
    for (const r of due) await expire(r, 'ttl');
  }
  const sweep = (): Promise<void> => serial(sweepNow);
  const supervision = await createSupervision({ db, audit: o.audit, now, serial });
  const timer = setInterval(() => {
    void sweep().catch(() => undefined);
    void supervision.reloadSupervised().catch(() => undefined);
  }, o.sweepIntervalMs ?? 5000);
  timer.unref();

  function ticket(id: string, hash: string, reused: boolean): ApprovalTicket {
    return {
      id, hash, reused,
      wait: function waitForDecision(timeoutMs: number, signal?: AbortSignal): Promise<WaitOutcome> {
        return new Promise<WaitOutcome>((resolve, reject) => {
          let settled = false;
          let timeout: NodeJS.Timeout | undefined;
          const done = (s: WaitOutcome): void => {
            if (settled) return;
            settled = true;
            if (timeout) clearTimeout(timeout);
            signal?.removeEventListener('abort', onAbort);
            waiters.get(id)?.delete(done);
            resolve(s);
          };
          const giveUp = (reason: string): void => {
            serial(async () => {
              // Shutting down: the approval stays pending for after the restart.
              if (closed) return 'timeout' as const;
              const r = await row(id);
              if (r?.state === 'pending') {
                await expire(r, reason, 'timeout');
                return 'timeout' as const;
              }
              return r ? outcomeOf(r) : 'expired';
            }).then(done, reject);
          };
          const onAbort = (): void => giveUp('abandoned');
          // Registered inside the serial section, so no decision can slip in between the read and the registration.
          serial(async () => {
            const r = await row(id);
            if (!r || r.state !== 'pending') return done(r ? outcomeOf(r) : 'expired');
            if (closed) return done('timeout');
            const set = waiters.get(id) ?? new Set();
            set.add(done);
            waiters.set(id, set);
            timeout = setTimeout(() => giveUp('hold-timeout'), Math.max(0, timeoutMs));
            if (signal?.aborted) queueMicrotask(onAbort);
            else signal?.addEventListener('abort', onAbort, { once: true });
          }).catch(reject);
        });
      },
    };
  }

  function outcomeOf(r: ApprovalsTable): WaitOutcome {
    if (r.state === 'approved') return r.consumed_at === null && Number(r.expires_at) > now() ? 'approved' : 'expired';
    return r.state === 'denied' ? 'denied' : r.state === 'expired' ? 'expired' : 'timeout';
  }

  return {
    ...supervision,
    request: function requestApproval(built: BuiltAction): Promise<ApprovalTicket> {
      const { action, hash } = built;
      const actor = `agent:${action.agent}`;
      const base = { actor, agent: action.agent, sandbox: action.sandboxId };
      return serial(async () => {
        await sweepNow();
        const ready = await db.selectFrom('approvals').select('id')
          .where('action_hash', '=', hash).where('state', '=', 'approved').where('consumed_at', 'is', null).where('expires_at', '>', now())
          .executeTakeFirst();
        if (ready) return ticket(ready.id, hash, true);
        const count = await db.selectFrom('approvals').select((eb) => eb.fn.countAll<number>().as('n'))
          .where('agent', '=', action.agent).where('state', '=', 'pending').executeTakeFirstOrThrow();
        if (Number(count.n) >= maxPending) {
          await o.audit.append({ type: 'approval.refused', ...base, decision: 'deny', reason: 'approval-flood', data: { actionHash: hash, pending: Number(count.n), limit: maxPending } });
          throw new ApprovalError('approval-flood', 429, `agent ${action.agent} already has ${Number(count.n)} approvals pending (limit ${maxPending}); nothing more is held until some are decided or expire`, {
            fix: 'decide or let expire the pending approvals (`cordon approvals ls`), or find out why the agent keeps asking',
          });
        }
        const id = `ap-${randomBytes(12).toString('hex')}`;
        const createdAt = now();
        const expiresAt = createdAt + o.config.ttlMs;
        await o.audit.append({ type: 'approval.requested', ...base, decision: 'approve', reason: 'held', data: { id, actionHash: hash, action: { ...action }, expiresAt: new Date(expiresAt).toISOString() } });
        await db.insertInto('approvals').values({
          id, kind: action.kind, agent: action.agent, sandbox: action.sandboxId, action_hash: hash, action: JSON.stringify(action), state: 'pending',
          created_at: createdAt, expires_at: expiresAt, decided_at: null, decided_by: null, reason: null, approvers: '[]', consumed_at: null,
        }).execute();
        if (notify) {
          const approval = fromRow((await row(id))!);
          notify(approval, describeAction(action)).catch((err: unknown) => o.audit.append({
            type: 'approval.notify-failed', actor: 'system', ...who({ agent: action.agent, sandbox: action.sandboxId } as ApprovalsTable),
            reason: 'webhook-failed', data: { id, problem: String((err as Error)?.message ?? err).slice(0, 500) },
          }).catch(() => undefined));
        }
        return ticket(id, hash, false);
      });
    },

    decide: function decideApproval(id, operator, verdict, reason) {
      return serial(async () => {
        if (!OPERATOR_ID.test(operator)) {
          throw new ApprovalError('approval-forbidden', 403, `${JSON.stringify(operator.slice(0, 80))} is not an operator identity; only operators decide approvals`, {
            fix: 'decide with an operator token (`cordon approvals approve ID`)',
          });
        }
        if (verdict !== 'approve' && verdict !== 'deny') throw new ApprovalError('approval-bad-verdict', 400, 'a decision is approve or deny');
        await sweepNow();
        const r = await row(id);
        if (!r) throw new ApprovalError('approval-not-found', 404, `no approval ${id}`, { fix: 'list approvals with `cordon approvals ls`' });
        if (r.state !== 'pending') {
          throw new ApprovalError('approval-not-pending', 409, `approval ${id} is already ${r.state}${r.reason ? ` (${r.reason})` : ''}; it cannot be decided again`, {
            fix: 'the agent must ask again; its next identical request creates a new approval',
          });
        }
        const approvers = JSON.parse(r.approvers) as string[];
        const t = now();
        const text = reason?.slice(0, 1000);
        if (verdict === 'approve' && o.config.twoApprovers) {
          if (approvers.includes(operator)) {
            throw new ApprovalError('approval-same-approver', 409, `${operator} already approved ${id}; two different operators must approve`, {
              fix: 'a second operator, with an identity of their own, approves it',
            });
          }
          if (approvers.length === 0) {
            await o.audit.append({ type: 'approval.decided', actor: operator, ...who(r), decision: 'approve', reason: 'first-of-two', data: { id, actionHash: r.action_hash, approvers: [operator], final: false, ...(text ? { note: text } : {}) } });
            await db.updateTable('approvals').set({ approvers: JSON.stringify([operator]) }).where('id', '=', id).where('state', '=', 'pending').execute();
            return fromRow((await row(id))!);
          }
        }
        const all = verdict === 'approve' ? [...approvers, operator] : approvers;
        await o.audit.append({ type: 'approval.decided', actor: operator, ...who(r), decision: verdict, reason: verdict === 'approve' ? 'approved' : 'denied', data: { id, actionHash: r.action_hash, approvers: all, final: true, ...(text ? { note: text } : {}) } });
        const state: ApprovalState = verdict === 'approve' ? 'approved' : 'denied';
        const res = await db.updateTable('approvals')
          .set({ state, decided_at: t, decided_by: operator, reason: text ?? null, approvers: JSON.stringify(all), ...(verdict === 'approve' ? { expires_at: t + o.config.ttlMs } : {}) })
          .where('id', '=', id).where('state', '=', 'pending').executeTakeFirst();
        if (Number(res.numUpdatedRows) !== 1) throw new ApprovalError('approval-not-pending', 409, `approval ${id} changed while it was being decided`);
        wake(id, verdict === 'approve' ? 'approved' : 'denied');
        return fromRow((await row(id))!);
      });
    },

    consume: function consumeApproval(id, actionHash) {
      return serial(async (): Promise<ConsumeResult> => {
        const r = await row(id);
        if (!r) return { ok: false, reason: 'approval-not-found' };
        if (r.action_hash !== actionHash) return { ok: false, reason: 'approval-mismatch' };
        if (r.consumed_at !== null) return { ok: false, reason: 'approval-used' };
        if (r.state !== 'approved') return { ok: false, reason: r.state === 'expired' ? 'approval-expired' : 'approval-not-approved' };
        if (Number(r.expires_at) <= now()) {
          await expire(r, 'ttl');
          return { ok: false, reason: 'approval-expired' };
        }
        try {
          await o.audit.append({ type: 'approval.consumed', actor: `agent:${r.agent}`, ...who(r), decision: 'allow', reason: 'approved', data: { id, actionHash } });
        } catch {
          return { ok: false, reason: 'audit-unavailable' };
        }
        const res = await db.updateTable('approvals').set({ consumed_at: now() })
          .where('id', '=', id).where('state', '=', 'approved').where('consumed_at', 'is', null).where('action_hash', '=', actionHash).executeTakeFirst();
        return Number(res.numUpdatedRows) === 1 ? { ok: true } : { ok: false, reason: 'approval-used' };
      });
    },

    get: async function getApproval(id) {
      if (!APPROVAL_ID.test(id)) return undefined;
      await sweep();
      const r = await row(id);
      return r ? fromRow(r) : undefined;
    },

    list: async function listApprovals(filter = {}) {
      await sweep();
      let q = db.selectFrom('approvals').selectAll();
      if (filter.state) q = q.where('state', '=', filter.state);
      const rows = await q.orderBy('created_at', 'desc').limit(Math.min(Math.max(filter.limit ?? 100, 1), 1000)).execute();
      return rows.map(fromRow);
    },

    close: function closeApprovals() {
      closed = true;
      clearInterval(timer);
      for (const id of [...waiters.keys()]) wake(id, 'timeout');
    },
  };
}
