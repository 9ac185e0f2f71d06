/**
 * The alert webhook: one JSON POST per alert, with a Slack-compatible `text`
 * field and the alert itself (evidence and score), in the style of the
 * approvals notifier. Sending never holds up detection: `notify` queues the
 * alert and returns; one sender works through the queue with a timeout per
 * attempt and a bounded number of retries. An alert that cannot be
 * delivered (every attempt failed, or the queue was full) is handed to
 * `onFailure`, where the control plane records `detect.notify-failed`.
 *
 * @example
 * const hook = createAlertWebhook({ url: 'https://hooks.example/T1/B2', onFailure: (a, err) => audit(a, err) });
 * hook.notify(alert); // returns at once
 * await hook.close(); // on shutdown: waits for the queue, bounded by the timeouts
 */
import type { Alert } from './detector.js';

export interface AlertWebhookOptions {
  url: string;
  /** Per attempt. @default 5000 */
  timeoutMs?: number;
  /** Attempts after the first one fails. @default 2 */
  retries?: number;
  /** Wait before the first retry, doubled for each further one. @default 500 */
  retryDelayMs?: number;
  /** Alerts waiting to be sent; a new alert beyond this is not sent and is reported. @default 100 */
  maxQueued?: number;
  /** Told once per alert that could not be delivered, with the last problem and the attempts made. */
  onFailure?: (alert: Alert, err: Error, attempts: number) => void;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
}

export interface AlertWebhook {
  /** Queue an alert for sending; never throws, never waits. */
  notify(alert: Alert): void;
  /** Alerts waiting or being sent. */
  pending(): number;
  /** Stop taking alerts and wait until the queue is empty. */
  close(): Promise<void>;
}

/** The one-line summary a chat channel shows. */
export function alertText(a: Alert): string {
  const where = a.sandbox ? ` in sandbox ${a.sandbox}` : '';
  const what = a.kind === 'novelty' ? `new ${a.feature} ${JSON.stringify(a.value)}` : `${a.feature} ${a.value} per minute`;
  const threshold = typeof a.evidence.threshold === 'number' ? ` (threshold ${a.evidence.threshold})` : '';
  const action = a.action === 'none' ? 'recorded only' : a.action === 'pause' ? 'sandbox paused until an operator resumes it' : 'session held for approval';
  return `cordon: ${a.kind} alert for agent ${a.agent}${where}: ${what}, score ${a.score}${threshold}; ${action}. Acknowledge with \`cordon alerts ack ${a.id}\`.`;
}

export function createAlertWebhook(o: AlertWebhookOptions): AlertWebhook {
  const timeoutMs = o.timeoutMs ?? 5000;
  const retries = o.retries ?? 2;
  const retryDelayMs = o.retryDelayMs ?? 500;
  const maxQueued = o.maxQueued ?? 100;
  const doFetch = o.fetch ?? fetch;
  const queue: Alert[] = [];
  let worker: Promise<void> | undefined;
  let closed = false;

  const fail = (a: Alert, err: Error, attempts: number): void => {
    try {
      o.onFailure?.(a, err, attempts);
    } catch {
      // The reporter itself failed; there is nowhere left to say so.
    }
  };

  async function postOnce(a: Alert): Promise<void> {
    const res = await doFetch(o.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text: alertText(a), alert: a }),
      signal: AbortSignal.timeout(timeoutMs),
      redirect: 'error',
    });
    await res.body?.cancel().catch(() => undefined);
    if (!res.ok) throw new Error(`the alert webhook answered ${res.status}`);
  }

  async function deliver(a: Alert): Promise<void> {
    let last: Error = new Error('not sent');
    for (let attempt = 1; attempt <= retries + 1; attempt++) {
      try {
        await postOnce(a);
        return;
      } catch (err) {
        last = err instanceof Error ? err : new Error(String(err));
        if (attempt <= retries) await new Promise((r) => setTimeout(r, retryDelayMs * 2 ** (attempt - 1)));
      }
    }
    fail(a, last, retries + 1);
  }

  async function drain(): Promise<void> {
    for (let a = queue.shift(); a !== undefined; a = queue.shift()) await deliver(a);
    worker = undefined;
  }

  return {
    notify: function notifyAlert(a: Alert): void {
      if (closed) return fail(a, new Error('the alert webhook is closed'), 0);
      if (queue.length >= maxQueued) return fail(a, new Error(`the alert webhook queue is full (${maxQueued} alerts waiting)`), 0);
      queue.push(a);
      worker ??= drain();
    },
    pending: () => queue.length + (worker ? 1 : 0),
    close: async function closeAlertWebhook(): Promise<void> {
      closed = true;
      await worker;
    },
  };
}
