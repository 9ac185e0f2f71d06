/**
 * The gateway's `Exchange` over a Fetch `Request`, answered with a Fetch
 * `Response`: what the Hono app uses (and any runtime that speaks Fetch).
 * A streamed response is a `ReadableStream` fed as chunks arrive; when its
 * reader cancels (the client went away) or the request's own signal aborts,
 * `signal` aborts.
 */
import { GatewayError } from '../errors.js';
import type { Exchange } from '../types.js';
import { bodyTooLarge, checkBodyHeaders, pathOf } from './node.js';

/** Chunks queued in a streamed response before writes wait for the reader. */
const STREAM_HIGH_WATER_CHUNKS = 64;

/** Wrap a Fetch request; `response` settles once the pipeline answered. */
export function fetchExchange(request: Request): { exchange: Exchange; response: Promise<Response> } {
  const aborter = new AbortController();
  const onRequestAbort = (): void => aborter.abort();
  if (request.signal.aborted) aborter.abort();
  else request.signal.addEventListener('abort', onRequestAbort, { once: true });

  let respond!: (r: Response) => void;
  const response = new Promise<Response>((resolve) => {
    respond = resolve;
  });
  let started = false;
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  let closed = false;
  let wake: (() => void) | undefined;
  const encoder = new TextEncoder();

  const exchange: Exchange = {
    method: request.method,
    path: pathOf(request.url),
    signal: aborter.signal,
    get aborted(): boolean {
      return aborter.signal.aborted;
    },
    onAbort(listener: () => void): () => void {
      if (aborter.signal.aborted) {
        queueMicrotask(listener);
        return () => undefined;
      }
      const onSignal = (): void => listener();
      aborter.signal.addEventListener('abort', onSignal, { once: true });
      return () => aborter.signal.removeEventListener('abort', onSignal);
    },
    header(name: string): string | undefined {
      return request.headers.get(name) ?? undefined;
    },
    readBody(maxBytes: number): Promise<Buffer> {
      return readFetchBody(request, maxBytes);
    },
    send(status, headers, body) {
      if (started) return;
      started = true;
      respond(new Response(typeof body === 'string' ? body : new Uint8Array(body.buffer, body.byteOffset, body.length), { status, headers }));
    },
    startStream(status, headers) {
      if (started) return;
      started = true;
      const stream = new ReadableStream<Uint8Array>(
        {
          start(c) {
            controller = c;
          },
          pull() {
            wake?.();
          },
          cancel() {
            closed = true;
            wake?.();
            aborter.abort();
          },
        },
        { highWaterMark: STREAM_HIGH_WATER_CHUNKS },
      );
      respond(new Response(stream, { status, headers }));
    },
    write(chunk: string): Promise<void> | undefined {
      if (!controller || closed) return undefined;
      controller.enqueue(encoder.encode(chunk));
      if ((controller.desiredSize ?? 1) > 0) return undefined;
      return new Promise<void>((resolve) => {
        const onAbort = (): void => done();
        const done = (): void => {
          wake = undefined;
          aborter.signal.removeEventListener('abort', onAbort);
          resolve();
        };
        wake = done;
        aborter.signal.addEventListener('abort', onAbort, { once: true });
      });
    },
    end(last?: string) {
      request.signal.removeEventListener('abort', onRequestAbort);
      if (last !== undefined && last.length > 0 && controller && !closed) controller.enqueue(encoder.encode(last));
      if (controller && !closed) {
        closed = true;
        controller.close();
      }
    },
    get started(): boolean {
      return started;
    },
  };
  return { exchange, response };
}

async function readFetchBody(request: Request, maxBytes: number): Promise<Buffer> {
  checkBodyHeaders(request.headers.get('content-length') ?? undefined, request.headers.get('content-encoding') ?? undefined, maxBytes);
  if (!request.body) return Buffer.alloc(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw bodyTooLarge(maxBytes);
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    throw new GatewayError(400, 'client-closed', 'the request body could not be read', { cause: err });
  }
  return Buffer.concat(chunks, size);
}
