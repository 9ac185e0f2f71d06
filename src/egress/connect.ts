/**
 * `CONNECT host:port` through a door: decide, resolve and check every address,
 * dial the checked IP, answer `200`, read the ClientHello and require its SNI
 * to equal the CONNECT host (no domain fronting), record the request, then
 * splice bytes both ways, counting them, until either side closes or the
 * tunnel idles out (`relay.ts`). No byte reaches the upstream before the audit event is
 * durable. A host that needs interception (method/path rules, bound
 * secrets) and cordon's internal services get their TLS terminated by the
 * door instead (`intercept.ts`); without an egress CA such a host is refused
 * (`interception-not-available`), never tunnelled blind.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { normalizeDestination } from '../policy/index.js';
import { dialChecked, refuseRaw, splitAuthority, type DoorContext, type EgressEventData, type Tunnel } from './context.js';
import { holdConnect } from './approve.js';
import { applyConnectHook } from './forward.js';
import { terminateTunnel } from './intercept.js';
import { internalRateRefusal } from './internal.js';
import { requestRateRefusal } from './limits.js';
import { resolveChecked } from './resolve.js';
import { relayTunnel, upstreamReader } from './relay.js';
import { readClientHello } from './sni.js';

/** Serve one CONNECT request whose head node's parser already read (`head`: bytes after it). */
export async function handleConnect(ctx: DoorContext, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const conn = ctx.stateOf(socket);
  // Hold bytes a client sends before our 200 (pipelined ClientHello) until the SNI check reads them.
  socket.pause();
  socket.on('error', () => socket.destroy());
  const data: EgressEventData = { conn: conn.id, scheme: 'connect', method: 'CONNECT' };
  const refuse = async (decision: string, reason: string, problem: string, extra: Partial<EgressEventData> = {}): Promise<void> => {
    Object.assign(data, extra, { problem });
    refuseRaw(socket, reason, problem, ctx.limits);
    await ctx.record(decision, reason, data);
  };

  const target = splitAuthority(req.url ?? '');
  if (!target) return refuse('deny', 'bad-request', 'CONNECT needs a host:port target, e.g. CONNECT api.example.com:443');
  data.host = target.host;
  data.port = target.port;
  const decision = ctx.decide({ host: target.host, port: target.port, scheme: 'connect' });
  if (decision.host) data.host = decision.host;
  if (decision.ruleId) data.ruleId = decision.ruleId;
  if (decision.wouldDeny) data.wouldDeny = { reason: decision.wouldDeny.reason, ...(decision.wouldDeny.ruleId ? { ruleId: decision.wouldDeny.ruleId } : {}) };
  // At CONNECT level only supervision says `approve` (rules are per request): an intercepted
  // tunnel opens and each request inside is held; a plain tunnel is held as `CONNECT host:port`.
  const held = decision.result === 'approve';
  if (decision.result !== 'allow' && !held) {
    return refuse('deny', decision.reason, `the policy of agent ${ctx.agent} does not allow ${data.host}:${target.port} (${decision.reason}); add an egress rule for it to cordon.yaml`);
  }
  const host = decision.host ?? target.host;
  const internal = decision.internal ? ctx.internal.get(host) : undefined;
  if (decision.internal && !internal) return refuse('deny', 'internal-not-available', `${host} is a cordon service that is not running in this deployment`);
  const terminate = internal !== undefined || decision.intercept === true;
  if (terminate && !ctx.ca) {
    return refuse('deny', 'interception-not-available', internal
      ? `reaching ${host} over TLS needs the egress CA, which this proxy was started without; use http://${host}/ or configure the CA`
      : `${host} has method/path rules or bound secrets, which need TLS interception, and this proxy was started without an egress CA; so it refuses`);
  }
  if (internal) {
    data.service = internal.name;
    // A tunnel to a service is recorded as allowed when it opens: it spends from the same rate as each request inside.
    const overRate = internalRateRefusal(ctx);
    if (overRate) return refuse('deny', 'internal-rate-limit', overRate);
    data.intercepted = true;
    return openTerminated(ctx, socket, head, data, { host, port: target.port, internal }, decision.reason);
  }
  if (ctx.overBytesOut()) {
    return refuse('deny', 'bytes-out-limit', `sandbox ${ctx.sandboxId} sent more than ${ctx.limits.maxBytesOutPerMinute} bytes in the last minute; wait, or raise maxBytesOutPerMinute`);
  }
  // Every tunnel opened (plain or intercepted) is one allowed event: it spends from the door's request rate before
  // anything is held, resolved or dialled; past the rate it is a refusal, under the door's refusal budget.
  const overRate = requestRateRefusal(ctx);
  if (overRate) return refuse('deny', 'request-rate-limit', overRate);
  // Before DNS: a host name that carries a secret (or a placeholder) must not reach a resolver.
  const hooked = await applyConnectHook(ctx.connectHook, { sandboxId: ctx.sandboxId, agent: ctx.agent, host, port: target.port });
  if (!hooked.ok) return refuse('deny', hooked.reason, hooked.problem);
  if (held && !terminate) {
    // Before DNS as well: a supervised sandbox's new host name reaches no resolver before a human saw it.
    const verdict = await holdConnect(ctx, socket, host, target.port);
    if (verdict.approvalId) data.approval = verdict.approvalId;
    if (!verdict.ok) return refuse('deny', verdict.reason, verdict.problem);
  }

  const resolved = await resolveChecked(host, target.port, {
    lookup: ctx.lookup, checkAddress: ctx.checkAddress, timeoutMs: ctx.limits.dnsTimeoutMs,
  });
  if (!resolved.ok) {
    const kind = resolved.reason.startsWith('dns-') || resolved.reason === 'no-address' ? 'error' : 'deny';
    return refuse(kind, resolved.reason, resolved.problem, resolved.address ? { address: resolved.address } : {});
  }
  data.address = resolved.address;
  if (resolved.decision.ruleId && resolved.decision.reason === 'cidr-allowed') data.ruleId ??= resolved.decision.ruleId;
  if (terminate) {
    data.intercepted = true;
    return openTerminated(ctx, socket, head, data, { host, port: target.port, address: resolved.address }, decision.reason);
  }

  const reader = upstreamReader();
  let upstream: Socket;
  try {
    upstream = await dialChecked(ctx.dial, resolved.address, target.port, ctx.limits.connectTimeoutMs, reader.onread);
  } catch (err) {
    return refuse('error', (err as { reason?: string }).reason ?? 'upstream-unreachable', (err as Error).message);
  }
  upstream.on('error', () => upstream.destroy());
  if (socket.destroyed) {
    upstream.destroy();
    return refuse('deny', 'client-closed', 'the client went away while the proxy was dialling');
  }
  socket.write(CONNECT_OK);
  if (head.length > 0) socket.unshift(head);

  const hello = await checkedHello(ctx, socket, data, () => upstream.destroy());
  if (!hello) return;
  if (!(await ctx.record('allow', decision.reason, data))) {
    upstream.destroy();
    socket.destroy();
    return;
  }
  relayTunnel(ctx, socket, upstream, reader, hello, data);
}

