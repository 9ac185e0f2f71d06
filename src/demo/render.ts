/**
 * How `cordon demo` shows itself: a reporter with one method per moment of
 * the run. The terminal reporter writes plain lines (colour and bold only on
 * a TTY that wants them, so CI logs stay clean); `--json` uses the silent
 * reporter and prints the summary alone.
 */
import type { AuditEvent } from '../audit/index.js';
import { secretsNoted, type Outcome } from './outcomes.js';

/** One step the agent printed (`@@cordon-demo {…}`). */
export interface AgentStep {
  kind: 'model' | 'tool' | 'model-error' | 'done' | string;
  [field: string]: unknown;
}

export interface DemoReporter {
  /** A numbered section: `[3] agent → model`. */
  section(title: string): void;
  /** A line under the current section. */
  line(text: string): void;
  /** Audit events the section produced. */
  events(events: readonly AuditEvent[]): void;
  outcomes(outcomes: readonly Outcome[]): void;
}

/** The reporter that shows nothing (`--json`). */
export const silentReporter: DemoReporter = {
  section: () => undefined,
  line: () => undefined,
  events: () => undefined,
  outcomes: () => undefined,
};

const DETAIL_FIELDS = ['scheme', 'method', 'host', 'port', 'path', 'status', 'provider', 'model', 'outcome', 'id', 'step', 'argv', 'exitCode'] as const;

/** The few fields of an event worth a glance, as `k=v` pairs. */
export function eventDetail(e: AuditEvent): string {
  const parts: string[] = [];
  for (const k of DETAIL_FIELDS) {
    const v = e.data[k];
    if (v === undefined || v === null || v === '') continue;
    parts.push(`${k}=${Array.isArray(v) ? v.join(' ').slice(0, 60) : String(v).slice(0, 80)}`);
  }
  const swapped = secretsNoted(e);
  if (swapped.length > 0) parts.push(`secret-swapped-in=${swapped.join(',')}`);
  if (typeof e.data.approval === 'string') parts.push(`approval=${e.data.approval}`);
  const hits = e.data.hits;
  if (Array.isArray(hits) && hits.length > 0) {
    parts.push(`hits=${hits.map((h: { filter?: string; action?: string; rule?: string }) => `${h.filter}:${h.action}${h.rule ? `(${h.rule})` : ''}`).join(',')}`);
  }
  return parts.join(' ');
}

/** One event as a line: `#seq type decision (reason) details`. */
export function eventLine(e: AuditEvent): string {
  const decision = e.decision ? ` ${e.decision}` : '';
  const reason = e.reason ? ` (${e.reason})` : '';
  const detail = eventDetail(e);
  return `#${e.seq} ${e.type}${decision}${reason}${detail ? `  ${detail}` : ''}`;
}

/** Control characters (escape sequences above all) of text that came from the guest, made visible instead of obeyed by the terminal. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * A reporter that writes lines to `write`. Text is made printable first: much
 * of it (the model's words, URLs, paths) comes from the hostile guest.
 * @param color use ANSI colour and bold @default false
 */
export function terminalReporter(write: (text: string) => void, o: { color?: boolean } = {}): DemoReporter {
  const color = o.color ?? false;
  const paint = (code: string, text: string): string => (color ? `\u001b[${code}m${printable(text)}\u001b[0m` : printable(text));
  let n = 0;
  return {
    section(title) {
      n++;
      write(`\n${paint('1', `[${n}] ${title}`)}\n`);
    },
    line(text) {
      write(`    ${printable(text)}\n`);
    },
    events(events) {
      for (const e of events) {
        const decision = e.decision === 'deny' ? paint('31', 'deny') : e.decision === 'approve' ? paint('33', 'approve') : e.decision ?? '';
        const line = printable(eventLine(e)).replace(` ${e.decision ?? '\u0000'}`, decision ? ` ${decision}` : '');
        write(`    ${paint('2', 'audit')} ${line}\n`);
      }
    },
    outcomes(outcomes) {
      write(`\n${paint('1', 'What happened')}\n`);
      for (const o of outcomes) {
        write(`  ${o.ok ? paint('32', 'ok  ') : paint('31', 'FAIL')} ${o.expected}\n         ${printable(o.detail)}${o.seqs.length > 0 ? ` [#${o.seqs.join(', #')}]` : ''}\n`);
      }
    },
  };
}
