/**
 * egress/: the default-deny egress proxy, one door per sandbox: DNS resolved
 * by the proxy and every address checked, the checked IP dialled, SNI checked
 * against the CONNECT host, limits (bytes out per minute and a request rate included), and one
 * audit event per request. Hosts with method/path rules or bound secrets are
 * intercepted with leaves of the per-deployment egress CA (each request inside
 * decided and recorded; upstream certificates verified); `*.cordon.internal`
 * routes to cordon's own services, attributed to the door's sandbox.
 * Requests that a rule marks `approve` are held until the `approve` hook
 * (the approvals layer) says a human granted exactly that request; while a
 * sandbox is `supervised` (an anomaly alert asked for it), everything its
 * policy allows is held the same way, plain CONNECT tunnels as a whole.
 */
export {
  createEgressProxy,
  type EgressProxy, type EgressProxyOptions, type EgressDoor, type OpenDoorOptions,
} from './proxy.js';
export type { EgressAuditSink, EgressDial, EgressEventData } from './context.js';
export {
  egressLimitsSchema, egressLimitsOverrideSchema, resolveLimits, mergeLimits, statusForReason, retryAfterForReason, PROXY_REASONS,
  type EgressLimits, type EgressLimitsInput, type EgressLimitsOverride, type ProxyReason,
} from './limits.js';
export {
  createEgressCa, egressCaFrom, issueCertificate, type EgressCa, type EgressCaOptions, type EgressCaMaterial,
} from './ca.js';
export { loadOrCreateEgressCa, EGRESS_CA_KEY_FILE, EGRESS_CA_CERT_FILE } from './ca-store.js';
export type { InternalService, InternalCaller } from './internal.js';
export type { EgressApprovalHook, EgressApprovalResult, HeldRequest } from './approve.js';
export type { EgressRequestHook, HookedRequest, HookResult, EgressConnectHook, HookedConnect, EgressResponseHook, HookedResponse, ResponseHookResult } from './forward.js';
export { createRefusalBudget, type RefusalBudget, type RefusalSummary } from './refusals.js';
export { systemLookup, resolveChecked, type EgressLookup, type ResolvedAddress, type ResolveResult } from './resolve.js';
export { parseClientHello, readClientHello, type ClientHelloParse, type ClientHelloResult } from './sni.js';