/**
 * Read the ClientHello and require its SNI to name the CONNECT host (an IP
 * target may have none). On failure: the connection is closed, `cleanup`
 * runs, the refusal is recorded, and undefined is returned.
 */
async function checkedHello(ctx: DoorContext, socket: Duplex, data: EgressEventData, cleanup: () => void): Promise<Buffer | undefined> {
  const hello = await readClientHello(socket, { maxBytes: ctx.limits.maxClientHelloBytes, timeoutMs: ctx.limits.handshakeTimeoutMs });
  const fail = async (reason: string, problem: string): Promise<undefined> => {
    cleanup();
    socket.destroy();
    data.problem = problem;
    await ctx.record('deny', reason, data);
    return undefined;
  };
  if (!hello.ok) return fail(hello.reason, hello.problem);
  const sniHost = hello.sni === undefined ? undefined : normalizeDestination(hello.sni);
  if (hello.sni !== undefined) data.sni = hello.sni;
  if (sniHost === undefined && normalizeDestination(data.host).kind !== 'ip') return fail('sni-missing', `the TLS ClientHello carries no server name; it must name ${data.host}`);
  if (sniHost !== undefined && (sniHost.kind === 'bad' || sniHost.host !== data.host)) {
    return fail('sni-mismatch', `the TLS server name ${hello.sni} does not equal the CONNECT host ${data.host} (domain fronting is refused)`);
  }
  return hello.bytes;
}

/**
 * A tunnel whose TLS the door terminates: answer 200, check the hello,
 * record the tunnel, then hand it to `intercept.ts`. Nothing is dialled here:
 * the upstream connection is opened for the first request inside.
 */
async function openTerminated(
  ctx: DoorContext, socket: Duplex, head: Buffer, data: EgressEventData,
  t: Pick<Tunnel, 'host' | 'port' | 'address' | 'internal'>, reason: string,
): Promise<void> {
  if (socket.destroyed) {
    data.problem = 'the client went away before the tunnel opened';
    await ctx.record('deny', 'client-closed', data);
    return;
  }
  socket.write(CONNECT_OK);
  if (head.length > 0) socket.unshift(head);
  const hello = await checkedHello(ctx, socket, data, () => undefined);
  if (!hello) return;
  if (!(await ctx.record('allow', reason, data))) {
    socket.destroy();
    return;
  }
  const tunnel: Tunnel = { ...t, conn: ctx.stateOf(socket), data, requests: 0, ...(data.sni ? { sni: data.sni } : {}) };
  terminateTunnel(ctx, socket, hello, tunnel);
}

/** The answer to an accepted CONNECT, written as one buffer (no per-tunnel string encoding). */
const CONNECT_OK = Buffer.from('HTTP/1.1 200 Connection Established\r\n\r\n', 'latin1');
