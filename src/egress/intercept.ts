/**
 * TLS interception for CONNECT tunnels that need it (hosts with method/path
 * rules or bound secrets, and cordon's internal services): the door ends the
 * client's TLS with a leaf of the per-deployment CA (only `http/1.1` offered),
 * parses the HTTP/1.1 requests inside (keep-alive, header size limit), and
 * for each one checks that its `Host` names the tunnel's host, asks the
 * policy again with method and path, runs the request hook (the secrets
 * seam), records the request, and only then forwards it over the proxy's own
 * TLS connection to the address checked at CONNECT time, verifying the
 * upstream certificate (system roots, or `upstreamCa`). Internal services get
 * the request in-process instead. Protocol upgrades (WebSocket) and CONNECT
 * inside a tunnel are refused. A request that a rule marks `approve` is held
 * for a human decision (approve.ts) before the upstream is dialled.
 */
import { Agent, createServer as createHttpServer, request as httpRequest, type ClientRequestArgs, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { TLSSocket, connect as tlsConnect } from 'node:tls';
import { normalizeDestination } from '../policy/index.js';
import { dialChecked, refuseRaw, type DoorContext, type EgressEventData, type Tunnel } from './context.js';
import { holdForApproval } from './approve.js';
import { applyRequestHook, forwardableHeaders, forwardRequest } from './forward.js';
import { PROXY_REASONS, requestRateRefusal } from './limits.js';
import { refuseResponse, serveInternal } from './internal.js';

/**
 * After the CONNECT was allowed, recorded and its ClientHello checked: end
 * the client's TLS here. `hello` is the ClientHello already read; it is put
 * back in front of the stream for the TLS server to read.
 */
export function terminateTunnel(ctx: DoorContext, socket: Duplex, hello: Buffer, tunnel: Tunnel): void {
  const started = Date.now();
  let closeReason = 'closed';
  let problem: string | undefined;
  let secureContext;
  try {
    secureContext = ctx.leafContext(tunnel.host);
  } catch (err) {
    socket.destroy();
    ctx.recordClose('client-tls-failed', { ...tunnel.data, problem: `no certificate for ${tunnel.host}: ${(err as Error).message}` });
    return;
  }
  socket.unshift(hello);
  const tls = new TLSSocket(socket, { isServer: true, secureContext, ALPNProtocols: ['http/1.1'], requestCert: false });
  ctx.bindState(tls, tunnel.conn);
  let secure = false;
  const timer = setTimeout(() => {
    closeReason = 'handshake-timeout';
    problem = `the client did not finish the TLS handshake within ${ctx.limits.handshakeTimeoutMs} ms`;
    tls.destroy();
  }, ctx.limits.handshakeTimeoutMs);
  tls.once('secure', () => {
    secure = true;
    clearTimeout(timer);
    ctx.serveTunnel(tls, tunnel);
  });
  tls.on('error', (err: Error) => {
    if (!secure && closeReason === 'closed') {
      closeReason = 'client-tls-failed';
      problem = `the client's TLS handshake failed (${(err as NodeJS.ErrnoException).code ?? err.message}); does it trust the cordon egress CA?`;
    }
    tls.destroy();
  });
  tls.once('close', () => {
    clearTimeout(timer);
    if (!secure && closeReason === 'closed') {
      closeReason = 'client-tls-failed';
      problem = 'the client closed during the TLS handshake (a client that does not trust the cordon egress CA does this)';
    } else if (secure && tunnel.requests === 0 && closeReason === 'closed') {
      // Node and other clients that check the certificate after the handshake just hang up.
      closeReason = 'client-closed';
      problem = 'the client closed the tunnel after the TLS handshake without a request (a client that does not trust the cordon egress CA does this)';
    }
    socket.destroy();
    pools.get(tunnel)?.destroy();
    pools.delete(tunnel);
    ctx.recordClose(tunnel.conn.closeReason ?? closeReason, { ...tunnel.data, durationMs: Date.now() - started, ...(problem ? { problem } : {}) });
  });
}

/** Per tunnel: one kept-alive upstream TLS connection to the checked address. */
const pools = new WeakMap<Tunnel, UpstreamAgent>();

/** TLS and certificate failures, by OpenSSL / node error code. */
const CERT_ERROR = /CERT|SELF_SIGNED|UNABLE_TO_(VERIFY|GET_ISSUER|DECRYPT)|INVALID_(CA|PURPOSE)|PATH_LENGTH|HOSTNAME_MISMATCH|ALTNAME/;

/** Reason for a failure to reach an intercepted upstream. */
export function classifyUpstreamError(err: Error): string {
  // Our own errors carry a proxy reason; OpenSSL's carry a `reason` text of their own.
  const reason = (err as { reason?: string }).reason;
  if (reason && (PROXY_REASONS as readonly string[]).includes(reason)) return reason;
  const code = String((err as NodeJS.ErrnoException).code ?? '');
  if (CERT_ERROR.test(code)) return 'upstream-cert-invalid';
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS')) return 'upstream-tls-failed';
  return 'upstream-error';
}

/** An HTTP agent whose only connection is the proxy's verified TLS connection to the tunnel's upstream. */
class UpstreamAgent extends Agent {
  private live: TLSSocket | undefined;
  private prepared: TLSSocket | undefined;

  constructor(private readonly ctx: DoorContext, private readonly tunnel: Tunnel) {
    super({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 });
  }

  /** Make sure a connection is up (dialled, TLS verified) before the request is recorded. */
  async ready(): Promise<void> {
    if (this.live && !this.live.destroyed) return;
    this.prepared = await this.open();
  }

  override createConnection(_o: ClientRequestArgs, oncreate?: (err: Error | null, socket: Duplex) => void): Duplex | null | undefined {
    const prepared = this.prepared;
    this.prepared = undefined;
    if (prepared && !prepared.destroyed) return prepared;
    this.open().then((s) => oncreate?.(null, s), (err: Error) => oncreate?.(err, undefined as unknown as Duplex));
    return undefined;
  }

  override destroy(): void {
    this.prepared?.destroy();
    this.live?.destroy();
    super.destroy();
  }

  private async open(): Promise<TLSSocket> {
    const { ctx, tunnel } = this;
    const timeoutMs = ctx.limits.connectTimeoutMs;
    const tcp = await dialChecked(ctx.dial, tunnel.address!, tunnel.port, timeoutMs);
    const isIp = normalizeDestination(tunnel.host).kind === 'ip';
    const sock = await new Promise<TLSSocket>((resolve, reject) => {
      const t = tlsConnect({
        socket: tcp, host: tunnel.host, ...(isIp ? {} : { servername: tunnel.host }),
        ALPNProtocols: ['http/1.1'], rejectUnauthorized: true, ...(ctx.upstreamCa ? { ca: ctx.upstreamCa } : {}),
      });
      const timer = setTimeout(() => {
        t.destroy();
        reject(Object.assign(new Error(`the TLS handshake with ${tunnel.host} took longer than ${timeoutMs} ms`), { reason: 'upstream-timeout' }));
      }, timeoutMs);
      t.once('secureConnect', () => {
        clearTimeout(timer);
        t.removeAllListeners('error');
        t.on('error', () => t.destroy());
        resolve(t);
      });
      t.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        tcp.destroy();
        const reason = classifyUpstreamError(err);
        const what = reason === 'upstream-cert-invalid'
          ? `the certificate of ${tunnel.host} does not verify (${err.code ?? err.message}); a test upstream needs upstreamCa`
          : `TLS with ${tunnel.host} failed (${err.code ?? err.message})`;
        reject(Object.assign(new Error(what), { reason }));
      });
    });
    this.live = sock;
    this.tunnel.conn.upstream = sock;
    sock.on('data', () => this.tunnel.conn.touch());
    return sock;
  }
}

