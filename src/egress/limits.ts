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
    connectTimeoutMs: z.number().int().positive().default(10_000).describe('Time allowed for dialling the upstream (and its TLS handshake when intercepting)'),
    maxApprovalBodyBytes: z.number().int().min(0).max(16 * 1024 * 1024).default(1024 * 1024)
      .describe('Largest body of a request held for human approval, in bytes (it is read whole, hashed and shown); a larger one is refused with 413'),
    maxBytesOutPerMinute: z.number().int().positive().default(1024 * 1024 * 1024)
      .describe('Bytes a sandbox may send to the internet in any 60 s (all its connections; requests to cordon\'s internal services are not counted); beyond it new requests get 429 and open tunnels and uploads are closed'),
    maxRefusalEventsPerSecond: z.number().int().positive().max(100_000).default(20)
      .describe('Refused requests of one sandbox written to the audit log one by one per second, on average; past it they are still refused, and counted into one egress.refusals event a second'),
    refusalEventBurst: z.number().int().positive().max(1_000_000).default(200)
      .describe('Refused requests written one by one at once after a quiet spell (the budget\'s burst)'),
    maxInternalRequestsPerSecond: z.number().int().positive().max(100_000).default(20)
      .describe('Requests one sandbox may make to cordon\'s own services (the LLM and tools gateways) per second, on average; past it they get 429 internal-rate-limit'),
    internalRequestBurst: z.number().int().positive().max(1_000_000).default(200)
      .describe('Requests to cordon\'s own services one sandbox may make at once after a quiet spell'),
    maxRequestsPerSecond: z.number().min(0.001).max(100_000).default(100)
      .describe('Audited requests one sandbox may make to the internet per second, on average (a fraction such as 0.5 is one every 2 s): each CONNECT tunnel opened, each plain-HTTP request and each request inside an intercepted tunnel; past it they get 429 request-rate-limit before anything is dialled or recorded as allowed (requests to cordon\'s own services have their own rate)'),
    requestBurst: z.number().int().min(1).max(1_000_000).default(1000)
      .describe('Audited requests to the internet one sandbox may make at once after a quiet spell'),
  })
  .strict();

/** Limits as callers write them (every field optional). */
export type EgressLimitsInput = z.input<typeof egressLimitsSchema>;
export type EgressLimits = z.output<typeof egressLimitsSchema>;

/** The fields of a schema, each optional and without its default. */
type WithoutDefaults<T extends z.ZodRawShape> = { [K in keyof T]: z.ZodOptional<T[K] extends z.ZodDefault<infer I> ? I : T[K]> };

/** Each field of `shape` made optional, its default removed and its description kept, naming `fallback`. */
function withoutDefaults<T extends z.ZodRawShape>(shape: T, fallback: string): WithoutDefaults<T> {
  const out: Record<string, z.ZodTypeAny> = {};
  for (const [key, field] of Object.entries(shape)) {
    const inner = field instanceof z.ZodDefault ? (field.removeDefault() as z.ZodTypeAny) : field;
    out[key] = inner.optional().describe(`${field.description ?? key}; left out: ${fallback}.${key}`);
  }
  return out as WithoutDefaults<T>;
}

/**
 * One agent's override of the deployment's limits (`agents.<name>.egressLimits`):
 * the fields of {@link egressLimitsSchema} with the same ranges, every one
 * optional and none defaulted, so that a field left out falls through to
 * `egress.limits`. Strict, like the limits themselves.
 */
export const egressLimitsOverrideSchema = z.object(withoutDefaults(egressLimitsSchema.shape, 'egress.limits')).strict();
/** An override as written (and as loaded: parsing fills nothing in). */
export type EgressLimitsOverride = z.input<typeof egressLimitsOverrideSchema>;

function invalidLimits(error: z.ZodError, prefix: string, fix: string): InvalidInputError {
  const issue = error.issues[0];
  const unknown = issue?.code === z.ZodIssueCode.unrecognized_keys ? issue.keys : undefined;
  if (unknown) {
    // Each unknown key with its own path: `agents.a.egressLimits.x, agents.a.egressLimits.y`, never `…egressLimits.x, y`.
    return new InvalidInputError(`invalid egress limit ${unknown.map((k) => `${prefix}${k}`).join(', ')}: ${unknown.length > 1 ? 'not limits' : 'not a limit'}`, { fix });
  }
  const at = issue?.path.join('.') ?? '';
  const where = at ? `${prefix}${at}` : prefix.replace(/[. ]$/, '') || '(limits)';
  return new InvalidInputError(`invalid egress limit ${where}: ${issue?.message ?? 'invalid'}`, { fix });
}

