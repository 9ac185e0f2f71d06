/**
 * What `cordon demo` must have shown, judged from the audit log of the run
 * (and, for the two facts only the far end can see, from what the demo API
 * received): each expected outcome is a named check with the evidence that
 * met it, or the reason it was not met. Pure: events in, verdicts out.
 */
import type { AuditEvent, VerifyReport } from '../audit/index.js';
import { DEMO_API_HOST, DEMO_SECRET, type SeenRequest } from './api.js';

export const METADATA_HOST = '169.254.169.254';
export const UNLISTED_HOST = 'rates.unlisted-demo.net';

export type OutcomeId =
  | 'allowed-call-secret-swapped' | 'metadata-refused' | 'unlisted-refused'
  | 'approval-held' | 'approval-completed' | 'injection-flagged' | 'audit-verified';

export interface Outcome {
  id: OutcomeId;
  /** What should have happened, in words. */
  expected: string;
  ok: boolean;
  /** The evidence (event seqs and fields), or what was missing. */
  detail: string;
  /** Seqs of the events that show it. */
  seqs: number[];
}

export interface OutcomeInput {
  /** The run's events (after the run started), in seq order. */
  events: readonly AuditEvent[];
  sandboxId: string;
  seen: readonly SeenRequest[];
  verify: Pick<VerifyReport, 'ok'> & { message?: string; events?: number; checkpoints?: number; problem?: string } | undefined;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function egressOf(events: readonly AuditEvent[], sandboxId: string): AuditEvent[] {
  return events.filter((e) => e.type === 'egress.request' && e.sandbox === sandboxId);
}

/** Names of the secrets the proxy swapped into a request (`data.hook.secrets`: `{secret, header}` items). */
export function secretsNoted(e: Pick<AuditEvent, 'data'>): string[] {
  const hook = e.data.hook as { secrets?: unknown } | undefined;
  if (!Array.isArray(hook?.secrets)) return [];
  return hook.secrets.map((s: unknown) => (typeof s === 'string' ? s : String((s as { secret?: unknown } | null)?.secret ?? '')));
}

function fail(id: OutcomeId, expected: string, detail: string): Outcome {
  return { id, expected, ok: false, detail, seqs: [] };
}

function refusal(id: OutcomeId, expected: string, events: AuditEvent[], host: string): Outcome {
  const denied = events.find((e) => str(e.data.host) === host && e.decision === 'deny');
  if (denied) return { id, expected, ok: true, detail: `egress.request deny (${denied.reason ?? '?'}) for ${host}`, seqs: [denied.seq] };
  const allowed = events.find((e) => str(e.data.host) === host && e.decision === 'allow');
  return fail(id, expected, allowed ? `a request to ${host} was ALLOWED (seq ${allowed.seq})` : `the agent never tried ${host} (no egress.request names it)`);
}

/**
 * Judge a run.
 * @example judgeOutcomes({ events, sandboxId, seen: api.seen, verify }).every((o) => o.ok)
 */
export function judgeOutcomes(input: OutcomeInput): Outcome[] {
  const { events, sandboxId, seen } = input;
  const egress = egressOf(events, sandboxId);
  const out: Outcome[] = [];

  {
    const expected = `GET https://${DEMO_API_HOST}/v1/inbox allowed, the placeholder swapped for the real token at the proxy`;
    const ev = egress.find((e) => e.decision === 'allow' && str(e.data.host) === DEMO_API_HOST && str(e.data.method) === 'GET'
      && str(e.data.path).startsWith('/v1/inbox') && secretsNoted(e).includes(DEMO_SECRET));
    const got = seen.find((r) => r.method === 'GET' && r.path === '/v1/inbox');
    if (!ev) out.push(fail('allowed-call-secret-swapped', expected, 'no allowed egress.request for GET /v1/inbox that notes the secret substituted'));
    else if (!got || !got.realToken || got.status !== 200) {
      out.push(fail('allowed-call-secret-swapped', expected, got ? `the API got ${got.placeholder ? 'the placeholder' : 'no valid token'} (status ${got.status})` : 'the API never received the request'));
    } else out.push({ id: 'allowed-call-secret-swapped', expected, ok: true, detail: `egress.request allow, secrets [${secretsNoted(ev).join(', ')}] substituted; the API saw the real token`, seqs: [ev.seq] });
  }

  out.push(refusal('metadata-refused', `the cloud metadata endpoint ${METADATA_HOST} refused`, egress, METADATA_HOST));
  out.push(refusal('unlisted-refused', `the unlisted host ${UNLISTED_HOST} refused`, egress, UNLISTED_HOST));

  const requested = events.find((e) => e.type === 'approval.requested' && e.sandbox === sandboxId);
  const approvalId = requested ? str(requested.data.id) : '';
  {
    const expected = 'POST /v1/payments held for a human approval';
    out.push(requested
      ? { id: 'approval-held', expected, ok: true, detail: `approval.requested ${approvalId} (${requested.reason ?? ''})`, seqs: [requested.seq] }
      : fail('approval-held', expected, 'no approval.requested event for this sandbox'));
  }
  {
    const expected = 'the operator approved it and exactly that request went out once';
    const decided = events.find((e) => e.type === 'approval.decided' && str(e.data.id) === approvalId && e.decision === 'approve' && e.data.final === true);
    const consumed = events.find((e) => e.type === 'approval.consumed' && str(e.data.id) === approvalId);
    const sent = egress.find((e) => e.decision === 'allow' && str(e.data.approval) === approvalId && str(e.data.method) === 'POST');
    const paid = seen.filter((r) => r.method === 'POST' && r.path === '/v1/payments');
    if (!requested) out.push(fail('approval-completed', expected, 'nothing was held'));
    else if (!decided) out.push(fail('approval-completed', expected, `approval ${approvalId} was never approved (no approval.decided approve)`));
    else if (!consumed || !sent) out.push(fail('approval-completed', expected, `approval ${approvalId} was approved but the request was not released (consumed: ${!!consumed}, forwarded: ${!!sent})`));
    else if (paid.length !== 1 || !paid[0]!.realToken || paid[0]!.status !== 201) out.push(fail('approval-completed', expected, `the API received ${paid.length} payment request(s)${paid[0] ? ` (status ${paid[0].status})` : ''}`));
    else out.push({ id: 'approval-completed', expected, ok: true, detail: `approved by ${decided.actor}, used once, forwarded with the real token`, seqs: [decided.seq, consumed.seq, sent.seq] });
  }
  {
    const expected = 'the prompt injection in the inbox (a tool result) flagged by the gateway';
    const flagged = events.find((e) => e.type === 'llm.request' && e.sandbox === sandboxId && Array.isArray(e.data.hits)
      && (e.data.hits as Array<{ filter?: unknown }>).some((h) => h.filter === 'injection'));
    out.push(flagged
      ? { id: 'injection-flagged', expected, ok: true, detail: `llm.request hits: ${JSON.stringify(flagged.data.hits)}`, seqs: [flagged.seq] }
      : fail('injection-flagged', expected, 'no llm.request of this sandbox has an injection hit'));
  }
  {
    const expected = '`cordon audit verify` passes on the demo\'s log';
    const v = input.verify;
    out.push(v?.ok
      ? { id: 'audit-verified', expected, ok: true, detail: `${v.events ?? '?'} events, ${v.checkpoints ?? '?'} checkpoints, chain and signatures ok`, seqs: [] }
      : fail('audit-verified', expected, v ? `verify failed: ${v.problem ?? ''} ${v.message ?? ''}`.trim() : 'verify did not run'));
  }
  return out;
}