/** `host[:port]` of a `Host` header, normalised; undefined when malformed. */
function parseHostHeader(value: string | undefined): { host: string; port?: number } | undefined {
  const m = /^(\[[^\]]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(value ?? '');
  if (!m) return undefined;
  const dest = normalizeDestination(m[1]);
  if (dest.kind === 'bad') return undefined;
  return m[2] === undefined ? { host: dest.host } : { host: dest.host, port: Number(m[2]) };
}

/**
 * The door's HTTP/1.1 server for terminated tunnels: returns `serveTunnel`,
 * which hands it one TLS connection and the tunnel it belongs to.
 */
export function createTunnelServer(ctx: DoorContext): { serveTunnel: (tls: Duplex, tunnel: Tunnel) => void; close: () => void } {
  const tunnels = new WeakMap<Duplex, Tunnel>();
  const { limits } = ctx;
  // requireHostHeader off: a missing Host is refused below as host-mismatch, audited.
  const server = createHttpServer({ maxHeaderSize: limits.maxHeaderBytes, requestTimeout: 0, keepAliveTimeout: limits.idleTimeoutMs, requireHostHeader: false });
  server.headersTimeout = limits.handshakeTimeoutMs;
  const base = (socket: Duplex): EgressEventData => {
    const t = tunnels.get(socket);
    return { conn: ctx.stateOf(socket).id, scheme: 'https', ...(t ? { host: t.host, port: t.port, ...(t.sni ? { sni: t.sni } : {}) } : {}) };
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const tunnel = tunnels.get(req.socket);
    if (!tunnel) {
      res.destroy();
      return;
    }
    handleTunnelRequest(ctx, tunnel, req, res).catch(() => res.destroy());
  });
  const refuseRawRecorded = (socket: Duplex, reason: string, problem: string, extra: Partial<EgressEventData> = {}): void => {
    refuseRaw(socket, reason, problem);
    void ctx.record('deny', reason, { ...base(socket), ...extra, problem });
  };
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    refuseRawRecorded(socket, 'bad-request', 'CONNECT inside a tunnel is not proxied', { method: 'CONNECT' });
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    refuseRawRecorded(socket, 'bad-request', 'protocol upgrades (WebSocket) are not proxied for intercepted hosts', { method: req.method ?? '' });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    const reason = code === 'HPE_HEADER_OVERFLOW' ? 'headers-too-large' : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'handshake-timeout' : 'bad-request';
    const problem = reason === 'headers-too-large'
      ? `the request head is larger than ${limits.maxHeaderBytes} bytes`
      : reason === 'handshake-timeout' ? `no whole request head within ${limits.handshakeTimeoutMs} ms` : `the client did not speak HTTP/1.1 inside the tunnel (${code || err.message})`;
    refuseRawRecorded(socket, reason, problem);
  });
  return {
    serveTunnel: function serveTunnel(tls: Duplex, tunnel: Tunnel): void {
      tunnels.set(tls, tunnel);
      server.emit('connection', tls);
    },
    close: function closeTunnelServer(): void {
      server.close();
    },
  };
}

