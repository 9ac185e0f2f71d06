/**
 * The egress decision: may this sandbox's agent open this connection, or send
 * this HTTP request? Pure: the proxy asks, logs the answer, and obeys.
 *
 * Order of checks: request shape (port, scheme, method, path) → host kind
 * (bad, internal service, IP literal, name) → the first egress rule whose host
 * (or CIDR) and port match → that rule's method/path rules, when it has some.
 * Host rules: exact names win over `*.` wildcards; within each kind, file order.
 * An intercepted host (method/path rules or bound secrets) is allowed at the
 * connection level with `intercept: true`; the proxy must then ask again for
 * every request inside the tunnel, with method and path.
 *
 * A host with method/path rules where no rule matches the request is denied
 * (`no-path-rule`): listing rules means "only these", the same default-deny
 * as for hosts. In `report` mode, denials by the allowlist (host, port, IP
 * literal, path rules) become allows that carry `wouldDeny`; refusals of
 * malformed input and unknown internal names are never relaxed, and address
 * checks after DNS ({@link decideEgressAddress}) are never relaxed either.
 */
import { hostMatches } from '../config/index.js';
import { DENY_REASONS } from './ip/index.js';
import { normalizeDestination, type InternalServiceName } from './egress-host.js';
import { normalizeRequestPath } from './egress-path.js';
import { compileEgress, cidrContains, type CompiledEgress, type CompiledRule, type EgressPolicy } from './egress-rules.js';
import type { Decision } from './index.js';

/** Every reason an egress decision can carry. Stable kebab-case strings: they appear in audit events and `X-Cordon-Error`. */
export const EGRESS_REASONS = [
  // allow
  'host-allowed', 'cidr-allowed', 'internal', 'public-address', 'report-only',
  // decided by a method/path rule (allow, deny or approve)
  'path-rule',
  // deny by the allowlist (relaxed in report mode)
  'host-not-allowed', 'port-not-allowed', 'ip-literal', 'no-path-rule',
  // deny, never relaxed
  'internal-unknown', 'bad-host', 'bad-port', 'bad-method', 'bad-path', 'bad-request', 'bad-rule', 'policy-error',
  // deny after DNS: the classifier's reason with "-address"
  ...DENY_REASONS.map((r) => `${r}-address` as const),
] as const;
export type EgressReason = (typeof EGRESS_REASONS)[number];

/** Reasons that `report` mode turns into an allow with `wouldDeny`. */
const REPORTABLE: ReadonlySet<string> = new Set(['host-not-allowed', 'port-not-allowed', 'ip-literal', 'no-path-rule', 'path-rule']);

/** Ports on which the internal services answer. */
const INTERNAL_PORTS: ReadonlySet<number> = new Set([80, 443]);

export interface EgressRequest {
  /** Host as the client sent it (CONNECT authority, Host header or absolute URI), without the port. */
  host: string;
  port: number;
  /** HTTP method, when the request is visible (plain HTTP, or inside an intercepted tunnel). */
  method?: string;
  /** Request path (origin form, query allowed), when the request is visible. */
  path?: string;
  /** How the request arrived: a plain HTTP proxy request, a request inside intercepted TLS, or a CONNECT. */
  scheme?: 'http' | 'https' | 'connect';
}

export interface EgressDecision extends Decision {
  /** Set when the agent runs in report mode. */
  mode?: 'report';
  /** In report mode: what enforce mode would have decided. */
  wouldDeny?: Decision;
  /** The proxy must intercept TLS and ask again per request (method/path rules or bound secrets). */
  intercept?: boolean;
  /** Index of the deciding entry in the agent's `egress:` list. */
  ruleIndex?: number;
  /** Route to this cordon service instead of the internet. */
  internal?: InternalServiceName;
  /** Normalised destination: lower-case name without trailing dot, or canonical IP text. */
  host?: string;
}

/**
 * Build a decider for one agent's policy (compiled once; ask it per connection and per request).
 * @param policy `{ agent: name, egress, egressMode }`, e.g. `{ agent: 'reviewer', ...config.agents.reviewer }`.
 * @example
 * const decide = createEgressDecider({ agent: 'reviewer', egress: [{ host: 'api.github.com' }] });
 * decide({ host: 'api.github.com', port: 443, scheme: 'connect' })
 * // { result: 'allow', reason: 'host-allowed', ruleId: 'agents.reviewer.egress[0]', ruleIndex: 0, host: 'api.github.com' }
 */
