/**
 * The tool-call counterpart of the egress approval hook: a call that the
 * agent's `tools:` policy marks `approve` is described (arguments masked)
 * and bound to the hash of agent, sandbox, `<server>__<tool>` and the exact
 * arguments (see `toolAction`), held until an operator decides or
 * `holdTimeoutMs` passes (a timeout denies), and then uses the approval:
 * one approval permits exactly one execution of exactly those arguments.
 */
import { toolAction, ApprovalError, type Approvals, type MaskSource } from '../approvals/index.js';

export type ToolHoldResult =
  | { ok: true; approvalId: string }
  | { ok: false; reason: string; problem: string; approvalId?: string; state?: 'pending' | 'denied' | 'expired' | 'used' };

export interface ToolHoldInput {
  agent: string;
  sandboxId: string;
  /** The agent-facing name, `<server>__<tool>`. */
  toolName: string;
  args: unknown;
}

/**
 * Hold one call until it is decided; resolves `ok` only when an approval was granted and used for it.
 * @param signal aborts the wait when the caller goes away (the approval then expires)
 */
export async function holdToolCall(approvals: Approvals | undefined, input: ToolHoldInput, o: { holdTimeoutMs: number; mask?: MaskSource; signal?: AbortSignal }): Promise<ToolHoldResult> {
  const what = `tool ${input.toolName}`;
  if (!approvals) return { ok: false, reason: 'approval-not-available', problem: `${what} needs a human approval, and approvals are not running in this deployment` };
  let ticket;
  try {
    const built = toolAction(input, o.mask ?? {});
    const mark = approvals.supervisedMark(input.sandboxId);
    if (mark) built.action.supervised = { alertId: mark.alertId, reason: mark.reason };
    ticket = await approvals.request(built);
  } catch (err) {
    if (err instanceof ApprovalError && err.code === 'approval-flood') return { ok: false, reason: 'approval-flood', problem: err.message };
    return { ok: false, reason: 'approval-failed', problem: `the approval for ${what} could not be requested: ${(err as Error)?.message ?? err}` };
  }
  const approvalId = ticket.id;
  // A wait or use that throws is a refusal like any other (audited by the caller), never an unrecorded error.
  let outcome;
  try {
    outcome = await ticket.wait(o.holdTimeoutMs, o.signal);
  } catch (err) {
    return { ok: false, approvalId, reason: 'approval-failed', problem: `the approval ${approvalId} for ${what} could not be awaited: ${(err as Error)?.message ?? err}` };
  }
  switch (outcome) {
    case 'approved': {
      let used;
      try {
        used = await approvals.consume(ticket.id, ticket.hash);
      } catch (err) {
        return { ok: false, approvalId, reason: 'approval-failed', problem: `approval ${approvalId} for ${what} could not be used: ${(err as Error)?.message ?? err}` };
      }
      if (used.ok) return { ok: true, approvalId };
      return {
        ok: false, approvalId, reason: used.reason, state: used.reason === 'approval-used' ? 'used' : 'expired',
        problem: `approval ${approvalId} could not be used for ${what} (${used.reason}); an approval permits exactly one execution, so call again to ask for a new one`,
      };
    }
    case 'denied':
      return { ok: false, approvalId, reason: 'approval-denied', state: 'denied', problem: `an operator denied ${what} with these arguments (approval ${approvalId}); do not retry the same call` };
    case 'timeout':
      return {
        ok: false, approvalId, reason: 'approval-timeout', state: 'expired',
        problem: `approval ${approvalId} for ${what} was still pending after ${o.holdTimeoutMs} ms, so the call was denied (a timeout denies). An operator can see it with \`cordon approvals ls\`; call again to ask again`,
      };
    default:
      return { ok: false, approvalId, reason: 'approval-expired', state: 'expired', problem: `approval ${approvalId} for ${what} expired before it was used; call again to ask again` };
  }
}
