/**
 * The upstream of `cordon bench egress`: an HTTPS server on loopback, run in
 * its own process (forked by egress.ts, so that it never shares an event loop
 * with the proxy being measured). It gets its certificate over IPC, answers
 * with the port it listens on, and serves:
 *
 * - `GET /` → 1,024 bytes (the latency and requests/s rows);
 * - `GET /bytes/N` → N bytes, written with backpressure (the download row).
 *
 * It exits when its parent disconnects.
 */
import type { ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import { pathToFileURL } from 'node:url';

/** Body of `GET /`. */
export const SMALL_BODY_BYTES = 1024;
/** Largest `GET /bytes/N` served (the bench caps downloads well below this). */
const MAX_DOWNLOAD_BYTES = 8 * 1024 * 1024 * 1024;
const CHUNK = Buffer.alloc(256 * 1024, 'b');

export interface UpstreamSetup {
  certPem: string;
  keyPem: string;
}

function isSetup(m: unknown): m is UpstreamSetup {
  const s = m as UpstreamSetup;
  return typeof s === 'object' && s !== null && typeof s.certPem === 'string' && typeof s.keyPem === 'string';
}

/** Write `n` bytes, waiting for 'drain' whenever the socket is full. */
function sendBytes(res: ServerResponse, n: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
  let left = n;
  const pump = (): void => {
    while (left > 0) {
      const part = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= part.length;
      if (!res.write(part)) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

/** Start the server; resolves to its port. */
export function startUpstream(setup: UpstreamSetup): Promise<number> {
  const small = Buffer.alloc(SMALL_BODY_BYTES, 'a');
  const server = createServer({ cert: setup.certPem, key: setup.keyPem, keepAliveTimeout: 120_000 }, function serve(req, res) {
    const url = req.url ?? '/';
    if (url === '/') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': SMALL_BODY_BYTES });
      res.end(small);
      return;
    }
    const m = /^\/bytes\/(\d{1,11})$/.exec(url);
    const n = m ? Number(m[1]) : NaN;
    if (!(n >= 0 && n <= MAX_DOWNLOAD_BYTES)) {
      res.writeHead(404).end();
      return;
    }
    sendBytes(res, n);
  });
  server.on('tlsClientError', () => undefined);
  server.headersTimeout = 30_000;
  server.requestTimeout = 0;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.send) {
  process.once('message', (m: unknown) => {
    if (!isSetup(m)) {
      process.send?.({ ok: false, error: 'the upstream expected { certPem, keyPem }' });
      return;
    }
    startUpstream(m).then(
      (port) => process.send?.({ ok: true, port }),
      (err: Error) => process.send?.({ ok: false, error: err.message }),
    );
  });
  process.once('disconnect', () => process.exit(0));
}
