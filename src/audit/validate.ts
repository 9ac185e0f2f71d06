/**
 * Validation of an audit event input, written by hand for the append path.
 *
 * It accepts exactly what `auditEventInputSchema` (zod) accepts, and the
 * tests hold the two together case by case; it exists because every door
 * calls `append` once per action, and the schema's parse builds a copy of
 * the event and of `data` that the log does not need. Each field is read
 * once, into the value that is returned.
 */
import { AuditError } from '../errors/index.js';

/** An input that passed validation. `data` is the caller's own object, not a copy. */
export interface ValidEventInput {
  type: string;
  actor: string;
  sandbox?: string;
  agent?: string;
  decision?: string;
  reason?: string;
  data: Record<string, unknown>;
}

/** Must match the `type` rule of `auditEventInputSchema`. */
const TYPE_PATTERN = /^[a-z][a-z0-9_.-]*$/;
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/** Largest lengths, in UTF-16 code units (what zod's `max` counts). */
export const FIELD_MAX_LENGTH = {
  type: 128,
  actor: 256,
  sandbox: 256,
  agent: 256,
  decision: 64,
  reason: 4096,
} as const;

/**
 * Check an event input without copying it.
 * @throws AuditError `audit-invalid-event` naming the first bad field in `details.path`
 *   (`(event)` for the event itself or an unknown field)
 */
export function validateEventInput(raw: unknown): ValidEventInput {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid('(event)', 'must be an object');
  const r = raw as Record<string, unknown>;
  const type = r.type;
  if (typeof type !== 'string') throw invalid('type', type === undefined ? 'required' : 'must be a string');
  if (type.length > FIELD_MAX_LENGTH.type) throw invalid('type', `must be at most ${FIELD_MAX_LENGTH.type} characters`);
  if (!TYPE_PATTERN.test(type)) {
    throw invalid('type', 'must start with a lower-case letter and use only a-z, 0-9, ".", "_" and "-"');
  }
  const actor = checkName(r.actor, 'actor');
  if (actor === undefined) throw invalid('actor', 'required');
  const sandbox = checkName(r.sandbox, 'sandbox');
  const agent = checkName(r.agent, 'agent');
  const decision = checkName(r.decision, 'decision');
  const reason = r.reason;
  if (reason !== undefined) {
    if (typeof reason !== 'string') throw invalid('reason', 'must be a string');
    if (reason.length > FIELD_MAX_LENGTH.reason) throw invalid('reason', `must be at most ${FIELD_MAX_LENGTH.reason} characters`);
  }
  const data = r.data;
  if (data !== undefined && !isRecord(data)) throw invalid('data', 'must be a JSON object');
  for (const key in r) {
    switch (key) {
      case 'type': case 'actor': case 'sandbox': case 'agent': case 'decision': case 'reason': case 'data':
        continue;
      default:
        throw invalid('(event)', `unknown field ${JSON.stringify(key)} (seq, ts and the hashes are set by the log)`);
    }
  }
  const out: ValidEventInput = { type, actor, data: (data as Record<string, unknown> | undefined) ?? {} };
  if (sandbox !== undefined) out.sandbox = sandbox;
  if (agent !== undefined) out.agent = agent;
  if (decision !== undefined) out.decision = decision;
  if (reason !== undefined) out.reason = reason as string;
  return out;
}

/** An identifier: 1..max characters, no control characters; undefined when absent. */
function checkName(v: unknown, field: 'actor' | 'sandbox' | 'agent' | 'decision'): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(field, 'must be a string');
  const max = FIELD_MAX_LENGTH[field];
  if (v.length === 0) throw invalid(field, 'must not be empty');
  if (v.length > max) throw invalid(field, `must be at most ${max} characters`);
  if (CONTROL_CHARACTER.test(v)) throw invalid(field, 'must not contain control characters');
  return v;
}

/** What zod's `z.record()` takes: an object that is not an array, promise, Map, Set or Date. */
function isRecord(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const p = v as { then?: unknown; catch?: unknown };
  if (typeof p.then === 'function' && typeof p.catch === 'function') return false;
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) return true;
  return !(v instanceof Map || v instanceof Set || v instanceof Date);
}

function invalid(path: string, problem: string): AuditError {
  return new AuditError('audit-invalid-event', `invalid audit event: ${path}: ${problem}`, {
    fix: 'pass {type, actor, sandbox?, agent?, decision?, reason?, data?} with data a JSON object',
    details: { path },
  });
}
