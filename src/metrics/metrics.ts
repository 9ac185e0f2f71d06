/**
 * The control plane's Prometheus metrics, derived from the audit stream: every
 * action in cordon is an audit event, so `observe(event)` is the one input
 * (fed by a follower of the log, see feed.ts). Sandboxes by state and pending
 * approvals are read at scrape time. Each instance has its own registry (never
 * prom-client's global one), so several control planes (or tests) in one
 * process do not mix their figures.
 *
 * Labels are bounded (see labels.ts): agents by the configured names, egress
 * reasons by the policy's and the proxy's reason lists, gateway reasons and
 * providers by a cap on distinct values. Never by host, sandbox id or path.
 *
 * @example
 * const metrics = createMetrics({ agents: Object.keys(config.agents), sandboxes: () => manager.list() });
 * metrics.observe(event);
 * const text = await metrics.registry.metrics();
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { DROPPED_CODES, type AuditEvent } from '../audit/index.js';
import { PROXY_REASONS } from '../egress/index.js';
import { EGRESS_REASONS } from '../policy/index.js';
import type { SandboxInfo, SandboxState } from '../sandbox/index.js';
import { boundedLabel, type LabelGuard } from './labels.js';

const SANDBOX_STATES = ['starting', 'running', 'paused', 'stopping', 'destroyed'] as const satisfies readonly SandboxState[];
const LIFECYCLE = new Set(['sandbox.create', 'sandbox.ready', 'sandbox.destroy', 'sandbox.pause', 'sandbox.resume']);
/** The gateway's call outcomes (`CallOutcome` in gateway/audit.ts). */
const LLM_OUTCOMES = ['ok', 'blocked', 'upstream-status', 'upstream-error', 'upstream-timeout', 'upstream-cut', 'upstream-malformed', 'client-closed'];
const DECISIONS = ['allow', 'deny', 'approve', 'flag', 'error'];
const ALERT_KINDS = ['novelty', 'rate', 'volume'];
const ALERT_ACTIONS = ['none', 'pause', 'approve'];

export interface MetricsOptions {
  /** The configured agent names; other names are labelled `other`. @default an open set capped at 64 names */
  agents?: Iterable<string>;
  /** The sandboxes now (read at scrape time for `cordon_sandboxes`). @default none: the gauge stays 0 */
  sandboxes?: () => readonly Pick<SandboxInfo, 'state'>[];
  /** How many approvals are pending now (read at scrape time). @default the gauge is not exported */
  pendingApprovals?: () => Promise<number>;
  /** Also export Node process metrics (CPU, memory, event loop) prefixed `cordon_`. @default true */
  processMetrics?: boolean;
}

export interface Metrics {
  /** The registry to expose (`registry.metrics()`, `registry.contentType`). */
  readonly registry: Registry;
  /** Count one audit event. Never throws. */
  observe(event: AuditEvent): void;
  /** Record one audit append: its duration and whether it was stored. */
  observeAppend(durationMs: number, ok: boolean): void;
  /** Count a failed read of the log by the feed (see feed.ts). */
  observeFeedError(): void;
  /** Count audit events that were not recorded, by error code (an `AuditLog` `onDropped` report). */
  observeDropped(code: string, count: number): void;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);

