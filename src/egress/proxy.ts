/**
 * The egress proxy: one door per sandbox. A door knows its sandbox and agent
 * from the channel it was opened for (never from anything the client sends),
 * compiles that agent's egress policy once, and serves client connections
 * handed to it as byte streams (`door.handle(stream)`: the guest's streams
 * from the control channel, or a loopback listener with `door.listen()`).
 * Each connection is parsed by a private `node:http` server (header size
 * limit, keep-alive), bounded by a handshake timer, an idle timer and the
 * door's connection cap; requests go to `connect.ts` / `http.ts`.
 *
 * @example
 * const proxy = createEgressProxy({});
 * const door = proxy.openDoor({ sandboxId: 'sb-1', agent: 'reviewer', agentConfig: config.agents.reviewer, audit });
 * guestStreams.on('stream', (s) => door.handle(s));
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import type { Duplex } from 'node:stream';
import { createAddressDecider, createEgressDecider, failClosed, type AddressDecision, type EgressPolicy } from '../policy/index.js';
import { handleConnect } from './connect.js';
import { dialTcp, refuseRaw, type ConnState, type DoorContext, type EgressAuditSink, type EgressDial, type EgressEventData } from './context.js';
import { handleHttp } from './http.js';
import { createConnectionSlots, resolveLimits, type EgressLimits, type EgressLimitsInput } from './limits.js';
import { systemLookup, type EgressLookup } from './resolve.js';

export interface EgressProxyOptions {
  /** Sizes, timeouts and the per-door connection cap. @default see `egressLimitsSchema` */
  limits?: EgressLimitsInput;
  /** Resolver for destination names. @default the system resolver (`dns.lookup`, all addresses) */
  lookup?: EgressLookup;
  /** The proxy host's own addresses: never dialled, whatever the policy says. @default [] */
  selfAddresses?: readonly string[];
  /** Opens TCP to a checked IP. @default plain `net.connect` */
  dial?: EgressDial;
}

export interface OpenDoorOptions {
  sandboxId: string;
  agent: string;
  /** The agent's config (`config.agents[agent]`); only `egress` and `egressMode` are read. */
  agentConfig: Omit<EgressPolicy, 'agent'>;
  /** Where events go; an append that rejects makes the request refused. */
  audit: EgressAuditSink;
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
  const doors = new Set<EgressDoor>();
  let lastConnId = 0;
  const nextConnId = (): number => ++lastConnId;
  return {
    openDoor: function openDoor(o: OpenDoorOptions): EgressDoor {
      const door = createDoor(o, { limits, lookup, dial, selfAddresses: options.selfAddresses ?? [], nextConnId });
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
}

function createDoor(o: OpenDoorOptions, deps: DoorDeps): EgressDoor {
  const { limits } = deps;
  const policy: EgressPolicy = { agent: o.agent, egress: o.agentConfig?.egress ?? [], ...(o.agentConfig?.egressMode ? { egressMode: o.agentConfig.egressMode } : {}) };
  const decide = failClosed(createEgressDecider(policy));
  const addressDecider = createAddressDecider(policy, { selfAddresses: deps.selfAddresses });
  const checkAddress = failClosed(addressDecider) as (r: Parameters<typeof addressDecider>[0]) => AddressDecision;
  const slots = createConnectionSlots(limits.maxConnections);
  const states = new WeakMap<Duplex, ConnState>();
  const open = new Set<Duplex>();
  let closed = false;
  let listener: NetServer | undefined;

  const event = (type: string, decision: string, reason: string, data: EgressEventData) => ({
    type, actor: `agent:${o.agent}`, agent: o.agent, sandbox: o.sandboxId, decision, reason,
    data: JSON.parse(JSON.stringify(data)) as Record<string, unknown>,
  });
  const ctx: DoorContext = {
    sandboxId: o.sandboxId, agent: o.agent, limits, decide, checkAddress, lookup: deps.lookup, dial: deps.dial,
    record: async function recordRequest(decision, reason, data): Promise<boolean> {
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
  };

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
    let last = Date.now();
    const st: ConnState = { id: deps.nextConnId(), openedAt: last, touch: () => { last = Date.now(); } };
    states.set(socket, st);
    open.add(socket);
    st.handshakeTimer = setTimeout(() => {
      const problem = `no whole request head within ${limits.handshakeTimeoutMs} ms`;
      refuseRaw(socket, 'handshake-timeout', problem);
      void ctx.record('deny', 'handshake-timeout', { conn: st.id, scheme: 'unknown', problem });
    }, limits.handshakeTimeoutMs);
    const idleCheckMs = Math.max(50, Math.min(1000, Math.floor(limits.idleTimeoutMs / 4)));
    const idle = setInterval(() => {
      if (Date.now() - last < limits.idleTimeoutMs) return;
      st.closeReason = 'idle-timeout';
      socket.destroy();
      st.upstream?.destroy();
    }, idleCheckMs);
    idle.unref();
    socket.on('data', st.touch);
    let released = false;
    socket.once('close', () => {
      if (released) return;
      released = true;
      clearInterval(idle);
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
          resolve(srv.address() as AddressInfo);
        });
      });
    },
    close: async function close(): Promise<void> {
      closed = true;
      for (const s of open) s.destroy();
      const l = listener;
      listener = undefined;
      if (l) await new Promise<void>((resolve) => l.close(() => resolve()));
      server.close();
    },
  };
}
