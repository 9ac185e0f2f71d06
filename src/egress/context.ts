/**
 * What a door hands to the CONNECT and plain-HTTP handlers: its identity (from
 * the channel, never from the client), its compiled deciders, its limits, the
 * resolver and dialler, and the audit helpers. Also the small shared helpers:
 * a raw HTTP refusal, per-connection state, and dialling with a timeout.
 */
import { connect as netConnect, type OnReadOpts, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { SecureContext } from 'node:tls';
import type { AddressDecision, AddressRequest, EgressDecision, EgressRequest } from '../policy/index.js';
import type { EgressCa } from './ca.js';
import type { EgressApprovalHook } from './approve.js';
import type { EgressConnectHook, EgressRequestHook } from './forward.js';
import type { InternalService } from './internal.js';
import { retryAfterForReason, statusForReason, type EgressLimits, type RetryRates } from './limits.js';
import type { EgressLookup } from './resolve.js';

/** Where a door writes its events; `AuditLog` fits. Must reject when the event is not durable. */
export interface EgressAuditSink {
  append(event: {
    type: string; actor: string; agent?: string; sandbox?: string; decision?: string; reason?: string; data?: Record<string, unknown>;
  }): Promise<unknown>;
}

/**
 * Opens a TCP connection to an already-checked IP address. `onread`, when
 * given, is where the connection's reads go instead of `data` events (see
 * `relay.ts`); a dialler that ignores it still works, through `data` events.
 */
export type EgressDial = (address: string, port: number, onread?: OnReadOpts) => Socket;

/** Fields of an `egress.request` / `egress.close` event's `data`. */
export interface EgressEventData {
  conn: number;
  /** `https` is a request inside an intercepted tunnel. */
  scheme: 'connect' | 'http' | 'https' | 'unknown';
  host?: string;
  port?: number;
  address?: string;
  method?: string;
  path?: string;
  sni?: string;
  ruleId?: string;
  wouldDeny?: { reason: string; ruleId?: string };
  problem?: string;
  bytesIn?: number;
  bytesOut?: number;
  durationMs?: number;
  status?: number;
  /** The tunnel's TLS is terminated by the proxy (its requests are recorded one by one). */
  intercepted?: boolean;
  /** The internal service that served the request (`llm`, `mcp`, …). */
  service?: string;
  /** What the request hook noted (e.g. secrets substituted, by name). */
  hook?: Record<string, unknown>;
  /** The approval that permitted (or was asked for) this request. */
  approval?: string;
}

/** One tunnel whose TLS the door terminates (an intercepted host or an internal service). */
export interface Tunnel {
  conn: ConnState;
  /** Normalised CONNECT host (equal to the SNI when there is one). */
  host: string;
  port: number;
  sni?: string;
  /** The checked upstream address (intercepted hosts; none for internal services). */
  address?: string;
  internal?: InternalService;
  /** Data of the tunnel's own `egress.request` event. */
  data: EgressEventData;
  /** Requests seen inside so far. */
  requests: number;
}

/** Counts one flow's bytes toward the door's per-minute limit. */
export interface BytesOutMeter {
  /** Count bytes sent upstream; over the limit, every open flow of the door is aborted. */
  out: (bytes: number) => void;
  /** The flow ended: stop tracking it. */
  done: () => void;
}

export interface DoorContext {
  sandboxId: string;
  agent: string;
  limits: EgressLimits;
  decide: (req: EgressRequest) => EgressDecision;
  checkAddress: (req: AddressRequest) => AddressDecision;
  lookup: EgressLookup;
  dial: EgressDial;
  /** Append an `egress.request` event; resolves false when the event could not be written (refuse!). */
  record: (decision: string, reason: string, data: EgressEventData) => Promise<boolean>;
  /** Append an `egress.close` event (best effort: the connection is already over). */
  recordClose: (reason: string, data: EgressEventData) => void;
  /** State of a client connection accepted by this door. */
  stateOf: (socket: Duplex) => ConnState;
  /** Make `child` (e.g. the TLS socket over a client connection) share that connection's state. */
  bindState: (child: Duplex, state: ConnState) => void;
  /** The egress CA, when interception is configured. */
  ca?: EgressCa;
  /** A server context with the CA's leaf for a host (cached). */
  leafContext: (host: string) => SecureContext;
  /** Trusted roots for upstream certificates (PEM); undefined = the system roots. */
  upstreamCa?: string | string[];
  /** Internal services by normalised host name. */
  internal: ReadonlyMap<string, InternalService>;
  requestHook?: EgressRequestHook;
  /** Called for each allowed CONNECT to the internet, before DNS. */
  connectHook?: EgressConnectHook;
  /** Holds requests that a rule marks `approve` until a human decides; absent = refused. */
  approve?: EgressApprovalHook;
  /** True while the door's sandbox is supervised (see `EgressProxyOptions.supervised`). */
  supervised?: () => boolean;
  /** Track a flow (tunnel or forwarded request) for the bytes-out limit; `abort` is called when the door goes over. */
  meter: (abort: (reason: string) => void) => BytesOutMeter;
  /** True while the door is over its bytes-out-per-minute limit. */
  overBytesOut: () => boolean;
  /** Spend one of the door's requests to cordon's own services; false when over `maxInternalRequestsPerSecond`. */
  takeInternalRequest: () => boolean;
  /** Spend one of the door's audited requests to the internet; false when over `maxRequestsPerSecond` (see `requestRateRefusal`). */
  takeRequest: () => boolean;
  /** Serve HTTP/1.1 on a TLS connection the door terminated. */
  serveTunnel: (tls: Duplex, tunnel: Tunnel) => void;
}

/** Per client connection. */
export interface ConnState {
  id: number;
  openedAt: number;
  /** Cleared once a whole request head arrived. */
  handshakeTimer?: NodeJS.Timeout;
  /** Call on any byte in either direction. */
  touch: () => void;
  /** Tie the idle timer to a tunnel's upstream as well. */
  upstream?: Duplex;
  /** Set by the door before it closes the connection itself (e.g. `idle-timeout`). */
  closeReason?: string;
}

/**
 * A refusal written straight to a socket (CONNECT, or before any request was parsed), then close.
 * @param rates the door's limits, for the `Retry-After` of a rate refusal @default the default limits
 */
export function refuseRaw(socket: Duplex, reason: string, message: string, rates?: RetryRates): void {
  const status = statusForReason(reason);
  const retryAfter = retryAfterForReason(reason, rates);
  const body = `cordon egress: ${reason}: ${message}\n`;
  if (socket.writable) {
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Refused'}\r\nX-Cordon-Error: ${reason}\r\n${retryAfter === undefined ? '' : `Retry-After: ${retryAfter}\r\n`}Content-Type: text/plain; charset=utf-8\r\n`
      + `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  setTimeout(() => socket.destroy(), 1000).unref();
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 403: 'Forbidden', 408: 'Request Timeout', 413: 'Content Too Large', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large',
  502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

/** The default dialler: plain TCP to the checked IP (no name, so no second lookup). */
export const dialTcp: EgressDial = function dialTcp(address: string, port: number, onread?: OnReadOpts): Socket {
  return netConnect({ host: address, port, noDelay: true, ...(onread ? { onread } : {}) });
};

/** Dial and wait for the connection, bounded by `timeoutMs`. */
export function dialChecked(dial: EgressDial, address: string, port: number, timeoutMs: number, onread?: OnReadOpts): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const upstream = dial(address, port, onread);
    const timer = setTimeout(() => {
      upstream.destroy();
      reject(Object.assign(new Error(`connecting to ${address}:${port} took longer than ${timeoutMs} ms`), { reason: 'upstream-timeout' }));
    }, timeoutMs);
    const onError = (err: Error): void => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`connecting to ${address}:${port} failed: ${err.message}`), { reason: 'upstream-unreachable' }));
    };
    upstream.once('error', onError);
    upstream.once('connect', () => {
      clearTimeout(timer);
      upstream.off('error', onError);
      // Keep a listener until the caller adds its own, so that an early error cannot go unhandled.
      upstream.on('error', () => undefined);
      resolve(upstream);
    });
  });
}

/** Split `host:port` (IPv6 in brackets) as in a CONNECT request target. */
export function splitAuthority(authority: string): { host: string; port: number } | undefined {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(authority);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!, port };
}
