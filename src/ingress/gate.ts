/**
 * The listener of one tunnel: an HTTP server that lets a request through to
 * the guest port only when it proves it holds the tunnel's one-time token or
 * the session that token was exchanged for, and carries it over a forward
 * stream of the sandbox's control channel (one stream per request, so every
 * request is checked, keep-alive or not).
 *
 * - A client connection is recorded (`tunnel.connect`) before any of its
 *   requests is looked at; if that write fails, the connection is closed.
 *   Its end is recorded with the bytes each way (`tunnel.disconnect`).
 * - Authentication, per request: this tunnel's session cookie, else the token
 *   as `?cordon_tunnel_token=` or `Authorization: Bearer`. The token works
 *   once: it is consumed (audited `tunnel.session`) and exchanged for a
 *   session cookie (HttpOnly, SameSite=Strict, named per tunnel). With the
 *   query form the answer is a 303 to the same URL without the token; with
 *   the header form the request goes through at once and the answer carries
 *   the cookie. Anything else is a 401 with
 *   `X-Cordon-Error: missing-token | bad-token | token-used | bad-session`,
 *   audited as `tunnel.refused`. A valid token whose use cannot be recorded
 *   is refused with 503 `X-Cordon-Error: audit-unavailable` and stays spent.
 *   A request target that cannot be parsed as a URL is refused with 400
 *   `bad-request` (audited) before any token is looked at.
 * - The guest never sees the token or any cordon cookie. WebSocket upgrades
 *   are authenticated the same way and then carried as raw bytes.
 */
