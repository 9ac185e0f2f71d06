/**
 * The identity service: one per deployment, in the daemon. It issues each
 * sandbox short-lived tokens for its SPIFFE ID, verifies tokens presented on
 * a sandbox's channel, revokes a sandbox's tokens when it ends, keeps tokens
 * fresh in the guest, and publishes the public keys (JWKS).
 *
 * - **Keys**: Ed25519 in `<home>/keys/identity/` (see keyring.ts), rotated
 *   every `rotateEveryMs`; a retired key verifies until every token it signed
 *   has expired (TTL + clock tolerance), then gives `unknown-kid`.
 * - **Clock tolerance**: `clockToleranceMs` (5 s by default) is allowed on
 *   `exp`, `nbf` and `iat`, for verifiers whose clock differs slightly from
 *   the daemon's; tokens are issued and checked by the same clock here.
 * - **Channel binding**: `verify` needs the id of the sandbox whose channel
 *   the token arrived on (taken from the channel, never from the request),
 *   and refuses a token of any other sandbox with `wrong-channel`.
 * - **Revocation** is held in memory, for TTL + clock tolerance after
 *   `revoke` (after that every token of the sandbox has expired anyway). It
 *   does not survive a restart; a restart ends every sandbox, and a token of
 *   an ended sandbox cannot arrive on a live sandbox's channel (it would be
 *   `wrong-channel`). Verifiers that only use the JWKS cannot see revocation
 *   or the channel; for them the short TTL is the bound.
 *
 * @example
 * const ids = createIdentityService({ home, trustDomain: 'agents.example.org', audiences: ['llm.cordon.internal'] });
 * const r = ids.startRefresh({ id: sb.id, agent: sb.agent }, (token) => channel.setToken(token).then(() => undefined));
 * await r.first;
 * const v = await ids.verify(token, { audience: 'llm.cordon.internal', channelSandboxId: door.sandboxId });
 * if (!v.ok) deny(v.reason);
 * ids.revoke(sb.id); // on destroy: refuses its tokens and stops its refresher
 */
import { join } from 'node:path';
import { z } from 'zod';
import { InvalidInputError } from '../errors/index.js';
import { IdentityError } from './errors.js';
import { openKeyRing, type JwkSet, type KeyInfo } from './keyring.js';
import { createRefresher, type DeliverToken, type RefreshOptions, type TokenRefresher } from './refresh.js';
import { checkAgent, checkSandboxId, spiffeId, validateTrustDomain } from './spiffe.js';
import { checkToken, signToken, type IssuedToken, type Refusal, type VerifyResult } from './token.js';

export const DEFAULT_TTL_MS = 600_000;
export const DEFAULT_CLOCK_TOLERANCE_MS = 5_000;
/** Shortest and longest token lifetime accepted: 1 s and 1 h. */
export const MIN_TTL_MS = 1_000;
export const MAX_TTL_MS = 3_600_000;

export interface IdentityServiceOptions {
  /** `$CORDON_HOME`; keys live in `<home>/keys/identity/`. */
  home: string;
  /** The SPIFFE trust domain, e.g. `agents.example.org` (lowercase letters, digits, `.`, `-`, `_`). */
  trustDomain: string;
  /**
   * Every audience a token may name, e.g. `['llm.cordon.internal', 'mcp.cordon.internal']`.
   * A token names all of them unless `issue` is given fewer.
   */
  audiences: readonly string[];
  /** Token lifetime, a whole number of seconds in ms, 1 s to 1 h. @default 600_000 (10 min) */
  ttlMs?: number;
  /** Clock skew allowed on exp, nbf and iat. @default 5_000 */
  clockToleranceMs?: number;
  /** Age at which the signing key is rotated. @default 86_400_000 (24 h) */
  rotateEveryMs?: number;
  /** Clock, for tests. @default Date.now */
  now?: () => number;
}

/** The sandbox a token is for. */
export interface SandboxRef {
  id: string;
  agent: string;
}

export interface VerifyExpectation {
  /** The audience the verifier is (one of the service's audiences). */
  audience: string;
  /** The sandbox whose channel (door) the token arrived on. */
  channelSandboxId: string;
}

