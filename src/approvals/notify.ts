/**
 * The webhook notifier: one JSON POST per new pending approval, with a
 * Slack-compatible `text` field and the approval itself (secrets already
 * masked). Bounded by a timeout; a failure rejects (the caller records
 * `approval.notify-failed`) and never holds up the request or the decision.
 */
import type { Approval } from './table.js';

/** Tells someone about a pending approval; rejects on failure. */
export type ApprovalNotifier = (approval: Approval, summary: string) => Promise<void>;

export interface WebhookOptions {
  url: string;
  /** @default 5000 */
  timeoutMs?: number;
}

/** POST `{text, approval}` to a URL; rejects on a network error, a timeout or a non-2xx status. */
export function notifyWebhook(o: WebhookOptions): ApprovalNotifier {
  const timeoutMs = o.timeoutMs ?? 5000;
  return async function postWebhook(approval, summary) {
    const text = `cordon: approval ${approval.id} pending: ${summary}. Decide with \`cordon approvals approve ${approval.id}\` or \`cordon approvals deny ${approval.id}\` (expires ${approval.expiresAt}).`;
    const res = await fetch(o.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text, approval }),
      signal: AbortSignal.timeout(timeoutMs),
      redirect: 'error',
    });
    await res.body?.cancel().catch(() => undefined);
    if (!res.ok) throw new Error(`the webhook answered ${res.status}`);
  };
}
