/**
 * Plain HTTP proxy requests through a door (`GET http://host/path`): decide
 * with method and path, resolve and check every address, record the request,
 * then forward it to the checked IP with the client's `Host`, without
 * hop-by-hop or `Proxy-*` headers (both ways). Origin-form requests (`GET /x`)
 * are refused: a proxy client always sends the absolute URI. A request that
 * a rule marks `approve` is held (approve.ts) after the request hook and
 * before DNS; once its approval is granted and used, exactly the bytes that
 * were approved are forwarded.
 */
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { holdForApproval } from './approve.js';
import { applyRequestHook, forwardableHeaders, forwardRequest } from './forward.js';
import { refuseResponse, serveInternal } from './internal.js';
import { requestRateRefusal } from './limits.js';
import { resolveChecked } from './resolve.js';
import type { DoorContext, EgressEventData } from './context.js';

/** Serve one plain HTTP proxy request. */
export async function handleHttp(ctx: DoorContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const conn = ctx.stateOf(req.socket);
  const data: EgressEventData = { conn: conn.id, scheme: 'http', method: req.method ?? '' };
  const refuse = async (decision: string, reason: string, problem: string): Promise<void> => {
    data.problem = problem;
    refuseResponse(res, reason, problem, ctx.limits);
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
  const needsApproval = decision.result === 'approve' && !decision.internal;
  if (decision.result !== 'allow' && !needsApproval) {
    return refuse('deny', decision.reason, `the policy of agent ${ctx.agent} does not allow ${req.method} http://${data.host}:${port}${path.slice(0, 200)} (${decision.reason})`);
  }
  if (decision.internal) {
    const service = ctx.internal.get(decision.host ?? host);
    if (!service) return refuse('deny', 'internal-not-available', `${data.host} is a cordon service that is not running in this deployment`);
    data.service = service.name;
    return serveInternal(ctx, service, req, res, path, data);
  }
  if (ctx.overBytesOut()) {
    return refuse('deny', 'bytes-out-limit', `sandbox ${ctx.sandboxId} sent more than ${ctx.limits.maxBytesOutPerMinute} bytes in the last minute; wait, or raise maxBytesOutPerMinute`);
  }
  // One allowed event per request: spent before the hook, any hold, DNS or forwarding; past the rate, a budgeted refusal.
  const overRate = requestRateRefusal(ctx);
  if (overRate) return refuse('deny', 'request-rate-limit', overRate);

  const declared = Number(req.headers['content-length'] ?? 0);
  if (!(declared <= ctx.limits.maxRequestBodyBytes)) {
    return refuse('deny', 'body-too-large', `the request body is larger than ${ctx.limits.maxRequestBodyBytes} bytes`);
  }
  // The hook (the secrets scan) runs before DNS: a secret in the host name must not reach a resolver.
  const headers = forwardableHeaders(req.rawHeaders, req.headers.connection);
  headers.host = url.host;
  const asSent = { ...headers };
  const hooked = await applyRequestHook(ctx.requestHook, {
    sandboxId: ctx.sandboxId, agent: ctx.agent, scheme: 'http', host: data.host!, port, method: req.method ?? '', path, headers,
  });
  if (!hooked.ok) return refuse('deny', hooked.reason, hooked.problem);
  if (hooked.result.note) data.hook = hooked.result.note;
  let bufferedBody: Buffer | undefined;
  if (needsApproval) {
    // Held before DNS and before any byte goes out; the exact bytes read here are what an approval permits.
    const held = await holdForApproval(ctx, req, res, { scheme: 'http', host: data.host!, port, method: req.method ?? '', path, headers: asSent });
    if (!held.ok) {
      if (held.approvalId) data.approval = held.approvalId;
      return refuse('deny', held.reason, held.problem);
    }
    data.approval = held.approvalId;
    bufferedBody = held.body;
    if (headers['content-length'] === undefined && !hooked.result.body && bufferedBody.length > 0) headers['content-length'] = String(bufferedBody.length);
  }
  const resolved = await resolveChecked(decision.host ?? host, port, { lookup: ctx.lookup, checkAddress: ctx.checkAddress, timeoutMs: ctx.limits.dnsTimeoutMs });
  if (!resolved.ok) {
    if (resolved.address) data.address = resolved.address;
    return refuse(resolved.reason.startsWith('dns-') || resolved.reason === 'no-address' ? 'error' : 'deny', resolved.reason, resolved.problem);
  }
  data.address = resolved.address;
  if (!(await ctx.record('allow', decision.reason, data))) {
    refuseResponse(res, 'audit-unavailable', 'the request could not be recorded, so it was not sent');
    req.resume();
    return;
  }
  const address = resolved.address;
  forwardRequest(ctx, req, res, {
    open: (o) => httpRequest({ ...o, host: address, port, agent: false }),
    method: req.method ?? 'GET', path, headers, data, ...(hooked.result.body ? { body: hooked.result.body } : {}),
    ...(hooked.result.response ? { response: hooked.result.response } : {}),
    ...(bufferedBody ? { bufferedBody } : {}),
  });
}