/** One request inside a terminated tunnel. */
async function handleTunnelRequest(ctx: DoorContext, tunnel: Tunnel, req: IncomingMessage, res: ServerResponse): Promise<void> {
  tunnel.requests += 1;
  const path = req.url ?? '';
  const method = req.method ?? '';
  const data: EgressEventData = {
    conn: tunnel.conn.id, scheme: 'https', host: tunnel.host, port: tunnel.port, method, path: path.slice(0, 2048),
    ...(tunnel.sni ? { sni: tunnel.sni } : {}), ...(tunnel.address ? { address: tunnel.address } : {}),
  };
  const refuse = async (decision: string, reason: string, problem: string): Promise<void> => {
    data.problem = problem;
    refuseResponse(res, reason, problem, ctx.limits);
    req.resume();
    await ctx.record(decision, reason, data);
  };
  if (!path.startsWith('/')) return refuse('deny', 'bad-request', 'inside a TLS tunnel, send origin-form request targets (GET /path)');
  const claimed = parseHostHeader(req.headers.host);
  if (!claimed || claimed.host !== tunnel.host || (claimed.port !== undefined && claimed.port !== tunnel.port)) {
    return refuse('deny', 'host-mismatch', `the Host header ${JSON.stringify(String(req.headers.host ?? '').slice(0, 200))} does not name ${tunnel.host}:${tunnel.port}, the host this tunnel was opened for`);
  }
  const decision = ctx.decide({ host: tunnel.host, port: tunnel.port, method, path, scheme: 'https' });
  if (decision.ruleId) data.ruleId = decision.ruleId;
  if (decision.wouldDeny) data.wouldDeny = { reason: decision.wouldDeny.reason, ...(decision.wouldDeny.ruleId ? { ruleId: decision.wouldDeny.ruleId } : {}) };
  const needsApproval = decision.result === 'approve' && !tunnel.internal;
  if (decision.result !== 'allow' && !needsApproval) {
    return refuse('deny', decision.reason, `the policy of agent ${ctx.agent} does not allow ${method} https://${tunnel.host}:${tunnel.port}${path.slice(0, 200)} (${decision.reason})`);
  }
  if (tunnel.internal) {
    data.service = tunnel.internal.name;
    return serveInternal(ctx, tunnel.internal, req, res, path, data);
  }
  if (ctx.overBytesOut()) {
    return refuse('deny', 'bytes-out-limit', `sandbox ${ctx.sandboxId} sent more than ${ctx.limits.maxBytesOutPerMinute} bytes in the last minute; wait, or raise maxBytesOutPerMinute`);
  }
  // Each request inside is its own allowed event: spent before the hook, any hold, dialling or forwarding.
  const overRate = requestRateRefusal(ctx);
  if (overRate) return refuse('deny', 'request-rate-limit', overRate);
  const declared = Number(req.headers['content-length'] ?? 0);
  if (!(declared <= ctx.limits.maxRequestBodyBytes)) {
    return refuse('deny', 'body-too-large', `the request body is larger than ${ctx.limits.maxRequestBodyBytes} bytes`);
  }
  const headers = forwardableHeaders(req.rawHeaders, req.headers.connection);
  headers.host = req.headers.host;
  const asSent = { ...headers };
  const hooked = await applyRequestHook(ctx.requestHook, { sandboxId: ctx.sandboxId, agent: ctx.agent, scheme: 'https', host: tunnel.host, port: tunnel.port, method, path, headers });
  if (!hooked.ok) return refuse('deny', hooked.reason, hooked.problem);
  if (hooked.result.note) data.hook = hooked.result.note;
  let bufferedBody: Buffer | undefined;
  if (needsApproval) {
    // The exact bytes read here are what an approval permits; nothing goes upstream before it is granted and used.
    const held = await holdForApproval(ctx, req, res, { scheme: 'https', host: tunnel.host, port: tunnel.port, method, path, headers: asSent });
    if (!held.ok) {
      if (held.approvalId) data.approval = held.approvalId;
      return refuse('deny', held.reason, held.problem);
    }
    data.approval = held.approvalId;
    bufferedBody = held.body;
    if (headers['content-length'] === undefined && !hooked.result.body && bufferedBody.length > 0) headers['content-length'] = String(bufferedBody.length);
  }
  let pool = pools.get(tunnel);
  if (!pool) {
    pool = new UpstreamAgent(ctx, tunnel);
    pools.set(tunnel, pool);
  }
  try {
    await pool.ready();
  } catch (err) {
    const reason = classifyUpstreamError(err as Error);
    return refuse(reason === 'upstream-cert-invalid' ? 'deny' : 'error', reason, (err as Error).message);
  }
  if (!(await ctx.record('allow', decision.reason, data))) {
    refuseResponse(res, 'audit-unavailable', 'the request could not be recorded, so it was not sent');
    req.resume();
    return;
  }
  const agent = pool;
  forwardRequest(ctx, req, res, {
    open: (o) => httpRequest({ ...o, agent, host: tunnel.host, port: tunnel.port }),
    method, path, headers, data, classifyError: classifyUpstreamError, ...(hooked.result.body ? { body: hooked.result.body } : {}),
    ...(hooked.result.response ? { response: hooked.result.response } : {}),
    ...(bufferedBody ? { bufferedBody } : {}),
  });
}
