/**
 * The gateway's audit events. Content (prompts, outputs, tool arguments) is
 * never recorded: only who, which provider and model, token counts, timing,
 * the decision and the names of the filters that fired.
 *
 * - `llm.request`: before anything is sent upstream (allow), or when a
 *   request is refused (deny). An allow that cannot be written refuses the
 *   request: nothing reaches a provider unaudited.
 * - `llm.response`: when a forwarded call is over, with its outcome.
 * - `llm.auth`: a refused authentication.
 */
import type { AuditEventInput } from '../audit/index.js';
import type { OutputHit } from './filters/output.js';
import type { ApiKind } from './types.js';

/** Where events go; `AuditLog` fits. `append` must reject when the event is not durable. */
export interface GatewayAuditSink {
  append(event: AuditEventInput): Promise<unknown>;
}

/** A filter that fired, without the content it fired on. */
export interface FilterHit {
  filter: 'redact' | 'deny-pattern' | 'injection' | 'server-tool' | OutputHit['filter'];
  rule: string;
  action: 'redact' | 'block' | 'flag';
  count?: number;
  segment?: string;
  score?: number;
  host?: string;
}

export type CallOutcome =
  | 'ok' | 'blocked' | 'upstream-status' | 'upstream-error' | 'upstream-timeout' | 'upstream-cut' | 'upstream-malformed' | 'client-closed';

export interface RequestEventData {
  requestId: string;
  api?: ApiKind;
  /** For requests that match no route. */
  path?: string;
  provider?: string;
  model?: string;
  stream?: boolean;
  estimateTokens?: number;
  hits?: FilterHit[];
}

export interface ResponseEventData {
  requestId: string;
  api: ApiKind;
  provider: string;
  model: string;
  stream: boolean;
  status: number;
  outcome: CallOutcome;
  tokensIn: number;
  tokensOut: number;
  /** False when the provider reported no usage and the counts are estimates. */
  usageReported: boolean;
  latencyMs: number;
  firstByteMs?: number;
  hits?: FilterHit[];
}

export interface Who {
  agent?: string;
  sandboxId?: string;
}

function actorOf(who: Who): string {
  if (who.agent) return `agent:${who.agent}`;
  if (who.sandboxId) return `sandbox:${who.sandboxId}`;
  return 'anonymous';
}

function base(type: string, who: Who): AuditEventInput {
  const e: AuditEventInput = { type, actor: actorOf(who) };
  if (who.agent) e.agent = who.agent;
  if (who.sandboxId) e.sandbox = who.sandboxId;
  return e;
}

export function requestEvent(who: Who, decision: 'allow' | 'deny', reason: string, data: RequestEventData): AuditEventInput {
  return { ...base('llm.request', who), decision, reason, data: compact(data) };
}

export function responseEvent(who: Who, data: ResponseEventData): AuditEventInput {
  const decision = data.outcome === 'blocked' ? 'deny' : 'allow';
  return { ...base('llm.response', who), decision, reason: data.outcome, data: compact(data) };
}

export function authEvent(who: Who, reason: string, data: { requestId: string; path: string }): AuditEventInput {
  return { ...base('llm.auth', who), decision: 'deny', reason, data };
}

/** Drop undefined fields and empty hit lists (canonical JSON refuses undefined). */
function compact<T extends object>(data: T): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(data)) {
    if (v === undefined) continue;
    if (Array.isArray(v) && v.length === 0) continue;
    out[k] = v;
  }
  return out;
}
