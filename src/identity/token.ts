/**
 * Signing and checking sandbox tokens: compact JWS (JWT) signed with EdDSA
 * (Ed25519), shaped like a SPIFFE JWT-SVID (`sub` is the SPIFFE ID, `aud`
 * and `exp` required) except for the algorithm, which the JWT-SVID
 * specification does not list: a verifier must accept EdDSA.
 *
 * Header `{alg: 'EdDSA', typ: 'JWT', kid}`; claims `iss` (`spiffe://<trust
 * domain>`), `sub`, `aud` (string or array), `iat` = `nbf` (whole seconds),
 * `exp` = `iat` + TTL, `jti` (128 random bits, base64url).
 *
 * `checkToken` answers with the claims or a refusal with a stable reason; it
 * never throws. The algorithm is pinned to EdDSA before any key is looked up,
 * so `alg: none` and HS256-keyed-with-the-public-key forgeries are refused as
 * `alg-not-allowed` and never reach a verifier.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { SignJWT, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose';
import { IdentityError } from './errors.js';
import { parseSpiffeId } from './spiffe.js';

/** The `token.set` limits of the guest protocol. */
export const MAX_TOKEN_CHARS = 8192;
export const TOKEN_CHARS = /^[A-Za-z0-9._~+/=-]{1,8192}$/;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const JTI = /^[A-Za-z0-9_-]{16,128}$/;

/** Why a token was refused; stable, for logs, audit events and tests. */
export const REFUSAL_REASONS = [
  'malformed', 'alg-not-allowed', 'unknown-kid', 'bad-signature', 'expired', 'not-yet-valid', 'wrong-audience',
  'wrong-issuer', 'wrong-subject', 'lifetime-too-long', 'revoked', 'wrong-channel', 'internal-error',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export interface Refusal {
  ok: false;
  reason: RefusalReason;
  /** What was wrong, for logs; never includes the token. */
  message: string;
}

/** What a valid token says. */
export interface IdentityClaims {
  spiffeId: string;
  trustDomain: string;
  agent: string;
  sandboxId: string;
  audience: string[];
  issuer: string;
  kid: string;
  jti: string;
  issuedAtMs: number;
  notBeforeMs: number;
  expiresAtMs: number;
}

export type VerifyResult = { ok: true; claims: IdentityClaims } | Refusal;

/** A freshly signed token and what it says (the token itself is the secret part). */
export interface IssuedToken {
  token: string;
  spiffeId: string;
  sandboxId: string;
  agent: string;
  kid: string;
  jti: string;
  audience: string[];
  issuedAtMs: number;
  expiresAtMs: number;
  /** `expiresAtMs` as an ISO 8601 string. */
  expiresAt: string;
}

export interface SignInput {
  key: { kid: string; privateKey: KeyObject };
  issuer: string;
  spiffeId: string;
  sandboxId: string;
  agent: string;
  audience: string[];
  nowMs: number;
  ttlSec: number;
}

/** Sign one token. @throws IdentityError `identity-token-too-large` if it would not fit `token.set` */
export async function signToken(i: SignInput): Promise<IssuedToken> {
  const iat = Math.floor(i.nowMs / 1000);
  const exp = iat + i.ttlSec;
  const jti = randomBytes(16).toString('base64url');
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: i.key.kid })
    .setIssuer(i.issuer)
    .setSubject(i.spiffeId)
    .setAudience(i.audience.length === 1 ? i.audience[0]! : i.audience)
    .setIssuedAt(iat)
    .setNotBefore(iat)
    .setExpirationTime(exp)
    .setJti(jti)
    .sign(i.key.privateKey);
  if (!TOKEN_CHARS.test(token)) {
    throw new IdentityError('identity-token-too-large', `a token of ${token.length} characters does not fit the guest's limit of ${MAX_TOKEN_CHARS}`, {
      fix: 'use fewer or shorter audiences, or a shorter trust domain',
    });
  }
  return {
    token, spiffeId: i.spiffeId, sandboxId: i.sandboxId, agent: i.agent, kid: i.key.kid, jti, audience: [...i.audience],
    issuedAtMs: iat * 1000, expiresAtMs: exp * 1000, expiresAt: new Date(exp * 1000).toISOString(),
  };
}

