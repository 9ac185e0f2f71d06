/**
 * A budget for the audit events of one door's refusals. A hostile guest can
 * make thousands of refused requests a second at no cost to itself (one
 * client on loopback: 4,200 a second, 4.5 MB of audit store a second).
 * Written one by one they would fill the store, and a store that cannot
 * write stops every sandbox, since nothing is allowed without its event.
 *
 * So a door writes at most `perSecond` refusal events a second (bursts up to
 * `burst`, a token bucket). Past that every refusal is still refused and
 * answered the same way, and it is counted: at most once a second the door
 * writes one `egress.refusals` event with how many refusals were not written
 * one by one, by decision and reason, the first hosts they named, and when
 * the first and the last came. Allowed requests are never budgeted: each is
 * on record before it is forwarded. How many a door may make is bounded by
 * its request rates instead (`maxRequestsPerSecond` to the internet,
 * `maxInternalRequestsPerSecond` to cordon's services), whose 429 refusals
 * come under this budget like any other.
 *
 * @example
 * const budget = createRefusalBudget({ perSecond: 20, burst: 200, write: (summary) => audit.append(...) });
 * if (budget.admit()) await audit.append(refusalEvent); else budget.count('deny', 'host-not-allowed', host);
 */

import { createTokenBucket } from './limits.js';

/** What an `egress.refusals` event's `data` holds. */
export interface RefusalSummary {
  /** Refusals not written one by one since the last summary. */
  count: number;
  /** Those refusals by decision (`deny`, `error`) and reason. */
  byDecision: Record<string, Record<string, number>>;
  /** The first distinct hosts they named (at most {@link SUMMARY_MAX_HOSTS}). */
  hosts: string[];
  /** How many distinct hosts were left out of `hosts`, at least. */
  moreHosts: number;
  /** When the first and the last of them came, ms since the epoch. */
  firstAt: number;
  lastAt: number;
}

/** Hosts named in one summary; more are only counted. */
export const SUMMARY_MAX_HOSTS = 10;
/** Longest host kept in a summary (a guest chooses these strings). */
const SUMMARY_MAX_HOST_CHARS = 253;
/** How often a summary is written while refusals go past the budget. */
const SUMMARY_INTERVAL_MS = 1_000;

export interface RefusalBudget {
  /** True when this refusal may be written as its own event (and takes one from the budget). */
  admit(): boolean;
  /** Count a refusal that was not written on its own; a summary follows within a second. */
  count(decision: string, reason: string, host?: string): void;
  /** Write what is counted now and stop the timer (the door is closing). */
  flush(): void;
}

export interface RefusalBudgetOptions {
  /** Refusal events written a second, on average. */
  perSecond: number;
  /** Refusal events that may be written at once after a quiet spell. */
  burst: number;
  /** Writes one summary (best effort: a failure is counted by the audit log's dropped-event report). */
  write: (summary: RefusalSummary) => void;
  /** @default Date.now */
  now?: () => number;
}

export function createRefusalBudget(o: RefusalBudgetOptions): RefusalBudget {
  const now = o.now ?? Date.now;
  const bucket = createTokenBucket(o.perSecond, o.burst, now);
  let pending: RefusalSummary | undefined;
  let hostsSeen = new Set<string>();
  let timer: NodeJS.Timeout | undefined;

  const writePending = (): void => {
    timer = undefined;
    const summary = pending;
    pending = undefined;
    hostsSeen = new Set();
    if (summary) o.write(summary);
  };

  return {
    admit: function admit(): boolean {
      return bucket.take();
    },
    count: function count(decision: string, reason: string, host?: string): void {
      const t = now();
      // Null-prototype maps: their keys can be names from config (a secret called `__proto__` is valid).
      pending ??= { count: 0, byDecision: Object.create(null) as RefusalSummary['byDecision'], hosts: [], moreHosts: 0, firstAt: t, lastAt: t };
      pending.count += 1;
      pending.lastAt = t;
      const reasons = (pending.byDecision[decision] ??= Object.create(null) as Record<string, number>);
      reasons[reason] = (reasons[reason] ?? 0) + 1;
      if (host !== undefined) {
        const h = host.slice(0, SUMMARY_MAX_HOST_CHARS);
        if (!hostsSeen.has(h)) {
          if (pending.hosts.length < SUMMARY_MAX_HOSTS) {
            hostsSeen.add(h);
            pending.hosts.push(h);
          } else if (hostsSeen.size < SUMMARY_MAX_HOSTS * 10) {
            // Remember a bounded number of the hosts left out, so that a repeated one is not counted twice.
            hostsSeen.add(h);
            pending.moreHosts += 1;
          }
        }
      }
      if (!timer) {
        timer = setTimeout(writePending, SUMMARY_INTERVAL_MS);
        timer.unref();
      }
    },
    flush: function flush(): void {
      if (timer) clearTimeout(timer);
      writePending();
    },
  };
}
