/**
 * Per-agent limits of the gateway: requests per minute, tokens per minute,
 * tokens per day, and requests in flight.
 *
 * Rates are token buckets: a bucket holds up to its per-period capacity and
 * refills continuously (a full minute's worth in a minute, a full day's worth
 * in a day), so "60 per minute" admits a burst of 60 and then one a second.
 * A request is admitted or refused by one synchronous check-and-take across
 * all four limits, so concurrent requests can never overshoot (JavaScript runs
 * it without interleaving). Tokens are taken as a pre-flight estimate (prompt
 * text plus the completion cap) and corrected once the provider reports usage;
 * a correction may leave a bucket in debt, which later requests wait out.
 * A request estimated above a whole bucket is admitted only when the bucket is
 * full, so a large request is slow rather than impossible.
 */

export interface LlmLimits {
  requestsPerMinute: number;
  tokensPerMinute: number;
  tokensPerDay: number;
  concurrentRequests: number;
}

export type LimitReason = 'requests-per-minute' | 'tokens-per-minute' | 'tokens-per-day' | 'concurrent-requests';

/** An admitted request's hold on the limits. Both methods are idempotent. */
export interface LimitTicket {
  readonly estimateTokens: number;
  /** Replace the estimate with what the request really used (0 when the provider refused it). */
  settle(actualTokens: number): void;
  /** The request is over: free its concurrency slot. */
  release(): void;
}

export type Admission =
  | { ok: true; ticket: LimitTicket }
  | { ok: false; reason: LimitReason; retryAfterMs: number };

/** Current state of one agent's limits (for tests, metrics and the dashboard); levels rounded down, negative while in debt. */
export interface LimitSnapshot {
  inFlight: number;
  requestsAvailable: number;
  tokensPerMinuteAvailable: number;
  tokensPerDayAvailable: number;
}

export interface Limiter {
  /** Check and take, atomically. */
  acquire(agent: string, limits: LlmLimits, estimateTokens: number): Admission;
  snapshot(agent: string): LimitSnapshot | undefined;
}

export interface LimiterOptions {
  /** Monotonic clock in milliseconds. @default performance.now */
  nowMs?: () => number;
}

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
/** Retry hint when only the concurrency cap refuses: no time is known. */
const CONCURRENCY_RETRY_MS = 1_000;

interface Bucket {
  capacity: number;
  perMs: number;
  level: number;
  updatedMs: number;
}

interface AgentState {
  limits: LlmLimits;
  requests: Bucket;
  tokensMinute: Bucket;
  tokensDay: Bucket;
  inFlight: number;
}

function bucket(capacity: number, periodMs: number, nowMs: number, previous?: Bucket): Bucket {
  const level = previous ? Math.min(capacity, previous.level) : capacity;
  return { capacity, perMs: capacity / periodMs, level, updatedMs: nowMs };
}

function refill(b: Bucket, nowMs: number): void {
  const elapsed = nowMs - b.updatedMs;
  if (elapsed > 0) {
    b.level = Math.min(b.capacity, b.level + elapsed * b.perMs);
    b.updatedMs = nowMs;
  }
}

/** Milliseconds until `b` holds `need`, or 0 if it does. */
function waitFor(b: Bucket, need: number): number {
  return b.level >= need ? 0 : Math.ceil((need - b.level) / b.perMs);
}

function sameLimits(a: LlmLimits, b: LlmLimits): boolean {
  return a.requestsPerMinute === b.requestsPerMinute && a.tokensPerMinute === b.tokensPerMinute
    && a.tokensPerDay === b.tokensPerDay && a.concurrentRequests === b.concurrentRequests;
}

/**
 * Create the limiter (one per gateway; state is per agent, shared by its sandboxes).
 * @example
 * const limiter = createLimiter();
 * const a = limiter.acquire('reviewer', config.agents.reviewer.llm.limits, 1500);
 * if (a.ok) try { … a.ticket.settle(usedTokens) } finally { a.ticket.release() }
 */
export function createLimiter(options: LimiterOptions = {}): Limiter {
  const nowMs = options.nowMs ?? (() => performance.now());
  const agents = new Map<string, AgentState>();

  function stateFor(agent: string, limits: LlmLimits, now: number): AgentState {
    let s = agents.get(agent);
    if (s && sameLimits(s.limits, limits)) return s;
    // New agent, or its limits changed: keep what is left, within the new capacities.
    s = {
      limits: { ...limits },
      requests: bucket(limits.requestsPerMinute, MINUTE_MS, now, s?.requests),
      tokensMinute: bucket(limits.tokensPerMinute, MINUTE_MS, now, s?.tokensMinute),
      tokensDay: bucket(limits.tokensPerDay, DAY_MS, now, s?.tokensDay),
      inFlight: s?.inFlight ?? 0,
    };
    agents.set(agent, s);
    return s;
  }

  return {
    acquire: function acquireLimits(agent, limits, estimateTokens): Admission {
      const now = nowMs();
      const s = stateFor(agent, limits, now);
      const estimate = Math.max(0, Math.ceil(estimateTokens));
      if (s.inFlight >= s.limits.concurrentRequests) {
        return { ok: false, reason: 'concurrent-requests', retryAfterMs: CONCURRENCY_RETRY_MS };
      }
      refill(s.requests, now);
      refill(s.tokensMinute, now);
      refill(s.tokensDay, now);
      const waitRequests = waitFor(s.requests, 1);
      if (waitRequests > 0) return { ok: false, reason: 'requests-per-minute', retryAfterMs: waitRequests };
      const waitMinute = waitFor(s.tokensMinute, Math.min(estimate, s.tokensMinute.capacity));
      if (waitMinute > 0) return { ok: false, reason: 'tokens-per-minute', retryAfterMs: waitMinute };
      const waitDay = waitFor(s.tokensDay, Math.min(estimate, s.tokensDay.capacity));
      if (waitDay > 0) return { ok: false, reason: 'tokens-per-day', retryAfterMs: waitDay };
      s.requests.level -= 1;
      s.tokensMinute.level -= estimate;
      s.tokensDay.level -= estimate;
      s.inFlight += 1;
      return { ok: true, ticket: ticketFor(s, estimate) };
    },
    snapshot: function limitSnapshot(agent): LimitSnapshot | undefined {
      const s = agents.get(agent);
      if (!s) return undefined;
      const now = nowMs();
      refill(s.requests, now);
      refill(s.tokensMinute, now);
      refill(s.tokensDay, now);
      return {
        inFlight: s.inFlight,
        requestsAvailable: Math.floor(s.requests.level),
        tokensPerMinuteAvailable: Math.floor(s.tokensMinute.level),
        tokensPerDayAvailable: Math.floor(s.tokensDay.level),
      };
    },
  };
}

function ticketFor(s: AgentState, estimate: number): LimitTicket {
  let settled = false;
  let released = false;
  return {
    estimateTokens: estimate,
    settle: function settleTokens(actualTokens: number): void {
      if (settled) return;
      settled = true;
      const actual = Number.isFinite(actualTokens) && actualTokens > 0 ? Math.ceil(actualTokens) : 0;
      const refund = estimate - actual;
      s.tokensMinute.level = Math.min(s.tokensMinute.capacity, s.tokensMinute.level + refund);
      s.tokensDay.level = Math.min(s.tokensDay.capacity, s.tokensDay.level + refund);
    },
    release: function releaseSlot(): void {
      if (released) return;
      released = true;
      s.inFlight -= 1;
    },
  };
}