/** Build the metrics and their registry. */
export function createMetrics(opts: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  const registers = [registry];
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'cordon_' });

  const agent: LabelGuard = boundedLabel(opts.agents ? { known: opts.agents } : {});
  const decision = boundedLabel({ known: DECISIONS });
  const egressReason = boundedLabel({ known: [...EGRESS_REASONS, ...PROXY_REASONS] });
  const llmReason = boundedLabel({ maxValues: 64 });
  const authReason = boundedLabel({ maxValues: 32 });
  const provider = boundedLabel({ maxValues: 32 });
  const outcome = boundedLabel({ known: LLM_OUTCOMES });
  const eventType = boundedLabel({ maxValues: 128 });
  const alertKind = boundedLabel({ known: ALERT_KINDS });
  const alertAction = boundedLabel({ known: ALERT_ACTIONS });

  const events = new Counter({ name: 'cordon_audit_events_total', help: 'Audit events written, by type', labelNames: ['type'], registers });
  const appendSeconds = new Histogram({
    name: 'cordon_audit_append_duration_seconds', help: 'Time from audit append to the event being stored (or refused)', labelNames: ['result'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1], registers,
  });
  new Gauge({
    name: 'cordon_sandboxes', help: 'Sandboxes by state, now', labelNames: ['state'], registers,
    collect() {
      const counts = new Map<string, number>(SANDBOX_STATES.map((s) => [s, 0]));
      for (const s of opts.sandboxes?.() ?? []) counts.set(s.state, (counts.get(s.state) ?? 0) + 1);
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  const lifecycle = new Counter({ name: 'cordon_sandbox_lifecycle_total', help: 'Sandbox creations, ready, pauses, resumes and destructions', labelNames: ['agent', 'event'], registers });
  const execs = new Counter({ name: 'cordon_sandbox_execs_total', help: 'Commands run in sandboxes, by outcome (ok, nonzero, timeout, signal, error)', labelNames: ['agent', 'outcome'], registers });
  const execSeconds = new Histogram({
    name: 'cordon_sandbox_exec_duration_seconds', help: 'Duration of commands run in sandboxes', labelNames: ['agent'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300], registers,
  });
  const egress = new Counter({ name: 'cordon_egress_requests_total', help: 'Egress decisions, by result and reason', labelNames: ['agent', 'decision', 'reason'], registers });
  const egressBytes = new Counter({ name: 'cordon_egress_bytes_total', help: 'Bytes through the egress proxy (out: to the internet)', labelNames: ['agent', 'direction'], registers });
  const llmRequests = new Counter({ name: 'cordon_llm_requests_total', help: 'LLM gateway requests, by decision and reason', labelNames: ['agent', 'decision', 'reason'], registers });
  const llmAuth = new Counter({ name: 'cordon_llm_auth_refusals_total', help: 'LLM gateway authentications refused, by reason', labelNames: ['reason'], registers });
  const llmResponses = new Counter({ name: 'cordon_llm_responses_total', help: 'Forwarded LLM calls that ended, by outcome', labelNames: ['agent', 'provider', 'outcome'], registers });
  const llmTokens = new Counter({ name: 'cordon_llm_tokens_total', help: 'LLM tokens (reported by the provider or estimated)', labelNames: ['agent', 'provider', 'direction'], registers });
  const llmSeconds = new Histogram({
    name: 'cordon_llm_request_duration_seconds', help: 'Duration of forwarded LLM calls', labelNames: ['agent', 'provider'],
    buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300], registers,
  });
  const approvals = new Counter({ name: 'cordon_approvals_total', help: 'Approval transitions (requested, approved, denied, partly-approved, consumed, expired, refused)', labelNames: ['agent', 'state'], registers });
  if (opts.pendingApprovals) {
    const pending = opts.pendingApprovals;
    new Gauge({
      name: 'cordon_approvals_pending', help: 'Approvals waiting for a decision, now', registers,
      async collect() {
        this.set(await pending());
      },
    });
  }
  const failures = new Counter({ name: 'cordon_metrics_observe_failures_total', help: 'Audit events the metrics could not count (malformed data)', registers });
  const feedErrors = new Counter({ name: 'cordon_metrics_feed_errors_total', help: 'Failed reads of the audit log by the metrics feed (it retries)', registers });
  const droppedCode = boundedLabel({ known: DROPPED_CODES });
  const dropped = new Counter({ name: 'cordon_audit_dropped_events_total', help: 'Audit events not recorded (failed write or refused append), by error code', labelNames: ['code'], registers });
  const alerts = new Counter({ name: 'cordon_alerts_total', help: 'Detection alerts, by kind and action', labelNames: ['agent', 'kind', 'action'], registers });

  function approvalState(e: AuditEvent): string | undefined {
    switch (e.type) {
      case 'approval.requested': return 'requested';
      case 'approval.decided':
        if (e.data.final === false) return 'partly-approved';
        return e.decision === 'approve' ? 'approved' : 'denied';
      case 'approval.consumed': return 'consumed';
      case 'approval.expired': return 'expired';
      case 'approval.refused': return 'refused';
      default: return undefined;
    }
  }

  function execOutcome(d: Record<string, unknown>): string {
    if (d.error !== undefined) return 'error';
    if (d.timedOut === true) return 'timeout';
    if (d.exitCode === 0) return 'ok';
    if (typeof d.signal === 'string' && d.signal !== '') return 'signal';
    return 'nonzero';
  }

  function count(e: AuditEvent): void {
    events.inc({ type: eventType(e.type) });
    const a = agent(e.agent);
    const d = e.data ?? {};
    if (LIFECYCLE.has(e.type)) {
      lifecycle.inc({ agent: a, event: e.type.slice('sandbox.'.length) });
      return;
    }
    switch (e.type) {
      case 'sandbox.exec.result': {
        execs.inc({ agent: a, outcome: execOutcome(d) });
        const ms = num(d.durationMs);
        if (ms !== undefined) execSeconds.observe({ agent: a }, ms / 1000);
        return;
      }
      case 'egress.request':
        egress.inc({ agent: a, decision: decision(e.decision), reason: egressReason(e.reason) });
        return;
      case 'egress.refusals': {
        // Refusals past a door's audit budget, counted into one event: each still counts here.
        const byDecision = d.byDecision;
        if (!byDecision || typeof byDecision !== 'object') return;
        for (const [dec, reasons] of Object.entries(byDecision as Record<string, unknown>)) {
          if (!reasons || typeof reasons !== 'object') continue;
          for (const [reason, n] of Object.entries(reasons as Record<string, unknown>)) {
            const count = num(n);
            if (count) egress.inc({ agent: a, decision: decision(dec), reason: egressReason(reason) }, count);
          }
        }
        return;
      }
      case 'egress.close': {
        const out = num(d.bytesOut);
        const inn = num(d.bytesIn);
        if (out) egressBytes.inc({ agent: a, direction: 'out' }, out);
        if (inn) egressBytes.inc({ agent: a, direction: 'in' }, inn);
        return;
      }
      case 'llm.request':
        llmRequests.inc({ agent: a, decision: decision(e.decision), reason: llmReason(e.reason) });
        return;
      case 'llm.auth':
        llmAuth.inc({ reason: authReason(e.reason) });
        return;
      case 'llm.response': {
        const p = provider(d.provider);
        llmResponses.inc({ agent: a, provider: p, outcome: outcome(d.outcome) });
        const tin = num(d.tokensIn);
        const tout = num(d.tokensOut);
        if (tin) llmTokens.inc({ agent: a, provider: p, direction: 'in' }, tin);
        if (tout) llmTokens.inc({ agent: a, provider: p, direction: 'out' }, tout);
        const ms = num(d.latencyMs);
        if (ms !== undefined) llmSeconds.observe({ agent: a, provider: p }, ms / 1000);
        return;
      }
      case 'detect.alert':
        alerts.inc({ agent: a, kind: alertKind(d.kind), action: alertAction(d.action) });
        return;
      default: {
        const state = approvalState(e);
        if (state) approvals.inc({ agent: a, state });
      }
    }
  }

  return {
    registry,
    observe: function observeEvent(e: AuditEvent): void {
      try {
        count(e);
      } catch {
        // A malformed event must not stop the feed; it stays in the log and is counted here.
        failures.inc();
      }
    },
    observeAppend: function observeAppend(durationMs: number, ok: boolean): void {
      appendSeconds.observe({ result: ok ? 'ok' : 'error' }, Math.max(0, durationMs) / 1000);
    },
    observeFeedError: function observeFeedError(): void {
      feedErrors.inc();
    },
    observeDropped: function observeDropped(code: string, count: number): void {
      if (Number.isInteger(count) && count > 0) dropped.inc({ code: droppedCode(code) }, count);
    },
  };
}
