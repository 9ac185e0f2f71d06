/**
 * The steps of a demo run as the terminal shows them: the agent's progress
 * lines (`@@cordon-demo {…}`) read from its output, each step with the audit
 * events that belong to it and a plain-words note on what they mean, and the
 * operator's side (a second terminal, in effect) that watches the pending
 * approvals through the API and approves the demo's payment.
 */
import type { AuditEvent } from '../audit/index.js';
import type { ControlPlane } from '../controlplane/index.js';
import { describeError } from '../errors/index.js';
import { sleep } from '../util/index.js';
import { STEP_PREFIX } from './agent-program.js';
import { approvalEvent, endOfModelCall, endOfRequest, gatewayClose, isApprovalPoll, tunnelClose, type EventFeed } from './feed.js';
import { secretsNoted } from './outcomes.js';
import type { AgentStep, DemoReporter } from './render.js';

/** Split streamed stdout into the agent's step lines. */
export function stepParser(onStep: (s: AgentStep) => void): (chunk: Buffer) => void {
  let pending = '';
  return function parseSteps(chunk) {
    pending += chunk.toString('utf8');
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (!line.startsWith(STEP_PREFIX)) continue;
      try {
        const step = JSON.parse(line.slice(STEP_PREFIX.length)) as AgentStep;
        if (step && typeof step === 'object' && typeof step.kind === 'string') onStep(step);
      } catch {
        // a line the agent mangled: not a step
      }
    }
  };
}

/** How a step is shown, and which audit events belong to it. */
export function describeStep(s: AgentStep, feed: EventFeed): { title: string; lines: string[]; events: () => Promise<AuditEvent[]> } {
  if (s.kind === 'model' || s.kind === 'model-error') {
    const tools = Array.isArray(s.tools) && s.tools.length > 0 ? ` → asks for ${s.tools.join(', ')}` : '';
    const title = s.kind === 'model' ? `agent → model (turn ${Number(s.turn) + 1}, answered by ${String(s.model ?? '?')})${tools}` : 'agent → model: refused or failed';
    const lines = s.kind === 'model' ? [String(s.text ?? '').slice(0, 300)] : [`HTTP ${s.status} ${String(s.refusal ?? '')} ${String(s.body ?? '').slice(0, 200)}`];
    return { title, lines: lines.filter(Boolean), events: () => feed.until(endOfModelCall, { trailer: gatewayClose }) };
  }
  if (s.kind === 'tool') {
    const url = String(s.url);
    const outcome = Number(s.status) > 0 ? `HTTP ${s.status}` : 'refused';
    const why = s.refusal ? ` (${String(s.refusal).slice(0, 160)})` : '';
    return { title: `agent → ${String(s.tool)}: ${url}`, lines: [`${outcome}${why}`], events: () => feed.until(endOfRequest(url), { trailer: tunnelClose(url) }) };
  }
  if (s.kind === 'done') return { title: 'agent finished', lines: [String(s.text ?? '').slice(0, 400)], events: async () => [] };
  return { title: `agent: ${s.kind}`, lines: [], events: async () => [] };
}

/** Plain-words notes on what some events mean (each said once per run). */
const said = new WeakMap<DemoReporter, Set<string>>();
function explain(r: DemoReporter, events: readonly AuditEvent[]): void {
  let seen = said.get(r);
  if (!seen) said.set(r, (seen = new Set()));
  const once = (key: string, text: string): void => {
    if (seen!.has(key)) return;
    seen!.add(key);
    r.line(`  → ${text}`);
  };
  for (const e of events) {
    const hits = Array.isArray(e.data.hits) ? (e.data.hits as Array<{ filter?: string; action?: string; segment?: string }>) : [];
    if (e.type === 'llm.request' && hits.some((h) => h.filter === 'injection')) {
      once('injection', 'the gateway found a prompt injection in a tool result (the inbox message) and replaced that part before the model saw it');
    }
    if (e.type === 'llm.response' && hits.some((h) => h.filter === 'tool-url')) {
      once('tool-url', 'the model asked for a URL this agent may not reach: flagged here (the demo sets toolCallUrls: flag so you see the door refuse it; the default, block, stops such an answer at the gateway)');
    }
    if (e.type === 'egress.request' && e.decision === 'deny') r.line(`  → refused at the sandbox's egress door: ${e.reason ?? '?'}; nothing left the host`);
    if (e.type === 'egress.request' && e.decision === 'allow' && secretsNoted(e).length > 0) {
      once('secret', 'the proxy put the real API token in place of the placeholder the agent sent, for this host only; the guest never held the token');
    }
  }
}

