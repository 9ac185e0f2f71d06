/**
 * Control messages (kind CONTROL, channel 0): zod schemas for everything the
 * guest may send, and the decoding step that turns a CONTROL payload into a
 * plain object. Every schema is strict (unknown members are rejected) and
 * bounds every string, so a hostile guest cannot grow host memory or smuggle
 * fields through.
 */
import { z } from 'zod';
import { GuestProtocolError } from './errors.js';
import { GUEST_CHANNEL_BASE, MAX_FRAME_BYTES } from './frame.js';

/** Version of the protocol this host speaks; the guest states its own in `hello`. */
export const PROTOCOL_VERSION = 1;

const u32 = z.number().int().min(0).max(0xffff_ffff);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const requestId = z.number().int().min(1).max(0xffff_ffff).describe('the id of the request this answers');

/** Error codes are short kebab-case words such as `not-found`. */
export const guestErrorCodeSchema = z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, 'a kebab-case code of at most 64 bytes');
/** Signal names without the SIG prefix, e.g. `TERM`, `KILL`, or `SIG34` for unnamed ones. */
export const signalNameSchema = z.string().regex(/^[A-Z][A-Z0-9]{0,7}$/, 'a signal name such as TERM');

export const helloSchema = z
  .object({
    op: z.literal('hello'),
    protocol: z.number().int().min(0).max(1000).describe('protocol version the agent speaks'),
    version: z.string().min(1).max(64).describe('agent version'),
    kernel: z.string().min(1).max(256).describe('uname release'),
    bootTimeMs: count.describe('wall-clock time of boot, Unix ms'),
    pid: z.number().int().min(1).max(4_194_304),
    maxFrameBytes: z.number().int().min(1024).max(MAX_FRAME_BYTES),
    proxyPort: z.number().int().min(1).max(65535).nullable().describe('egress listener port, null when off'),
  })
  .strict();

export const logSchema = z
  .object({
    op: z.literal('log'),
    level: z.enum(['debug', 'info', 'warn', 'error']),
    message: z.string().max(4096),
  })
  .strict();

export const streamOpenSchema = z
  .object({
    op: z.literal('stream.open'),
    channel: z.number().int().min(GUEST_CHANNEL_BASE + 1).max(0xffff_ffff).describe('guest-allocated channel id'),
    port: z.number().int().min(1).max(65535).describe('guest port the connection arrived on'),
    peer: z.string().max(64).describe('client address inside the guest, informational only'),
  })
  .strict();

/** Guest-initiated messages (no `id`), keyed by `op`. */
export const notificationSchemas = {
  hello: helloSchema,
  log: logSchema,
  'stream.open': streamOpenSchema,
} as const;

export const errorResponseSchema = z
  .object({
    id: requestId,
    ok: z.literal(false),
    error: z.object({ code: guestErrorCodeSchema, message: z.string().max(4096) }).strict(),
  })
  .strict();

function okResponse<T extends z.ZodRawShape>(shape: T) {
  return z.object({ id: requestId, ok: z.literal(true), ...shape }).strict();
}

const execResult = okResponse({
  pid: z.number().int().min(1).max(4_194_304),
  exitCode: z.number().int().min(0).max(255).nullable(),
  signal: signalNameSchema.nullable(),
  timedOut: z.boolean(),
  outputTruncated: z.boolean(),
  durationMs: count,
  stdoutBytes: count,
  stderrBytes: count,
}).refine((r) => (r.exitCode === null) !== (r.signal === null), 'exactly one of exitCode and signal is set');

/** Successful responses, keyed by the op of the request they answer. */
export const responseSchemas = {
  health: okResponse({
    uptimeMs: count,
    load: z.tuple([z.number().min(0).max(1e6), z.number().min(0).max(1e6), z.number().min(0).max(1e6)]),
    memTotalBytes: count,
    memAvailableBytes: count,
    procs: count,
    execs: count,
    streams: count,
    version: z.string().min(1).max(64),
    kernel: z.string().min(1).max(256),
  }),
  exec: execResult,
  signal: okResponse({ delivered: z.boolean() }),
  'file.read': okResponse({ bytes: count, mode: z.number().int().min(0).max(0o7777) }),
  'file.write': okResponse({ bytes: count }),
  'entropy.reseed': okResponse({ bytes: z.number().int().min(32).max(512), credited: z.boolean(), reseeded: z.boolean() }),
  'token.set': okResponse({ path: z.string().min(1).max(4096) }),
  shutdown: okResponse({}),
  'clock.set': okResponse({}),
  'forward.open': okResponse({}),
} as const;

export type GuestOp = keyof typeof responseSchemas;
export type GuestHello = z.infer<typeof helloSchema>;
export type GuestLog = z.infer<typeof logSchema>;
export type StreamOpen = z.infer<typeof streamOpenSchema>;
export type GuestResponse<Op extends GuestOp> = Omit<z.infer<(typeof responseSchemas)[Op]>, 'id' | 'ok'>;
export type GuestHealth = GuestResponse<'health'>;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Decode a CONTROL payload into a plain JSON object.
 * @throws GuestProtocolError `bad-utf8`, `bad-json` or `bad-message` (not an object).
 */
export function decodeControl(payload: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    throw new GuestProtocolError('bad-utf8', 'control message is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new GuestProtocolError('bad-json', `control message is not JSON: ${(err as Error).message.slice(0, 200)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new GuestProtocolError('bad-message', 'control message is not a JSON object');
  }
  return value as Record<string, unknown>;
}

/** First zod issue as `path: message`, for protocol error messages. */
export function describeIssue(err: z.ZodError): string {
  const issue = err.issues[0];
  if (!issue) return 'invalid';
  const path = issue.path.join('.') || '(root)';
  return `${path}: ${issue.message}`.slice(0, 300);
}
