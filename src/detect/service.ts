/**
 * The detector as the control plane runs it: baselines loaded from and saved
 * to the store, every alert stored before `onAlert` sees it. `onAlert` is
 * where the control plane records the `detect.alert` audit event, calls the
 * webhook notifier and carries out the alert's action (`pause`: the sandbox
 * manager's `pause(id, caller)`, resumed only by an operator; `approve`: mark
 * the session so every further door action is held for approval).
 *
 * @example
 * const svc = await createDetectService({ store, options: config.detect,
 *   onAlert: async (a) => { await audit.append(alertEvent(a)); if (a.action === 'pause' && a.sandbox) await manager.pause(a.sandbox, system); } });
 * followAudit(store, { onEvent: (e) => svc.observe(e) });
 */
import type { Store } from '../store/index.js';
import type { AuditEventInput } from '../audit/index.js';
import { createDetector, type Alert, type Detector, type DetectorOptions } from './detector.js';
import type { DetectEvent } from './features.js';
import { openDetectStore, type DetectStore } from './store.js';

export interface DetectServiceOptions extends Omit<DetectorOptions, 'baselines'> {
  store: Store;
  /** Called once per alert, after it is stored. A rejection is passed to `onError`. */
  onAlert?: (a: Alert) => Promise<void> | void;
  /** @default rethrow from observe */
  onError?: (err: unknown, a: Alert) => void;
}

export interface DetectService {
  readonly detector: Detector;
  readonly repo: DetectStore;
  /** Judge one event; stores and hands on the alerts it raised. */
  observe(e: DetectEvent): Promise<Alert[]>;
  /** Save every baseline (call periodically and on shutdown). */
  save(): Promise<void>;
}

/** The audit event that records an alert (type `detect.alert`, actor `system`). */
export function alertEvent(a: Alert): AuditEventInput {
  return {
    type: 'detect.alert', actor: 'system', agent: a.agent, ...(a.sandbox ? { sandbox: a.sandbox } : {}),
    decision: a.action === 'none' ? 'flag' : a.action, reason: `${a.kind}:${a.feature}`,
    data: { id: a.id, kind: a.kind, feature: a.feature, value: a.value, score: a.score, evidence: a.evidence, action: a.action, ...(a.seq !== undefined ? { seq: a.seq } : {}) },
  };
}

export async function createDetectService(o: DetectServiceOptions): Promise<DetectService> {
  const repo = await openDetectStore(o.store);
  const detector = createDetector({ ...o, baselines: await repo.loadBaselines() });
  return {
    detector,
    repo,
    async observe(e) {
      const alerts = detector.observe(e);
      for (const a of alerts) {
        await repo.insertAlert(a);
        try {
          await o.onAlert?.(a);
        } catch (err) {
          if (!o.onError) throw err;
          o.onError(err, a);
        }
      }
      return alerts;
    },
    async save() {
      for (const b of detector.baselines()) await repo.saveBaseline(b);
    },
  };
}
