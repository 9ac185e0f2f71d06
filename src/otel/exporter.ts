/**
 * The OTLP log exporter for audit events. It follows the committed audit log
 * (like the metrics feed), so exporting never holds up an append: a slow or
 * absent collector only fills a bounded queue. Events are sent in batches
 * (`maxBatch`, or whatever waited `flushIntervalMs`), one request at a time,
 * each bounded by `timeoutMs` and retried `retries` times. When the queue is
 * full the oldest event is dropped; a batch that still fails is dropped. Drops
 * are counted (`stats()`) and recorded as `telemetry.dropped` audit events,
 * at most one per `droppedReportMs`, carrying the count since the last one.
 *
 * @example
 * const exp = await startAuditExport({ store, audit, options: config.telemetry.otlp });
 * // …
 * await exp.stop(); // stops following, sends what is queued (bounded by the timeouts)
 */
import { followAudit, type AuditEvent, type AuditEventInput } from '../audit/index.js';
import type { Store } from '../store/index.js';
import { sleep } from '../util/index.js';
import { logsUrl, otlpOptionsSchema, type OtlpOptions, type OtlpOptionsInput } from './options.js';
import { toOtlpLogs } from './otlp.js';

export interface ExportStats {
  /** Events accepted by the collector. */
  exported: number;
  /** Events dropped, by why. */
  dropped: { queueFull: number; exportFailed: number };
  queued: number;
  /** Export requests that failed (each attempt). */
  failedRequests: number;
}

export interface OtlpLogExporterOptions {
  options: OtlpOptionsInput;
  /** Told of drops (`telemetry.dropped`), at most once per `droppedReportMs`. */
  onDropped?: (report: { dropped: number; queueFull: number; exportFailed: number; problem?: string }) => void;
  /** @default 10000 */
  droppedReportMs?: number;
  /** Wait before the first retry, doubled for each further one. @default 500 */
  retryDelayMs?: number;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
  /** Instrumentation scope version (cordon's version). */
  version?: string;
}

export interface OtlpLogExporter {
  /** Queue one event; never waits. Drops the oldest when the queue is full. */
  enqueue(e: AuditEvent): void;
  /** Send everything queued now. */
  flush(): Promise<void>;
  stats(): ExportStats;
  /** Send what is queued, report the last drops and stop the timers. */
  close(): Promise<void>;
}

