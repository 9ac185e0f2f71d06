/**
 * Keeping a sandbox's token fresh: issue one at once and deliver it (over the
 * control channel's `token.set`), then issue and deliver a new one when a
 * fraction of the token's lifetime has passed (2/3 by default: a 10 min token
 * is replaced after about 6 min 40 s, leaving 3 min 20 s for retries).
 *
 * A failed issue or delivery is reported through `onFailure` and retried
 * with exponential backoff. Deliveries are serialised (a hanging one is not
 * raced by the next). When the token the guest holds expires before a
 * replacement was delivered, `onFailure` gets `token-expired`: a token never
 * runs out silently. A revoked sandbox stops its refresher for good.
 */
import { IdentityError } from './errors.js';
import type { IssuedToken } from './token.js';

export interface RefreshOptions {
  /** Fraction of a token's lifetime after which the next one is issued, in (0, 1). @default 2/3 */
  refreshAtFraction?: number;
  /** Delay before the first retry; doubles per failure up to `maxBackoffMs`. @default 1000 */
  initialBackoffMs?: number;
  /** Longest delay between retries. @default 30_000 */
  maxBackoffMs?: number;
  /** Called after each successful delivery (e.g. to audit the new token's jti and expiry). */
  onDelivered?: (issued: IssuedToken) => void;
  /** Called on every failure, and once per token that expires with no replacement delivered. */
  onFailure?: (failure: RefreshFailure) => void;
}

export interface RefreshFailure {
  /** `issue-failed` (signing failed, or the identity was revoked), `delivery-failed` (`deliver` rejected), `token-expired`. */
  reason: 'issue-failed' | 'delivery-failed' | 'token-expired';
  sandboxId: string;
  /** Consecutive failed attempts so far. */
  failures: number;
  error?: unknown;
  /** When the next attempt runs; absent when there is none (revoked, stopped). */
  retryInMs?: number;
  /** For `token-expired`: when the guest's token expired. */
  expiredAtMs?: number;
}

/** Delivers a token to the guest; rejects when it could not. */
export type DeliverToken = (token: string, issued: IssuedToken) => Promise<void>;

export interface TokenRefresher {
  readonly sandboxId: string;
  /**
   * Settles with the first attempt: the first delivered token, or the first
   * error (retries go on until `stop()`). Rejects too if stopped before.
   */
  readonly first: Promise<IssuedToken>;
  /** The last token delivered, if any. */
  current(): IssuedToken | undefined;
  /** Stop for good: no more issues, deliveries or reports. Idempotent. */
  stop(): void;
  readonly stopped: boolean;
}

export interface RefresherInput extends RefreshOptions {
  sandboxId: string;
  issue: () => Promise<IssuedToken>;
  deliver: DeliverToken;
  now: () => number;
  /** Called once when the refresher stops. */
  onStop?: () => void;
}

/** Start refreshing (see the file header). */
export function createRefresher(o: RefresherInput): TokenRefresher {
  const fraction = o.refreshAtFraction ?? 2 / 3;
  const initialBackoffMs = o.initialBackoffMs ?? 1000;
  const maxBackoffMs = o.maxBackoffMs ?? 30_000;
  if (!(fraction > 0 && fraction < 1)) throw new RangeError(`refreshAtFraction ${fraction} is not in (0, 1)`);
  if (!(initialBackoffMs > 0 && maxBackoffMs >= initialBackoffMs)) throw new RangeError('backoff needs 0 < initialBackoffMs <= maxBackoffMs');

  let stopped = false;
  let failures = 0;
  let current: IssuedToken | undefined;
  let timer: NodeJS.Timeout | undefined;
  let expiryTimer: NodeJS.Timeout | undefined;
  let firstSettled = false;
  let resolveFirst!: (t: IssuedToken) => void;
  let rejectFirst!: (err: unknown) => void;
  const first = new Promise<IssuedToken>((resolve, reject) => {
    resolveFirst = resolve;
    rejectFirst = reject;
  });
  first.catch(() => undefined); // a caller that never awaits `first` must not crash the process

  /** Run a caller's callback; its throw must not stop the refreshing. */
  function notify<T>(fn: ((arg: T) => void) | undefined, arg: T): void {
    try {
      fn?.(arg);
    } catch {
      // The caller's bug, not ours: keep the guest's token fresh regardless.
    }
  }

  function schedule(fn: () => void, delayMs: number): void {
    clearTimeout(timer);
    timer = setTimeout(fn, Math.max(0, delayMs));
    timer.unref?.();
  }

  async function attempt(): Promise<void> {
    timer = undefined;
    if (stopped) return;
    let issued: IssuedToken;
    try {
      issued = await o.issue();
    } catch (err) {
      if (stopped) return;
      if (err instanceof IdentityError && err.code === 'identity-revoked') {
        failed('issue-failed', err, undefined);
        stop();
        return;
      }
      return retry('issue-failed', err);
    }
    if (stopped) return;
    try {
      await o.deliver(issued.token, issued);
    } catch (err) {
      if (stopped) return;
      return retry('delivery-failed', err);
    }
    if (stopped) return;
    failures = 0;
    current = issued;
    if (!firstSettled) {
      firstSettled = true;
      resolveFirst(issued);
    }
    notify(o.onDelivered, issued);
    watchExpiry(issued);
    const refreshAtMs = issued.issuedAtMs + (issued.expiresAtMs - issued.issuedAtMs) * fraction;
    schedule(() => void attempt(), refreshAtMs - o.now());
  }

  function retry(reason: 'issue-failed' | 'delivery-failed', err: unknown): void {
    failures++;
    const delayMs = Math.min(initialBackoffMs * 2 ** Math.min(failures - 1, 30), maxBackoffMs);
    failed(reason, err, delayMs);
    schedule(() => void attempt(), delayMs);
  }

  function failed(reason: 'issue-failed' | 'delivery-failed', err: unknown, retryInMs: number | undefined): void {
    if (!firstSettled) {
      firstSettled = true;
      rejectFirst(err);
    }
    notify(o.onFailure, { reason, sandboxId: o.sandboxId, failures, error: err, ...(retryInMs === undefined ? {} : { retryInMs }) });
  }

  /** Report the guest's token if it expires before a newer one was delivered. */
  function watchExpiry(issued: IssuedToken): void {
    clearTimeout(expiryTimer);
    expiryTimer = setTimeout(() => {
      if (stopped || current !== issued) return;
      notify(o.onFailure, { reason: 'token-expired', sandboxId: o.sandboxId, failures, expiredAtMs: issued.expiresAtMs });
    }, Math.max(0, issued.expiresAtMs - o.now()));
    expiryTimer.unref?.();
  }

  function stop(): void {
    if (stopped) return;
    stopped = true;
    clearTimeout(timer);
    clearTimeout(expiryTimer);
    if (!firstSettled) {
      firstSettled = true;
      rejectFirst(new IdentityError('identity-refresh-stopped', `token refresh for ${o.sandboxId} stopped before a token was delivered`, {
        fix: 'the sandbox ended or its identity was revoked; create a new sandbox',
      }));
    }
    notify(o.onStop, undefined);
  }

  void attempt();
  return {
    sandboxId: o.sandboxId,
    first,
    current: () => current,
    stop,
    get stopped() {
      return stopped;
    },
  };
}
