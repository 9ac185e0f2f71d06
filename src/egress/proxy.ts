/**
 * The egress proxy: one door per sandbox. A door knows its sandbox and agent
 * from the channel it was opened for (never from anything the client sends),
 * compiles that agent's egress policy once, and serves client connections
 * handed to it as byte streams (`door.handle(stream)`: the guest's streams
 * from the control channel, or a loopback listener with `door.listen()`).
 * Each connection is parsed by a private `node:http` server (header size
 * limit, keep-alive), bounded by a handshake timer, an idle timer and the
 * door's connection cap; requests go to `connect.ts` / `http.ts`, and
 * tunnels whose TLS the door terminates to `intercept.ts`. Each door also
 * meters the bytes its sandbox sends out per minute (`maxBytesOutPerMinute`)
 * and bounds the rate of its audited requests to the internet
 * (`maxRequestsPerSecond`, `requestBurst`). The limits are the proxy's,
 * with the agent's override (`openDoor({ limits })`) laid over them per door.
 *
 * @example
 * const proxy = createEgressProxy({});
 * const door = proxy.openDoor({ sandboxId: 'sb-1', agent: 'reviewer', agentConfig: config.agents.reviewer, limits: config.agents.reviewer.egressLimits, audit });
 * guestStreams.on('stream', (s) => door.handle(s));
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { survivesAcceptErrors } from '../util/listener.js';
import type { Duplex } from 'node:stream';
import { createSecureContext, type SecureContext } from 'node:tls';
import { InvalidInputError } from '../errors/index.js';
import { createAddressDecider, createEgressDecider, failClosed, type AddressDecision, type EgressDecision, type EgressPolicy, type EgressRequest } from '../policy/index.js';
import { handleConnect } from './connect.js';
import type { EgressCa } from './ca.js';
import { dialTcp, refuseRaw, type BytesOutMeter, type ConnState, type DoorContext, type EgressAuditSink, type EgressDial, type EgressEventData } from './context.js';
import type { EgressApprovalHook } from './approve.js';
import type { EgressConnectHook, EgressRequestHook } from './forward.js';
import { handleHttp } from './http.js';
import { createTunnelServer } from './intercept.js';
import { checkInternalServices, type InternalService } from './internal.js';
import { createRefusalBudget } from './refusals.js';
import {
  createByteWindow, createConnectionSlots, createTokenBucket, mergeLimits, resolveLimits, type EgressLimits, type EgressLimitsInput, type EgressLimitsOverride,
} from './limits.js';
import { systemLookup, type EgressLookup } from './resolve.js';

export interface EgressProxyOptions {
  /** Sizes, timeouts, and the per-door caps and rates (connections, bytes out, requests). @default see `egressLimitsSchema` */
  limits?: EgressLimitsInput;
  /** Resolver for destination names. @default the system resolver (`dns.lookup`, all addresses) */
  lookup?: EgressLookup;
  /** The proxy host's own addresses: never dialled, whatever the policy says. @default [] */
  selfAddresses?: readonly string[];
  /** Opens TCP to a checked IP. @default plain `net.connect` */
  dial?: EgressDial;
  /**
   * The per-deployment CA whose leaves terminate TLS for intercepted hosts
   * and `*.cordon.internal`. Without it, such CONNECTs are refused
   * (`interception-not-available`). @default none
   */
  ca?: EgressCa;
  /** Roots trusted for upstream certificates when intercepting (PEM). @default the system roots */
  upstreamCa?: string | string[];
  /**
   * cordon's own services by host name, e.g. `{ 'llm.cordon.internal': gateway }`;
   * names must be among the policy's `INTERNAL_SERVICES`. @default {}
   */
  internal?: Record<string, InternalService>;
  /** Called for every forwarded HTTP request before it is recorded and sent (the secrets seam). @default none */
  requestHook?: EgressRequestHook;
  /** Called for every allowed CONNECT to the internet before its host is resolved (the secrets layer scans the name). @default none */
  connectHook?: EgressConnectHook;
  /**
   * Holds requests that a method/path rule marks `approve` until a human
   * decides (see approve.ts); without it they are refused with
   * `approval-not-available`. @default none
   */
  approve?: EgressApprovalHook;
  /**
   * Whether a sandbox is supervised (an anomaly alert asked for it): then
   * everything its policy allows, apart from cordon's internal services, is
   * held for approval like a rule marked `approve` (a plain CONNECT tunnel
   * as `CONNECT host:port`). A check that throws counts as supervised.
   * @default none: nothing is supervised
   */
  supervised?: (sandboxId: string) => boolean;
  /**
   * Called with the data of every audit event before it is written, to
   * withhold guest text that carries a secret value (host, path, problem);
   * changes `data` in place. A throw withholds every text field. @default none
   */
  auditScrub?: (sandboxId: string, data: Record<string, unknown>) => void;
}

