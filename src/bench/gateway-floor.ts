/**
 * The floor of `cordon bench gateway`: a bare Node.js pass-through, measured
 * in the same run as cordon to show what any gateway written for Node.js
 * pays on this machine before it does anything of its own.
 *
 * It is the least a Node.js gateway can do: a `node:http` server that reads
 * the request body, sends it to the upstream through an undici `Pool` (the
 * client cordon uses) by its handler interface (`dispatch`, as cordon's
 * gateway calls it: not `request()`, whose stream, promise and abort-signal
 * machinery cordon avoids and the floor must not pay either), and writes
 * the answer back as it arrives, streams included. No authentication, no
 * limits, no filters, no audit log. It runs in the bench's own process, as
 * cordon's gateway does, so both pay the same for sharing the machine with
 * the client and the upstream.
 *
 * It is a reference, not a peer: the goals compare cordon with the
 * direct call, and a goal that even this pass-through misses on the machine
 * at hand is a limit of the machine and of Node.js, which the bench says.
 *
 * @example
 * const floor = await startPassThrough('http://127.0.0.1:4000');
 * // POST `${floor.url}/v1/chat/completions` reaches the upstream's /v1/chat/completions
 * await floor.close();
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool, type Dispatcher } from 'undici';

export interface PassThrough {
  /** Base URL on loopback, e.g. `http://127.0.0.1:40123`. */
  url: string;
  close(): Promise<void>;
}

/** Write the upstream's answer to `res` as it arrives: status, content type, each chunk, the end. */
function relayTo(res: ServerResponse, failed: (err: Error) => void): Dispatcher.DispatchHandler {
  return {
    // Present so undici takes this for a handler of its current interface (it looks for this member).
    onRequestStart() {},
    onResponseStart(_c, statusCode, headers) {
      if (statusCode < 200) return; // 1xx: the answer is still to come
      const type = headers['content-type'];
      res.writeHead(statusCode, typeof type === 'string' ? { 'content-type': type } : {});
    },
    onResponseData(_c, chunk) {
      res.write(chunk);
    },
    onResponseEnd() {
      res.end();
    },
    onResponseError(_c, err) {
      failed(err);
    },
  };
}

/** Connections the pass-through keeps to the upstream (more than the bench's highest concurrency). */
const UPSTREAM_CONNECTIONS = 256;

/**
 * Start the pass-through in front of `upstreamUrl` (origin only). The
 * client's headers other than hop-by-hop ones are not forwarded: it sends
 * the body with `content-type` and the client's `authorization`, which is
 * what the bench's upstream reads.
 * @throws when the loopback port cannot be bound
 */
export async function startPassThrough(upstreamUrl: string): Promise<PassThrough> {
  const pool = new Pool(upstreamUrl, { connections: UPSTREAM_CONNECTIONS });
  const server = createServer(function passThrough(req: IncomingMessage, res: ServerResponse) {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const headers: Record<string, string> = { 'content-type': req.headers['content-type'] ?? 'application/json' };
      if (req.headers.authorization) headers.authorization = req.headers.authorization;
      const failed = (err: Error): void => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`pass-through: the upstream failed: ${err.message}`);
      };
      try {
        pool.dispatch({ path: req.url ?? '/', method: 'POST', headers, body: Buffer.concat(parts) }, relayTo(res, failed));
      } catch (err) {
        failed(err as Error); // a pool that throws instead of calling onResponseError (closed)
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async function closePassThrough(): Promise<void> {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await pool.close();
    },
  };
}
