/**
 * The floor of `cordon bench egress`: a bare Node.js CONNECT proxy, measured
 * in the same run as cordon to show what a proxy written for Node.js pays on
 * this machine before it does anything of its own.
 *
 * It is the least such a proxy can do: a `node:http` server whose `connect`
 * handler dials the requested host and port, answers `200`, and pipes the
 * two sockets into each other. No policy, no address checks, no SNI check,
 * no limits, no audit log. It runs in the bench's own process, as cordon's
 * door does.
 *
 * It is a reference, not a peer, and not the fastest relay Node allows:
 * `pipe()` is the textbook way, while cordon's relay reads the upstream
 * into reused buffers (relay.ts) and is lighter per chunk. A row where even
 * this proxy is behind a peer says what plain Node.js streams reach on the
 * machine at hand, no more.
 * It must never be reachable from anything but the bench: it relays
 * anywhere, so it listens on loopback only and lives as long as one run.
 *
 * @example
 * const floor = await startBareConnectProxy();
 * // CONNECT 127.0.0.1:<port> through 127.0.0.1:floor.port
 * await floor.close();
 */
import { createServer } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface BareConnectProxy {
  /** Loopback port it listens on. */
  port: number;
  close(): Promise<void>;
}

/**
 * Start the bare CONNECT proxy on 127.0.0.1. Anything but CONNECT gets 405.
 * @throws when the loopback port cannot be bound
 */
export async function startBareConnectProxy(): Promise<BareConnectProxy> {
  const sockets = new Set<Socket | Duplex>();
  const server = createServer((_req, res) => {
    res.writeHead(405, { 'content-type': 'text/plain' });
    res.end('the bench floor relays CONNECT only\n');
  });
  server.on('connect', function bareConnect(req, client: Duplex, head: Buffer) {
    const target = /^([^:\s]+):(\d{1,5})$/.exec(req.url ?? '');
    if (!target) {
      client.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const upstream = connect({ host: target[1]!, port: Number(target[2]) });
    sockets.add(client).add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    upstream.once('connect', () => {
      upstream.setNoDelay(true);
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: async function closeBareConnectProxy(): Promise<void> {
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
