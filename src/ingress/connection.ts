/**
 * The accounting of one client connection, the same in both gate modes
 * (gate.ts for HTTP, tcp-gate.ts for TCP): a connection over the tunnel's
 * limit, or one arriving while it opens or closes, is refused (audited
 * `tunnel.refused`) and destroyed; any other is recorded (`tunnel.connect`)
 * before the gate looks at its bytes, and its end is recorded with the bytes
 * each way (`tunnel.disconnect`). A connection whose `tunnel.connect` could
 * not be written is never let through: `audited` resolves false and the gate
 * destroys the socket; its disconnect is then not recorded either.
 */
import type { Socket } from 'node:net';
import type { GateHost, GateStats, RefusalReason } from './gate.js';

export interface TrackedConnection {
  readonly id: number;
  /** `address:port` of the client. */
  readonly peer: string;
  /** Whether `tunnel.connect` was written; false means the gate must close the socket. */
  readonly audited: Promise<boolean>;
  /** Settles once the socket has closed and its disconnect is recorded (or could not be). */
  readonly done: Promise<unknown>;
}

export interface TrackOptions {
  /** Client connections the gate holds now. */
  active: number;
  /** The connection's number within its tunnel. */
  nextId: () => number;
  /** More fields of the `tunnel.disconnect` event, read when the socket closes. */
  disconnectData?: () => Record<string, unknown>;
}

/** Refuse or record a new client socket (see the file header); undefined when refused. */
export function trackConnection(host: GateHost, stats: GateStats, socket: Socket, o: TrackOptions): TrackedConnection | undefined {
  socket.on('error', () => undefined);
  const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
  if (!host.isOpen() || o.active >= host.maxConnections) {
    stats.refused++;
    const reason: RefusalReason = host.isOpen() ? 'connection-limit' : host.isOpening?.() ? 'opening' : 'closing';
    // The socket is destroyed whether or not this refusal could be written.
    host.record('tunnel.refused', { peer, limit: host.maxConnections }, { reason, decision: 'deny' }).catch(() => undefined);
    socket.destroy();
    return undefined;
  }
  const id = o.nextId();
  stats.connections++;
  const startedMs = Date.now();
  const audited = host.record('tunnel.connect', { connection: id, peer }, { decision: 'allow' }).then(() => true, () => false);
  let settle!: (v: unknown) => void;
  const done = new Promise((r) => (settle = r));
  socket.on('close', () => {
    stats.bytesIn += socket.bytesRead;
    stats.bytesOut += socket.bytesWritten;
    const data = {
      connection: id, peer, ...o.disconnectData?.(), bytesIn: socket.bytesRead, bytesOut: socket.bytesWritten, durationMs: Date.now() - startedMs,
    };
    void audited.then((ok) => ok && host.record('tunnel.disconnect', data)).catch(() => undefined).then(settle, settle);
  });
  void audited.then((ok) => { if (!ok) socket.destroy(); });
  return { id, peer, audited, done };
}
