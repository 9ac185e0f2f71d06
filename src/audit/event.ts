/**
 * The audit event: its input schema, its canonical body and its hash.
 *
 * An event's body is the canonical JSON (see `canonicalJson`) of every field
 * except `hash`; `hash` is the hex SHA-256 of that text, and the next event's
 * `prevHash` repeats it. The body is assembled from pieces prepared at append
 * time so that the fields fixed only at flush time (`seq`, `prevHash`) cost a
 * string concatenation; the result is byte-identical to `canonicalJson`.
 */
import { createHash } from 'node:crypto';
import * as crypto from 'node:crypto';
import { z } from 'zod';
import { AuditError } from '../errors/index.js';
import { canonicalJson } from '../util/index.js';
import { validateEventInput, type ValidEventInput } from './validate.js';

/** `prevHash` of the first event. */
export const GENESIS_HASH = '0'.repeat(64);
/** Largest canonical body accepted, in bytes. */
export const MAX_EVENT_BYTES = 64 * 1024;

/** What a caller records. */
export interface AuditEventInput {
  /** Dotted lower-case kind, e.g. `egress.request`, `tool.call`, `approval.granted`. */
  type: string;
  /** Who acted: `agent:<name>`, `operator:<id>`, `system`, … */
  actor: string;
  sandbox?: string;
  agent?: string;
  /** The policy outcome, e.g. `allow`, `deny`, `approve`. */
  decision?: string;
  reason?: string;
  /**
   * Any JSON object. `append` takes it over: it is rendered to canonical JSON
   * before `append` returns (later changes do not reach the stored event), it
   * is not copied, and the returned event's `data` is this same object. So a
   * caller that builds plain JSON for the event needs no defensive deep copy;
   * one that must keep editing its object should pass a copy.
   * @default {}
   */
  data?: Record<string, unknown>;
}

/** An event as stored: the input plus its place in the chain. */
export interface AuditEvent {
  seq: number;
  ts: string;
  type: string;
  sandbox?: string;
  agent?: string;
  actor: string;
  decision?: string;
  reason?: string;
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

/** Identifiers land in indexed columns and terminals: no control characters. */
const name = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[^\u0000-\u001f\u007f]+$/, 'must not contain control characters');

/**
 * The input rules as a zod schema, for callers that validate events of their
 * own. `append` checks the same rules with {@link validateEventInput} (no copy).
 */
export const auditEventInputSchema = z
  .object({
    type: z
      .string()
      .max(128)
      .regex(/^[a-z][a-z0-9_.-]*$/, 'must start with a lower-case letter and use only a-z, 0-9, ".", "_" and "-"'),
    actor: name(256),
    sandbox: name(256).optional(),
    agent: name(256).optional(),
    decision: name(64).optional(),
    reason: z.string().max(4096).optional(),
    data: z.record(z.unknown()).optional(),
  })
  .strict();

/** An input that passed validation, split around the fields fixed at flush time. */
export interface PreparedEvent {
  readonly input: ValidEventInput;
  readonly ts: string;
  /** `{"actor":…` up to (not including) `,"prevHash"`. */
  readonly head: string;
  /** `,"reason":…,"sandbox":…` (either may be absent). */
  readonly mid: string;
  /** `,"ts":…,"type":…}`. */
  readonly tail: string;
}

/**
 * Validate an input and pre-render the parts of its body.
 * @throws AuditError `audit-invalid-event` naming the field and the problem
 */
export function prepareEvent(raw: AuditEventInput, ts: string): PreparedEvent {
  const input = validateEventInput(raw);
  let dataJson: string;
  try {
    dataJson = canonicalJson(input.data);
  } catch (err) {
    throw new AuditError('audit-invalid-event', `invalid audit event: data: ${(err as Error).message}`, {
      fix: 'data must contain only JSON values (strings, finite numbers, booleans, null, arrays, objects)',
      details: { path: 'data' },
    });
  }
  const s = JSON.stringify;
  const head =
    `{"actor":${s(input.actor)}` +
    (input.agent !== undefined ? `,"agent":${s(input.agent)}` : '') +
    `,"data":${dataJson}` +
    (input.decision !== undefined ? `,"decision":${s(input.decision)}` : '');
  const mid =
    (input.reason !== undefined ? `,"reason":${s(input.reason)}` : '') +
    (input.sandbox !== undefined ? `,"sandbox":${s(input.sandbox)}` : '');
  const tail = `,"ts":${s(ts)},"type":${s(input.type)}}`;
  // seq (≤ 16 digits) and prevHash (64 hex) add at most ~100 bytes. A UTF-16
  // code unit is at most 3 UTF-8 bytes, so most events need no byte count.
  const units = head.length + mid.length + tail.length;
  if (units * 3 + 100 > MAX_EVENT_BYTES) {
    const bytes = Buffer.byteLength(head) + Buffer.byteLength(mid) + Buffer.byteLength(tail) + 100;
    if (bytes > MAX_EVENT_BYTES) {
      throw new AuditError('audit-invalid-event', `audit event too large: about ${bytes} bytes (limit ${MAX_EVENT_BYTES})`, {
        fix: 'record a digest or an excerpt of large payloads instead of the payload itself',
        details: { path: 'data', bytes },
      });
    }
  }
  return { input, ts, head, mid, tail };
}

/** The canonical body of a prepared event at its place in the chain. */
export function composeBody(p: PreparedEvent, seq: number, prevHash: string): string {
  return `${p.head},"prevHash":"${prevHash}"${p.mid},"seq":${seq}${p.tail}`;
}

/** The event a caller gets back once it is stored. */
export function toEvent(p: PreparedEvent, seq: number, prevHash: string, hash: string): AuditEvent {
  const { input } = p;
  const e: AuditEvent = { seq, ts: p.ts, type: input.type, actor: input.actor, data: input.data, prevHash, hash };
  if (input.sandbox !== undefined) e.sandbox = input.sandbox;
  if (input.agent !== undefined) e.agent = input.agent;
  if (input.decision !== undefined) e.decision = input.decision;
  if (input.reason !== undefined) e.reason = input.reason;
  return e;
}

type HashFn = (text: string) => string;
const oneShot = (crypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;

/** Hex SHA-256 of a UTF-8 string (one-shot `crypto.hash` where Node has it). */
export const sha256Hex: HashFn =
  typeof oneShot === 'function'
    ? (text) => oneShot('sha256', text, 'hex')
    : (text) => createHash('sha256').update(text).digest('hex');
