/**
 * The hold flow every door shares (the egress hook, the tools gateway): build
 * the action (marked when its sandbox is supervised), ask for an approval,
 * wait for an operator up to `holdTimeoutMs` (a timeout denies), and use the
 * approval exactly once. Only `used` lets the action through. The outcome
 * says which step ended the hold and keeps the error of a step that threw;
 * each door turns it into its own refusal text (the texts differ, the flow
 * does not). The approvals themselves write the audit events
 * (`approval.requested`, `.expired`, `.consumed`, `.refused`).
 */
import type { BuiltAction } from './action.js';
import type { Approvals, ConsumeResult } from './approvals.js';
import { ApprovalError } from './errors.js';

/** Why a granted approval could not be used (`consume`'s refusal). */
export type UnusableReason = Extract<ConsumeResult, { ok: false }>['reason'];

export type HoldOutcome =
  /** Granted and used for this action: the one outcome that lets it through. */
  | { kind: 'used'; approvalId: string }
  /** Too many approvals pending; `error.message` names the fix. */
  | { kind: 'flood'; error: ApprovalError }
  /** Building the action or asking for the approval threw. */
  | { kind: 'request-failed'; error: unknown }
  /** Waiting for the decision threw. */
  | { kind: 'wait-failed'; approvalId: string; error: unknown }
  | { kind: 'denied'; approvalId: string }
  /** Nobody decided within `holdTimeoutMs`. */
  | { kind: 'timeout'; approvalId: string }
  | { kind: 'expired'; approvalId: string }
  /** Granted, but `consume` refused it (replayed, expired meanwhile, audit down, ...). */
  | { kind: 'unusable'; approvalId: string; reason: UnusableReason }
  /** Granted, but `consume` threw. */
  | { kind: 'use-failed'; approvalId: string; error: unknown };

export interface HoldOptions {
  /** How long to wait for an operator's decision. */
  holdTimeoutMs: number;
  /** Aborts the wait when the caller goes away (the approval then expires). @default never */
  signal?: AbortSignal | undefined;
}

/**
 * Hold one action until it is decided and, when granted, used.
 * @param build makes the action; called once, and a throw is `request-failed`
 * @example
 * const held = await holdAction(approvals, () => toolAction(input, mask), { holdTimeoutMs: 60_000 });
 * if (held.kind === 'used') run();
 */
export async function holdAction(approvals: Approvals, build: () => BuiltAction, o: HoldOptions): Promise<HoldOutcome> {
  let ticket;
  try {
    const built = build();
    const mark = approvals.supervisedMark(built.action.sandboxId);
    if (mark) built.action.supervised = { alertId: mark.alertId, reason: mark.reason };
    ticket = await approvals.request(built);
  } catch (error) {
    if (error instanceof ApprovalError && error.code === 'approval-flood') return { kind: 'flood', error };
    return { kind: 'request-failed', error };
  }
  const approvalId = ticket.id;
  let outcome;
  try {
    outcome = await ticket.wait(o.holdTimeoutMs, o.signal);
  } catch (error) {
    return { kind: 'wait-failed', approvalId, error };
  }
  if (outcome !== 'approved') return { kind: outcome, approvalId };
  let used;
  try {
    used = await approvals.consume(ticket.id, ticket.hash);
  } catch (error) {
    return { kind: 'use-failed', approvalId, error };
  }
  return used.ok ? { kind: 'used', approvalId } : { kind: 'unusable', approvalId, reason: used.reason };
}