import { STATUS_CODES, createServer, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { CordonError } from '../errors/index.js';
import { trackConnection, type TrackedConnection } from './connection.js';
import { TOKEN_PARAM, newSecret, secretMatches, sessionCookie, sha256, takeSessionCookie } from './token.js';

/**
 * Why a client was refused. `audit-unavailable`: the token was right, but its
 * use (`tunnel.session`) could not be recorded; the token is spent all the same.
 */
export type RefusalReason = 'missing-token' | 'bad-token' | 'token-used' | 'bad-session' | 'audit-unavailable' | 'bad-request' | 'connection-limit' | 'opening' | 'closing';

/** What the gate needs from its tunnel. */
export interface GateHost {
  readonly id: string;
  /** SHA-256 of the one-time token. */
  readonly tokenHash: Buffer;
  /** Most client connections at once. */
  readonly maxConnections: number;
  /** Whether the tunnel accepts (false while it opens and once it is closing). */
  isOpen(): boolean;
  /** True before the tunnel opened (its port already listens while `tunnel.open` is written). */
  isOpening?(): boolean;
  /** Record an event of this tunnel; rejects when the audit log cannot take it. */
  record(type: string, data: Record<string, unknown>, o?: { reason?: string; decision?: string }): Promise<unknown>;
  /** A new stream to the guest port. */
  openGuest(): Promise<Duplex>;
  /** Bytes or requests moved: the idle clock restarts. */
  touch(): void;
}

export interface GateStats {
  connections: number;
  refused: number;
  requests: number;
  bytesIn: number;
  bytesOut: number;
}

interface Conn extends TrackedConnection {
  requests: number;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** A tunnel's listener: HTTP mode (here) or TCP mode (tcp-gate.ts). */
export interface Gate {
  readonly server: NetServer;
  readonly stats: GateStats;
  /** Active client connections. */
  readonly active: number;
  /** The one-time token has been spent. */
  readonly tokenUsed: boolean;
  /** Destroy every client socket and guest stream, stop listening; resolves when each disconnect is recorded. */
  shutdown(): Promise<void>;
}

export function createGate(host: GateHost): Gate {
  const stats: GateStats = { connections: 0, refused: 0, requests: 0, bytesIn: 0, bytesOut: 0 };
  const conns = new Map<Socket, Conn>();
  const guests = new Set<Duplex>();
  const sessions = new Set<string>(); // hex SHA-256 of live session secrets
  let tokenUsed = false;
  let seq = 0;

  const server = createServer({ requestTimeout: 0, headersTimeout: 30_000, maxHeaderSize: 32 * 1024 });
  server.on('connection', onConnection);
  server.on('request', (req, res) => void onRequest(req, res).catch((err: unknown) => fail(res, err)));
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => void onUpgrade(req, socket, head).catch(() => socket.destroy()));
  server.on('clientError', (_err, socket) => socket.destroy());

  function onConnection(socket: Socket): void {
    let conn: Conn | undefined;
    const tracked = trackConnection(host, stats, socket, { active: conns.size, nextId: () => ++seq, disconnectData: () => ({ requests: conn?.requests ?? 0 }) });
    if (!tracked) return;
    conn = { ...tracked, requests: 0 };
    conns.set(socket, conn);
    void tracked.done.finally(() => conns.delete(socket));
  }

  type Auth = { ok: true; setCookie?: string; redirect?: string; bearer: boolean } | { ok: false; reason: RefusalReason };

  /** Check one request; consumes the token when it is presented (see the file header). */
  async function authenticate(req: IncomingMessage, url: URL): Promise<Auth> {
    const { session } = takeSessionCookie(req.headers.cookie, host.id);
    if (session !== undefined) {
      if (sessions.has(sha256(session).toString('hex'))) return { ok: true, bearer: false };
      return { ok: false, reason: 'bad-session' };
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const token = url.searchParams.get(TOKEN_PARAM) ?? bearer;
    if (token === undefined || token === null) return { ok: false, reason: 'missing-token' };
    if (!secretMatches(token, host.tokenHash)) return { ok: false, reason: 'bad-token' };
    if (tokenUsed) return { ok: false, reason: 'token-used' };
    tokenUsed = true; // before any await: two racing requests cannot both spend it
    const via = url.searchParams.has(TOKEN_PARAM) ? 'query' : 'bearer';
    try {
      await host.record('tunnel.session', { via });
    } catch {
      return { ok: false, reason: 'audit-unavailable' }; // spent, but its use could not be recorded: refuse
    }
    const secret = newSecret();
    sessions.add(sha256(secret).toString('hex'));
    const setCookie = sessionCookie(host.id, secret);
    if (via === 'query') {
      url.searchParams.delete(TOKEN_PARAM);
      // Path-only, and never `//host` (which a browser would read as another site).
      return { ok: true, setCookie, redirect: url.pathname.replace(/^\/+/, '/') + url.search, bearer: false };
    }
    return { ok: true, setCookie, bearer: true };
  }

  async function admit(req: IncomingMessage): Promise<{ conn: Conn; url: URL; auth: Auth } | undefined> {
    const conn = conns.get(req.socket);
    if (!conn || !(await conn.audited) || !host.isOpen()) {
      req.socket.destroy();
      return undefined;
    }
    conn.requests++;
    stats.requests++;
    host.touch();
    // A target no URL parser takes (`//`, `//[`) is refused before the token is looked at (and stays unspent).
    const parsed = URL.canParse(req.url ?? '/', 'http://tunnel.invalid');
    const url = new URL(parsed ? req.url ?? '/' : '/', 'http://tunnel.invalid');
    const auth: Auth = parsed ? await authenticate(req, url) : { ok: false, reason: 'bad-request' };
    if (!auth.ok) {
      stats.refused++;
      await host.record('tunnel.refused', { connection: conn.id, peer: conn.peer, method: req.method, path: url.pathname.slice(0, 200) }, { reason: auth.reason, decision: 'deny' })
        .catch(() => undefined);
    }
    return { conn, url, auth };
  }

  async function onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const admitted = await admit(req);
    if (!admitted) return;
    const { url, auth } = admitted;
    if (!auth.ok) return refuse(res, auth.reason);
    if (auth.redirect !== undefined) {
      res.writeHead(303, { location: auth.redirect, 'set-cookie': auth.setCookie ?? '', 'cache-control': 'no-store', 'content-length': 0 });
      res.end();
      return;
    }
    const guest = await host.openGuest().catch((err: unknown) => err as Error);
    if (guest instanceof Error) return fail(res, guest);
    if (abandoned(req.socket, guest)) return;
    track(guest);
    res.on('close', () => guest.destroy());
    const headers = forwardHeaders(req, auth.bearer);
    const upstream = httpRequest({ method: req.method, path: guestPath(req, url), headers, createConnection: () => guest as Socket });
    upstream.on('response', (answer) => {
      const out: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(answer.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) out[k] = v;
      // The guest may not set (or clobber) cordon's session cookies.
      const cookies = toArray(out['set-cookie']).filter((c) => !/^\s*cordon_tunnel_/i.test(c));
      if (auth.setCookie) cookies.push(auth.setCookie);
      if (cookies.length > 0) out['set-cookie'] = cookies;
      else delete out['set-cookie'];
      try {
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, out);
      } catch (err) {
        answer.destroy();
        return fail(res, err);
      }
      answer.on('data', () => host.touch());
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    upstream.on('error', (err) => fail(res, err));
    req.pipe(upstream);
  }

  async function onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const admitted = await admit(req);
    if (!admitted) return;
    const { url, auth } = admitted;
    if (!auth.ok) {
      const status = refusalStatus(auth.reason);
      // Closed once flushed: a client that never ends its side keeps no slot (as Node does for `Connection: close` answers).
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nX-Cordon-Error: ${auth.reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
      return;
    }
    const guest = await host.openGuest().catch(() => undefined);
    if (!guest) {
      socket.end('HTTP/1.1 502 Bad Gateway\r\nX-Cordon-Error: guest-unreachable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n', () => socket.destroy());
      return;
    }
    if (abandoned(socket, guest)) return;
    track(guest);
    const lines = [`${req.method ?? 'GET'} ${guestPath(req, url)} HTTP/1.1`];
    const headers = forwardHeaders(req, auth.bearer, true);
    for (const [k, v] of Object.entries(headers)) for (const one of toArray(v)) lines.push(`${k}: ${one}`);
    guest.write(lines.join('\r\n') + '\r\n\r\n');
    if (head.length > 0) guest.write(head);
    guest.on('data', () => host.touch());
    socket.on('data', () => host.touch());
    guest.pipe(socket);
    socket.pipe(guest);
    guest.on('close', () => socket.destroy());
    socket.on('close', () => guest.destroy());
  }

  /**
   * The client left, or the tunnel began closing (its shutdown has already
   * destroyed the streams it knew of), while the guest stream was opening:
   * close that stream rather than carry anything over it.
   */
  function abandoned(client: Socket, guest: Duplex): boolean {
    if (!client.destroyed && host.isOpen()) return false;
    guest.destroy();
    client.destroy();
    return true;
  }

  function track(guest: Duplex): void {
    guests.add(guest);
    guest.on('error', () => undefined);
    guest.on('close', () => guests.delete(guest));
  }

  return {
    server,
    stats,
    get active() {
      return conns.size;
    },
    get tokenUsed() {
      return tokenUsed;
    },
    async shutdown() {
      server.close();
      for (const g of guests) g.destroy();
      const pending = [...conns.values()].map((c) => c.done);
      for (const s of conns.keys()) s.destroy();
      // Each socket records its disconnect on 'close'.
      await Promise.allSettled(pending);
    },
  };
}

/**
 * The request target for the guest: exactly what the client sent (origin
 * form), unless it carries a token parameter or is in absolute form; then the
 * parsed path and query without the parameter.
 */
function guestPath(req: IncomingMessage, url: URL): string {
  const raw = req.url ?? '/';
  if (raw.startsWith('/') && !raw.startsWith('//') && !url.searchParams.has(TOKEN_PARAM)) return raw;
  url.searchParams.delete(TOKEN_PARAM);
  return url.pathname.replace(/^\/+/, '/') + url.search;
}

/** The request's headers for the guest: no hop-by-hop headers, no cordon cookie, no tunnel token. */
function forwardHeaders(req: IncomingMessage, bearerWasToken: boolean, upgrade = false): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const connectionTokens = new Set((req.headers.connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || k === 'cookie' || (bearerWasToken && k === 'authorization')) continue;
    if (!upgrade && (HOP_BY_HOP.has(k) || connectionTokens.has(k))) continue;
    out[k] = v;
  }
  const { rest } = takeSessionCookie(req.headers.cookie, 'tn-');
  if (rest !== undefined) out.cookie = rest;
  return out;
}

function toArray(v: string | number | string[] | undefined): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [String(v)];
}

