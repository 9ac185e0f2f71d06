/**
 * The tunnel manager: the only way into a sandbox. An operator opens a
 * temporary tunnel to one guest port; it listens on 127.0.0.1 (another
 * address only when `bind` names one), answers only clients that hold its
 * one-time token or the session it was exchanged for (see gate.ts for the
 * HTTP authentication, tcp-gate.ts for the TCP mode whose first line is the
 * token), and reaches the guest's loopback port through a
 * forward stream of the sandbox's control channel: the guest has no network
 * device, so there is no other path.
 *
 * Lifetime: a tunnel closes at its TTL (`ttl`), after `idleMs` without a
 * request or a byte from the guest (`idle`), when its sandbox ends however it
 * ends (`sandbox-ended`), when an operator closes it (`operator`) and when the
 * control plane stops (`daemon-stop`). Closing stops the listener and destroys
 * every client socket and guest stream.
 *
 * Limits: `maxTunnels` and `maxPerSandbox` count the tunnels that are open or
 * closing and the opens in progress: an open reserves its slot before its
 * first await, so concurrent opens cannot pass them together, and frees it on
 * every failure (the port cannot be listened on, `tunnel.open` cannot be
 * written, the sandbox ends or the control plane stops meanwhile). An open
 * that fails after `tunnel.open` was written records its `tunnel.close`.
 *
 * Audit: `tunnel.open` (refused if it cannot be written: nothing listens
 * then), `tunnel.connect` / `tunnel.disconnect` (bytes each way) per client
 * connection, `tunnel.session` when the token is spent, `tunnel.refused` with
 * the reason, `tunnel.close` with the reason and totals. The token itself is
 * never stored or logged; only its SHA-256 is kept, in memory.
 */
import { once } from 'node:events';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import type { AuditEventInput } from '../audit/index.js';
import { InvalidInputError, LimitError, NotFoundError, SandboxError } from '../errors/index.js';
import type { SandboxManager } from '../sandbox/index.js';
import { createGate, type Gate } from './gate.js';
import { createTcpGate } from './tcp-gate.js';
import { TOKEN_PARAM, TUNNEL_ID, newSecret, newTunnelId, sha256 } from './token.js';

export type TunnelCloseReason = 'ttl' | 'idle' | 'sandbox-ended' | 'operator' | 'daemon-stop';

/** Where tunnels record what happens (an AuditLog). */
export interface TunnelAudit {
  append(event: AuditEventInput): Promise<unknown>;
}

/** What the tunnel manager needs from the sandbox manager. */
export type TunnelSandboxes = Pick<SandboxManager, 'get' | 'openPort' | 'onEnded'>;

export interface TunnelManagerOptions {
  sandboxes: TunnelSandboxes;
  audit: TunnelAudit;
  /** Most tunnels open at once. @default 32 */
  maxTunnels?: number;
  /** Most tunnels per sandbox. @default 8 */
  maxPerSandbox?: number;
  /** Most client connections per tunnel at once (each request holds one guest forward). @default 32 */
  maxConnections?: number;
  /** Longest TTL an operator may ask for. @default 86_400_000 (24 h) */
  maxTtlMs?: number;
}

export const DEFAULT_TUNNEL_TTL_MS = 600_000;
export const DEFAULT_TUNNEL_IDLE_MS = 300_000;

export const tunnelOpenSchema = z
  .object({
    sandboxId: z.string().regex(/^sb-[a-z2-7]{20}$/, 'a sandbox id such as sb-…').describe('the sandbox to reach'),
    port: z.number().int().min(1).max(65535).describe('TCP port the guest program listens on (guest loopback)'),
    ttlMs: z.number().int().min(1000).optional().describe('lifetime; the tunnel closes when it passes (default 10 min)'),
    idleMs: z.number().int().min(1000).optional().describe('close after this long without traffic (default 5 min, at most ttlMs)'),
    bind: z.string().refine((s) => isIP(s) !== 0, 'an IP address such as 127.0.0.1').optional()
      .describe('listen address; loopback unless an operator names another (default 127.0.0.1)'),
    listenPort: z.number().int().min(0).max(65535).optional().describe('host port to listen on (default: any free port)'),
    mode: z.enum(['http', 'tcp']).optional()
      .describe('http (default): the token on the first request, then a session cookie; tcp: the first line is the token, one connection'),
  })
  .strict();