export interface IdentityService {
  readonly trustDomain: string;
  /** The `iss` of every token: `spiffe://<trust domain>`. */
  readonly issuer: string;
  readonly ttlMs: number;
  readonly clockToleranceMs: number;
  readonly audiences: readonly string[];
  /** The SPIFFE ID of a sandbox. */
  spiffeIdOf(sandbox: SandboxRef): string;
  /**
   * Sign a token for `sandbox`.
   * @param audience one or more of the service's audiences @default all of them
   * @throws IdentityError `identity-revoked` once the sandbox was revoked; InvalidInputError for bad ids or audiences
   */
  issue(sandbox: SandboxRef, audience?: string | readonly string[]): Promise<IssuedToken>;
  /** The claims, or a refusal with a stable reason. Never throws. */
  verify(token: string, expect: VerifyExpectation): Promise<VerifyResult>;
  /** Refuse every token of the sandbox from now on, and stop its refreshers. Idempotent. */
  revoke(sandboxId: string): void;
  isRevoked(sandboxId: string): boolean;
  /** Issue and deliver a token now, and a new one before each expires (see refresh.ts). */
  startRefresh(sandbox: SandboxRef, deliver: DeliverToken, opts?: RefreshOptions): TokenRefresher;
  /** Replace the signing key now (old tokens still verify until they expire). */
  rotate(): { kid: string };
  /** The public keys that verify tokens now (`{keys: [{kty: 'OKP', crv: 'Ed25519', x, kid, alg: 'EdDSA', use: 'sig'}]}`). */
  jwks(): JwkSet;
  /** The keys held, active first (no private keys). */
  keys(): KeyInfo[];
  /** Stop every refresher. */
  close(): void;
}

