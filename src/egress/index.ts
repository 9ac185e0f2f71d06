/**
 * egress/: the default-deny egress proxy, one door per sandbox: DNS resolved
 * by the proxy and every address checked, the checked IP dialled, SNI checked
 * against the CONNECT host, limits, and one audit event per request.
 * TLS interception and routes to cordon's internal services are not built yet
 * (such destinations are refused).
 */
export {
  createEgressProxy,
  type EgressProxy, type EgressProxyOptions, type EgressDoor, type OpenDoorOptions,
} from './proxy.js';
export type { EgressAuditSink, EgressDial, EgressEventData } from './context.js';
export {
  egressLimitsSchema, resolveLimits, statusForReason, PROXY_REASONS,
  type EgressLimits, type EgressLimitsInput, type ProxyReason,
} from './limits.js';
export { systemLookup, resolveChecked, type EgressLookup, type ResolvedAddress, type ResolveResult } from './resolve.js';
export { parseClientHello, readClientHello, type ClientHelloParse, type ClientHelloResult } from './sni.js';