export type TunnelOpenOptions = z.infer<typeof tunnelOpenSchema>;

export interface TunnelInfo {
  id: string;
  sandboxId: string;
  agent: string;
  /** Guest port. */
  port: number;
  bind: string;
  mode: 'http' | 'tcp';
  /** `http://ADDR:PORT/` (no token), or `tcp://ADDR:PORT` in TCP mode. */
  url: string;
  /** True when the listener is not on loopback. */
  exposed: boolean;
  createdAt: string;
  expiresAt: string;
  idleMs: number;
  /** The one-time token has been exchanged for a session. */
  tokenUsed: boolean;
  activeConnections: number;
  connections: number;
  refused: number;
  requests: number;
  /** Client bytes of closed connections (received / sent by the tunnel). */
  bytesIn: number;
  bytesOut: number;
}

export interface OpenedTunnel extends TunnelInfo {
  /** The one-time token: shown once, never stored. */
  token: string;
  /** HTTP mode: `url` with the token as `?cordon_tunnel_token=`, for a browser; TCP mode: `url`. */
  urlWithToken: string;
}

export interface TunnelManager {
  /** Open a tunnel (audited before it accepts anything). */
  open(o: TunnelOpenOptions, caller: { actor: string }): Promise<OpenedTunnel>;
  list(): TunnelInfo[];
  get(id: string): TunnelInfo;
  close(id: string, caller: { actor: string }): Promise<void>;
  /** Close every tunnel (`daemon-stop`) and refuse new ones. */
  stop(): Promise<void>;
}

interface Tunnel {
  info: Omit<TunnelInfo, 'tokenUsed' | 'activeConnections' | 'connections' | 'refused' | 'requests' | 'bytesIn' | 'bytesOut'>;
  gate: Gate;
  open: boolean;
  closing: Promise<void> | undefined;
  lastActivityMs: number;
  ttlTimer: NodeJS.Timeout | undefined;
  idleTimer: NodeJS.Timeout | undefined;
}

/**
 * @example
 * const tunnels = createTunnelManager({ sandboxes: manager, audit });
 * const t = await tunnels.open({ sandboxId: sb.id, port: 8000, ttlMs: 600_000 }, { actor: 'operator' });
 * console.log(t.urlWithToken); // shown once
 */
