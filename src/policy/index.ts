/**
 * policy/: pure decision code. No I/O: config in, `Decision` out. Every door
 * (proxy, gateway, tools, API) asks here and logs the answer; none decides alone.
 */

/** What a door must do. `report` mode turns a `deny` into an allowed action that is logged as would-deny. */
export type DecisionResult = 'allow' | 'deny' | 'approve';

/** A decision is a value: what, why (a stable machine-readable reason), and which rule said so. */
export interface Decision {
  result: DecisionResult;
  /** Stable reason code, e.g. `host-not-allowed`, `private-address`. */
  reason: string;
  /** The rule that decided, e.g. `agents.reviewer.egress[0]`; undefined for the default. */
  ruleId?: string;
}

/** The default for anything no rule allows. */
export const DEFAULT_DENY: Decision = Object.freeze({ result: 'deny', reason: 'no-rule-allows' });

/**
 * Wraps a decider so that a throw means deny (fail closed).
 * @example const safe = failClosed(decideEgress); safe(req) // never throws
 */
export function failClosed<A extends unknown[], D extends Decision = Decision>(decide: (...args: A) => D): (...args: A) => D | Decision {
  return function decideOrDeny(...args: A): D | Decision {
    try {
      const d = decide(...args);
      if (!d || (d.result !== 'allow' && d.result !== 'deny' && d.result !== 'approve')) {
        return { result: 'deny', reason: 'policy-error' };
      }
      return d;
    } catch {
      return { result: 'deny', reason: 'policy-error' };
    }
  };
}

export {
  decideEgress, createEgressDecider, EGRESS_REASONS,
  type EgressRequest, type EgressDecision, type EgressReason,
} from './egress.js';
export {
  decideEgressAddress, createAddressDecider, UNOVERRIDABLE_ADDRESS_REASONS,
  type AddressRequest, type AddressDecision, type AddressDeciderOptions,
} from './egress-address.js';
export { compileEgress, DEFAULT_EGRESS_PORTS, type EgressPolicy, type EgressRuleInput } from './egress-rules.js';
export { normalizeDestination, INTERNAL_SERVICES, type Destination, type InternalServiceName } from './egress-host.js';
export { normalizeRequestPath, compilePathGlob, MAX_PATH_CHARS, type PathMatcher } from './egress-path.js';
