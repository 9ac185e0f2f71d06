/**
 * The secrets layer on the way back: for a sandbox that holds real values,
 * the proxy runs this on every response of an intercepted (or plain HTTP)
 * request before any byte reaches the guest. Header names and values and the
 * body are scrubbed by reflect.ts (each occurrence of a real value, in any
 * known encoding, masked with `*` of the same length), and each kind of
 * occurrence is reported as `{secret, form, count}` (never the value) to
 * `onReflected`, which the sandbox manager audits as `secret.reflected`.
 *
 * Compression fails closed: the request hook asks for `Accept-Encoding:
 * identity`; an upstream that compresses all the same with one `gzip`,
 * `deflate` or `br` layer has its body decompressed here (streamed), scanned
 * and sent to the guest as identity (`Content-Encoding` and `Content-Length`
 * dropped, so the proxy re-frames it as chunked); any other encoding, or a
 * stack of them, is refused with `response-unscannable` instead of being
 * passed on unscanned, and a body that does not decompress ends the response. It matches the proxy's response hook
 * contract (`EgressResponseHook` in egress/forward.ts) structurally.
 */
import { Transform, type Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { OutgoingHttpHeaders } from 'node:http';
import type { ReflectedCount, ReflectionScrubber } from './reflect.js';

/** Where in a response a value was found. */
export type ReflectedWhere = 'headers' | 'body';

/** One report to `onReflected`. */
export interface ReflectedReport extends ReflectedCount {
  where: ReflectedWhere;
}

/** The response as the proxy's response hook receives it. */
export interface SecretsResponseHead {
  status: number;
  /** Headers to send to the guest; changed in place. */
  headers: OutgoingHttpHeaders;
}

/** What the response hook answers. */
export interface SecretsResponseResult {
  deny?: { reason: string; problem: string };
  body?: (source: Readable) => Readable;
  /** Evaluated when the exchange closes: added to its audit event (names and counts only). */
  note?: () => Record<string, unknown> | undefined;
}

/** The `deny.reason` of a response cordon cannot scan. */
export const UNSCANNABLE_REASON = 'response-unscannable';

export interface ResponseScrubOptions {
  scrubber: ReflectionScrubber;
  /** The request: for reports and for knowing when a response has no body. */
  request: { host: string; port: number; path: string; method?: string };
  onReflected?: (report: ReflectedReport, request: { host: string; port: number; path: string }) => void;
}

/** The single content codings decoded for scanning (`x-gzip` is gzip, RFC 9110 §8.4.1.3). */
const DECOMPRESSORS = new Map<string, () => Transform>([
  ['gzip', () => createGunzip()],
  ['x-gzip', () => createGunzip()],
  ['deflate', () => createInflate()],
  ['br', () => createBrotliDecompress()],
]);

/** Whether a response to `method` with `status` has no body (RFC 9110 §6.4.1). */
function hasNoBody(method: string | undefined, status: number): boolean {
  return String(method ?? '').toUpperCase() === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
}

/** The response hook for one request. */
export function createResponseScrub(o: ResponseScrubOptions): (head: SecretsResponseHead) => SecretsResponseResult {
  const where = { host: o.request.host, port: o.request.port, path: o.request.path };
  const report = (counts: ReflectedCount[], at: ReflectedWhere): void => {
    for (const c of counts) {
      try {
        o.onReflected?.({ ...c, where: at }, where);
      } catch {
        // reporting must not break delivery; the masking already happened
      }
    }
  };
  return function scrubResponse(head: SecretsResponseHead): SecretsResponseResult {
    const encoding = String(head.headers['content-encoding'] ?? '').trim().toLowerCase();
    const noBody = hasNoBody(o.request.method, head.status);
    const decompress = noBody ? undefined : DECOMPRESSORS.get(encoding);
    if (decompress) {
      delete head.headers['content-encoding'];
      delete head.headers['content-length'];
    } else if (encoding !== '' && encoding !== 'identity' && !noBody) {
      return {
        deny: {
          reason: UNSCANNABLE_REASON,
          problem: `the response of ${o.request.host} is sent with a content coding other than gzip, deflate or br (not quoted: it is upstream text that may carry a value) although cordon asked for identity; it cannot be scanned for reflected secrets, so it is withheld (have the upstream honour Accept-Encoding: identity)`,
        },
      };
    }
    const inHeaders = new Map<string, ReflectedCount>();
    for (const name of Object.keys(head.headers)) {
      const value = head.headers[name];
      const cleanName = o.scrubber.scrubText(name, inHeaders);
      const clean = value === undefined ? undefined
        : Array.isArray(value) ? value.map((v) => o.scrubber.scrubText(String(v), inHeaders))
          : typeof value === 'number' ? value : o.scrubber.scrubText(String(value), inHeaders);
      if (cleanName !== name) delete head.headers[name];
      head.headers[cleanName] = clean;
    }
    const headerCounts = [...inHeaders.values()];
    report(headerCounts, 'headers');
    let bodyCounts: ReflectedCount[] = [];
    return {
      note: function reflectedNote() {
        const all = [...headerCounts.map((c) => ({ ...c, where: 'headers' })), ...bodyCounts.map((c) => ({ ...c, where: 'body' }))];
        return all.length > 0 ? { reflected: all } : undefined;
      },
      body: function scrubBody(source: Readable): Readable {
        const scrub = o.scrubber.body();
        let reported = false;
        // A scrubber that throws fails the response (the guest gets nothing unscrubbed), never the daemon.
        const step = (scrubbed: () => Buffer, done: (err?: Error | null, out?: Buffer) => void): void => {
          let out: Buffer;
          try {
            out = scrubbed();
          } catch (err) {
            done(Object.assign(new Error(`the response body could not be scrubbed of secrets: ${(err as Error)?.message ?? String(err)}`), { cause: err }));
            return;
          }
          done(null, out.length > 0 ? out : undefined);
        };
        const transform = new Transform({
          transform(chunk: Buffer, _enc, done) {
            step(() => scrub.push(chunk), done);
          },
          flush(done) {
            step(() => scrub.end(), done);
          },
        });
        transform.once('close', () => {
          if (reported) return;
          reported = true;
          bodyCounts = scrub.counts();
          report(bodyCounts, 'body');
        });
        transform.once('end', () => {
          bodyCounts = scrub.counts();
        });
        source.on('error', (err) => transform.destroy(err));
        if (!decompress) return source.pipe(transform);
        const plain = decompress();
        plain.on('error', (err) => transform.destroy(err));
        return source.pipe(plain).pipe(transform);
      },
    };
  };
}
