/**
 * `GET /v1/events/stream`: the audit log followed live, as server-sent
 * events, behind the operator-token and audit middleware of `app.ts` (the
 * dashboard reads it with `fetch`, so the token travels in the
 * `Authorization` header, never in the URL).
 *
 * Query: `types` (comma-separated type prefixes such as `approval.,sandbox.`;
 * default every type except `api.`, so the stream does not echo the requests
 * that its own readers make) and `afterSeq` (default: the head when the
 * stream opens). Each event is `event: audit` with the event as JSON in
 * `data:` and its seq as `id:`; a `: keep-alive` comment every
 * `keepAliveMs`. At most `maxStreams` streams are open at once (429 beyond).
 */
import { Hono } from 'hono';
import { z } from 'zod';
import { InvalidInputError, LimitError } from '../errors/index.js';
import type { ApiAudit } from './app.js';

type Vars = { Variables: { actor: string } };

export interface EventStreamOptions {
  audit: ApiAudit;
  /** Pause between polls of the log when nothing is new. @default 400 */
  pollIntervalMs?: number;
  /** @default 15000 */
  keepAliveMs?: number;
  /** Streams open at once. @default 16 */
  maxStreams?: number;
  /** Ends every stream when aborted (the control plane stopping). */
  closing?: AbortSignal;
}

const PREFIX = /^[a-z][a-z0-9_.-]{0,63}$/;

const querySchema = z
  .object({
    types: z.string().max(1024).optional()
      .refine((s) => s === undefined || s.split(',').every((p) => PREFIX.test(p)), 'a comma-separated list of type prefixes such as approval.,sandbox.'),
    afterSeq: z.coerce.number().int().min(0).optional(),
  })
  .strict();

interface StreamedEvent {
  seq: number;
  type: string;
}

/** The routes, to be mounted at `/v1/events`. */
export function eventStreamRoutes(o: EventStreamOptions): Hono<Vars> {
  const app = new Hono<Vars>();
  const pollMs = o.pollIntervalMs ?? 400;
  const keepAliveMs = o.keepAliveMs ?? 15_000;
  const maxStreams = o.maxStreams ?? 16;
  let open = 0;

  app.get('/stream', async function streamEvents(c) {
    const parsed = querySchema.safeParse(c.req.query());
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new InvalidInputError(`bad query parameter ${first?.path.join('.') || ''}: ${first?.message ?? 'invalid'}`, {
        fix: 'allowed: types (comma-separated type prefixes), afterSeq (integer ≥ 0)',
      });
    }
    if (open >= maxStreams) {
      throw new LimitError(`${open} event streams are open already (limit ${maxStreams})`, 5000, { fix: 'close other dashboard tabs, or poll /v1/audit/events instead' });
    }
    const prefixes = parsed.data.types?.split(',');
    const wanted = (type: string): boolean => (prefixes ? prefixes.some((p) => type.startsWith(p)) : !type.startsWith('api.'));
    let after = parsed.data.afterSeq ?? ((await o.audit.query({ order: 'desc', limit: 1 })) as StreamedEvent[])[0]?.seq ?? 0;
    const encoder = new TextEncoder();
    const abort = new AbortController();
    c.req.raw.signal.addEventListener('abort', () => abort.abort(), { once: true });
    const onClosing = (): void => abort.abort();
    if (o.closing?.aborted) abort.abort();
    o.closing?.addEventListener('abort', onClosing, { once: true });
    open++;
    let released = false;
    const release = (): void => {
      if (!released) open--;
      released = true;
      o.closing?.removeEventListener('abort', onClosing);
      abort.abort();
    };
    const stream = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (text: string): void => controller.enqueue(encoder.encode(text));
        send(`retry: 3000\n: following the audit log after seq ${after}\n\n`);
        let lastWrite = Date.now();
        try {
          while (!abort.signal.aborted) {
            const page = (await o.audit.query({ afterSeq: after, limit: 500, order: 'asc' })) as StreamedEvent[];
            for (const e of page) {
              after = e.seq;
              if (!wanted(e.type)) continue;
              send(`event: audit\nid: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`);
              lastWrite = Date.now();
            }
            if (Date.now() - lastWrite >= keepAliveMs) {
              send(': keep-alive\n\n');
              lastWrite = Date.now();
            }
            if (page.length < 500) await pause(pollMs, abort.signal);
          }
          controller.close();
        } catch (err) {
          // (close() throws when the reader cancelled first: nothing to tell anyone then.)
          // The log could not be read, or the reader went away: end the stream; the client reconnects.
          if (!abort.signal.aborted) controller.error(err);
        } finally {
          release();
        }
      },
      cancel() {
        release();
      },
    });
    return new Response(stream, {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' },
    });
  });

  return app;
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