const FIXES: Record<RefusalReason, string> = {
  'missing-token': `open the URL that \`cordon tunnel open\` printed (it carries ?${TOKEN_PARAM}=…), or send Authorization: Bearer TOKEN`,
  'bad-token': 'use the token printed by `cordon tunnel open` for this tunnel',
  'token-used': 'the token works once; open a new tunnel (`cordon tunnel open`) for another client',
  'bad-session': 'the session cookie is not valid for this tunnel; open a new tunnel',
  'audit-unavailable': 'the token was right, but its use could not be written to the audit log, so it was refused and is now spent; '
    + 'check the control plane\'s audit store and disk, then open a new tunnel (`cordon tunnel open`)',
  'bad-request': 'send a request target the tunnel can parse (a path such as /app?x=1)',
  'connection-limit': 'close other connections to this tunnel',
  opening: 'the tunnel was still opening; connect again once `cordon tunnel open` has printed its URL',
  closing: 'the tunnel is closing; open a new one',
};

/** 503 when cordon could not record the request (the client did nothing wrong), 400 for a target it cannot parse, else 401. */
function refusalStatus(reason: RefusalReason): number {
  return reason === 'audit-unavailable' ? 503 : reason === 'bad-request' ? 400 : 401;
}

function refuse(res: ServerResponse, reason: RefusalReason): void {
  const body = `cordon tunnel: refused (${reason}): ${FIXES[reason]}\n`;
  res.writeHead(refusalStatus(reason), { 'content-type': 'text/plain; charset=utf-8', 'x-cordon-error': reason, connection: 'close', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** The guest port could not be reached (or broke mid-answer). */
function fail(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const code = (err as { guestCode?: string }).guestCode ?? (err instanceof CordonError ? err.code : 'guest-error');
  const message = err instanceof Error ? err.message : String(err);
  const body = `cordon tunnel: the guest port could not be reached (${code}): ${message}\n`;
  res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8', 'x-cordon-error': `guest-${code.replace(/^guest-/, '')}`, connection: 'close', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
