/**
 * SPIFFE IDs of sandboxes: `spiffe://<trust-domain>/agent/<agent>/sandbox/<id>`.
 *
 * The trust domain follows the SPIFFE ID specification: 1 to 255 characters,
 * only lowercase letters, digits, `.`, `-` and `_` (no scheme, port, user
 * info or upper case). The path segments are cordon's own names, which are
 * already valid SPIFFE path segments: an agent name as in `cordon.yaml`
 * (`AGENT_NAME`) and a sandbox id (`sb-` + 20 lowercase base32 characters).
 */
import { AGENT_NAME } from '../config/index.js';
import { InvalidInputError } from '../errors/index.js';

/** Trust domain characters and length, per the SPIFFE ID specification. */
export const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
/** A sandbox id as the sandbox manager makes them. */
export const SANDBOX_ID = /^sb-[a-z2-7]{20}$/;
/** The SPIFFE specification's limit on a whole ID, in bytes. */
export const MAX_SPIFFE_ID_BYTES = 2048;

/** The parts of a sandbox's SPIFFE ID. */
export interface SandboxIdentity {
  trustDomain: string;
  agent: string;
  sandboxId: string;
}

/**
 * Check a trust domain name.
 * @throws InvalidInputError naming what is wrong and how to fix it
 */
export function validateTrustDomain(trustDomain: string): string {
  if (typeof trustDomain !== 'string' || !TRUST_DOMAIN.test(trustDomain)) {
    const shown = typeof trustDomain === 'string' ? JSON.stringify(trustDomain.slice(0, 80)) : String(trustDomain);
    const hint = typeof trustDomain === 'string' && TRUST_DOMAIN.test(trustDomain.toLowerCase())
      ? ` (use "${trustDomain.toLowerCase()}")`
      : '';
    throw new InvalidInputError(`${shown} is not a SPIFFE trust domain${hint}`, {
      fix: 'use 1-255 lowercase letters, digits, ".", "-" and "_", without scheme or port, e.g. "agents.example.org"',
    });
  }
  return trustDomain;
}

/**
 * The SPIFFE ID of one sandbox.
 * @example spiffeId('example.org', 'reviewer', 'sb-abcdefghijklmnopqrst')
 * // 'spiffe://example.org/agent/reviewer/sandbox/sb-abcdefghijklmnopqrst'
 * @throws InvalidInputError for a bad trust domain, agent name or sandbox id
 */
export function spiffeId(trustDomain: string, agent: string, sandboxId: string): string {
  validateTrustDomain(trustDomain);
  checkAgent(agent);
  checkSandboxId(sandboxId);
  return `spiffe://${trustDomain}/agent/${agent}/sandbox/${sandboxId}`;
}

/**
 * Split a sandbox SPIFFE ID into its parts; undefined for anything else
 * (another path shape, query, fragment, percent-encoding, bad names).
 */
export function parseSpiffeId(id: string): SandboxIdentity | undefined {
  if (typeof id !== 'string' || Buffer.byteLength(id) > MAX_SPIFFE_ID_BYTES) return undefined;
  const m = /^spiffe:\/\/([^/]+)\/agent\/([^/]+)\/sandbox\/([^/]+)$/.exec(id);
  if (!m) return undefined;
  const [, trustDomain = '', agent = '', sandboxId = ''] = m;
  if (!TRUST_DOMAIN.test(trustDomain) || !AGENT_NAME.test(agent) || !SANDBOX_ID.test(sandboxId)) return undefined;
  return { trustDomain, agent, sandboxId };
}

/** @throws InvalidInputError unless `agent` is an agent name. */
export function checkAgent(agent: string): void {
  if (typeof agent !== 'string' || !AGENT_NAME.test(agent)) {
    throw new InvalidInputError(`${JSON.stringify(String(agent).slice(0, 80))} is not an agent name`, {
      fix: 'use 1-63 lowercase letters, digits and "-", starting with a letter, as in cordon.yaml',
    });
  }
}

/** @throws InvalidInputError unless `id` is a sandbox id. */
export function checkSandboxId(id: string): void {
  if (typeof id !== 'string' || !SANDBOX_ID.test(id)) {
    throw new InvalidInputError(`${JSON.stringify(String(id).slice(0, 80))} is not a sandbox id`, {
      fix: 'pass the id the sandbox manager gave the sandbox: "sb-" and 20 lowercase base32 characters',
    });
  }
}