export function createTunnelManager(o: TunnelManagerOptions): TunnelManager {
  const maxTunnels = o.maxTunnels ?? 32;
  const maxPerSandbox = o.maxPerSandbox ?? 8;
  const maxConnections = o.maxConnections ?? 32;
  const maxTtlMs = o.maxTtlMs ?? 86_400_000;
  const tunnels = new Map<string, Tunnel>();
  /** Slots held by opens in progress: tunnel id → sandbox id (see `open`). */
  const reserved = new Map<string, string>();
  /** Opens in progress, which `stop` waits for. */
  const opening = new Set<Promise<unknown>>();
  let stopped = false;
  const unsubscribe = o.sandboxes.onEnded?.((sandboxId) => {
    for (const t of tunnels.values()) if (t.info.sandboxId === sandboxId) void closeTunnel(t, 'sandbox-ended', 'system');
  });

  function record(t: Tunnel['info'], type: string, actor: string, data: Record<string, unknown>, extra: { reason?: string; decision?: string } = {}): Promise<unknown> {
    return o.audit.append({ type, actor, sandbox: t.sandboxId, agent: t.agent, ...extra, data: { tunnel: t.id, port: t.port, ...data } });
  }

  async function open(input: TunnelOpenOptions, caller: { actor: string }): Promise<OpenedTunnel> {
    if (stopped) throw stoppingError();
    const parsed = tunnelOpenSchema.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new InvalidInputError(`invalid tunnel: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`, {
        fix: 'cordon tunnel open SANDBOX PORT --ttl 10m [--idle 5m] [--bind 127.0.0.1]',
      });
    }
    const { sandboxId } = parsed.data;
    const ttlMs = parsed.data.ttlMs ?? DEFAULT_TUNNEL_TTL_MS;
    const idleMs = Math.min(parsed.data.idleMs ?? DEFAULT_TUNNEL_IDLE_MS, ttlMs);
    const bind = parsed.data.bind ?? '127.0.0.1';
    const mode = parsed.data.mode ?? 'http';
    if (ttlMs > maxTtlMs) throw new InvalidInputError(`a TTL of ${ttlMs} ms is over the limit of ${maxTtlMs} ms`, { fix: 'ask for a shorter --ttl' });
    const openPort = o.sandboxes.openPort;
    if (!openPort) throw new SandboxError('sandbox-no-ports', 'this sandbox manager cannot open guest ports', { fix: 'run tunnels through the control plane (`cordon up`)' });
    const sandbox = o.sandboxes.get(sandboxId);
    if (sandbox.state !== 'running') {
      throw new SandboxError('sandbox-ended', `sandbox ${sandboxId} is ${sandbox.state}; a tunnel needs a running sandbox`, { fix: 'open the tunnel to a running sandbox (`cordon sandbox ls`)' });
    }
    // Checked and reserved in one synchronous step, before the first await:
    // concurrent opens count each other's reservations, so the limits hold exactly.
    const open0 = tunnels.size + reserved.size;
    if (open0 >= maxTunnels) {
      throw new LimitError(`${open0} tunnels are open or opening; the limit is ${maxTunnels} (maxTunnels)`, undefined, { fix: 'close a tunnel (`cordon tunnel close ID`)' });
    }
    const perSandbox = countFor(sandboxId);
    if (perSandbox >= maxPerSandbox) {
      throw new LimitError(`sandbox ${sandboxId} has ${perSandbox} tunnels open or opening; the limit is ${maxPerSandbox} (maxPerSandbox)`, undefined, {
        fix: 'close one of its tunnels first (`cordon tunnel ls`, `cordon tunnel close ID`)',
      });
    }
    const id = newTunnelId();
    reserved.set(id, sandboxId);
    const started = start(id, parsed.data, { sandboxId, agent: sandbox.agent, ttlMs, idleMs, bind, mode, openPort }, caller);
    opening.add(started);
    try {
      return await started;
    } finally {
      opening.delete(started);
      reserved.delete(id); // a no-op once the tunnel is listed; on every failure it frees the slot
    }
  }

  /** Tunnels of one sandbox, open, closing or reserved by an open in progress. */
  function countFor(sandboxId: string): number {
    let n = 0;
    for (const t of tunnels.values()) if (t.info.sandboxId === sandboxId) n++;
    for (const sb of reserved.values()) if (sb === sandboxId) n++;
    return n;
  }

  /** Start the listener of a reserved tunnel and record it; throws (having closed everything it started) on any failure. */
  async function start(id: string, input: TunnelOpenOptions, s: Started, caller: { actor: string }): Promise<OpenedTunnel> {
    const { sandboxId, ttlMs, idleMs, bind, mode, openPort } = s;
    const port = input.port;
    const token = newSecret();
    const createdAtMs = Date.now();
    const exposed = !isLoopback(bind);
    const caller0 = { actor: caller.actor };
    // The tunnel object exists before the listener so the gate can ask it; it accepts nothing until `open`.
    const t: Tunnel = {
      info: {
        id, sandboxId, agent: s.agent, port, bind, mode, url: '', exposed, idleMs,
        createdAt: new Date(createdAtMs).toISOString(), expiresAt: new Date(createdAtMs + ttlMs).toISOString(),
      },
      gate: undefined as unknown as Gate,
      open: false, closing: undefined, lastActivityMs: createdAtMs, ttlTimer: undefined, idleTimer: undefined,
    };
    // The port listens before `tunnel.open` is written (the event names the port): anything a client
    // causes meanwhile is recorded only once that write settled, so no event of the tunnel comes before it.
    let settleOpen!: () => void;
    const openSettled = new Promise<void>((resolve) => { settleOpen = resolve; });
    t.gate = (mode === 'tcp' ? createTcpGate : createGate)({
      id, tokenHash: sha256(token), maxConnections,
      isOpen: () => t.open,
      isOpening: () => !t.open && t.closing === undefined && reserved.has(id),
      record: (type, data, extra) => openSettled.then(() => record(t.info, type, 'tunnel-client', data, extra)),
      openGuest: () => openPort.call(o.sandboxes, sandboxId, port, caller0) as Promise<Duplex>,
      touch: () => { t.lastActivityMs = Date.now(); },
    });
    const server = t.gate.server;
    try {
      try {
        server.listen({ host: bind, port: input.listenPort ?? 0, exclusive: true });
        await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err; })]);
      } catch (err) {
        server.close();
        const code = (err as NodeJS.ErrnoException).code ?? 'error';
        throw new InvalidInputError(`cannot listen on ${bind}:${input.listenPort ?? 0} (${code})`, {
          fix: code === 'EADDRNOTAVAIL' ? 'bind to an address of this host, or leave --bind out (127.0.0.1)' : 'choose another --bind address or port', cause: err,
        });
      }
      // A listening server reports a failed accept (EMFILE under a flood) as 'error' and keeps listening;
      // unheard, that event would throw and end the control plane. The client it concerns never connected.
      server.on('error', () => undefined);
      const addr = server.address() as AddressInfo;
      const hostPort = `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
      t.info.url = mode === 'tcp' ? `tcp://${hostPort}` : `http://${hostPort}/`;
      const gone = (): Error | undefined => (stopped ? stoppingError() : running(sandboxId) ? undefined : endedError(sandboxId));
      const early = gone();
      if (early) {
        settleOpen(); // before the shutdown, which waits for what clients caused to be recorded
        await discard(t);
        throw early; // nothing was recorded and nothing was accepted
      }
      try {
        await record(t.info, 'tunnel.open', caller.actor, { mode, bind, url: t.info.url, exposed, ttlMs, idleMs, expiresAt: t.info.expiresAt });
      } catch (err) {
        settleOpen();
        await discard(t);
        throw err;
      }
      settleOpen();
      reserved.delete(id);
      tunnels.set(id, t);
      // The sandbox may have ended, or the control plane begun to stop, while tunnel.open was written:
      // the tunnel is recorded, so it is closed (and that recorded) before the open fails.
      const late = gone();
      if (late) {
        await closeTunnel(t, stopped ? 'daemon-stop' : 'sandbox-ended', 'system');
        throw late;
      }
      t.open = true;
      t.ttlTimer = setTimeout(() => void closeTunnel(t, 'ttl', 'system'), ttlMs);
      t.ttlTimer.unref();
      armIdle(t);
      return { ...snapshot(t), token, urlWithToken: mode === 'tcp' ? t.info.url : `${t.info.url}?${TOKEN_PARAM}=${token}` };
    } finally {
      settleOpen(); // on every other way out (the listen failing) as well
    }
  }

  /** Stop the listener of a tunnel that never opened (nothing recorded, nothing let through). */
  async function discard(t: Tunnel): Promise<void> {
    const closed = new Promise((r) => t.gate.server.close(r));
    await t.gate.shutdown();
    await closed;
  }

  function running(sandboxId: string): boolean {
    try {
      return o.sandboxes.get(sandboxId).state === 'running';
    } catch {
      return false;
    }
  }

  function armIdle(t: Tunnel): void {
    const left = t.lastActivityMs + t.info.idleMs - Date.now();
    if (t.lastActivityMs + t.info.idleMs >= Date.parse(t.info.expiresAt)) return; // the TTL comes first; the close says `ttl`
    t.idleTimer = setTimeout(() => {
      if (!t.open) return;
      if (Date.now() - t.lastActivityMs >= t.info.idleMs) void closeTunnel(t, 'idle', 'system');
      else armIdle(t);
    }, Math.max(10, left));
    t.idleTimer.unref();
  }

  /** Stop the listener, end every connection, record the close; never throws. */
  function closeTunnel(t: Tunnel, reason: TunnelCloseReason, actor: string): Promise<void> {
    t.closing ??= (async () => {
      t.open = false;
      clearTimeout(t.ttlTimer);
      clearTimeout(t.idleTimer);
      const closed = new Promise((r) => t.gate.server.close(r));
      await t.gate.shutdown();
      await closed;
      tunnels.delete(t.info.id);
      const s = t.gate.stats;
      await record(t.info, 'tunnel.close', actor, {
        connections: s.connections, refused: s.refused, requests: s.requests, bytesIn: s.bytesIn, bytesOut: s.bytesOut,
        durationMs: Date.now() - Date.parse(t.info.createdAt),
      }, { reason }).catch(() => undefined); // closing is the safe direction: it happens even unrecorded
    })();
    return t.closing;
  }

  function snapshot(t: Tunnel): TunnelInfo {
    const s = t.gate.stats;
    return {
      ...t.info, tokenUsed: t.gate.tokenUsed, activeConnections: t.gate.active, connections: s.connections, refused: s.refused,
      requests: s.requests, bytesIn: s.bytesIn, bytesOut: s.bytesOut,
    };
  }

  function find(id: string): Tunnel {
    const t = TUNNEL_ID.test(id) ? tunnels.get(id) : undefined;
    if (!t) throw new NotFoundError(`no open tunnel ${JSON.stringify(id.slice(0, 80))}`, { fix: 'list tunnels with `cordon tunnel ls`' });
    return t;
  }

  return {
    open,
    list: () => [...tunnels.values()].map(snapshot).sort((a, b) => a.createdAt.localeCompare(b.createdAt)),
    get: (id) => snapshot(find(id)),
    async close(id, caller) {
      await closeTunnel(find(id), 'operator', caller.actor);
    },
    async stop() {
      stopped = true;
      unsubscribe?.();
      // An open in progress sees `stopped` after its next step and closes what it started.
      await Promise.allSettled([...[...tunnels.values()].map((t) => closeTunnel(t, 'daemon-stop', 'system')), ...opening]);
    },
  };
}

/** What `open` settled before the first await, for `start`. */
interface Started {
  sandboxId: string;
  agent: string;
  ttlMs: number;
  idleMs: number;
  bind: string;
  mode: 'http' | 'tcp';
  openPort: NonNullable<TunnelSandboxes['openPort']>;
}

function stoppingError(): SandboxError {
  return new SandboxError('sandbox-closed', 'the control plane is stopping; no new tunnels', { fix: 'retry once cordon is up again' });
}

function endedError(sandboxId: string): SandboxError {
  return new SandboxError('sandbox-ended', `sandbox ${sandboxId} ended while its tunnel was opening`, { fix: 'open the tunnel to a running sandbox (`cordon sandbox ls`)' });
}

function isLoopback(address: string): boolean {
  if (isIP(address) === 4) return address.startsWith('127.');
  const a = address.toLowerCase();
  return a === '::1' || a.startsWith('::ffff:127.');
}