export interface CheckInput {
  /** The public key named `kid`, or undefined when the ring does not hold it (any more). */
  keyFor(kid: string): KeyObject | undefined;
  issuer: string;
  trustDomain: string;
  /** The audience the verifier is: it must be one of the token's. */
  audience: string;
  /** The longest lifetime a token may have (exp - iat), in seconds. */
  maxTtlSec: number;
  clockToleranceMs: number;
  nowMs: number;
}

function refuse(reason: RefusalReason, message: string): Refusal {
  return { ok: false, reason, message };
}

/**
 * Check format, algorithm, key, signature and claims (not revocation or the
 * channel: the service does those). Never throws.
 */
export async function checkToken(token: unknown, c: CheckInput): Promise<VerifyResult> {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_CHARS) {
    return refuse('malformed', `a token is a string of 1..${MAX_TOKEN_CHARS} characters`);
  }
  if (token.split('.').length !== 3) return refuse('malformed', 'not a compact JWS (three dot-separated parts)');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    return refuse('malformed', 'the protected header is not base64url JSON');
  }
  if (header.alg !== 'EdDSA') return refuse('alg-not-allowed', `algorithm ${JSON.stringify(header.alg ?? null)} is not allowed; only EdDSA is`);
  if (!COMPACT_JWS.test(token)) return refuse('malformed', 'not a compact JWS (base64url parts, signature present)');
  if (typeof header.kid !== 'string') return refuse('unknown-kid', 'the token names no key (kid)');
  const key = c.keyFor(header.kid);
  if (!key) return refuse('unknown-kid', `no current or recent signing key has kid ${JSON.stringify(header.kid.slice(0, 64))}`);
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ['EdDSA'],
      typ: 'JWT',
      issuer: c.issuer,
      audience: c.audience,
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti'],
      maxTokenAge: c.maxTtlSec,
      clockTolerance: c.clockToleranceMs / 1000,
      currentDate: new Date(c.nowMs),
    }));
  } catch (err) {
    return joseRefusal(err);
  }
  return claimsOf(payload, header.kid, c);
}

/** Map a jose error to a refusal. */
function joseRefusal(err: unknown): Refusal {
  if (err instanceof errors.JWSSignatureVerificationFailed) return refuse('bad-signature', 'the signature does not match the header and claims');
  if (err instanceof errors.JOSEAlgNotAllowed) return refuse('alg-not-allowed', err.message);
  if (err instanceof errors.JWTExpired) return refuse('expired', err.claim === 'iat' ? 'the token was issued longer ago than any token lives' : 'the token has expired');
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === 'missing' || err.reason === 'invalid') return refuse('malformed', err.message);
    switch (err.claim) {
      case 'nbf': return refuse('not-yet-valid', 'the token is not valid yet (nbf)');
      case 'iat': return refuse('not-yet-valid', 'the token was issued in the future (iat)');
      case 'aud': return refuse('wrong-audience', 'the token is not meant for this audience');
      case 'iss': return refuse('wrong-issuer', 'the token was not issued by this deployment');
      default: return refuse('malformed', err.message);
    }
  }
  if (err instanceof errors.JOSEError) return refuse('malformed', err.message);
  return refuse('internal-error', `verification failed: ${(err as Error)?.message ?? String(err)}`);
}

/** The checks jose does not do: subject shape and trust domain, jti, lifetime. */
function claimsOf(p: JWTPayload, kid: string, c: CheckInput): VerifyResult {
  if (typeof p.jti !== 'string' || !JTI.test(p.jti)) return refuse('malformed', 'jti must be 16-128 base64url characters');
  const id = typeof p.sub === 'string' ? parseSpiffeId(p.sub) : undefined;
  if (!id || id.trustDomain !== c.trustDomain) return refuse('wrong-subject', `sub is not a sandbox SPIFFE ID in trust domain ${c.trustDomain}`);
  const iat = p.iat as number;
  const nbf = p.nbf as number;
  const exp = p.exp as number;
  if (exp - iat > c.maxTtlSec) return refuse('lifetime-too-long', `the token lives ${exp - iat} s; at most ${c.maxTtlSec} s is allowed`);
  return {
    ok: true,
    claims: {
      spiffeId: p.sub!, trustDomain: id.trustDomain, agent: id.agent, sandboxId: id.sandboxId,
      audience: typeof p.aud === 'string' ? [p.aud] : [...(p.aud ?? [])], issuer: p.iss!, kid, jti: p.jti,
      issuedAtMs: iat * 1000, notBeforeMs: nbf * 1000, expiresAtMs: exp * 1000,
    },
  };
}