export interface OpenDoorOptions {
  sandboxId: string;
  agent: string;
  /** The agent's config (`config.agents[agent]`); only `egress`, `egressMode` and `interceptAll` are read. */
  agentConfig: Omit<EgressPolicy, 'agent'>;
  /** Where events go; an append that rejects makes the request refused. */
  audit: EgressAuditSink;
  /**
   * The agent's override of the proxy's limits (`agents.<name>.egressLimits`):
   * the fields it gives replace the proxy's for this door, the others stay.
   * Validated here; an invalid one opens no door. @default none: the proxy's limits
   */
  limits?: EgressLimitsOverride;
}

export interface EgressDoor {
  readonly sandboxId: string;
  readonly agent: string;
  /** Client connections open now. */
  readonly activeConnections: number;
  /** Serve one client connection (a guest stream or a TCP socket). */
  handle(socket: Duplex): void;
  /** Also accept TCP clients (tests, development). Resolves to the bound address. @default port 0 on 127.0.0.1 */
  listen(port?: number, host?: string): Promise<AddressInfo>;
  /** Stop listening and close every connection of this door. */
  close(): Promise<void>;
}

export interface EgressProxy {
  /** The CA certificate guests must trust for intercepted hosts; undefined without a CA. */
  readonly caCertPem: string | undefined;
  /**
   * Open the door of one sandbox.
   * @throws InvalidInputError when `options.limits` is not a valid override (no door is opened)
   */
  openDoor(options: OpenDoorOptions): EgressDoor;
  /** Close every door. */
  close(): Promise<void>;
}

/**
 * Create the egress proxy.
 * @throws InvalidInputError for invalid limits or self addresses
 */
export function createEgressProxy(options: EgressProxyOptions = {}): EgressProxy {
  const limits = resolveLimits(options.limits ?? {});
  const lookup = options.lookup ?? systemLookup;
  const dial = options.dial ?? dialTcp;
  const internal = checkInternalServices(options.internal);
  if (options.ca && (typeof options.ca.certPem !== 'string' || typeof options.ca.leafFor !== 'function')) {
    throw new InvalidInputError('the egress CA option is not an EgressCa', { fix: 'pass the result of createEgressCa() or loadOrCreateEgressCa()' });
  }
  if (options.upstreamCa !== undefined && ([] as unknown[]).concat(options.upstreamCa).some((p) => typeof p !== 'string' || !p.includes('-----BEGIN CERTIFICATE-----'))) {
    throw new InvalidInputError('upstreamCa must be PEM certificates', { fix: 'pass the PEM text of the CA certificate(s) to trust for upstreams, or leave it out for the system roots' });
  }
  const leafContext = options.ca ? createLeafContexts(options.ca) : (): SecureContext => {
    throw new InvalidInputError('no egress CA is configured');
  };
  const doors = new Set<EgressDoor>();
  let lastConnId = 0;
  const nextConnId = (): number => ++lastConnId;
  return {
    caCertPem: options.ca?.certPem,
    openDoor: function openDoor(o: OpenDoorOptions): EgressDoor {
      const door = createDoor(o, {
        limits: mergeLimits(limits, o.limits, o.agent), lookup, dial, selfAddresses: options.selfAddresses ?? [], nextConnId, internal, leafContext,
        ...(options.ca ? { ca: options.ca } : {}), ...(options.upstreamCa ? { upstreamCa: options.upstreamCa } : {}),
        ...(options.requestHook ? { requestHook: options.requestHook } : {}),
        ...(options.connectHook ? { connectHook: options.connectHook } : {}),
        ...(options.approve ? { approve: options.approve } : {}),
        ...(options.supervised ? { supervised: options.supervised } : {}),
        ...(options.auditScrub ? { auditScrub: options.auditScrub } : {}),
      });
      doors.add(door);
      const close = door.close.bind(door);
      door.close = async function closeDoor(): Promise<void> {
        doors.delete(door);
        await close();
      };
      return door;
    },
    close: async function closeProxy(): Promise<void> {
      await Promise.all([...doors].map((d) => d.close()));
    },
  };
}

