/**
 * identity/: every sandbox's SPIFFE identity
 * (`spiffe://<trust-domain>/agent/<agent>/sandbox/<id>`) and its short-lived
 * EdDSA tokens: issued and refreshed over the control channel (`token.set`),
 * revoked when the sandbox ends, and bound to that sandbox's channel (a token
 * presented on another sandbox's channel is refused). Signing keys have key
 * ids, rotate, and are published as a JWK set.
 *
 * Other folders import only this file.
 *
 * @example
 * const ids = createIdentityService({ home, trustDomain: 'agents.example.org', audiences: ['llm.cordon.internal'] });
 * const refresher = ids.startRefresh({ id, agent }, (token) => channel.setToken(token).then(() => undefined));
 * const v = await ids.verify(token, { audience: 'llm.cordon.internal', channelSandboxId: door.sandboxId });
 * if (!v.ok) refuse(v.reason); // 'expired', 'wrong-channel', 'revoked', …
 */
export {
  createIdentityService, DEFAULT_TTL_MS, DEFAULT_CLOCK_TOLERANCE_MS, MIN_TTL_MS, MAX_TTL_MS,
  type IdentityService, type IdentityServiceOptions, type SandboxRef, type VerifyExpectation,
} from './service.js';
export {
  REFUSAL_REASONS, MAX_TOKEN_CHARS, TOKEN_CHARS,
  type RefusalReason, type Refusal, type VerifyResult, type IdentityClaims, type IssuedToken,
} from './token.js';
export { spiffeId, parseSpiffeId, validateTrustDomain, TRUST_DOMAIN, SANDBOX_ID, type SandboxIdentity } from './spiffe.js';
export { openKeyRing, jwkThumbprint, DEFAULT_ROTATE_EVERY_MS, type KeyRing, type KeyRingOptions, type KeyInfo, type JwkSet, type PublicJwk } from './keyring.js';
export type { TokenRefresher, RefreshOptions, RefreshFailure, DeliverToken } from './refresh.js';
export { IdentityError } from './errors.js';
export {
  createSandboxKeys, SANDBOX_KEY_PREFIX, SANDBOX_KEY_PATTERN,
  type SandboxKeys, type SandboxKeyCheck, type SandboxKeyRefusal,
} from './sandbox-keys.js';
