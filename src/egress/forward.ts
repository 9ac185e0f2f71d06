/**
 * Forwarding one HTTP request upstream after it was decided and recorded:
 * plain HTTP to the checked IP, or a request inside an intercepted tunnel over
 * the proxy's own verified TLS connection. Streams both ways, counts bytes
 * (the door's bytes-out-per-minute meter included), enforces the body limit
 * while streaming, and records one `egress.close` with the outcome.
 * A response hook (returned by the request hook: the secrets layer's scrub
 * of reflected values) sees the response head before anything is sent to
 * the client and may rewrite its headers, transform its body or refuse it.
 * Also the shared header helpers and the request-hook seam.
 */
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, RequestOptions, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { DoorContext, EgressEventData } from './context.js';
import { refuseResponse } from './internal.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own; never forwarded. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host',
]);

/** Headers worth forwarding (names in lower case): not hop-by-hop, not `Proxy-*`, not named by `Connection`. */
export function forwardableHeaders(raw: readonly string[], connection: string | string[] | undefined): OutgoingHttpHeaders {
  const named = new Set(String(connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  const out: OutgoingHttpHeaders = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || lower.startsWith('proxy-') || named.has(lower)) continue;
    const prev = out[lower];
    out[lower] = prev === undefined ? raw[i + 1]! : ([] as string[]).concat(prev as string | string[], raw[i + 1]!);
  }
  return out;
}

/** Size of a request head as sent (request line and header lines), for the bytes-out meter. */
export function headBytes(method: string, path: string, headers: OutgoingHttpHeaders): number {
  let n = method.length + path.length + 13; // ' ' + ' HTTP/1.1\r\n' + final '\r\n'
  for (const [name, value] of Object.entries(headers)) {
    for (const v of ([] as unknown[]).concat(value ?? [])) n += name.length + String(v).length + 4;
  }
  return n;
}

export interface ForwardOptions {
  /** Start the upstream request (plain `http.request` to the checked IP, or over the tunnel's TLS connection). */
  open: (options: RequestOptions) => ClientRequest;
  method: string;
  path: string;
  /** Headers to send, `Host` included. */
  headers: OutgoingHttpHeaders;
  /** A body transform from the request hook. */
  body?: (source: Readable) => Readable;
  /** The whole body, already read from the client (a request held for approval): sent instead of the client's stream. */
  bufferedBody?: Buffer;
  /** The `egress.request` data already recorded; the close event repeats it with bytes and status. */
  data: EgressEventData;
  /** Reason for an upstream failure before any response (e.g. a certificate that does not verify). */
  classifyError?: (err: Error) => string;
  /** From the request hook: runs on the response head before anything reaches the client. */
  response?: EgressResponseHook;
}

/** A kebab-case reason a hook may name; anything else becomes `fallback`. */
export function namedReason(reason: unknown, fallback: string): string {
  return typeof reason === 'string' && /^[a-z0-9-]{1,64}$/.test(reason) ? reason : fallback;
}

/**
 * Forward one recorded request and stream the response back.
 * `bytesOut` in the close event counts request body bytes, `bytesIn` response body bytes.
 */