interface DoorDeps {
  limits: EgressLimits;
  lookup: EgressLookup;
  dial: EgressDial;
  selfAddresses: readonly string[];
  /** Connection ids, unique within one proxy (they tie `egress.request` to `egress.close`). */
  nextConnId: () => number;
  internal: ReadonlyMap<string, InternalService>;
  leafContext: (host: string) => SecureContext;
  ca?: EgressCa;
  upstreamCa?: string | string[];
  requestHook?: EgressRequestHook;
  connectHook?: EgressConnectHook;
  approve?: EgressApprovalHook;
  supervised?: (sandboxId: string) => boolean;
  auditScrub?: (sandboxId: string, data: Record<string, unknown>) => void;
}

/** TLS server contexts for the CA's leaves, one per host, as many as the CA caches. */
function createLeafContexts(ca: EgressCa, max = 1000): (host: string) => SecureContext {
  const cache = new Map<string, { certPem: string; context: SecureContext }>();
  return function leafContext(host: string): SecureContext {
    const leaf = ca.leafFor(host);
    const hit = cache.get(host);
    if (hit && hit.certPem === leaf.certPem) return hit.context;
    const context = createSecureContext({ cert: leaf.certPem, key: leaf.keyPem, minVersion: 'TLSv1.2' });
    cache.delete(host);
    cache.set(host, { certPem: leaf.certPem, context });
    if (cache.size > max) cache.delete(cache.keys().next().value as string);
    return context;
  };
}

/** Whether this door's sandbox is supervised now; a check that throws counts as supervised. */
function supervisedCheck(supervised: (sandboxId: string) => boolean, sandboxId: string): () => boolean {
  return function isSupervised(): boolean {
    try {
      return supervised(sandboxId) !== false;
    } catch {
      return true;
    }
  };
}

/** Turn `allow` into `approve` (reason `supervised`) while the sandbox is supervised; internal services stay as decided. */
function supervisedDecider(decide: (req: EgressRequest) => EgressDecision, supervised?: () => boolean) {
  if (!supervised) return decide;
  return function decideSupervised(req: EgressRequest): EgressDecision {
    const d = decide(req);
    if (d.result !== 'allow' || d.internal || !supervised()) return d;
    return { ...d, result: 'approve', reason: 'supervised' };
  };
}

