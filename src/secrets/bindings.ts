/**
 * Where each secret may go: the header templates of an agent's `egress:`
 * host rules (`secrets: { authorization: "Bearer {{secret.github_token}}" }`).
 * A request is governed by the same rule the egress policy picks: rules
 * naming the host exactly first, then wildcard rules, each in file order,
 * the first whose ports include the request's port. Pass the decision's
 * `ruleIndex` to use exactly the rule that allowed the request.
 */
import { hostMatches, scanTemplate, type EgressRule } from '../config/index.js';

/** One header a rule sets, with the secrets its template refers to. */
export interface HeaderBinding {
  /** Lower-case header name. */
  header: string;
  template: string;
  secrets: readonly string[];
}

/** A host rule of the agent, with the headers it binds (possibly none). */
export interface SecretRule {
  /** Index in the agent's `egress:` list. */
  index: number;
  /** e.g. `agents.reviewer.egress[0]`. */
  ruleId: string;
  /** Lower-case host pattern. */
  host: string;
  wildcard: boolean;
  ports: ReadonlySet<number>;
  headers: readonly HeaderBinding[];
}

/** Where a request goes; `port` and `ruleIndex` narrow the rule as the policy did. */
export interface RequestTarget {
  host: string;
  port?: number;
  /** The `ruleIndex` of the egress decision that allowed the request. */
  ruleIndex?: number;
}

/** Compile the host rules of an agent's `egress:` list. */
export function compileSecretRules(agentName: string, egress: readonly Pick<EgressRule, 'host' | 'ports' | 'secrets'>[]): SecretRule[] {
  const rules: SecretRule[] = [];
  egress.forEach((rule, index) => {
    if (rule.host === undefined) return;
    const host = rule.host.toLowerCase().replace(/\.$/, '');
    const headers = Object.entries(rule.secrets ?? {}).map(([header, template]) => ({
      header: header.toLowerCase(),
      template,
      secrets: scanTemplate(template).secrets,
    }));
    rules.push({ index, ruleId: `agents.${agentName}.egress[${index}]`, host, wildcard: host.startsWith('*.'), ports: new Set(rule.ports ?? [443, 80]), headers });
  });
  return rules;
}

/** The rule that governs a request to `target`, or undefined when none does. */
export function ruleFor(rules: readonly SecretRule[], target: RequestTarget): SecretRule | undefined {
  if (typeof target.host !== 'string') return undefined;
  if (target.ruleIndex !== undefined) {
    const rule = rules.find((r) => r.index === target.ruleIndex);
    return rule && hostMatches(rule.host, target.host) ? rule : undefined;
  }
  const hits = rules.filter((r) => hostMatches(r.host, target.host));
  const ordered = [...hits.filter((r) => !r.wildcard), ...hits.filter((r) => r.wildcard)];
  return target.port === undefined ? ordered[0] : ordered.find((r) => r.ports.has(target.port!));
}

/** Whether the rule governing `target` binds `secret` to any header. */
export function isBound(rules: readonly SecretRule[], secret: string, target: RequestTarget): boolean {
  return ruleFor(rules, target)?.headers.some((h) => h.secrets.includes(secret)) ?? false;
}