/**
 * Validate limits and fill in defaults.
 * @throws InvalidInputError naming the field and the allowed range
 */
export function resolveLimits(input: EgressLimitsInput = {}): EgressLimits {
  const parsed = egressLimitsSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  throw invalidLimits(parsed.error, '',
    'give limits as positive integers (milliseconds, bytes, connections; maxRequestsPerSecond may be a fraction) within the ranges in egressLimitsSchema, or leave them out for the defaults');
}

/**
 * Limits with one agent's override laid over them, field by field: a field
 * the override gives wins, every other one (and one given as `undefined`)
 * keeps its value in `base`. An invalid override is an error, never ignored.
 * @param base limits already resolved (the proxy's, from `egress.limits`)
 * @param override the agent's fields (`agents.<name>.egressLimits`) @default none: `base` as it is
 * @param agent named in the error, as the config path `agents.<agent>.egressLimits.<field>` @default none
 * @throws InvalidInputError naming the field (an unknown one included) and the allowed range
 */
export function mergeLimits(base: EgressLimits, override: EgressLimitsOverride | undefined, agent?: string): EgressLimits {
  if (override === undefined) return base;
  const parsed = egressLimitsOverrideSchema.safeParse(override);
  if (!parsed.success) {
    throw invalidLimits(parsed.error, agent === undefined ? 'override ' : `agents.${agent}.egressLimits.`,
      `give only fields of egress.limits (${Object.keys(egressLimitsSchema.shape).join(', ')}), each within its range in egressLimitsSchema, or leave the override out`);
  }
  const given = Object.fromEntries(Object.entries(parsed.data).filter(([, v]) => v !== undefined));
  return resolveLimits({ ...base, ...given });
}

/** Reasons given by the proxy itself, in addition to the policy's `EGRESS_REASONS`. */
export const PROXY_REASONS = [
  'bad-request', 'headers-too-large', 'body-too-large', 'handshake-timeout', 'idle-timeout', 'too-many-connections',
  'sni-missing', 'sni-mismatch', 'sni-invalid', 'sni-timeout', 'sni-too-large', 'client-closed',
  'interception-not-available', 'internal-not-available', 'approval-not-available',
  'approval-denied', 'approval-timeout', 'approval-expired', 'approval-flood', 'approval-used', 'approval-failed', 'approval-body-too-large',
  'host-mismatch', 'client-tls-failed', 'bytes-out-limit', 'internal-rate-limit', 'request-rate-limit', 'request-hook-failed', 'response-hook-failed', 'internal-error',
  'dns-failed', 'dns-timeout', 'no-address', 'upstream-unreachable', 'upstream-timeout', 'upstream-error',
  'upstream-cert-invalid', 'upstream-tls-failed',
  'audit-unavailable', 'door-closed',
] as const;
export type ProxyReason = (typeof PROXY_REASONS)[number];

/** The rates of a door that its `Retry-After` values come from. */
export type RetryRates = Pick<EgressLimits, 'maxRequestsPerSecond' | 'maxInternalRequestsPerSecond'>;
const DEFAULT_RATES: RetryRates = egressLimitsSchema.parse({});

/**
 * Seconds a client should wait before it tries again (`Retry-After`), for the
 * refusals that pass with time. A rate refusal came with less than one token
 * left, so one is back within `1 / rate` seconds: that, rounded up, at least 1
 * (a rate of 0.5 a second says 2, not 1, so the retry is not refused again).
 * @param rates the door's limits @default the defaults of `egressLimitsSchema`
 */
export function retryAfterForReason(reason: string, rates: RetryRates = DEFAULT_RATES): number | undefined {
  const perSecond = reason === 'request-rate-limit' ? rates.maxRequestsPerSecond
    : reason === 'internal-rate-limit' ? rates.maxInternalRequestsPerSecond : undefined;
  return perSecond === undefined ? undefined : Math.max(1, Math.ceil(1 / perSecond));
}

