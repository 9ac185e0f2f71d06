/**
 * Plain HTTP proxy requests through a door (`GET http://host/path`): decide
 * with method and path, resolve and check every address, record the request,
 * then forward it to the checked IP with the client's `Host`, without
 * hop-by-hop or `Proxy-*` headers (both ways). Origin-form requests (`GET /x`)
 * are refused: a proxy client always sends the absolute URI.
 */
import { request as httpRequest, type IncomingMessage, type ServerResponse, type OutgoingHttpHeaders } from 'node:http';
import { statusForReason } from './limits.js';
import { resolveChecked } from './resolve.js';
import type { DoorContext, EgressEventData } from './context.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own; never forwarded. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host',
]);

/** Headers worth forwarding: not hop-by-hop, not `Proxy-*`, not named by `Connection`. */
export function forwardableHeaders(raw: readonly string[], connection: string | string[] | undefined): OutgoingHttpHeaders {
  const named = new Set(String(connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  const out: OutgoingHttpHeaders = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || lower.startsWith('proxy-') || named.has(lower)) continue;
    const prev = out[name];
    out[name] = prev === undefined ? raw[i + 1]! : ([] as string[]).concat(prev as string | string[], raw[i + 1]!);
  }
  return out;
}

/** Serve one plain HTTP proxy request. */
export async function handleHttp(ctx: DoorContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const conn = ctx.stateOf(req.socket);
  const data: EgressEventData = { conn: conn.id, scheme: 'http', method: req.method ?? '' };
  const refuse = async (decision: string, reason: string, problem: string): Promise<void> => {
    data.problem = problem;
    if (!res.headersSent) {
      res.writeHead(statusForReason(reason), { 'X-Cordon-Error': reason, 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
    }
    res.end(`cordon egress: ${reason}: ${problem}\n`);
    req.resume();
    await ctx.record(decision, reason, data);
  };

  const m = /^http:\/\/([^/?#]*)([^#]*)/i.exec(req.url ?? '');
  let url: URL | undefined;
  try {
    url = m ? new URL(`http://${m[1]}/`) : undefined;
  } catch {
    url = undefined;
  }
  if (!m || !url || url.username || url.password) {
    return refuse('deny', 'bad-request', 'send an absolute http:// URI without credentials (use CONNECT for https)');
  }
  const host = url.hostname;
  const port = url.port ? Number(url.port) : 80;
  const path = m[2]!.startsWith('/') ? m[2]! : `/${m[2]!}`;
  Object.assign(data, { host, port, path });
  const decision = ctx.decide({ host, port, method: req.method ?? '', path, scheme: 'http' });
  if (decision.host) data.host = decision.host;
  if (decision.ruleId) data.ruleId = decision.ruleId;
  if (decision.wouldDeny) data.wouldDeny = { reason: decision.wouldDeny.reason, ...(decision.wouldDeny.ruleId ? { ruleId: decision.wouldDeny.ruleId } : {}) };
  if (decision.result === 'approve') return refuse('deny', 'approval-not-available', `${req.method} ${path} needs a human approval, which this proxy cannot ask for yet`);
  if (decision.result !== 'allow') {
    return refuse('deny', decision.reason, `the policy of agent ${ctx.agent} does not allow ${req.method} http://${data.host}:${port}${path.slice(0, 200)} (${decision.reason})`);
  }
  if (decision.internal) return refuse('deny', 'internal-not-available', `${data.host} is a cordon service that this proxy cannot route to yet`);

  const declared = Number(req.headers['content-length'] ?? 0);
  if (!(declared <= ctx.limits.maxRequestBodyBytes)) {
    return refuse('deny', 'body-too-large', `the request body is larger than ${ctx.limits.maxRequestBodyBytes} bytes`);
  }
  const resolved = await resolveChecked(decision.host ?? host, port, { lookup: ctx.lookup, checkAddress: ctx.checkAddress, timeoutMs: ctx.limits.dnsTimeoutMs });
  if (!resolved.ok) {
    if (resolved.address) data.address = resolved.address;
    return refuse(resolved.reason.startsWith('dns-') || resolved.reason === 'no-address' ? 'error' : 'deny', resolved.reason, resolved.problem);
  }
  data.address = resolved.address;
  if (!(await ctx.record('allow', decision.reason, data))) {
    res.writeHead(503, { 'X-Cordon-Error': 'audit-unavailable', Connection: 'close' });
    res.end('cordon egress: audit-unavailable: the request could not be recorded, so it was not sent\n');
    req.resume();
    return;
  }
  forward(ctx, req, res, resolved.address, port, url.host, data);
}

function forward(ctx: DoorContext, req: IncomingMessage, res: ServerResponse, address: string, port: number, hostHeader: string, data: EgressEventData): void {
  const conn = ctx.stateOf(req.socket);
  const started = Date.now();
  let bytesOut = 0;
  let bytesIn = 0;
  let closeReason = 'closed';
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    ctx.recordClose(conn.closeReason ?? closeReason, { ...data, bytesIn, bytesOut, durationMs: Date.now() - started, ...(res.headersSent ? { status: res.statusCode } : {}) });
  };
  const headers = forwardableHeaders(req.rawHeaders, req.headers.connection);
  headers.host = hostHeader;
  const upstream = httpRequest({ host: address, port, method: req.method, path: data.path, headers, setHost: false, agent: false });
  upstream.on('response', (up) => {
    const out = forwardableHeaders(up.rawHeaders, up.headers.connection);
    res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
    up.on('data', (chunk: Buffer) => { bytesIn += chunk.length; conn.touch(); });
    up.on('error', () => { closeReason = 'upstream-error'; res.destroy(); finish(); });
    up.pipe(res);
    up.on('end', finish);
  });
  upstream.on('error', (err) => {
    closeReason = 'upstream-error';
    if (!res.headersSent) {
      res.writeHead(502, { 'X-Cordon-Error': 'upstream-error', 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' });
      res.end(`cordon egress: upstream-error: ${err.message}\n`);
    } else {
      res.destroy();
    }
    finish();
  });
  req.on('data', (chunk: Buffer) => {
    bytesOut += chunk.length;
    conn.touch();
    if (bytesOut <= ctx.limits.maxRequestBodyBytes) return;
    closeReason = 'body-too-large';
    upstream.destroy();
    if (!res.headersSent) {
      res.writeHead(413, { 'X-Cordon-Error': 'body-too-large', Connection: 'close' });
      res.end(`cordon egress: body-too-large: the request body is larger than ${ctx.limits.maxRequestBodyBytes} bytes\n`);
    } else {
      res.destroy();
    }
    finish();
  });
  res.on('close', () => { upstream.destroy(); finish(); });
  req.pipe(upstream);
}
