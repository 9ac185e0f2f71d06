/**
 * The listener of a TCP-mode tunnel (`mode: 'tcp'`), for protocols that are
 * not HTTP (ssh, databases): the client's first line is the one-time token
 * (`TOKEN\n`, at most 128 bytes, within 10 s); then the connection is carried
 * to the guest port as raw bytes. The token admits exactly one connection:
 * it is consumed (audited `tunnel.session`) before the guest is dialled. A
 * missing, wrong or reused token gets one line `cordon-tunnel: refused (REASON)`
 * and the connection is closed, audited as `tunnel.refused`; a right token
 * whose use cannot be recorded gets `refused (audit-unavailable)` and stays
 * spent. `cordon tunnel connect` speaks this from the terminal.
 *
 * Connections are recorded like in HTTP mode (gate.ts): `tunnel.connect`
 * before the first byte is read, `tunnel.disconnect` with the bytes.
 */
import { createServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Gate, GateHost, GateStats, RefusalReason } from './gate.js';
import { trackConnection } from './connection.js';
import { secretMatches } from './token.js';

/** Longest first line (the token and its line end). */
const MAX_LINE_BYTES = 128;
/** How long a client has to send its token. */
const TOKEN_WAIT_MS = 10_000;

export function createTcpGate(host: GateHost): Gate {
  const stats: GateStats = { connections: 0, refused: 0, requests: 0, bytesIn: 0, bytesOut: 0 };
  const conns = new Map<Socket, Promise<unknown>>();
  const guests = new Set<Duplex>();
  let tokenUsed = false;
  let seq = 0;

  const server = createServer({ pauseOnConnect: true }, onConnection);

  function onConnection(socket: Socket): void {
    const tracked = trackConnection(host, stats, socket, { active: conns.size, nextId: () => ++seq });
    if (!tracked) return;
    conns.set(socket, tracked.done);
    void tracked.done.finally(() => conns.delete(socket));
    void tracked.audited.then((ok) => (ok && host.isOpen() ? admit(socket, tracked.id, tracked.peer) : socket.destroy()));
  }

  function refuse(socket: Socket, id: number, peer: string, reason: RefusalReason): void {
    stats.refused++;
    host.record('tunnel.refused', { connection: id, peer }, { reason, decision: 'deny' }).catch(() => undefined);
    endAndClose(socket, `cordon-tunnel: refused (${reason})\n`);
  }

  /** Read the token line, spend the token, then carry the connection to the guest. */
  function admit(socket: Socket, id: number, peer: string): void {
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.off('data', onData); // refused: a token that comes later is not read
      refuse(socket, id, peer, 'missing-token');
    }, TOKEN_WAIT_MS);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(0x0a);
      if (nl < 0 && head.length < MAX_LINE_BYTES) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      if (nl < 0) return refuse(socket, id, peer, 'bad-token');
      const token = head.subarray(0, nl).toString('utf8').replace(/\r$/, '');
      void connectGuest(socket, id, peer, token, head.subarray(nl + 1));
    };
    socket.on('data', onData);
    socket.on('end', () => clearTimeout(timer));
    socket.resume();
  }

  async function connectGuest(socket: Socket, id: number, peer: string, token: string, rest: Buffer): Promise<void> {
    if (token === '') return refuse(socket, id, peer, 'missing-token');
    if (!secretMatches(token, host.tokenHash)) return refuse(socket, id, peer, 'bad-token');
    if (tokenUsed) return refuse(socket, id, peer, 'token-used');
    tokenUsed = true; // before any await: two racing connections cannot both spend it
    stats.requests++;
    try {
      await host.record('tunnel.session', { via: 'tcp', connection: id });
    } catch {
      return refuse(socket, id, peer, 'audit-unavailable'); // spent, but its use could not be recorded: refuse
    }
    let guest: Duplex;
    try {
      guest = await host.openGuest();
    } catch (err) {
      const code = (err as { guestCode?: string; code?: string }).guestCode ?? (err as { code?: string }).code ?? 'error';
      endAndClose(socket, `cordon-tunnel: the guest port could not be reached (${code})\n`);
      return;
    }
    if (socket.destroyed || !host.isOpen()) {
      guest.destroy();
      socket.destroy();
      return;
    }
    guests.add(guest);
    guest.on('error', () => undefined);
    guest.on('close', () => {
      guests.delete(guest);
      socket.destroy();
    });
    socket.on('close', () => guest.destroy());
    guest.on('data', () => host.touch());
    socket.on('data', () => host.touch());
    host.touch();
    if (rest.length > 0) guest.write(rest);
    guest.pipe(socket);
    socket.pipe(guest);
    socket.resume();
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
      const pending = [...conns.values()];
      for (const s of conns.keys()) s.destroy();
      await Promise.allSettled(pending);
    },
  };
}

/**
 * Write the last line and close the connection once it is flushed: a client
 * that never ends its side keeps neither the socket nor its slot (and no
 * later bytes of it are read).
 */
function endAndClose(socket: Socket, line: string): void {
  socket.end(line, () => socket.destroy());
}