/**
 * HTTP status for a refusal, by reason (403 for everything the policy denies).
 * Every reason in {@link PROXY_REASONS} is listed here or is a 403 on purpose:
 * `sni-*`, `client-closed`, `idle-timeout`, `client-tls-failed` only ever end
 * a connection, and the `*-not-available` / `host-mismatch` / `request-hook-failed`
 * refusals are denials.
 */
export function statusForReason(reason: string): number {
  switch (reason) {
    case 'bad-request': case 'bad-host': case 'bad-port': case 'bad-method': case 'bad-path': return 400;
    case 'body-too-large': case 'approval-body-too-large': return 413;
    case 'headers-too-large': return 431;
    case 'handshake-timeout': return 408;
    case 'internal-unknown': return 404;
    case 'too-many-connections': case 'bytes-out-limit': case 'internal-rate-limit': case 'request-rate-limit': case 'approval-flood': return 429;
    case 'dns-failed': case 'no-address': case 'upstream-unreachable': case 'upstream-error':
    case 'upstream-cert-invalid': case 'upstream-tls-failed': case 'internal-error': return 502;
    case 'dns-timeout': case 'upstream-timeout': return 504;
    case 'audit-unavailable': case 'door-closed': case 'internal-not-available': return 503;
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

/**
 * A token bucket: `take` spends one token if there is one. Tokens come back
 * at `perSecond`, up to `burst`; a clock set back gives none and takes none.
 */
export function createTokenBucket(perSecond: number, burst: number, now: () => number = Date.now): { take: () => boolean } {
  let tokens = burst;
  let refilledAt = now();
  return {
    take: function takeToken(): boolean {
      const t = now();
      tokens = Math.min(burst, tokens + (Math.max(0, t - refilledAt) / 1000) * perSecond);
      refilledAt = t;
      if (tokens < 1) return false;
      tokens -= 1;
      return true;
    },
  };
}

/** What the request-rate check needs of a door (its `DoorContext` has it: `proxy.ts` puts `takeRequest` beside `takeInternalRequest`). */
export interface RequestRate {
  sandboxId: string;
  agent: string;
  limits: EgressLimits;
  /** Spend one of the door's audited requests to the internet; false when over `maxRequestsPerSecond`. */
  takeRequest: () => boolean;
}

/**
 * Spend one of the door's audited requests to the internet (a CONNECT that
 * opens a tunnel, a plain-HTTP request, a request inside an intercepted
 * tunnel); the refusal's problem text when none is left. Call it after the
 * policy allowed the request and before anything is held, resolved, dialled
 * or recorded as allowed; requests to cordon's own services spend from
 * their own rate instead (`internalRateRefusal`).
 */
export function requestRateRefusal(door: RequestRate): string | undefined {
  if (door.takeRequest()) return undefined;
  return `sandbox ${door.sandboxId} made more than ${door.limits.maxRequestsPerSecond} requests a second to the internet `
    + `(bursts of ${door.limits.requestBurst}); slow down and retry, or raise agents.${door.agent}.egressLimits.maxRequestsPerSecond `
    + `in cordon.yaml (this agent's own rate, which wins over egress.limits.maxRequestsPerSecond, the rate of agents that set none)`;
}

/**
 * Bytes sent to the internet by one door over a sliding 60 s window, counted
 * in one-second buckets. `add` reports whether the door is still within its
 * limit after counting; once over, it stays over until old buckets age out.
 */
export function createByteWindow(maxBytesPerMinute: number, now: () => number = Date.now): {
  add: (bytes: number) => boolean; readonly used: number; readonly exceeded: boolean;
} {
  const WINDOW_S = 60;
  const buckets = new Float64Array(WINDOW_S);
  let lastSecond = Math.floor(now() / 1000);
  let total = 0;
  const advance = (): void => {
    const second = Math.floor(now() / 1000);
    const steps = Math.min(WINDOW_S, Math.max(0, second - lastSecond));
    for (let i = 1; i <= steps; i++) {
      const idx = (lastSecond + i) % WINDOW_S;
      total -= buckets[idx]!;
      buckets[idx] = 0;
    }
    if (second > lastSecond) lastSecond = second;
  };
  return {
    add: function addBytes(bytes: number): boolean {
      advance();
      buckets[lastSecond % WINDOW_S]! += bytes;
      total += bytes;
      return total <= maxBytesPerMinute;
    },
    get used() {
      advance();
      return total;
    },
    get exceeded() {
      advance();
      return total > maxBytesPerMinute;
    },
  };
}