export function forwardRequest(ctx: DoorContext, req: IncomingMessage, res: ServerResponse, o: ForwardOptions): void {
  const conn = ctx.stateOf(req.socket);
  const started = Date.now();
  let bytesOut = 0;
  let bytesIn = 0;
  let bodyBytes = 0;
  let closeReason = 'closed';
  let done = false;
  let stopped = false;
  let responseEnded = false;
  let responseNote: (() => Record<string, unknown> | undefined) | undefined;
  const meter = ctx.meter((reason) => stop(reason, `sandbox ${ctx.sandboxId} sent more than ${ctx.limits.maxBytesOutPerMinute} bytes in the last minute`));
  const finish = (): void => {
    if (done) return;
    done = true;
    meter.done();
    let note: Record<string, unknown> | undefined;
    try {
      note = responseNote?.();
    } catch {
      note = { failed: true };
    }
    ctx.recordClose(conn.closeReason ?? closeReason, {
      ...o.data, bytesIn, bytesOut, durationMs: Date.now() - started, ...(res.headersSent ? { status: res.statusCode } : {}), ...(note ? { responseHook: note } : {}),
    });
  };
  const upstream = o.open({ method: o.method, path: o.path, headers: o.headers, setHost: false });
  function stop(reason: string, problem: string): void {
    if (stopped || responseEnded) return;
    stopped = true;
    if (closeReason === 'closed') closeReason = reason;
    upstream.destroy();
    if (!res.headersSent) refuseResponse(res, reason, problem);
    else res.destroy();
    req.resume();
    finish();
  }
  meter.out(headBytes(o.method, o.path, o.headers));
  upstream.on('response', (up) => {
    const out = forwardableHeaders(up.rawHeaders, up.headers.connection);
    let delivered: Readable = up;
    if (o.response) {
      // Fail closed: a hook that throws or refuses means nothing of this response reaches the client.
      let r: ResponseHookResult;
      try {
        r = o.response({ status: up.statusCode ?? 502, headers: out }) ?? {};
      } catch (err) {
        up.resume();
        return stop('response-hook-failed', `the response hook failed: ${(err as Error)?.message ?? err}`);
      }
      if (r.deny) {
        up.resume();
        return stop(namedReason(r.deny.reason, 'response-hook-failed'), String(r.deny.problem ?? 'refused by the response hook'));
      }
      if (r.note) responseNote = r.note;
      if (r.body) {
        try {
          delivered = r.body(up);
        } catch (err) {
          up.resume();
          return stop('response-hook-failed', `the response body transform failed: ${(err as Error)?.message ?? err}`);
        }
        delivered.on('error', (err: Error & { reason?: unknown }) => stop(namedReason(err?.reason, 'response-hook-failed'), 'the response body transform failed'));
      }
    }
    // The reason phrase is upstream text no hook sees: with a response hook, Node's standard phrase is sent instead.
    res.writeHead(up.statusCode ?? 502, o.response ? undefined : up.statusMessage, out);
    up.on('data', (chunk: Buffer) => { bytesIn += chunk.length; conn.touch(); });
    up.on('error', () => stop('upstream-error', 'the upstream connection failed mid-response'));
    up.on('close', () => { if (!up.complete) stop('upstream-error', 'the upstream closed mid-response'); });
    delivered.pipe(res);
    delivered.on('end', () => { responseEnded = true; finish(); });
  });
  upstream.on('error', (err) => {
    const reason = o.classifyError?.(err) ?? 'upstream-error';
    stop(reason, err.message);
  });
  const origin: Readable = o.bufferedBody ? Readable.from([o.bufferedBody], { objectMode: false }) : req;
  const source = o.body ? o.body(origin) : origin;
  // A transform may name its refusal: an error with a kebab-case `reason` (e.g. `secret-exfiltration`) is reported as such.
  source.on('error', (err: Error & { reason?: unknown }) => {
    const reason = namedReason(err?.reason, '');
    stop(reason || 'request-hook-failed', reason ? String(err.message) : 'the request body transform failed');
  });
  req.on('data', (chunk: Buffer) => {
    conn.touch();
    bodyBytes += chunk.length;
    if (bodyBytes <= ctx.limits.maxRequestBodyBytes) return;
    stop('body-too-large', `the request body is larger than ${ctx.limits.maxRequestBodyBytes} bytes`);
  });
  source.on('data', (chunk: Buffer) => {
    bytesOut += chunk.length;
    meter.out(chunk.length);
  });
  res.on('close', () => {
    if (responseEnded || stopped) return;
    if (closeReason === 'closed' && !res.writableFinished) closeReason = 'client-closed';
    upstream.destroy();
    finish();
  });
  source.pipe(upstream);
}

/** A request about to be forwarded, as the request hook sees it. */
export interface HookedRequest {
  sandboxId: string;
  agent: string;
  /** `http` for plain proxy requests, `https` for requests inside an intercepted tunnel. */
  scheme: 'http' | 'https';
  /** Normalised destination host. */
  host: string;
  port: number;
  method: string;
  /** Origin-form path with query. */
  path: string;
  /** Headers that will be sent upstream, names in lower case (`host` included); change them in place. */
  headers: OutgoingHttpHeaders;
}

