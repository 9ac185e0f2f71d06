/**
 * The tool-call counterpart of the egress approval hook: a call that the
 * agent's `tools:` policy marks `approve` is described (arguments masked)
 * and bound to the hash of agent, sandbox, `<server>__<tool>` and the exact
 * arguments (see `toolAction`), held until an operator decides or
 * `holdTimeoutMs` passes (a timeout denies), and then uses the approval:
 * one approval permits exactly one execution of exactly those arguments.
 */
import { holdAction, toolAction, type Approvals, type MaskSource } from '../approvals/index.js';

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
  const held = await holdAction(approvals, () => toolAction(input, o.mask ?? {}), { holdTimeoutMs: o.holdTimeoutMs, signal: o.signal });
  // Unlike the egress hook, a step that throws is a refusal like any other (audited by the caller), never an unrecorded error.
  switch (held.kind) {
    case 'used':
      return { ok: true, approvalId: held.approvalId };
    case 'flood':
      return { ok: false, reason: 'approval-flood', problem: held.error.message };
    case 'request-failed':
      return { ok: false, reason: 'approval-failed', problem: `the approval for ${what} could not be requested: ${messageOf(held.error)}` };
    case 'wait-failed':
      return { ok: false, approvalId: held.approvalId, reason: 'approval-failed', problem: `the approval ${held.approvalId} for ${what} could not be awaited: ${messageOf(held.error)}` };
    case 'use-failed':
      return { ok: false, approvalId: held.approvalId, reason: 'approval-failed', problem: `approval ${held.approvalId} for ${what} could not be used: ${messageOf(held.error)}` };
    case 'unusable':
      return {
        ok: false, approvalId: held.approvalId, reason: held.reason, state: held.reason === 'approval-used' ? 'used' : 'expired',
        problem: `approval ${held.approvalId} could not be used for ${what} (${held.reason}); an approval permits exactly one execution, so call again to ask for a new one`,
      };
    case 'denied':
      return { ok: false, approvalId: held.approvalId, reason: 'approval-denied', state: 'denied', problem: `an operator denied ${what} with these arguments (approval ${held.approvalId}); do not retry the same call` };
    case 'timeout':
      return {
        ok: false, approvalId: held.approvalId, reason: 'approval-timeout', state: 'expired',
        problem: `approval ${held.approvalId} for ${what} was still pending after ${o.holdTimeoutMs} ms, so the call was denied (a timeout denies). An operator can see it with \`cordon approvals ls\`; call again to ask again`,
      };
    default:
      return { ok: false, approvalId: held.approvalId, reason: 'approval-expired', state: 'expired', problem: `approval ${held.approvalId} for ${what} expired before it was used; call again to ask again` };
  }
}

/** A thrown error's message, or the thrown value itself when it has none. */
function messageOf(err: unknown): unknown {
  return (err as Error)?.message ?? err;
}
