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
import { holdAction } from './hold.js';

export interface EgressHookOptions {
  /** How long a request waits for a decision. */
  holdTimeoutMs: number;
  /** Secret values of a sandbox to mask in what the approver sees. @default placeholder shapes only */
  mask?: (sandboxId: string) => MaskSource;
}

/** Build the hook that `createEgressProxy({ approve })` takes. */
export function egressApprovalHook(approvals: Approvals, o: EgressHookOptions): EgressApprovalHook {
  return async function holdEgressRequest(held, signal) {
    const outcome = await holdAction(approvals, () => egressAction(
      { agent: held.agent, sandboxId: held.sandboxId, method: held.method, url: held.url, headers: held.headers, body: held.body },
      o.mask?.(held.sandboxId) ?? {},
    ), { holdTimeoutMs: o.holdTimeoutMs, signal });
    const what = `${held.method} ${held.url.slice(0, 300)}`;
    switch (outcome.kind) {
      case 'used':
        return { ok: true, approvalId: outcome.approvalId };
      // A step that threw rejects the hook; the proxy refuses with `approval-failed` and the error's message.
      case 'request-failed':
      case 'wait-failed':
      case 'use-failed':
        throw outcome.error;
      case 'flood':
        return { ok: false, reason: 'approval-flood', problem: outcome.error.message };
      case 'unusable': {
        const { approvalId } = outcome;
        // Unlike the tools gateway, only these reasons reach the client as they are; any other is `approval-failed`.
        const reason = outcome.reason === 'approval-used' || outcome.reason === 'approval-expired' || outcome.reason === 'audit-unavailable' ? outcome.reason : 'approval-failed';
        return { ok: false, approvalId, reason, problem: `approval ${approvalId} could not be used for ${what} (${outcome.reason}); an approval permits exactly one execution, so send the request again to ask for a new one` };
      }
      case 'denied':
        return { ok: false, approvalId: outcome.approvalId, reason: 'approval-denied', problem: `an operator denied ${what} (approval ${outcome.approvalId})` };
      case 'timeout':
        return { ok: false, approvalId: outcome.approvalId, reason: 'approval-timeout', problem: `nobody decided ${what} within ${o.holdTimeoutMs} ms (approval ${outcome.approvalId}); a timeout denies. Ask an operator to watch \`cordon approvals ls\`, then retry` };
      default:
        return { ok: false, approvalId: outcome.approvalId, reason: 'approval-expired', problem: `approval ${outcome.approvalId} for ${what} expired before it was used` };
    }
  };
}