/** Show a step's events, without the operator's approval polls (counted instead). */
export function showEvents(r: DemoReporter, events: readonly AuditEvent[]): void {
  const polls = events.filter(isApprovalPoll).length;
  r.events(events.filter((e) => !isApprovalPoll(e)));
  explain(r, events);
  if (polls > 0) r.line(`(+${polls} audited api.request GET /v1/approvals: the operator watching for approvals)`);
}

export interface OperatorWatch {
  stop(): Promise<void>;
}

/**
 * The operator's side, as a second terminal would do it: watch the pending
 * approvals through the API with the operator token, show the exact action,
 * and approve the demo's payment.
 */
export function watchApprovals(cp: ControlPlane, sandboxId: string, r: DemoReporter, feed: EventFeed, serial: (fn: () => Promise<void>) => Promise<void>): OperatorWatch {
  let stopped = false;
  const headers = { authorization: `Bearer ${cp.operatorToken.token}`, 'content-type': 'application/json' };
  const loop = (async function operatorLoop() {
    const done = new Set<string>();
    while (!stopped) {
      await sleep(250);
      const res = await fetch(`${cp.url}/v1/approvals?state=pending`, { headers, signal: AbortSignal.timeout(10_000) });
      if (!res.ok) throw new Error(`GET /v1/approvals answered ${res.status}`);
      const { approvals } = (await res.json()) as { approvals: Array<{ id: string; action: { kind: string; sandboxId: string; method?: string; url?: string; headers?: Record<string, string>; bodyExcerpt?: string } }> };
      for (const a of approvals) {
        if (done.has(a.id) || a.action.sandboxId !== sandboxId || a.action.kind !== 'egress' || !/\/v1\/payments$/.test(a.action.url ?? '')) continue;
        done.add(a.id);
        await serial(async () => {
          r.section(`agent → demo_api: ${a.action.method} ${a.action.url} is HELD for a human`);
          showEvents(r, await feed.until(approvalEvent('approval.requested', a.id)));
          r.section(`OPERATOR (a second terminal): approval ${a.id} is pending`);
          r.line(`the exact request: ${a.action.method} ${a.action.url}`);
          for (const [k, v] of Object.entries(a.action.headers ?? {})) r.line(`  ${k}: ${v}`);
          if (a.action.bodyExcerpt) r.line(`  body: ${a.action.bodyExcerpt.slice(0, 200)}`);
          r.line(`the operator approves: POST /v1/approvals/${a.id}/approve (same as \`cordon approvals approve ${a.id}\`)`);
          const ok = await fetch(`${cp.url}/v1/approvals/${a.id}/approve`, {
            method: 'POST', headers, body: JSON.stringify({ reason: 'approved in the cordon demo operator step' }), signal: AbortSignal.timeout(10_000),
          });
          if (!ok.ok) r.line(`approve answered HTTP ${ok.status}: ${(await ok.text()).slice(0, 200)}`);
          showEvents(r, await feed.until(approvalEvent('approval.consumed', a.id)));
        });
      }
    }
  })();
  loop.catch(() => undefined);
  return {
    async stop() {
      stopped = true;
      await loop.catch((err: unknown) => r.line(`operator step failed: ${describeError(err)}`));
    },
  };
}
