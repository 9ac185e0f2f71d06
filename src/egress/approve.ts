/**
 * Requests that a method/path rule marks `approve`: the door reads the whole
 * body (bounded by `maxApprovalBodyBytes`, within `handshakeTimeoutMs`),
 * hands the exact request to the approval hook, which holds it until a human
 * decides, and forwards exactly those bytes only when the hook says the
 * approval was granted and used. The proxy holds no policy: the hook decides,
 * and a hook that throws means deny (`approval-failed`). Without a hook the
 * request is refused (`approval-not-available`). While a sandbox is
 * supervised, a plain (not intercepted) CONNECT tunnel is held the same way,
 * as the action `CONNECT host:port` with no headers and no body.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { DoorContext } from './context.js';
import { namedReason } from './forward.js';

/** One request held for approval, as the agent sent it (before any secret was swapped in). */
export interface HeldRequest {
  sandboxId: string;
  agent: string;
  /** `connect`: a plain tunnel held as a whole (method `CONNECT`, `url` is `host:port`, no headers, empty body). */
  scheme: 'http' | 'https' | 'connect';
  host: string;
  port: number;
  method: string;
  /** Origin-form path with query. */
  path: string;
  /** Absolute URL (default ports left out); `host:port` for a CONNECT. */
  url: string;
  /** Headers that will be sent (names in lower case), before the request hook ran. */
  headers: OutgoingHttpHeaders;
  body: Buffer;
}

export type EgressApprovalResult =
  | { ok: true; approvalId: string }
  | { ok: false; reason: string; problem: string; approvalId?: string };

/**
 * Holds a request until a human decides; resolves `ok` only once the approval
 * was granted and used for this exact request. `signal` aborts when the
 * client goes away.
 */
export type EgressApprovalHook = (held: HeldRequest, signal: AbortSignal) => Promise<EgressApprovalResult>;

export type HoldResult = { ok: true; body: Buffer; approvalId: string } | { ok: false; reason: string; problem: string; approvalId?: string };

/** Read the body and wait for the hook's verdict. */
export async function holdForApproval(
  ctx: DoorContext, req: IncomingMessage, res: ServerResponse,
  o: Omit<HeldRequest, 'sandboxId' | 'agent' | 'url' | 'body'>,
): Promise<HoldResult> {
  const hook = ctx.approve;
  if (!hook) {
    return { ok: false, reason: 'approval-not-available', problem: `${o.method} ${o.path.slice(0, 200)} needs a human approval, and approvals are not running in this deployment` };
  }
  const max = ctx.limits.maxApprovalBodyBytes;
  const declared = Number(req.headers['content-length'] ?? 0);
  if (!(declared <= max)) return tooLarge(max);
  const body = await readBody(req, max, ctx.limits.handshakeTimeoutMs);
  if (!body.ok) return body.reason === 'approval-body-too-large' ? tooLarge(max) : { ok: false, reason: body.reason, problem: body.problem };
  const defaultPort = o.scheme === 'https' ? 443 : 80;
  const hostPart = o.host.includes(':') ? `[${o.host}]` : o.host;
  const url = `${o.scheme}://${hostPart}${o.port === defaultPort ? '' : `:${o.port}`}${o.path}`;
  const aborter = new AbortController();
  const onClose = (): void => aborter.abort();
  res.once('close', onClose);
  const conn = ctx.stateOf(req.socket);
  // The held connection is not idle: keep the door's idle timer away while a human decides.
  const keepAlive = setInterval(() => conn.touch(), 1000);
  try {
    const held: HeldRequest = { ...o, headers: { ...o.headers }, sandboxId: ctx.sandboxId, agent: ctx.agent, url, body: body.body };
    const verdict = checkedVerdict(await hook(held, aborter.signal));
    return verdict.ok ? { ok: true, body: body.body, approvalId: verdict.approvalId } : verdict;
  } catch (err) {
    return { ok: false, reason: 'approval-failed', problem: `the approval could not be obtained: ${(err as Error)?.message ?? err}` };
  } finally {
    clearInterval(keepAlive);
    res.off('close', onClose);
  }
}

/** Hold a plain CONNECT tunnel (nothing dialled yet) until the hook's verdict; `socket` closing abandons it. */
export async function holdConnect(ctx: DoorContext, socket: Duplex, host: string, port: number): Promise<EgressApprovalResult> {
  const hook = ctx.approve;
  const authority = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (!hook) {
    return { ok: false, reason: 'approval-not-available', problem: `CONNECT ${authority} needs a human approval (the sandbox is supervised), and approvals are not running in this deployment` };
  }
  const aborter = new AbortController();
  const onClose = (): void => aborter.abort();
  socket.once('close', onClose);
  const conn = ctx.stateOf(socket);
  const keepAlive = setInterval(() => conn.touch(), 1000);
  try {
    const held: HeldRequest = {
      sandboxId: ctx.sandboxId, agent: ctx.agent, scheme: 'connect', host, port, method: 'CONNECT', path: '', url: authority, headers: {}, body: Buffer.alloc(0),
    };
    return checkedVerdict(await hook(held, aborter.signal));
  } catch (err) {
    return { ok: false, reason: 'approval-failed', problem: `the approval could not be obtained: ${(err as Error)?.message ?? err}` };
  } finally {
    clearInterval(keepAlive);
    socket.off('close', onClose);
  }
}

/** The hook's answer as the door trusts it: `ok` only with an approval id; any other shape is a refusal (`approval-failed` unless it names a kebab-case reason). */
function checkedVerdict(answer: unknown): EgressApprovalResult {
  const verdict = answer as EgressApprovalResult | undefined;
  if (verdict?.ok === true && typeof verdict.approvalId === 'string') return { ok: true, approvalId: verdict.approvalId };
  const refused = (verdict ?? {}) as Partial<Extract<EgressApprovalResult, { ok: false }>>;
  return { ok: false, reason: namedReason(refused.reason, 'approval-failed'), problem: String(refused.problem ?? 'the approval was not granted'), ...(refused.approvalId ? { approvalId: refused.approvalId } : {}) };
}

function tooLarge(max: number): HoldResult {
  return { ok: false, reason: 'approval-body-too-large', problem: `a request that needs approval may carry at most ${max} body bytes (the approver must see what is sent); send a smaller body or raise maxApprovalBodyBytes` };
}

type ReadResult = { ok: true; body: Buffer } | { ok: false; reason: string; problem: string };

function readBody(req: IncomingMessage, max: number, timeoutMs: number): Promise<ReadResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (r: ReadResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.off('data', onData);
      if (!r.ok) req.resume();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: 'handshake-timeout', problem: `the request body did not arrive within ${timeoutMs} ms` }), timeoutMs);
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size > max) return finish({ ok: false, reason: 'approval-body-too-large', problem: '' });
      chunks.push(c);
    };
    req.on('data', onData);
    req.once('end', () => finish({ ok: true, body: Buffer.concat(chunks, size) }));
    req.once('error', () => finish({ ok: false, reason: 'client-closed', problem: 'the client closed while sending the body' }));
    req.once('close', () => { if (!req.complete) finish({ ok: false, reason: 'client-closed', problem: 'the client closed while sending the body' }); });
  });
}