const audienceSchema = z.array(z.string().min(1).max(255).regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces'))
  .min(1).max(16).refine((a) => new Set(a).size === a.length, 'audiences must be unique');

/**
 * Open the key ring and build the service.
 * @throws InvalidInputError for bad options; KeyError for unusable key files
 */
export function createIdentityService(o: IdentityServiceOptions): IdentityService {
  const now = o.now ?? (() => Date.now());
  const trustDomain = validateTrustDomain(o.trustDomain);
  const issuer = `spiffe://${trustDomain}`;
  const ttlMs = o.ttlMs ?? DEFAULT_TTL_MS;
  if (!Number.isInteger(ttlMs) || ttlMs % 1000 !== 0 || ttlMs < MIN_TTL_MS || ttlMs > MAX_TTL_MS) {
    throw new InvalidInputError(`token TTL ${ttlMs} ms is not a whole number of seconds between ${MIN_TTL_MS} and ${MAX_TTL_MS} ms`, {
      fix: 'use minutes, e.g. 600000 (10 min); tokens are refreshed before they expire',
    });
  }
  const clockToleranceMs = o.clockToleranceMs ?? DEFAULT_CLOCK_TOLERANCE_MS;
  if (!Number.isInteger(clockToleranceMs) || clockToleranceMs < 0 || clockToleranceMs > 60_000) {
    throw new InvalidInputError(`clock tolerance ${clockToleranceMs} ms is not between 0 and 60000`, { fix: 'use a few seconds, e.g. 5000' });
  }
  const parsedAudiences = audienceSchema.safeParse(o.audiences);
  if (!parsedAudiences.success) {
    throw new InvalidInputError(`bad token audiences: ${parsedAudiences.error.issues[0]?.message ?? 'invalid'}`, {
      fix: "pass 1-16 distinct names of the services that accept tokens, e.g. ['llm.cordon.internal']",
    });
  }
  const audiences = Object.freeze([...parsedAudiences.data]);
  const ttlSec = ttlMs / 1000;
  const ring = openKeyRing({
    dir: join(o.home, 'keys', 'identity'), retainMs: ttlMs + clockToleranceMs, now,
    ...(o.rotateEveryMs === undefined ? {} : { rotateEveryMs: o.rotateEveryMs }),
  });
  /** Revoked sandbox ids → until when the entry is needed. */
  const revoked = new Map<string, number>();
  const refreshers = new Map<string, Set<TokenRefresher>>();

  function spiffeIdOf(sandbox: SandboxRef): string {
    return spiffeId(trustDomain, sandbox.agent, sandbox.id);
  }

  function isRevoked(sandboxId: string): boolean {
    const until = revoked.get(sandboxId);
    if (until === undefined) return false;
    if (until > now()) return true;
    revoked.delete(sandboxId);
    return false;
  }

  function audienceFor(audience: string | readonly string[] | undefined): string[] {
    if (audience === undefined) return [...audiences];
    const list = typeof audience === 'string' ? [audience] : [...audience];
    const unknown = list.filter((a) => !audiences.includes(a));
    if (list.length === 0 || unknown.length > 0) {
      throw new InvalidInputError(`audience ${unknown.length ? JSON.stringify(unknown[0]) : '(none)'} is not one of this deployment's: ${audiences.join(', ')}`, {
        fix: 'ask for one or more of the configured audiences',
      });
    }
    return [...new Set(list)];
  }

  async function issue(sandbox: SandboxRef, audience?: string | readonly string[]): Promise<IssuedToken> {
    checkSandboxId(sandbox.id);
    checkAgent(sandbox.agent);
    if (isRevoked(sandbox.id)) {
      throw new IdentityError('identity-revoked', `sandbox ${sandbox.id} has ended; its identity is revoked`, { fix: 'create a new sandbox' });
    }
    const aud = audienceFor(audience);
    return signToken({
      key: ring.signingKey(), issuer, spiffeId: spiffeIdOf(sandbox), sandboxId: sandbox.id, agent: sandbox.agent,
      audience: aud, nowMs: now(), ttlSec,
    });
  }

  async function verify(token: string, expect: VerifyExpectation): Promise<VerifyResult> {
    try {
      const r = await checkToken(token, {
        keyFor: (kid) => ring.verificationKey(kid), issuer, trustDomain, audience: String(expect.audience),
        maxTtlSec: ttlSec, clockToleranceMs, nowMs: now(),
      });
      if (!r.ok) return r;
      if (isRevoked(r.claims.sandboxId)) return refusal('revoked', `sandbox ${r.claims.sandboxId} has ended; its tokens are revoked`);
      if (r.claims.sandboxId !== expect.channelSandboxId) {
        return refusal('wrong-channel', `a token of ${r.claims.sandboxId} arrived on the channel of ${String(expect.channelSandboxId).slice(0, 64)}`);
      }
      return r;
    } catch (err) {
      return refusal('internal-error', `verification failed: ${(err as Error)?.message ?? String(err)}`);
    }
  }

  function revoke(sandboxId: string): void {
    checkSandboxId(sandboxId);
    const t = now();
    for (const [id, until] of revoked) if (until <= t) revoked.delete(id);
    revoked.set(sandboxId, t + ttlMs + clockToleranceMs);
    for (const r of [...(refreshers.get(sandboxId) ?? [])]) r.stop();
  }

  function startRefresh(sandbox: SandboxRef, deliver: DeliverToken, opts: RefreshOptions = {}): TokenRefresher {
    checkSandboxId(sandbox.id);
    checkAgent(sandbox.agent);
    const set = refreshers.get(sandbox.id) ?? new Set<TokenRefresher>();
    refreshers.set(sandbox.id, set);
    const r: TokenRefresher = createRefresher({
      ...opts, sandboxId: sandbox.id, now, deliver,
      issue: () => issue(sandbox),
      onStop() {
        set.delete(r);
        if (set.size === 0 && refreshers.get(sandbox.id) === set) refreshers.delete(sandbox.id);
      },
    });
    set.add(r);
    if (r.stopped) set.delete(r);
    return r;
  }

  function close(): void {
    for (const set of [...refreshers.values()]) for (const r of [...set]) r.stop();
  }

  return {
    trustDomain, issuer, ttlMs, clockToleranceMs, audiences,
    spiffeIdOf, issue, verify, revoke, isRevoked, startRefresh,
    rotate: () => ring.rotate(), jwks: () => ring.jwks(), keys: () => ring.list(), close,
  };
}

function refusal(reason: Refusal['reason'], message: string): Refusal {
  return { ok: false, reason, message };
}
