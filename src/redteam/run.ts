/**
 * The runner: each attack in turn against one target, with its own time
 * limit. A throw, a hang past the limit, or a sandbox that died before or
 * during the attack is scored `error` ("could not judge") with the reason,
 * never `contained`. On the protected target, the audit events the attack
 * caused that show a refusal (deny decisions, exfiltration and auth events,
 * approvals, protocol errors) are appended to its evidence with their seqs.
 */
import { randomBytes } from 'node:crypto';
import type { AuditEvent } from '../audit/index.js';
import type { Attack, AttackReport, AttackResult, Scorecard, Target } from './types.js';

export const DEFAULT_ATTACK_TIMEOUT_MS = 60_000;
/** Refusal events listed per attack at most. */
const MAX_AUDIT_EVIDENCE = 8;

export interface ProgressEvent {
  index: number;
  total: number;
  attack: Attack;
  /** Undefined when the attack starts. */
  report?: AttackReport;
}

export interface RunOptions {
  target: Target;
  attacks: Attack[];
  datasetsDir?: string | undefined;
  onProgress?: (e: ProgressEvent) => void;
}

/** A marker unique to one attack: a DNS label (lowercase, digits, '-', at most 63). */
export function markerFor(id: string): string {
  return `rt-${id.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 40)}-${randomBytes(4).toString('hex')}`;
}

/** The audit events that show a refusal or the sandbox being ended. */
export function refusalEvidence(events: AuditEvent[]): string[] {
  const shown = events.filter((e) => e.decision === 'deny' || /exfiltration|^llm\.auth$|^approval\.|^tunnel\.refused$|protocol|^sandbox\.destroy/.test(e.type));
  const lines = shown.slice(0, MAX_AUDIT_EVIDENCE).map((e) => {
    const d = e.data as Record<string, unknown>;
    const extra = [d.host, d.kind, d.where, d.encoding, d.secret, d.id, d.reason].filter((x) => typeof x === 'string' || typeof x === 'number').slice(0, 3).join(' ');
    return `audit #${e.seq} ${e.type}${e.decision ? ` ${e.decision}` : ''}${e.reason ? ` ${e.reason}` : ''}${extra ? ` (${extra})` : ''}`;
  });
  if (shown.length > MAX_AUDIT_EVIDENCE) lines.push(`audit: ${shown.length - MAX_AUDIT_EVIDENCE} more refusal event(s)`);
  return lines;
}

async function runOne(target: Target, attack: Attack, datasetsDir: string | undefined): Promise<AttackResult> {
  for (const slot of ['main', 'peer'] as const) {
    if (!target.alive(slot)) return { outcome: 'error', evidence: [`could not judge: the ${slot} sandbox was not running before the attack`] };
  }
  const timeoutMs = attack.timeoutMs ?? DEFAULT_ATTACK_TIMEOUT_MS;
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<AttackResult>((resolve) => {
    timer = setTimeout(() => {
      abort.abort();
      resolve({ outcome: 'error', evidence: [`could not judge: the attack did not finish within ${Math.round(timeoutMs / 1000)} s`] });
    }, timeoutMs);
  });
  try {
    const ctx = { target, marker: markerFor(attack.id), mark: target.canaries.mark(), signal: abort.signal, datasetsDir };
    const result = await Promise.race([attack.run(ctx), hung]);
    for (const slot of ['main', 'peer'] as const) {
      if (!target.alive(slot) && result.outcome === 'contained') {
        return { outcome: 'error', evidence: [`could not judge: the ${slot} sandbox died during the attack`, ...result.evidence] };
      }
    }
    return result;
  } catch (err) {
    return { outcome: 'error', evidence: [`could not judge: ${err instanceof Error ? err.message : String(err)}`] };
  } finally {
    clearTimeout(timer);
  }
}

/** Run the attacks in order and score them. */
export async function runAttacks(o: RunOptions): Promise<Scorecard> {
  const started = new Date();
  const reports: AttackReport[] = [];
  for (const [index, attack] of o.attacks.entries()) {
    o.onProgress?.({ index, total: o.attacks.length, attack });
    const d = o.target.deployment;
    const beforeSeq = d ? d.audit.head.seq : 0;
    const t0 = performance.now();
    const result = await runOne(o.target, attack, o.datasetsDir);
    const durationMs = Math.round(performance.now() - t0);
    const evidence = [...result.evidence];
    if (d && attack.category !== 'audit') {
      try {
        evidence.push(...refusalEvidence(await d.audit.query({ afterSeq: beforeSeq, limit: 1000 })));
      } catch (err) {
        evidence.push(`audit query failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    const report: AttackReport = { id: attack.id, category: attack.category, title: attack.title, outcome: result.outcome, evidence, durationMs };
    reports.push(report);
    o.onProgress?.({ index, total: o.attacks.length, attack, report });
  }
  const finished = new Date();
  const count = (outcome: AttackReport['outcome']): number => reports.filter((r) => r.outcome === outcome).length;
  return {
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    profile: o.target.profile,
    durationMs: finished.getTime() - started.getTime(),
    summary: { total: reports.length, contained: count('contained'), succeeded: count('succeeded'), errors: count('error'), notApplicable: count('not-applicable') },
    attacks: reports,
  };
}