/** What a request hook may ask for. Returning nothing forwards the request as it is. */
export interface HookResult {
  /** Refuse the request instead; `reason` appears in the audit event and in `X-Cordon-Error` (status 403). */
  deny?: { reason: string; problem: string };
  /**
   * Transform the request body on its way upstream; an error it emits with a
   * kebab-case `reason` property refuses the request with that reason (its
   * message is the problem shown). If it changes the length,
   * the hook must also fix `content-length` in `headers` (or delete it and
   * set `transfer-encoding: chunked`).
   */
  body?: (source: Readable) => Readable;
  /** Added to the audit event as `data.hook` (names, never secret values). */
  note?: Record<string, unknown>;
  /** Runs on the response head before anything reaches the client (see {@link EgressResponseHook}). */
  response?: EgressResponseHook;
}

/** The response as a response hook sees it. */
export interface HookedResponse {
  status: number;
  /** Headers that will be sent to the client, names in lower case; change them in place. */
  headers: OutgoingHttpHeaders;
}

/** What a response hook may ask for. */
export interface ResponseHookResult {
  /** Refuse the response instead (nothing of it reaches the client); `reason` as for {@link HookResult}. */
  deny?: { reason: string; problem: string };
  /**
   * Transform the response body on its way to the client. The headers were
   * already decided, so a transform must keep the body's length (or the hook
   * must delete `content-length` from `headers`). An error it emits ends the
   * response (the client sees a truncated body, never the rest).
   */
  body?: (source: Readable) => Readable;
  /** Evaluated when the exchange closes; added to `egress.close` as `data.responseHook` (names and counts, never values). */
  note?: () => Record<string, unknown> | undefined;
}

/**
 * Called once per upstream response, before its head is sent to the client.
 * A throw refuses the response (`response-hook-failed`).
 */
export type EgressResponseHook = (response: HookedResponse) => ResponseHookResult | void;

/**
 * The seam where the secrets layer swaps placeholders for real values: called
 * for every plain HTTP request and every request inside an intercepted tunnel,
 * after the policy allowed it and before the audit event is written and any
 * byte is sent upstream. Not called for internal services or blind tunnels.
 * A hook that throws or rejects refuses the request (`request-hook-failed`).
 */
export type EgressRequestHook = (request: HookedRequest) => HookResult | void | Promise<HookResult | void>;

/** Run the hook, failing closed. */
export async function applyRequestHook(hook: EgressRequestHook | undefined, request: HookedRequest): Promise<
  { ok: true; result: HookResult } | { ok: false; reason: string; problem: string }
> {
  if (!hook) return { ok: true, result: {} };
  try {
    const result = (await hook(request)) ?? {};
    if (result.deny) {
      const reason = namedReason(result.deny.reason, 'request-hook-failed');
      return { ok: false, reason, problem: String(result.deny.problem ?? 'refused by the request hook') };
    }
    return { ok: true, result };
  } catch (err) {
    return { ok: false, reason: 'request-hook-failed', problem: `the request hook failed: ${(err as Error)?.message ?? err}` };
  }
}

/** A CONNECT the policy allowed, before the proxy resolves its host. */
export interface HookedConnect {
  sandboxId: string;
  agent: string;
  /** Normalised destination host. */
  host: string;
  port: number;
}

/**
 * Called for every allowed CONNECT to the internet before DNS (the secrets
 * layer scans the host name). A `deny` refuses the tunnel with status 403 and
 * the reason in `X-Cordon-Error`; a throw refuses it (`request-hook-failed`).
 */
export type EgressConnectHook = (request: HookedConnect) => Pick<HookResult, 'deny'> | void | Promise<Pick<HookResult, 'deny'> | void>;

/** Run the CONNECT hook, failing closed. */
export async function applyConnectHook(hook: EgressConnectHook | undefined, request: HookedConnect): Promise<
  { ok: true } | { ok: false; reason: string; problem: string }
> {
  if (!hook) return { ok: true };
  try {
    const result = (await hook(request)) ?? {};
    if (!result.deny) return { ok: true };
    const reason = namedReason(result.deny.reason, 'request-hook-failed');
    return { ok: false, reason, problem: String(result.deny.problem ?? 'refused by the connect hook') };
  } catch (err) {
    return { ok: false, reason: 'request-hook-failed', problem: `the connect hook failed: ${(err as Error)?.message ?? err}` };
  }
}
