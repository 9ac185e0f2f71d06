/**
 * Every attack of `cordon redteam`, in the order they run: escape, egress,
 * secrets, identity, approvals, the tools gateway, ingress tunnels, prompt
 * injection, and audit tampering last
 * (it hides the refusals the earlier attacks left in the log).
 */
import { compileGlob } from '../../util/index.js';
import type { Attack } from '../types.js';
import { approvalAttacks } from './approvals.js';
import { auditAttacks } from './audit.js';
import { egressAttacks } from './egress.js';
import { escapeAttacks } from './escape.js';
import { identityAttacks } from './identity.js';
import { ingressAttacks } from './ingress.js';
import { injectionAttacks } from './injection.js';
import { secretAttacks } from './secrets.js';
import { toolAttacks } from './tools.js';

export const ALL_ATTACKS: readonly Attack[] = [
  ...escapeAttacks, ...egressAttacks, ...secretAttacks, ...identityAttacks, ...approvalAttacks, ...toolAttacks, ...ingressAttacks, ...injectionAttacks, ...auditAttacks,
];

/**
 * The attacks whose id matches one of the patterns (`*` is a wildcard, e.g. `egress.*`), in run order.
 * @param patterns @default every attack
 */
export function selectAttacks(patterns: string[] = []): Attack[] {
  if (patterns.length === 0) return [...ALL_ATTACKS];
  const matchers = patterns.map((p) => compileGlob(p));
  return ALL_ATTACKS.filter((a) => matchers.some((m) => m(a.id)));
}
