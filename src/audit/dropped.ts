/**
 * Dropped audit events: what `AuditLog` tells its `onDropped` hook when
 * events are not recorded (a failed write, or an append refused up front),
 * and a rate-limited writer of one line per failure burst for operators.
 *
 * A report names the events only by their type, sandbox and agent (never
 * their data), so it is safe to print and to count.
 *
 * @example
 * const log = await AuditLog.open({ store, keyDir, onDropped: droppedEventLines() });
 */
import { AuditError } from '../errors/index.js';

/** Why events were not recorded. */
export const DROPPED_CODES = ['audit-write-failed', 'audit-closed', 'audit-overloaded', 'audit-invalid-event'] as const;
export type DroppedCode = (typeof DROPPED_CODES)[number];

/** Events that the audit log did not record, with why and what to do. */
export interface DroppedReport {
  code: DroppedCode;
  /** The error the appends were rejected with. */
  message: string;
  fix: string;
  /** How many events were not recorded. */
  count: number;
  /** Distinct event types, sorted (`(invalid)` for a type that is not a valid name). */
  types: string[];
  /** Distinct sandbox ids, sorted; events without one add nothing. */
  sandboxes: string[];
  /** Distinct agent names, sorted; events without one add nothing. */
  agents: string[];
}

/** Stands in for a name that is not a string of printable characters (refused inputs are not validated). */
const INVALID_NAME = '(invalid)';
const NAME_MAX_LENGTH = 256;
/** What `append` accepts as a type (validate.ts); anything else may be a value passed by mistake and is not shown. */
const TYPE_NAME = /^[a-z][a-z0-9_.-]{0,127}$/;

function safeName(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length === 0 || v.length > NAME_MAX_LENGTH || /[\u0000-\u001f\u007f]/.test(v)) return INVALID_NAME;
  return v;
}

/**
 * Build the report for `inputs` refused with `err`. The inputs may be
 * anything a caller passed (they are read defensively, never their data).
 */
export function droppedReport(code: DroppedCode, err: unknown, inputs: readonly unknown[]): DroppedReport {
  const types = new Set<string>();
  const sandboxes = new Set<string>();
  const agents = new Set<string>();
  for (const raw of inputs) {
    if (typeof raw !== 'object' || raw === null) {
      types.add(INVALID_NAME);
      continue;
    }
    const e = raw as { type?: unknown; sandbox?: unknown; agent?: unknown };
    types.add(typeof e.type === 'string' && TYPE_NAME.test(e.type) ? e.type : INVALID_NAME);
    const s = safeName(e.sandbox);
    if (s !== undefined) sandboxes.add(s);
    const a = safeName(e.agent);
    if (a !== undefined) agents.add(a);
  }
  // Only an event that could not be prepared (say, a getter that throws) arrives without an AuditError.
  const fix = err instanceof AuditError && err.fix !== undefined ? err.fix : 'record plain JSON built for the event (see AuditEventInput)';
  return {
    code,
    message: err instanceof Error ? err.message : String(err),
    fix,
    count: inputs.length,
    types: [...types].sort(),
    sandboxes: [...sandboxes].sort(),
    agents: [...agents].sort(),
  };
}

export interface DroppedLinesOptions {
  /** Where each line goes (without its newline). @default writes the line to stderr */
  write?: (line: string) => void;
  /** At most one line per error code this often; drops in between are added to the next line. @default 10000 */
  intervalMs?: number;
  /** Names listed per kind (types, sandboxes) in a line, at most. @default 5 */
  maxNames?: number;
}

interface Burst {
  lastLineAtMs: number;
  count: number;
  types: Set<string>;
  sandboxes: Set<string>;
  last: DroppedReport | undefined;
  timer: NodeJS.Timeout | undefined;
}

const list = (names: Set<string>, max: number): string => {
  const all = [...names].sort();
  return all.length <= max ? all.join(', ') : `${all.slice(0, max).join(', ')} and ${all.length - max} more`;
};

const oneLine = (s: string): string => s.replace(/[\u0000-\u001f\u007f]+/g, ' ');

/**
 * An `onDropped` hook that writes one line per error code per `intervalMs`:
 * the first drop of a burst at once, later ones summed into a line when the
 * interval is over (a timer that does not keep the process alive).
 */
export function droppedEventLines(opts: DroppedLinesOptions = {}): (report: DroppedReport) => void {
  const write = opts.write ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const intervalMs = opts.intervalMs ?? 10_000;
  const maxNames = opts.maxNames ?? 5;
  const bursts = new Map<DroppedCode, Burst>();

  function flush(code: DroppedCode, b: Burst): void {
    if (b.timer !== undefined) clearTimeout(b.timer);
    b.timer = undefined;
    const r = b.last;
    if (r === undefined || b.count === 0) return;
    const where = b.sandboxes.size > 0 ? ` in sandbox(es) ${list(b.sandboxes, maxNames)}` : '';
    write(
      oneLine(
        `cordon: ${b.count} audit event(s) NOT recorded (${code}): ${list(b.types, maxNames)}${where}; ${r.message}`,
      ) + ` | fix: ${oneLine(r.fix)}`,
    );
    b.lastLineAtMs = Date.now();
    b.count = 0;
    b.types.clear();
    b.sandboxes.clear();
    b.last = undefined;
  }

  return function writeDroppedEventLine(report: DroppedReport): void {
    let b = bursts.get(report.code);
    if (b === undefined) {
      b = { lastLineAtMs: -Infinity, count: 0, types: new Set(), sandboxes: new Set(), last: undefined, timer: undefined };
      bursts.set(report.code, b);
    }
    b.count += report.count;
    for (const t of report.types) b.types.add(t);
    for (const s of report.sandboxes) b.sandboxes.add(s);
    b.last = report;
    const waitMs = b.lastLineAtMs + intervalMs - Date.now();
    if (waitMs <= 0) {
      flush(report.code, b);
    } else if (b.timer === undefined) {
      const burst = b;
      b.timer = setTimeout(() => flush(report.code, burst), waitMs);
      b.timer.unref();
    }
  };
}
