/**
 * Per-sandbox API keys for cordon's internal services (the LLM gateway first).
 *
 * Agent SDKs read `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` once, at start, and
 * send it with every request; a token that is replaced every few minutes does
 * not fit there. So each sandbox gets one random key for its whole life
 * (`cordon-sk-` and 43 base64url characters: 256 random bits) that is
 * accepted only:
 *
 * - on the channel of the sandbox it was made for (the caller identity that
 *   the egress door vouches for, never anything the guest says): the same
 *   binding as the sandbox's tokens, so a key copied out of the sandbox is
 *   worthless anywhere else;
 * - until the sandbox ends (`revoke`).
 *
 * Keys are held as SHA-256 digests and compared in constant time; the key
 * itself lives only in the guest's environment.
 *
 * @example
 * const keys = createSandboxKeys();
 * const key = keys.issue(sb.id);       // into the guest env as OPENAI_API_KEY
 * keys.check(presented, caller.sandboxId) // { ok: true } or { ok: false, reason: 'wrong-channel' }
 * keys.revoke(sb.id);
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { InvalidInputError } from '../errors/index.js';
import { SANDBOX_ID } from './spiffe.js';

export const SANDBOX_KEY_PREFIX = 'cordon-sk-';
/** A sandbox key as `issue` makes them. */
export const SANDBOX_KEY_PATTERN = /^cordon-sk-[A-Za-z0-9_-]{43}$/;

export type SandboxKeyRefusal = 'malformed' | 'unknown-key' | 'wrong-channel';
export type SandboxKeyCheck = { ok: true; sandboxId: string } | { ok: false; reason: SandboxKeyRefusal };

export interface SandboxKeys {
  /**
   * A new key for `sandboxId` (replacing any earlier one).
   * @throws InvalidInputError for a malformed sandbox id
   */
  issue(sandboxId: string): string;
  /** Whether `key` is the live key of the sandbox whose channel it arrived on. Never throws. */
  check(key: string | undefined, channelSandboxId: string): SandboxKeyCheck;
  /** Forget the sandbox's key: it is refused from now on. Idempotent. */
  revoke(sandboxId: string): void;
  /** Sandboxes holding a key now. */
  readonly size: number;
}

const digest = (key: string): Buffer => createHash('sha256').update(key).digest();

/** Make the key registry (one per deployment, in the daemon). */
export function createSandboxKeys(): SandboxKeys {
  const bySandbox = new Map<string, Buffer>();
  return {
    issue: function issueSandboxKey(sandboxId: string): string {
      if (typeof sandboxId !== 'string' || !SANDBOX_ID.test(sandboxId)) {
        throw new InvalidInputError(`${JSON.stringify(String(sandboxId).slice(0, 40))} is not a sandbox id`, { fix: 'pass the id the sandbox manager made (sb-…)' });
      }
      const key = SANDBOX_KEY_PREFIX + randomBytes(32).toString('base64url');
      bySandbox.set(sandboxId, digest(key));
      return key;
    },
    check: function checkSandboxKey(key: string | undefined, channelSandboxId: string): SandboxKeyCheck {
      if (typeof key !== 'string' || !SANDBOX_KEY_PATTERN.test(key)) return { ok: false, reason: 'malformed' };
      const presented = digest(key);
      const expected = bySandbox.get(channelSandboxId);
      if (expected && timingSafeEqual(presented, expected)) return { ok: true, sandboxId: channelSandboxId };
      // Not this channel's key: say whether it is another live sandbox's (a replay) or nobody's.
      for (const held of bySandbox.values()) if (timingSafeEqual(presented, held)) return { ok: false, reason: 'wrong-channel' };
      return { ok: false, reason: 'unknown-key' };
    },
    revoke: function revokeSandboxKey(sandboxId: string): void {
      bySandbox.delete(sandboxId);
    },
    get size(): number {
      return bySandbox.size;
    },
  };
}
