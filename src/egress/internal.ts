/**
 * Routes to cordon's own services under `*.cordon.internal` (LLM gateway,
 * tools gateway, approvals), reached through the same door as the internet:
 * plain `http://llm.cordon.internal/…` or `CONNECT llm.cordon.internal:443`
 * (TLS terminated with a leaf of the egress CA). The door hands each request
 * to the registered service with the caller taken from the door (its sandbox
 * and agent), never from anything the client sent: every client `x-cordon-*`
 * header and every `Proxy-*` header is removed first, and the request URL is
 * rewritten to origin form (`/v1/models`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { InvalidInputError } from '../errors/index.js';
import { INTERNAL_SERVICES, normalizeDestination } from '../policy/index.js';
import type { DoorContext, EgressEventData } from './context.js';
import { retryAfterForReason, statusForReason, type RetryRates } from './limits.js';

/** Who is calling an internal service: always the door's sandbox and agent. */
export interface InternalCaller {
  sandboxId: string;
  agent: string;
  /** The door's connection id (ties the service's own events to `egress.request`). */
  conn: number;
}

/**
 * One of cordon's services behind `<name>.cordon.internal`.
 *
 * `handle` gets the request with origin-form `req.url` and without any
 * client-sent `x-cordon-*` or `Proxy-*` headers, and must answer on `res`.
 * A throw (or a rejected promise) before the response started gives the
 * client a 502 `internal-error`.
 *
 * @example
 * const llm: InternalService = { name: 'llm', handle: (req, res, caller) => gateway.serve(req, res, caller) };
 * createEgressProxy({ ca, internal: { 'llm.cordon.internal': llm } });
 */
export interface InternalService {
  /** Short name for logs, e.g. `llm`. */
  readonly name: string;
  handle(req: IncomingMessage, res: ServerResponse, caller: InternalCaller): void | Promise<void>;
}

/**
 * Check a registry of internal services: keys are the full host names that
 * the policy knows (see `INTERNAL_SERVICES`); returns it keyed by normalised name.
 * @throws InvalidInputError for an unknown name or a service without `handle`
 */
export function checkInternalServices(input: Record<string, InternalService> | undefined): ReadonlyMap<string, InternalService> {
  const out = new Map<string, InternalService>();
  for (const [key, service] of Object.entries(input ?? {})) {
    const dest = normalizeDestination(key);
    if (dest.kind !== 'internal' || !dest.service) {
      throw new InvalidInputError(`${JSON.stringify(key)} is not one of cordon's internal service names`, {
        fix: `register services under ${Object.keys(INTERNAL_SERVICES).join(', ')}`,
      });
    }
    if (!service || typeof service.handle !== 'function') {
      throw new InvalidInputError(`the internal service for ${key} has no handle(req, res, caller) function`, { fix: 'pass an object with a handle method' });
    }
    out.set(dest.host, service);
  }
  return out;
}

/** Remove client headers that could claim an identity or steer the proxy, in both `headers` and `rawHeaders`. */
export function stripClientControlHeaders(req: IncomingMessage): void {
  const drop = (name: string): boolean => {
    const lower = name.toLowerCase();
    return lower.startsWith('x-cordon-') || lower.startsWith('proxy-');
  };
  for (const name of Object.keys(req.headers)) if (drop(name)) delete req.headers[name];
  const raw = req.rawHeaders;
  const kept: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (!drop(raw[i]!)) kept.push(raw[i]!, raw[i + 1]!);
  raw.splice(0, raw.length, ...kept);
}

/**
 * Spend one of the door's turns at cordon's services (a request, or a CONNECT
 * that opens a tunnel to one); the refusal's problem text when none is left.
 */
export function internalRateRefusal(ctx: DoorContext): string | undefined {
  if (ctx.takeInternalRequest()) return undefined;
  return `sandbox ${ctx.sandboxId} made more than ${ctx.limits.maxInternalRequestsPerSecond} requests a second to cordon's services; slow down and retry`;
}

