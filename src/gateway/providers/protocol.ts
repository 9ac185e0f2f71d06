/**
 * What every API the gateway serves must provide: the check of the request
 * envelope (only the fields the gateway reads; the rest passes through as
 * the client wrote it), the change a streamed request needs, and the readers
 * of the upstream answer, whole or as SSE events, that hand model output to
 * the outbound inspector and pick up the token usage.
 */
import type { z } from 'zod';
import { GatewayError, type Dialect } from '../errors.js';
import type { OutputHit, OutputInspector } from '../filters/output.js';
import type { SseEvent } from '../sse.js';
import type { ApiKind, Usage } from '../types.js';

/** The fields of a request the gateway acts on. */
export interface Envelope {
  model: string;
  stream: boolean;
  /** Completion tokens the request may produce, when it says (times `n` choices). */
  completionTokens: number | undefined;
}

/** What to do with one upstream SSE event. */
export type StreamStep = 'forward' | 'drop' | OutputHit;

export interface StreamObserver {
  /**
   * Look at one event before it is forwarded.
   * @throws GatewayError 502 `upstream-malformed` for an event that cannot be read (the stream then ends)
   */
  onEvent(event: SseEvent): StreamStep;
  /** The terminal event was seen (normal end, or an error event from upstream). */
  readonly done: boolean;
  /** The upstream itself ended the stream with an error event. */
  readonly upstreamError: boolean;
  readonly usage: Usage | undefined;
}

export interface ApiProtocol {
  readonly api: ApiKind;
  readonly dialect: Dialect;
  /** Path after the provider's base path, e.g. `/chat/completions`. */
  readonly suffix: string;
  /** @throws GatewayError 400 `invalid-request` */
  envelope(body: Record<string, unknown>): Envelope;
  /** Adjust a streamed request (e.g. ask for usage); returns whether the body changed and whether the added usage event must be dropped. */
  prepareStream(body: Record<string, unknown>): { changed: boolean; stripUsage: boolean };
  /**
   * Read a whole (non-streamed) answer: usage, and the first blocking hit of the inspector.
   * @throws GatewayError 502 `upstream-malformed`
   */
  inspect(answer: unknown, inspector: OutputInspector): { usage: Usage | undefined; hit: OutputHit | undefined };
  observer(inspector: OutputInspector, options: { stripUsage: boolean }): StreamObserver;
}

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
}

export function malformed(what: string): GatewayError {
  return new GatewayError(502, 'upstream-malformed', `the provider sent a response the gateway cannot read (${what})`, {
    fix: 'check that the provider base URL points at a compatible API; retry if the provider had a transient fault',
  });
}

/** Parse one SSE data field as a JSON object. */
export function eventJson(ev: SseEvent): Obj {
  let value: unknown;
  try {
    value = JSON.parse(ev.data);
  } catch {
    throw malformed(`an event is not JSON: ${ev.data.slice(0, 40)}`);
  }
  if (!isObj(value)) throw malformed('an event is not a JSON object');
  return value;
}

/** Check a body against an envelope schema. */
export function checkEnvelope<T>(schema: z.ZodType<T>, body: Obj, api: ApiKind): T {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue?.path.join('.') || '(body)';
  throw new GatewayError(400, 'invalid-request', `invalid ${api} request: ${where}: ${issue?.message ?? 'invalid'}`, {
    fix: `send a request body in the ${api} format`,
  });
}
