/**
 * What feeds the metrics: a follower of the audit log (every committed event
 * goes to `metrics.observe`, from the log's head at start, as Prometheus
 * counters start at zero with the process) and a timing wrapper around any
 * `{ append }` sink for the audit append latency.
 *
 * @example
 * const audit = timedAppends(await AuditLog.open(…), metrics);
 * const feed = await startMetricsFeed({ store, metrics });
 * await feed.stop();
 */
import { setTimeout as delay } from 'node:timers/promises';
import { followAudit } from '../audit/index.js';
import type { Store } from '../store/index.js';
import type { Metrics } from './metrics.js';

export interface MetricsFeedOptions {
  store: Store;
  metrics: Pick<Metrics, 'observe' | 'observeFeedError'>;
  /** Pause between polls of the log when nothing is new. @default 500 */
  pollIntervalMs?: number;
  /** Pause before following again after the store failed a read. @default 1000 */
  retryMs?: number;
}

export interface MetricsFeed {
  /** Stop following the log. */
  stop(): Promise<void>;
}

/**
 * Follow the audit log from its head when called (resolved before this
 * returns) and count every later event. A failed read of the store is counted
 * (`cordon_metrics_feed_errors_total`) and the feed goes on from the last
 * event it counted after `retryMs`.
 */
export async function startMetricsFeed(o: MetricsFeedOptions): Promise<MetricsFeed> {
  const abort = new AbortController();
  const { signal } = abort;
  let afterSeq = (await o.store.audit.head())?.seq ?? 0;
  const follow = (async function followForMetrics(): Promise<void> {
    while (!signal.aborted) {
      try {
        for await (const e of followAudit(o.store, { afterSeq, signal, pollIntervalMs: o.pollIntervalMs ?? 500 })) {
          afterSeq = e.seq;
          o.metrics.observe(e);
        }
      } catch {
        if (signal.aborted) return;
        o.metrics.observeFeedError();
        await delay(o.retryMs ?? 1000, undefined, { signal }).catch(() => undefined);
      }
    }
  })();
  return {
    stop: async function stopMetricsFeed(): Promise<void> {
      abort.abort();
      await follow;
    },
  };
}

/**
 * The same sink, with every `append` timed into `metrics.observeAppend`. The
 * result has the sink's whole interface (other members are the sink's own,
 * bound to it), so it can stand in for an `AuditLog`. Results and errors of
 * `append` pass through unchanged.
 */
export function timedAppends<T extends { append(event: never): Promise<unknown> }>(sink: T, metrics: Pick<Metrics, 'observeAppend'>): T {
  const append = sink.append.bind(sink) as (event: unknown) => Promise<unknown>;
  const timed = async function timedAppend(event: unknown): Promise<unknown> {
    const started = performance.now();
    try {
      const stored = await append(event);
      metrics.observeAppend(performance.now() - started, true);
      return stored;
    } catch (err) {
      metrics.observeAppend(performance.now() - started, false);
      throw err;
    }
  };
  const bound = new Map<PropertyKey, { of: unknown; fn: unknown }>();
  return new Proxy(sink, {
    get(target, key) {
      if (key === 'append') return timed;
      const value: unknown = Reflect.get(target, key, target);
      if (typeof value !== 'function') return value;
      // Methods run on the sink itself (its private fields are not on the proxy); one bound copy each.
      let b = bound.get(key);
      if (b?.of !== value) bound.set(key, (b = { of: value, fn: (value as (...args: unknown[]) => unknown).bind(target) }));
      return b.fn;
    },
  });
}