/**
 * Serve one request for an internal service: record it (refused when the
 * audit event cannot be written), strip the client's control headers, hand
 * it over with the door's identity, count bytes, record the close.
 * @param path the origin-form path the service sees
 */
export async function serveInternal(ctx: DoorContext, service: InternalService, req: IncomingMessage, res: ServerResponse, path: string, data: EgressEventData): Promise<void> {
  const conn = ctx.stateOf(req.socket);
  const problem = internalRateRefusal(ctx);
  if (problem) {
    // Before anything is recorded as allowed: a guest looping on a service must not grow the audit log
    // by one event (or three, with the service's own) per request. This refusal goes under the door's budget.
    refuseResponse(res, 'internal-rate-limit', problem, ctx.limits);
    req.resume();
    await ctx.record('deny', 'internal-rate-limit', { ...data, problem });
    return;
  }
  if (!(await ctx.record('allow', 'internal', data))) {
    refuseResponse(res, 'audit-unavailable', 'the request could not be recorded, so it was not served');
    req.resume();
    return;
  }
  stripClientControlHeaders(req);
  req.url = path;
  const started = Date.now();
  // Count the body as the parser pushes it, without reading it: a 'data' listener here would switch
  // the request to flowing mode, and a service that starts reading only after an async step (token
  // verification) would miss the body and wait forever.
  let bytesOut = req.readableLength;
  let bytesIn = 0;
  const push = req.push.bind(req);
  req.push = function countedPush(chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk instanceof Uint8Array) bytesOut += chunk.length;
    else if (typeof chunk === 'string') bytesOut += Buffer.byteLength(chunk, encoding);
    conn.touch();
    return push(chunk, encoding);
  };
  const write = res.write.bind(res) as (...a: unknown[]) => boolean;
  const end = res.end.bind(res) as (...a: unknown[]) => ServerResponse;
  const count = (chunk: unknown): void => {
    if (typeof chunk === 'string') bytesIn += Buffer.byteLength(chunk);
    else if (chunk instanceof Uint8Array) bytesIn += chunk.length;
    conn.touch();
  };
  res.write = function countedWrite(...a: unknown[]): boolean {
    count(a[0]);
    return write(...a);
  } as typeof res.write;
  res.end = function countedEnd(...a: unknown[]): ServerResponse {
    if (typeof a[0] !== 'function') count(a[0]);
    return end(...a);
  } as typeof res.end;
  let done = false;
  const finish = (reason: string): void => {
    if (done) return;
    done = true;
    ctx.recordClose(conn.closeReason ?? reason, { ...data, bytesIn, bytesOut, durationMs: Date.now() - started, ...(res.headersSent ? { status: res.statusCode } : {}) });
  };
  res.once('finish', () => finish('closed'));
  res.once('close', () => finish(res.writableFinished ? 'closed' : 'client-closed'));
  try {
    await service.handle(req, res, { sandboxId: ctx.sandboxId, agent: ctx.agent, conn: conn.id });
  } catch (err) {
    if (!res.headersSent) refuseResponse(res, 'internal-error', `the ${service.name} service failed: ${(err as Error)?.message ?? err}`);
    else res.destroy();
    finish('internal-error');
  }
}

/**
 * Answer with a refusal (status by reason, `X-Cordon-Error`, `Retry-After` for a rate), closing the connection.
 * @param rates the door's limits, for the `Retry-After` of a rate refusal @default the default limits
 */
export function refuseResponse(res: ServerResponse, reason: string, problem: string, rates?: RetryRates): void {
  if (!res.headersSent) {
    const retryAfter = retryAfterForReason(reason, rates);
    res.writeHead(statusForReason(reason), {
      'X-Cordon-Error': reason, 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close',
      ...(retryAfter === undefined ? {} : { 'Retry-After': String(retryAfter) }),
    });
  }
  res.end(`cordon egress: ${reason}: ${problem}\n`);
}
