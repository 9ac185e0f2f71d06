/**
 * The gateway's `Exchange` over a `node:http` request/response pair: what the
 * egress proxy's internal dispatch and the standalone server hand over. The
 * body is read with a size cap (Content-Length checked before reading), a
 * client that goes away aborts `signal`, and writes report back-pressure.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GatewayError } from '../errors.js';
import type { Exchange } from '../types.js';

/** The path of a request target without its query; absolute-form targets (through a proxy) too. */
export function pathOf(target: string | undefined): string {
  if (!target) return '/';
  if (target.startsWith('/')) {
    const q = target.indexOf('?');
    return q === -1 ? target : target.slice(0, q);
  }
  try {
    return new URL(target).pathname;
  } catch {
    return '/';
  }
}

/** Checks shared by both transports before a body is read. */
export function checkBodyHeaders(contentLength: string | undefined, contentEncoding: string | undefined, maxBytes: number): void {
  if (contentEncoding !== undefined && contentEncoding.toLowerCase() !== 'identity') {
    throw new GatewayError(415, 'unsupported-encoding', `request bodies with content-encoding "${contentEncoding}" are not accepted`, {
      fix: 'send the JSON body uncompressed',
    });
  }
  if (contentLength !== undefined && Number(contentLength) > maxBytes) throw bodyTooLarge(maxBytes);
}

export function bodyTooLarge(maxBytes: number): GatewayError {
  return new GatewayError(413, 'body-too-large', `the request body is larger than ${maxBytes} bytes`, {
    fix: 'send a smaller request (fewer or smaller attachments), or raise the gateway maxRequestBodyBytes setting',
  });
}

/** Wrap a node request/response pair. */
export function nodeExchange(req: IncomingMessage, res: ServerResponse): Exchange {
  // The signal is made only when someone asks for it: most calls only need `aborted` and `onAbort`.
  let aborter: AbortController | undefined;
  let gone = false;
  let listeners: Array<() => void> | undefined;
  res.on('close', function onResponseClose() {
    if (res.writableFinished) return;
    gone = true;
    aborter?.abort();
    const ls = listeners;
    listeners = undefined;
    if (ls) for (const l of ls) l();
  });
  const path = pathOf(req.url);
  /** A streamed body was written (the headers went with it). */
  let wrote = false;
  return {
    method: req.method ?? 'GET',
    path,
    get signal(): AbortSignal {
      if (!aborter) {
        aborter = new AbortController();
        if (gone) aborter.abort();
      }
      return aborter.signal;
    },
    get aborted(): boolean {
      return gone;
    },
    onAbort(listener: () => void): () => void {
      if (gone) {
        queueMicrotask(listener);
        return () => undefined;
      }
      (listeners ??= []).push(listener);
      return () => {
        const i = listeners?.indexOf(listener) ?? -1;
        if (i >= 0) listeners!.splice(i, 1);
      };
    },
    header(name: string): string | undefined {
      const v = req.headers[name];
      return Array.isArray(v) ? v.join(', ') : v;
    },
    readBody(maxBytes: number): Promise<Buffer> {
      return readNodeBody(req, maxBytes);
    },
    send(status, headers, body) {
      if (res.headersSent || res.destroyed) return;
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      // A body left unread (refused early) is not drained: the connection closes after this answer.
      const close = req.complete ? {} : { connection: 'close' };
      res.writeHead(status, { ...headers, ...close, 'content-length': String(buf.length) });
      res.end(buf);
    },
    startStream(status, headers) {
      if (res.headersSent || res.destroyed) return;
      res.writeHead(status, headers);
      // Usually the first events are already here and take the headers along
      // in one write; if not, the headers go out on their own right after.
      setImmediate(() => {
        if (!wrote && !res.destroyed && !res.writableEnded) res.flushHeaders();
      });
    },
    write(chunk: string): Promise<void> | undefined {
      if (res.destroyed || res.writableEnded) return undefined;
      wrote = true;
      if (res.write(chunk)) return undefined;
      return new Promise<void>((resolve) => {
        const done = (): void => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    },
    end(last?: string) {
      if (res.writableEnded) return;
      if (last !== undefined && last.length > 0 && !res.destroyed) res.end(last);
      else res.end();
    },
    get started(): boolean {
      return res.headersSent;
    },
  };
}

function readNodeBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  try {
    checkBodyHeaders(req.headers['content-length'], req.headers['content-encoding'], maxBytes);
  } catch (err) {
    req.resume();
    return Promise.reject(err);
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (err: GatewayError | undefined): void => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (err) {
        // Stop reading; what is left of the body is discarded by node:http.
        req.resume();
        reject(err);
      } else {
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
      }
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) return finish(bodyTooLarge(maxBytes));
      chunks.push(chunk);
    };
    const onEnd = (): void => finish(undefined);
    const clientClosed = (): GatewayError => new GatewayError(400, 'client-closed', 'the client closed the connection while sending the body');
    const onError = (): void => finish(clientClosed());
    const onClose = (): void => {
      if (!req.complete) finish(clientClosed());
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}
