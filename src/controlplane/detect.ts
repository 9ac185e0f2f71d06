/**
 * Live anomaly detection in the control plane: follows the audit log from its
 * current head, hands every event to the detect service (baselines loaded
 * from and saved to the store), and acts on each alert:
 *
 * - the alert is recorded as a `detect.alert` audit event (evidence and score);
 * - `pause`: the sandbox is paused through the sandbox manager and resumes
 *   only on an operator's word (`POST /v1/sandboxes/ID/resume`);
 * - `approve` ("hold the rest of the session for approval"): the sandbox is
 *   marked supervised in the approvals store (durable, audited
 *   `sandbox.supervised` with the alert id), and from then on its egress
 *   door and the tools gateway hold everything its policy allows until an
 *   operator approves each action (see approvals/supervise.ts) or lifts the
 *   mark (`POST /v1/approvals/supervised/ID/lift`). Without `supervise`
 *   (approvals not running) it is carried out as a pause: the stronger of the
 *   two, so nothing is let through that the operator asked to see first.
 *
 * - with `detect.webhook` configured, the alert is queued for the webhook
 *   (never awaited); an alert it could not deliver is recorded as
 *   `detect.notify-failed`.
 *
 * A failure to act (the sandbox already gone, the audit log refusing) is
 * recorded as `detect.action-failed` when the log still writes; detection
 * goes on either way.
 */
import { followAudit, type AuditEvent, type AuditEventInput } from '../audit/index.js';
import { alertEvent, createAlertWebhook, createDetectService, parseDetectOptions, type Alert, type AlertWebhook, type DetectOptionsInput, type DetectService } from '../detect/index.js';
import type { Store } from '../store/index.js';
import { sleep } from '../util/index.js';

export interface DetectionOptions {
  store: Store;
  audit: { append(e: AuditEventInput): Promise<unknown> };
  /** Pause one sandbox (the manager's `pause` with a system caller). */
  pause: (sandboxId: string) => Promise<unknown>;
  /** Mark one sandbox supervised (the approvals' `supervise`). @default none: `approve` alerts pause */
  supervise?: (mark: { sandboxId: string; agent: string; alertId: string; reason: string }) => Promise<unknown>;
  options?: DetectOptionsInput;
  /** How often the follower polls the log, and baselines are saved. @default 500 / 60000 */
  pollIntervalMs?: number;
  saveIntervalMs?: number;
  /** Alert webhook transport (tests). @default globalThis.fetch */
  fetch?: typeof fetch;
}

export interface Detection {
  readonly service: DetectService;
  /** Stop following, save the baselines. */
  stop(): Promise<void>;
}

/** Start following the audit log from its head. */
export async function startDetection(o: DetectionOptions): Promise<Detection> {
  const hookConfig = parseDetectOptions(o.options ?? {}).webhook;
  const webhook: AlertWebhook | undefined = hookConfig && createAlertWebhook({
    ...hookConfig, ...(o.fetch ? { fetch: o.fetch } : {}),
    onFailure: (a, err, attempts) => {
      void o.audit.append({
        type: 'detect.notify-failed', actor: 'system', agent: a.agent, ...(a.sandbox ? { sandbox: a.sandbox } : {}), decision: 'error', reason: 'webhook',
        data: { alert: a.id, attempts, problem: err.message, host: new URL(hookConfig.url).host },
      }).catch(() => undefined);
    },
  });
  const act = async function actOnAlert(a: Alert): Promise<void> {
    try {
      await o.audit.append(alertEvent(a));
    } finally {
      webhook?.notify(a); // queued, never awaited: a slow receiver holds up nothing
    }
    if ((a.action === 'pause' || a.action === 'approve') && a.sandbox) {
      try {
        if (a.action === 'approve' && o.supervise) await o.supervise({ sandboxId: a.sandbox, agent: a.agent, alertId: a.id, reason: `${a.kind}:${a.feature}` });
        else await o.pause(a.sandbox);
      } catch (err) {
        await o.audit.append({
          type: 'detect.action-failed', actor: 'system', agent: a.agent, sandbox: a.sandbox, decision: 'error', reason: a.action,
          data: { alert: a.id, problem: (err as Error).message },
        }).catch(() => undefined);
      }
    }
  };
  const service = await createDetectService({
    store: o.store, ...(o.options ? { options: o.options } : {}), onAlert: act,
    onError: (err, a) => {
      void o.audit.append({
        type: 'detect.action-failed', actor: 'system', agent: a.agent, ...(a.sandbox ? { sandbox: a.sandbox } : {}), decision: 'error', reason: a.action,
        data: { alert: a.id, problem: (err as Error).message },
      }).catch(() => undefined);
    },
  });
  // Detection is not a door: a failure here stops no action, so it is recorded
  // (`detect.error`, at most once per kind of failure and minute) rather than thrown.
  const lastSaid = new Map<string, number>();
  const report = function reportDetectError(what: string, err: unknown, seq?: number): void {
    const now = Date.now();
    if (now - (lastSaid.get(what) ?? 0) < 60_000) return;
    lastSaid.set(what, now);
    void o.audit.append({
      type: 'detect.error', actor: 'system', decision: 'error', reason: what,
      data: { problem: (err as Error)?.message ?? String(err), ...(seq !== undefined ? { seq } : {}) },
    }).catch(() => undefined);
  };
  const abort = new AbortController();
  const pollIntervalMs = o.pollIntervalMs ?? 500;
  let after = (await o.store.audit.head())?.seq ?? 0;
  // A failure to read the log (`follow-failed`) is recorded and the follower
  // starts again after the last event it judged, so no event is skipped.
  const follow = (async function followForDetection(): Promise<void> {
    while (!abort.signal.aborted) {
      try {
        for await (const e of followAudit(o.store, { signal: abort.signal, pollIntervalMs, afterSeq: after })) {
          after = e.seq;
          if (e.type.startsWith('detect.')) continue; // our own alerts and errors are not behaviour
          await service.observe(eventForDetector(e)).catch((err: unknown) => report('observe-failed', err, e.seq));
        }
      } catch (err) {
        report('follow-failed', err, after);
        await sleep(Math.max(pollIntervalMs, 50));
      }
    }
  })();
  const saver = setInterval(() => void service.save().catch((err: unknown) => report('save-failed', err)), o.saveIntervalMs ?? 60_000);
  saver.unref();
  return {
    service,
    stop: async function stopDetection(): Promise<void> {
      clearInterval(saver);
      abort.abort();
      await follow;
      await service.save();
      await webhook?.close();
    },
  };
}

function eventForDetector(e: AuditEvent) {
  return {
    seq: e.seq, ts: e.ts, type: e.type,
    ...(e.agent ? { agent: e.agent } : {}), ...(e.sandbox ? { sandbox: e.sandbox } : {}), ...(e.decision ? { decision: e.decision } : {}),
    data: e.data,
  };
}
