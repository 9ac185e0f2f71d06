/**
 * The egress decision after DNS: may the proxy dial this resolved address?
 * The proxy resolves the host itself, asks here for the exact address it is
 * about to dial, and dials only an address that was allowed (no rebinding
 * window). Non-public addresses (private, loopback, link-local, CGNAT, IPv6
 * forms embedding such an IPv4, …) are refused unless one of the agent's
 * `cidr:` rules covers the address and the port: an operator who lists
 * `10.1.2.0/24` means the agent may reach it, whatever name led there. Some
 * addresses no rule can open ({@link UNOVERRIDABLE_ADDRESS_REASONS}). Report
 * mode never relaxes this check. Pure: no I/O.
 */
import {
  createAddressClassifier, parseIpLiteral, formatIp, type DenyReason, type AddressClass,
} from './ip/index.js';
import { compileEgress, cidrContains, type EgressPolicy } from './egress-rules.js';
import type { EgressDecision, EgressReason } from './egress.js';

/**
 * Address kinds that a `cidr:` rule cannot open: dialling them reaches the
 * proxy host itself (`unspecified`, `self`), cloud credentials (`metadata`),
 * or makes no sense for TCP (`multicast`).
 */
export const UNOVERRIDABLE_ADDRESS_REASONS: readonly DenyReason[] = Object.freeze(['invalid', 'unspecified', 'self', 'metadata', 'multicast']);

export interface AddressRequest {
  /** The resolved address about to be dialled, as bytes or text. */
  address: Uint8Array | string;
  port: number;
}

export interface AddressDecision extends EgressDecision {
  /** Canonical text of the address that was checked. */
  address?: string;
  /** Why the address is not public, as the classifier said (range and embedded IPv4 included). */
  classification?: Exclude<AddressClass, { ok: true }>;
}

export interface AddressDeciderOptions {
  /** The proxy's own addresses; never dialled. @default [] */
  selfAddresses?: readonly string[];
}

/**
 * Build the post-DNS decider for one agent's policy.
 * @throws InvalidInputError when a self address is not an IP address (a setup error, not a request error).
 * @example
 * const check = createAddressDecider({ agent: 'a', egress: [{ host: 'api.example.com' }] });
 * check({ address: '10.0.0.5', port: 443 }) // { result: 'deny', reason: 'private-address', address: '10.0.0.5', … }
 */
export function createAddressDecider(policy: EgressPolicy, options: AddressDeciderOptions = {}): (req: AddressRequest) => AddressDecision {
  const compiled = compileEgress(policy);
  const classify = createAddressClassifier({ selfAddresses: options.selfAddresses ?? [] });
  return function decideEgressAddress(req: AddressRequest): AddressDecision {
    const bytes = typeof req?.address === 'string' ? parseIpLiteral(req.address)?.bytes : req?.address;
    if (!(bytes instanceof Uint8Array) || (bytes.length !== 4 && bytes.length !== 16)) return { result: 'deny', reason: 'invalid-address' };
    const address = formatIp(bytes);
    const port = req.port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return { result: 'deny', reason: 'bad-port', address };
    const verdict = classify(bytes);
    if (verdict.ok) return { result: 'allow', reason: 'public-address', address };
    const reason = `${verdict.reason}-address` as EgressReason;
    const locked = UNOVERRIDABLE_ADDRESS_REASONS.includes(verdict.reason)
      || (verdict.embedded !== undefined && UNOVERRIDABLE_ADDRESS_REASONS.includes(verdict.embedded.reason));
    if (!locked) {
      const rule = compiled.rules.find((r) => r.ports.has(port) && cidrContains(r, bytes));
      if (rule) return { result: 'allow', reason: 'cidr-allowed', ruleId: rule.ruleId, ruleIndex: rule.index, address, classification: verdict };
    }
    return { result: 'deny', reason, address, classification: verdict };
  };
}

/** One-shot form of {@link createAddressDecider}. */
export function decideEgressAddress(policy: EgressPolicy, req: AddressRequest, options: AddressDeciderOptions = {}): AddressDecision {
  return createAddressDecider(policy, options)(req);
}
