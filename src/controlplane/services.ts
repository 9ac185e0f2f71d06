/**
 * How the control plane joins identity, secrets and the LLM gateway:
 *
 * - `createSandboxAuthenticator`: the gateway's `authenticate`. A request
 *   reaches the gateway only through a sandbox's egress door, so it always
 *   has a caller (the channel's sandbox, never anything the guest said). The
 *   credential it presents (`Authorization: Bearer` or `x-api-key`) must be
 *   either that sandbox's service key (what `OPENAI_API_KEY` and
 *   `ANTHROPIC_API_KEY` hold in the guest: SDKs read them once, so it lives
 *   as long as the sandbox) or a current token of that same sandbox (from
 *   `CORDON_TOKEN_FILE`, refreshed every few minutes). Both are bound to the
 *   channel: presented through another sandbox's door they are refused, and
 *   both die with the sandbox. Without a caller (no channel) every request
 *   is refused.
 * - `createProviderKeyResolver`: the gateway's `resolveSecret`, reading
 *   `{{secret.NAME}}` of provider keys from the configured sources.
 * - `createRedactionSource`: the gateway's `redact`, per caller: that
 *   sandbox's placeholders and real values, plus the placeholder shape.
 */
import type { CordonConfig } from '../config/index.js';
import { presentedToken, type Authenticate, type RedactSource, type ResolveSecret } from '../gateway/index.js';
import { SANDBOX_KEY_PATTERN, type IdentityService, type SandboxKeys } from '../identity/index.js';
import { PLACEHOLDER_PATTERN, resolveSecrets, type SecretsRouter } from '../secrets/index.js';

/** The audience of tokens the LLM gateway accepts. */
export const LLM_AUDIENCE = 'llm.cordon.internal';

/**
 * The gateway's authenticator (see the file header).
 * @example createGateway({ …, authenticate: createSandboxAuthenticator({ identity, keys }) })
 */
export function createSandboxAuthenticator(o: { identity: Pick<IdentityService, 'verify'>; keys: Pick<SandboxKeys, 'check'>; audience?: string }): Authenticate {
  const audience = o.audience ?? LLM_AUDIENCE;
  return async function authenticateSandbox(req, caller) {
    if (!caller) return { ok: false, reason: 'no-channel' };
    const presented = presentedToken(req);
    if (presented === undefined) return { ok: false, reason: 'no-credentials' };
    if (SANDBOX_KEY_PATTERN.test(presented)) {
      const r = o.keys.check(presented, caller.sandboxId);
      return r.ok ? { ok: true, agent: caller.agent, sandboxId: caller.sandboxId } : { ok: false, reason: `service-key-${r.reason}` };
    }
    const v = await o.identity.verify(presented, { audience, channelSandboxId: caller.sandboxId });
    if (!v.ok) return { ok: false, reason: `token-${v.reason}` };
    return { ok: true, agent: v.claims.agent, sandboxId: v.claims.sandboxId };
  };
}

/** The gateway's provider-key resolver: each call reads the secret from its source (the gateway caches it briefly). */
export function createProviderKeyResolver(config: CordonConfig, home: string, env?: NodeJS.ProcessEnv): ResolveSecret {
  return async function resolveProviderKey(name) {
    const values = await resolveSecrets(config, [name], { home, purpose: 'the LLM gateway', ...(env ? { env } : {}) });
    const value = values.get(name);
    if (!value) throw new Error(`the secret ${name} resolved to nothing`);
    return value.reveal();
  };
}

/** The gateway's redaction, per caller: that sandbox's placeholders and values, and any placeholder by shape. */
export function createRedactionSource(router: Pick<SecretsRouter, 'redactionList'>): Extract<RedactSource, (...args: never[]) => unknown> {
  const shapeOnly = { values: [] as string[], patterns: [PLACEHOLDER_PATTERN] };
  const compiled = new WeakMap<readonly string[], { values: readonly string[]; patterns: RegExp[] }>();
  return function redactionFor(who) {
    const list = router.redactionList(who.sandboxId);
    if (!list) return shapeOnly;
    let r = compiled.get(list);
    if (!r) compiled.set(list, (r = { values: list, patterns: [PLACEHOLDER_PATTERN] }));
    return r;
  };
}