export function createEgressDecider(policy: EgressPolicy): (req: EgressRequest) => EgressDecision {
  const compiled = compileEgress(policy);
  return function decideEgressRequest(req: EgressRequest): EgressDecision {
    const decision = decideEnforced(compiled, req);
    if (compiled.mode !== 'report') return decision;
    if (decision.result !== 'deny' || !REPORTABLE.has(decision.reason)) return { ...decision, mode: 'report' };
    const wouldDeny: Decision = { result: 'deny', reason: decision.reason };
    if (decision.ruleId !== undefined) wouldDeny.ruleId = decision.ruleId;
    const { result: _r, reason: _why, ruleId: _id, ...rest } = decision;
    return { ...rest, result: 'allow', reason: 'report-only', mode: 'report', wouldDeny };
  };
}

/**
 * Decide one egress request. Compiles the policy each call: prefer {@link createEgressDecider} on hot paths.
 * Wrap with `failClosed` at the door; this function is written not to throw, the wrapper guarantees it.
 */
export function decideEgress(policy: EgressPolicy, req: EgressRequest): EgressDecision {
  return createEgressDecider(policy)(req);
}

function deny(reason: EgressReason, extra: Partial<EgressDecision> = {}): EgressDecision {
  return { result: 'deny', reason, ...extra };
}

function decideEnforced(policy: CompiledEgress, req: EgressRequest): EgressDecision {
  if (!req || typeof req !== 'object') return deny('bad-request');
  const { port, scheme } = req;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return deny('bad-port');
  if (scheme !== undefined && scheme !== 'http' && scheme !== 'https' && scheme !== 'connect') return deny('bad-request');
  const dest = normalizeDestination(req.host);
  switch (dest.kind) {
    case 'bad':
      return deny('bad-host');
    case 'internal':
      if (!dest.service) return deny('internal-unknown', { host: dest.host });
      if (!INTERNAL_PORTS.has(port)) return deny('port-not-allowed', { host: dest.host });
      return { result: 'allow', reason: 'internal', internal: dest.service, host: dest.host };
    case 'ip': {
      const inRange = policy.rules.filter((r) => cidrContains(r, dest.ip.bytes));
      const rule = inRange.find((r) => r.ports.has(port));
      if (rule) return applyHttpRules(rule, req, 'cidr-allowed', dest.host);
      if (inRange[0]) return deny('port-not-allowed', { ruleId: inRange[0].ruleId, ruleIndex: inRange[0].index, host: dest.host });
      return deny('ip-literal', { host: dest.host });
    }
    case 'name': {
      const matching = hostRulesFor(policy, dest.host);
      const rule = matching.find((r) => r.ports.has(port));
      if (rule) return applyHttpRules(rule, req, 'host-allowed', dest.host);
      if (matching[0]) return deny('port-not-allowed', { ruleId: matching[0].ruleId, ruleIndex: matching[0].index, host: dest.host });
      return deny('host-not-allowed', { host: dest.host });
    }
  }
}

/** Host rules matching `host`: exact names first, then wildcards, each in file order. */
function hostRulesFor(policy: CompiledEgress, host: string): CompiledRule[] {
  const hits = policy.rules.filter((r) => r.host !== undefined && hostMatches(r.host, host));
  return [...hits.filter((r) => !r.wildcard), ...hits.filter((r) => r.wildcard)];
}

function applyHttpRules(rule: CompiledRule, req: EgressRequest, allowReason: EgressReason, host: string): EgressDecision {
  const base: Partial<EgressDecision> = { ruleId: rule.ruleId, ruleIndex: rule.index, host };
  if (rule.intercept) base.intercept = true;
  if (!rule.http) return { result: 'allow', reason: allowReason, ...base };
  const { method, path } = req;
  if (method === undefined && path === undefined) {
    // Connection level (CONNECT): allowed so that the proxy can intercept and ask per request.
    if (req.scheme === 'http' || req.scheme === 'https') return deny('bad-request', base);
    return { result: 'allow', reason: allowReason, ...base };
  }
  if (method === undefined || path === undefined) return deny('bad-request', base);
  if (typeof method !== 'string' || !/^[A-Za-z]{1,32}$/.test(method)) return deny('bad-method', base);
  const normalized = normalizeRequestPath(path);
  if (normalized === undefined) return deny('bad-path', base);
  const upper = method.toUpperCase();
  for (const r of rule.http) {
    if (r.method !== undefined && r.method !== upper) continue;
    if (r.path === null) return deny('bad-rule', { ...base, ruleId: r.ruleId });
    if (r.path !== undefined && !r.path(normalized)) continue;
    return { ...base, result: r.action, reason: 'path-rule', ruleId: r.ruleId };
  }
  return deny('no-path-rule', base);
}
