/**
 * The egress proxy's approval hook: describes a held request (secrets
 * masked), asks for an approval, waits up to `holdTimeoutMs`, and uses the
 * approval for exactly this request. Anything but a granted and used
 * approval is a refusal with a reason the client sees in `X-Cordon-Error`:
 * `approval-denied`, `approval-timeout` (a timeout denies), `approval-expired`,
 * `approval-used` (replay), `approval-flood`.
 *
 * @example
 * createEgressProxy({ …, approve: egressApprovalHook(approvals, { holdTimeoutMs: config.approvals.holdTimeoutMs }) });
 */
import type { EgressApprovalHook } from '../egress/index.js';
import { egressAction, type MaskSource } from './action.js';
import type { Approvals } from './approvals.js';
import { ApprovalError } from './errors.js';

export interface EgressHookOptions {
  /** How long a request waits for a decision. */
  holdTimeoutMs: number;
  /** Secret values of a sandbox to mask in what the approver sees. @default placeholder shapes only */
  mask?: (sandboxId: string) => MaskSource;
}

/** Build the hook that `createEgressProxy({ approve })` takes. */
export function egressApprovalHook(approvals: Approvals, o: EgressHookOptions): EgressApprovalHook {
  return async function holdEgressRequest(held, signal) {
    const built = egressAction(
      { agent: held.agent, sandboxId: held.sandboxId, method: held.method, url: held.url, headers: held.headers, body: held.body },
      o.mask?.(held.sandboxId) ?? {},
    );
    const mark = approvals.supervisedMark(held.sandboxId);
    if (mark) built.action.supervised = { alertId: mark.alertId, reason: mark.reason };
    let ticket;
    try {
      ticket = await approvals.request(built);
    } catch (err) {
      if (err instanceof ApprovalError && err.code === 'approval-flood') return { ok: false, reason: 'approval-flood', problem: err.message };
      throw err;
    }
    const approvalId = ticket.id;
    const outcome = await ticket.wait(o.holdTimeoutMs, signal);
    const what = `${held.method} ${held.url.slice(0, 300)}`;
    switch (outcome) {
      case 'approved': {
        const used = await approvals.consume(ticket.id, ticket.hash);
        if (used.ok) return { ok: true, approvalId };
        const reason = used.reason === 'approval-used' || used.reason === 'approval-expired' || used.reason === 'audit-unavailable' ? used.reason : 'approval-failed';
        return { ok: false, approvalId, reason, problem: `approval ${approvalId} could not be used for ${what} (${used.reason}); an approval permits exactly one execution, so send the request again to ask for a new one` };
      }
      case 'denied':
        return { ok: false, approvalId, reason: 'approval-denied', problem: `an operator denied ${what} (approval ${approvalId})` };
      case 'timeout':
        return { ok: false, approvalId, reason: 'approval-timeout', problem: `nobody decided ${what} within ${o.holdTimeoutMs} ms (approval ${approvalId}); a timeout denies. Ask an operator to watch \`cordon approvals ls\`, then retry` };
      default:
        return { ok: false, approvalId, reason: 'approval-expired', problem: `approval ${approvalId} for ${what} expired before it was used` };
    }
  };
}