export function createOtlpLogExporter(o: OtlpLogExporterOptions): OtlpLogExporter {
  const opts: OtlpOptions = otlpOptionsSchema.parse(o.options);
  const url = logsUrl(opts.endpoint);
  const doFetch = o.fetch ?? fetch;
  const retryDelayMs = o.retryDelayMs ?? 500;
  const reportMs = o.droppedReportMs ?? 10_000;
  const queue: AuditEvent[] = [];
  const stats: ExportStats = { exported: 0, dropped: { queueFull: 0, exportFailed: 0 }, queued: 0, failedRequests: 0 };
  const unreported = { queueFull: 0, exportFailed: 0, problem: undefined as string | undefined };
  let lastReportMs = 0;
  let reportTimer: NodeJS.Timeout | undefined;
  let sending: Promise<void> | undefined;
  /** Once closing: no more retries, and the first failed batch drops the rest, so a dead collector cannot hold up shutdown. */
  let closing = false;

  function report(): void {
    reportTimer = undefined;
    const dropped = unreported.queueFull + unreported.exportFailed;
    if (dropped === 0) return;
    lastReportMs = Date.now();
    const r = { dropped, queueFull: unreported.queueFull, exportFailed: unreported.exportFailed, ...(unreported.problem ? { problem: unreported.problem } : {}) };
    unreported.queueFull = unreported.exportFailed = 0;
    unreported.problem = undefined;
    try {
      o.onDropped?.(r);
    } catch {
      // the reporter failed; the counts stay in stats()
    }
  }
  function dropped(kind: 'queueFull' | 'exportFailed', n: number, problem?: string): void {
    stats.dropped[kind] += n;
    unreported[kind] += n;
    if (problem) unreported.problem ??= problem;
    if (reportTimer) return;
    reportTimer = setTimeout(report, Math.max(0, lastReportMs + reportMs - Date.now()));
    reportTimer.unref();
  }

  /** Send one batch with retries; false when it was dropped. */
  async function post(batch: AuditEvent[]): Promise<boolean> {
    const body = JSON.stringify(toOtlpLogs(batch, { serviceName: opts.serviceName }, o.version));
    let problem = '';
    const retries = closing ? 0 : opts.retries;
    for (let attempt = 1; attempt <= retries + 1; attempt++) {
      try {
        const res = await doFetch(url, {
          method: 'POST', body, redirect: 'error', signal: AbortSignal.timeout(opts.timeoutMs),
          headers: { ...opts.headers, 'content-type': 'application/json' },
        });
        await res.body?.cancel().catch(() => undefined);
        if (res.ok) {
          stats.exported += batch.length;
          return true;
        }
        problem = `the collector answered ${res.status}`;
        // 4xx other than 408/429 will not get better by retrying (OTLP/HTTP spec).
        if (res.status < 500 && res.status !== 408 && res.status !== 429) attempt = retries + 1;
      } catch (err) {
        problem = err instanceof Error ? err.message : String(err);
      }
      stats.failedRequests += 1;
      if (attempt <= retries) await sleep(retryDelayMs * 2 ** (attempt - 1));
    }
    dropped('exportFailed', batch.length, problem);
    return false;
  }

  function flush(): Promise<void> {
    sending ??= (async function sendQueued() {
      try {
        while (queue.length > 0) {
          const sent = await post(queue.splice(0, opts.maxBatch));
          if (!sent && closing && queue.length > 0) dropped('exportFailed', queue.splice(0).length, 'shutting down after a failed export');
        }
      } finally {
        sending = undefined;
      }
    })();
    return sending;
  }

  const timer = setInterval(() => { if (queue.length > 0) void flush(); }, opts.flushIntervalMs);
  timer.unref();

  return {
    enqueue: function enqueueAuditEvent(e: AuditEvent): void {
      if (queue.length >= opts.maxQueue) {
        queue.shift();
        dropped('queueFull', 1);
      }
      queue.push(e);
      if (queue.length >= opts.maxBatch && !sending) void flush();
    },
    flush,
    stats: () => ({ ...structuredClone(stats), queued: queue.length }),
    close: async function closeExporter(): Promise<void> {
      clearInterval(timer);
      closing = true;
      await sending;
      await flush();
      if (reportTimer) clearTimeout(reportTimer);
      report();
    },
  };
}

export interface AuditExportOptions extends Omit<OtlpLogExporterOptions, 'onDropped'> {
  store: Store;
  audit: { append(e: AuditEventInput): Promise<unknown> };
  /** @default 500 */
  pollIntervalMs?: number;
}

export interface AuditExport {
  readonly exporter: OtlpLogExporter;
  stop(): Promise<void>;
}

/** Follow the audit log from its head and export every later event. */
export async function startAuditExport(o: AuditExportOptions): Promise<AuditExport> {
  const exporter = createOtlpLogExporter({
    ...o,
    onDropped: (r) => {
      void o.audit.append({
        type: 'telemetry.dropped', actor: 'system', decision: 'error', reason: r.queueFull > 0 ? 'queue-full' : 'export-failed',
        data: { ...r, endpoint: new URL(logsUrl(otlpOptionsSchema.parse(o.options).endpoint)).host },
      }).catch(() => undefined);
    },
  });
  const abort = new AbortController();
  const pollIntervalMs = o.pollIntervalMs ?? 500;
  let after = (await o.store.audit.head())?.seq ?? 0;
  const follow = (async function followForExport(): Promise<void> {
    while (!abort.signal.aborted) {
      try {
        for await (const e of followAudit(o.store, { signal: abort.signal, pollIntervalMs, afterSeq: after })) {
          after = e.seq;
          exporter.enqueue(e);
        }
      } catch {
        await sleep(Math.max(pollIntervalMs, 50)); // the store failed a read: go on from the last event
      }
    }
  })();
  return {
    exporter,
    stop: async function stopAuditExport(): Promise<void> {
      abort.abort();
      await follow;
      await exporter.close();
    },
  };
}