function createDoor(o: OpenDoorOptions, deps: DoorDeps): EgressDoor {
  const { limits } = deps;
  const policy: EgressPolicy = {
    agent: o.agent, egress: o.agentConfig?.egress ?? [],
    ...(o.agentConfig?.egressMode ? { egressMode: o.agentConfig.egressMode } : {}),
    ...(o.agentConfig?.interceptAll === true ? { interceptAll: true } : {}),
  };
  const supervised = deps.supervised ? supervisedCheck(deps.supervised, o.sandboxId) : undefined;
  const decide = supervisedDecider(failClosed(createEgressDecider(policy)), supervised);
  const addressDecider = createAddressDecider(policy, { selfAddresses: deps.selfAddresses });
  const checkAddress = failClosed(addressDecider) as (r: Parameters<typeof addressDecider>[0]) => AddressDecision;
  const slots = createConnectionSlots(limits.maxConnections);
  const states = new WeakMap<Duplex, ConnState>();
  const open = new Set<Duplex>();
  /** Last byte seen per open connection; one door-wide sweep (not a timer per connection) closes the idle ones. */
  const lastActive = new Map<Duplex, { st: ConnState; at: number }>();
  const idleCheckMs = Math.max(50, Math.min(1000, Math.floor(limits.idleTimeoutMs / 4)));
  let idleSweep: NodeJS.Timeout | undefined;
  const sweepIdle = (): void => {
    const now = Date.now();
    for (const [socket, a] of lastActive) {
      if (now - a.at < limits.idleTimeoutMs) continue;
      a.st.closeReason = 'idle-timeout';
      lastActive.delete(socket);
      socket.destroy();
      a.st.upstream?.destroy();
    }
  };
  let closed = false;
  let listener: NetServer | undefined;
  const bytesOut = createByteWindow(limits.maxBytesOutPerMinute);
  const internalRequests = createTokenBucket(limits.maxInternalRequestsPerSecond, limits.internalRequestBurst);
  // Each allowed request to the internet is one audit event: their rate is bounded per door like the rest.
  const requests = createTokenBucket(limits.maxRequestsPerSecond, limits.requestBurst);
  const flows = new Set<(reason: string) => void>();
  const overLimit = (): void => {
    // Close every flow of the door that sends upstream; each records its close with this reason.
    for (const abort of [...flows]) abort('bytes-out-limit');
  };

  const event = (type: string, decision: string, reason: string, data: EgressEventData) => ({
    type, actor: `agent:${o.agent}`, agent: o.agent, sandbox: o.sandboxId, decision, reason,
    // A shallow copy: the scrubber replaces top-level strings only, and `append` renders the event before it returns.
    data: scrubbed({ ...data } as Record<string, unknown>),
  });
  function scrubbed(copy: Record<string, unknown>): Record<string, unknown> {
    if (!deps.auditScrub) return copy;
    try {
      deps.auditScrub(o.sandboxId, copy);
    } catch {
      for (const k of ['host', 'path', 'sni', 'problem', 'url', 'target']) if (typeof copy[k] === 'string') copy[k] = '[withheld: the audit scrubber failed]';
    }
    return copy;
  }
  // Refusals past the door's budget are counted into one `egress.refusals` event a second (see refusals.ts).
  const refusals = createRefusalBudget({
    perSecond: limits.maxRefusalEventsPerSecond,
    burst: limits.refusalEventBurst,
    write: function writeRefusalSummary(summary): void {
      o.audit.append({
        type: 'egress.refusals', actor: `agent:${o.agent}`, agent: o.agent, sandbox: o.sandboxId, decision: 'deny', reason: 'refusal-budget',
        data: summary as unknown as Record<string, unknown>,
      }).catch(() => undefined);
    },
  });
  const ctx: DoorContext = {
    sandboxId: o.sandboxId, agent: o.agent, limits, decide, checkAddress, lookup: deps.lookup, dial: deps.dial,
    record: async function recordRequest(decision, reason, data): Promise<boolean> {
      // Once the door is closing, the few refusals still to come (its open connections ending) are each written:
      // a count would wait for a summary timer that may outlive the audit log.
      if (decision !== 'allow' && !closed && !refusals.admit()) {
        // Refused either way; only counted. The host goes through the scrubber as it would in its own event.
        const host = data.host === undefined ? undefined : scrubbed({ host: data.host }).host;
        refusals.count(decision, reason, typeof host === 'string' ? host : undefined);
        return true;
      }
      try {
        await o.audit.append(event('egress.request', decision, reason, data));
        return true;
      } catch {
        return false;
      }
    },
    recordClose: function recordClose(reason, data): void {
      o.audit.append(event('egress.close', 'allow', reason, data)).catch(() => undefined);
    },
    stateOf: function stateOf(socket: Duplex): ConnState {
      return states.get(socket) ?? { id: 0, openedAt: Date.now(), touch: () => undefined };
    },
    bindState: function bindState(child: Duplex, state: ConnState): void {
      states.set(child, state);
    },
    internal: deps.internal,
    leafContext: deps.leafContext,
    ...(deps.ca ? { ca: deps.ca } : {}),
    ...(deps.upstreamCa ? { upstreamCa: deps.upstreamCa } : {}),
    ...(deps.requestHook ? { requestHook: deps.requestHook } : {}),
    ...(deps.connectHook ? { connectHook: deps.connectHook } : {}),
    ...(deps.approve ? { approve: deps.approve } : {}),
    ...(supervised ? { supervised } : {}),
    meter: function meter(abort: (reason: string) => void): BytesOutMeter {
      flows.add(abort);
      return {
        out: (n: number): void => {
          if (!bytesOut.add(n)) overLimit();
        },
        done: (): void => {
          flows.delete(abort);
        },
      };
    },
    overBytesOut: () => bytesOut.exceeded,
    takeInternalRequest: internalRequests.take,
    takeRequest: requests.take,
    serveTunnel: (tls, tunnel) => tunnelServer.serveTunnel(tls, tunnel),
  };
  const tunnelServer = createTunnelServer(ctx);

  const server: HttpServer = createHttpServer({ maxHeaderSize: limits.maxHeaderBytes, requestTimeout: 0, keepAliveTimeout: limits.idleTimeoutMs });
  server.headersTimeout = limits.handshakeTimeoutMs;
  const headDone = (socket: Duplex): void => {
    const st = states.get(socket);
    if (st?.handshakeTimer) clearTimeout(st.handshakeTimer);
    if (st) delete st.handshakeTimer;
  };
  server.on('request', (req, res) => {
    headDone(req.socket);
    handleHttp(ctx, req, res).catch(() => res.destroy());
  });
  server.on('connect', (req, socket: Duplex, head: Buffer) => {
    headDone(socket);
    handleConnect(ctx, req, socket, head).catch(() => socket.destroy());
  });
  server.on('upgrade', (req, socket: Duplex) => {
    headDone(socket);
    refuseRaw(socket, 'bad-request', 'protocol upgrades are not proxied; use CONNECT');
    void ctx.record('deny', 'bad-request', { conn: ctx.stateOf(socket).id, scheme: 'http', method: req.method ?? '', problem: 'upgrade refused' });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    headDone(socket);
    const reason = code === 'HPE_HEADER_OVERFLOW' ? 'headers-too-large' : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'handshake-timeout' : 'bad-request';
    const problem = reason === 'headers-too-large'
      ? `the request head is larger than ${limits.maxHeaderBytes} bytes`
      : reason === 'handshake-timeout' ? `no whole request head within ${limits.handshakeTimeoutMs} ms` : `the client did not speak HTTP/1.x (${code || err.message})`;
    refuseRaw(socket, reason, problem);
    void ctx.record('deny', reason, { conn: ctx.stateOf(socket).id, scheme: 'unknown', problem });
  });

  const handle = function handleConnection(socket: Duplex): void {
    if (closed) {
      refuseRaw(socket, 'door-closed', `the egress door of sandbox ${o.sandboxId} is closed`);
      return;
    }
    if (!slots.take()) {
      const problem = `sandbox ${o.sandboxId} already has ${limits.maxConnections} connections open; close some or raise the limit`;
      refuseRaw(socket, 'too-many-connections', problem);
      void ctx.record('deny', 'too-many-connections', { conn: deps.nextConnId(), scheme: 'unknown', problem });
      return;
    }
    const openedAt = Date.now();
    const st: ConnState = { id: deps.nextConnId(), openedAt, touch: () => { active.at = Date.now(); } };
    const active = { st, at: openedAt };
    states.set(socket, st);
    open.add(socket);
    lastActive.set(socket, active);
    if (!idleSweep) {
      // Started with the first connection, stopped when the door closes; unref'd, so it never holds the process.
      idleSweep = setInterval(sweepIdle, idleCheckMs);
      idleSweep.unref();
    }
    st.handshakeTimer = setTimeout(() => {
      const problem = `no whole request head within ${limits.handshakeTimeoutMs} ms`;
      refuseRaw(socket, 'handshake-timeout', problem);
      void ctx.record('deny', 'handshake-timeout', { conn: st.id, scheme: 'unknown', problem });
    }, limits.handshakeTimeoutMs);
    socket.on('data', st.touch);
    let released = false;
    socket.once('close', () => {
      if (released) return;
      released = true;
      lastActive.delete(socket);
      if (st.handshakeTimer) clearTimeout(st.handshakeTimer);
      open.delete(socket);
      slots.release();
    });
    server.emit('connection', socket);
  };

  return {
    sandboxId: o.sandboxId,
    agent: o.agent,
    get activeConnections() {
      return slots.active;
    },
    handle,
    listen: function listen(port = 0, host = '127.0.0.1'): Promise<AddressInfo> {
      return new Promise((resolve, reject) => {
        const srv = createNetServer({ noDelay: true }, (s) => handle(s));
        srv.once('error', reject);
        srv.listen(port, host, () => {
          listener = srv;
          survivesAcceptErrors(srv, `the egress door of sandbox ${o.sandboxId} on ${host}:${port}`);
          resolve(srv.address() as AddressInfo);
        });
      });
    },
    close: async function close(): Promise<void> {
      closed = true;
      refusals.flush();
      if (idleSweep) clearInterval(idleSweep);
      idleSweep = undefined;
      for (const s of open) s.destroy();
      const l = listener;
      listener = undefined;
      if (l) await new Promise<void>((resolve) => l.close(() => resolve()));
      server.close();
      tunnelServer.close();
    },
  };
}
