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

function envelope(type: string, who: Who, decision: 'allow' | 'deny', reason: string, data: Record<string, unknown>): AuditEventInput {
  const e: AuditEventInput = { type, actor: actorOf(who), decision, reason, data };
  if (who.agent) e.agent = who.agent;
  if (who.sandboxId) e.sandbox = who.sandboxId;
  return e;
}

/** An empty hit list is left out. */
const someHits = (hits: FilterHit[] | undefined): FilterHit[] | undefined => (hits !== undefined && hits.length > 0 ? hits : undefined);

// The data objects below list their keys in canonical (code-unit) order, so
// the audit log can render them with the native JSON writer; absent fields
// are undefined members, which canonical JSON leaves out.

export function requestEvent(who: Who, decision: 'allow' | 'deny', reason: string, d: RequestEventData): AuditEventInput {
  return envelope('llm.request', who, decision, reason, {
    api: d.api, estimateTokens: d.estimateTokens, hits: someHits(d.hits), model: d.model, path: d.path,
    provider: d.provider, requestId: d.requestId, stream: d.stream,
  });
}

export function responseEvent(who: Who, d: ResponseEventData): AuditEventInput {
  return envelope('llm.response', who, d.outcome === 'blocked' ? 'deny' : 'allow', d.outcome, {
    api: d.api, firstByteMs: d.firstByteMs, hits: someHits(d.hits), latencyMs: d.latencyMs, model: d.model, outcome: d.outcome,
    provider: d.provider, requestId: d.requestId, status: d.status, stream: d.stream, tokensIn: d.tokensIn, tokensOut: d.tokensOut,
    usageReported: d.usageReported,
  });
}

export function authEvent(who: Who, reason: string, data: { requestId: string; path: string }): AuditEventInput {
  return envelope('llm.auth', who, 'deny', reason, { path: data.path, requestId: data.requestId });
}
