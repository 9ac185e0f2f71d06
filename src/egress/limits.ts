/**
 * Limits of the egress proxy (sizes, timeouts, concurrency) with their
 * defaults, and the reasons the proxy itself (not the policy) gives when it
 * refuses or closes a connection. Reasons are stable kebab-case strings: they
 * appear in audit events and in `X-Cordon-Error`.
 */
import { z } from 'zod';
import { InvalidInputError } from '../errors/index.js';

export const egressLimitsSchema = z
  .object({
    maxHeaderBytes: z.number().int().min(1024).max(1 << 20).default(16 * 1024)
      .describe('Largest request head (request line and headers) in bytes; beyond it the client gets 431'),
    handshakeTimeoutMs: z.number().int().positive().default(10_000)
      .describe('Time a client has to send a whole request head, and after CONNECT a whole ClientHello'),
    idleTimeoutMs: z.number().int().positive().default(120_000)
      .describe('A connection with no bytes in either direction for this long is closed'),
    maxConnections: z.number().int().positive().default(64)
      .describe('Concurrent client connections per door (per sandbox); more are refused with 429'),
    maxClientHelloBytes: z.number().int().min(512).max(64 * 1024).default(16 * 1024 + 5)
      .describe('Largest TLS ClientHello read after CONNECT, in bytes'),
    maxRequestBodyBytes: z.number().int().positive().default(100 * 1024 * 1024)
      .describe('Largest plain-HTTP request body forwarded, in bytes; a larger one is refused with 413'),
    dnsTimeoutMs: z.number().int().positive().default(5_000).describe('Time allowed for resolving a destination'),
    connectTimeoutMs: z.number().int().positive().default(10_000).describe('Time allowed for dialling the upstream'),
  })
  .strict();

/** Limits as callers write them (every field optional). */
export type EgressLimitsInput = z.input<typeof egressLimitsSchema>;
export type EgressLimits = z.output<typeof egressLimitsSchema>;

/**
 * Validate limits and fill in defaults.
 * @throws InvalidInputError naming the field and the allowed range
 */
export function resolveLimits(input: EgressLimitsInput = {}): EgressLimits {
  const parsed = egressLimitsSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new InvalidInputError(`invalid egress limit ${issue?.path.join('.') || '(limits)'}: ${issue?.message ?? 'invalid'}`, {
    fix: 'give limits as positive integers (milliseconds, bytes, connections) or leave them out for the defaults',
  });
}

/** Reasons given by the proxy itself, in addition to the policy's `EGRESS_REASONS`. */
export const PROXY_REASONS = [
  'bad-request', 'headers-too-large', 'body-too-large', 'handshake-timeout', 'idle-timeout', 'too-many-connections',
  'sni-missing', 'sni-mismatch', 'sni-invalid', 'sni-timeout', 'sni-too-large', 'client-closed',
  'interception-not-available', 'internal-not-available', 'approval-not-available',
  'dns-failed', 'dns-timeout', 'no-address', 'upstream-unreachable', 'upstream-timeout', 'upstream-error',
  'audit-unavailable', 'door-closed',
] as const;
export type ProxyReason = (typeof PROXY_REASONS)[number];

/** HTTP status for a refusal, by reason (403 for everything the policy denies). */
export function statusForReason(reason: string): number {
  switch (reason) {
    case 'bad-request': case 'bad-host': case 'bad-port': case 'bad-method': case 'bad-path': return 400;
    case 'body-too-large': return 413;
    case 'headers-too-large': return 431;
    case 'handshake-timeout': return 408;
    case 'too-many-connections': return 429;
    case 'dns-failed': case 'no-address': case 'upstream-unreachable': case 'upstream-error': return 502;
    case 'dns-timeout': case 'upstream-timeout': return 504;
    case 'audit-unavailable': case 'door-closed': return 503;
    default: return 403;
  }
}

/** Counts concurrent connections of one door against its cap. */
export function createConnectionSlots(max: number): { take: () => boolean; release: () => void; readonly active: number } {
  let active = 0;
  return {
    take: function takeSlot(): boolean {
      if (active >= max) return false;
      active += 1;
      return true;
    },
    release: function releaseSlot(): void {
      if (active > 0) active -= 1;
    },
    get active() {
      return active;
    },
  };
}
