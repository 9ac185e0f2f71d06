/**
 * Compiles an agent's `egress:` list once into a form that is cheap to ask per
 * request: host patterns checked, CIDR ranges as bytes, ports as sets, path
 * globs as matchers. A rule that cannot be read (it should have been refused
 * by the config loader) matches nothing; a path glob that cannot be read makes
 * a request that reaches it deny (`bad-rule`). Pure: no I/O.
 */
import { validateHostPattern, validateCidr } from '../config/index.js';
import { parsePrefix, prefixContains, unmapIpv4, type IpPrefix } from './ip/index.js';
import { compilePathGlob, type PathMatcher } from './egress-path.js';
import type { DecisionResult } from './index.js';

/** One `egress:` entry as written in the config (the loaded `EgressRule` type fits). */
export interface EgressRuleInput {
  host?: string;
  cidr?: string;
  /** @default [443, 80] */
  ports?: readonly number[];
  secrets?: Readonly<Record<string, string>>;
  rules?: ReadonlyArray<{ method?: string; path?: string; action: DecisionResult }>;
}

/** What the egress policy of one agent is made of. `{ agent: name, ...agentConfig }` fits. */
export interface EgressPolicy {
  /** Agent name, used in rule ids (`agents.<agent>.egress[0]`). */
  agent: string;
  egress: readonly EgressRuleInput[];
  /** `report` allows what the allowlist would deny and says so in `wouldDeny`. @default 'enforce' */
  egressMode?: 'enforce' | 'report';
  /**
   * Intercept TLS to every allowed host, not only those with method/path rules
   * or bound secrets, so that each request is visible (and scanned for
   * secrets). Always on when any rule binds a secret: an agent that holds a
   * placeholder must not be able to send it, or a real value, through a blind
   * tunnel. Set it for agents whose `env` carries secrets.
   * @default false (true when a rule has `secrets`)
   */
  interceptAll?: boolean;
}

/** Ports an egress rule allows when it names none. */
export const DEFAULT_EGRESS_PORTS: readonly number[] = Object.freeze([443, 80]);

export interface CompiledHttpRule {
  ruleId: string;
  method?: string;
  /** Undefined when the rule has no path (matches every path); `null` when its glob is malformed. */
  path?: PathMatcher | null;
  action: DecisionResult;
}

export interface CompiledRule {
  index: number;
  ruleId: string;
  /** Normalised host pattern, for `host:` rules. */
  host?: string;
  wildcard: boolean;
  cidr?: IpPrefix;
  ports: ReadonlySet<number>;
  /** Method/path rules; undefined when the rule has none (any request on an allowed connection). */
  http?: readonly CompiledHttpRule[];
  /** TLS interception is needed: the rule has method/path rules or bound secrets. */
  intercept: boolean;
}

export interface CompiledEgress {
  agent: string;
  mode: 'enforce' | 'report';
  rules: readonly CompiledRule[];
}

/** Compile a policy; never throws (unreadable parts match nothing). */
export function compileEgress(policy: EgressPolicy): CompiledEgress {
  const agent = typeof policy?.agent === 'string' && policy.agent.length > 0 ? policy.agent : 'unknown';
  const mode = policy?.egressMode === 'report' ? 'report' : 'enforce';
  const list = Array.isArray(policy?.egress) ? policy.egress : [];
  const interceptAll = policy?.interceptAll === true || list.some(hasBoundSecrets);
  const rules: CompiledRule[] = [];
  list.forEach((rule, index) => {
    const compiled = compileRule(agent, rule, index);
    if (compiled) rules.push(interceptAll ? { ...compiled, intercept: true } : compiled);
  });
  return { agent, mode, rules };
}

function compileRule(agent: string, rule: EgressRuleInput, index: number): CompiledRule | undefined {
  if (!rule || typeof rule !== 'object') return undefined;
  const ruleId = `agents.${agent}.egress[${index}]`;
  const portList = rule.ports === undefined ? DEFAULT_EGRESS_PORTS : Array.isArray(rule.ports) ? rule.ports : [];
  const ports = new Set(portList.filter((p) => Number.isInteger(p) && p >= 1 && p <= 65535));
  const http = Array.isArray(rule.rules) ? rule.rules.map((r, j) => compileHttpRule(`${ruleId}.rules[${j}]`, r)) : undefined;
  const base = { index, ruleId, ports, intercept: http !== undefined || hasBoundSecrets(rule), ...(http ? { http } : {}) };
  if (typeof rule.host === 'string' && rule.cidr === undefined) {
    const checked = validateHostPattern(rule.host);
    if (!checked.ok) return undefined;
    return { ...base, host: checked.normalized, wildcard: checked.normalized.startsWith('*.') };
  }
  if (typeof rule.cidr === 'string' && rule.host === undefined) {
    const checked = validateCidr(rule.cidr);
    const cidr = checked.ok ? parsePrefix(checked.normalized) : undefined;
    return cidr ? { ...base, cidr, wildcard: false } : undefined;
  }
  return undefined;
}

function hasBoundSecrets(rule: EgressRuleInput): boolean {
  return !!rule && typeof rule === 'object' && !!rule.secrets && typeof rule.secrets === 'object' && Object.keys(rule.secrets).length > 0;
}

function compileHttpRule(ruleId: string, rule: { method?: string; path?: string; action: DecisionResult }): CompiledHttpRule {
  const action = rule?.action === 'allow' || rule?.action === 'approve' ? rule.action : 'deny';
  const out: CompiledHttpRule = { ruleId, action };
  if (rule?.method !== undefined) out.method = String(rule.method).toUpperCase();
  if (rule?.path !== undefined) out.path = compilePathGlob(rule.path) ?? null;
  return out;
}

/**
 * Does a `cidr:` rule contain this address? An IPv4-mapped IPv6 address
 * (`::ffff:10.1.2.3`) counts as the IPv4 address it carries.
 */
export function cidrContains(rule: CompiledRule, bytes: Uint8Array): boolean {
  if (!rule.cidr) return false;
  return prefixContains(rule.cidr, bytes) || prefixContains(rule.cidr, unmapIpv4(bytes));
}
