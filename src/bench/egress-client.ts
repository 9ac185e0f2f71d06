/**
 * The client of `cordon bench egress`, run in its own process (forked by
 * egress.ts) so that its event loop never shares a turn with the proxy being
 * measured. One small HTTP/1.1-over-TLS client, the same for every system:
 * TCP (no Nagle), then for a proxy `CONNECT target` and its `200`, then TLS
 * (full handshake, no session reuse) with the bench CA and SNI, then GETs.
 * Times come from `process.hrtime` (sub-millisecond).
 *
 * Jobs, one at a time over IPC:
 * - `tunnel`: sequential GETs of 1 KiB, each on a new connection (a new tunnel per request);
 * - `keepalive`: sequential GETs of 1 KiB on one connection (one tunnel);
 * - `rps`: `concurrency` keep-alive connections, each sending GETs back to back for `seconds`;
 * - `download`: one GET of `bytes` bytes on a new connection, timed from the request to the last byte.
 * Every loop is bounded in count and in time; errors are counted, not hidden.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { pathToFileURL } from 'node:url';

/** How to reach the upstream through a proxy: its address and the CONNECT target to ask for. */
export interface Via {
  host: string;
  port: number;
  /** `host:port` sent in the CONNECT line. */
  target: string;
}

export interface ClientSetup {
  upstreamPort: number;
  /** TLS server name (the upstream's certificate names it). */
  servername: string;
  /** The CA that signed the upstream's certificate (PEM). */
  caPem: string;
  /** A connection idle this long fails. */
  timeoutMs: number;
}

export type ClientJob =
  | { kind: 'tunnel' | 'keepalive'; via?: Via; requests: number; warmup: number; capMs: number }
  | { kind: 'rps'; via?: Via; concurrency: number; seconds: number; maxRequests: number }
  | { kind: 'download'; via?: Via; bytes: number };

export interface ClientResult {
  /** Per-request latencies in ms (tunnel, keepalive). */
  latenciesMs?: number[];
  /** Requests attempted, warm-ups included (CPU per request is counted over these). */
  attempts?: number;
  /** Requests completed (rps) or 1 (download). */
  requests?: number;
  /** Wall time of the timed part. */
  seconds?: number;
  errors: number;
  lastError?: string;
}

const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;
const HEAD_END = Buffer.from('\r\n\r\n');

/** Wait for the proxy's answer to CONNECT; resolve once it is a 200 (bytes after it are put back). */
function openTunnel(raw: Socket, via: Via): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const done = (err?: Error): void => {
      raw.off('data', onData);
      raw.off('error', done);
      raw.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onClose = (): void => done(new Error('the proxy closed the connection before answering CONNECT'));
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const end = buf.indexOf(HEAD_END);
      if (end < 0) {
        if (buf.length > 16384) done(new Error('the answer to CONNECT has no end of head'));
        return;
      }
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(buf.subarray(0, end).toString('latin1'))?.[1];
      raw.pause();
      if (buf.length > end + 4) raw.unshift(buf.subarray(end + 4));
      done(status === '200' ? undefined : new Error(`CONNECT ${via.target} answered ${status ?? 'something that is not HTTP'}`));
    };
    raw.on('data', onData);
    raw.once('error', done);
    raw.once('close', onClose);
    raw.write(`CONNECT ${via.target} HTTP/1.1\r\nHost: ${via.target}\r\n\r\n`);
  });
}

/** One HTTP/1.1 connection over TLS, one request at a time. */
class Conn {
  private pending: { resolve: (n: number) => void; reject: (e: Error) => void } | undefined;
  private head: Buffer = Buffer.alloc(0);
  private inHead = true;
  private want = 0;
  private got = 0;
  private dead: Error | undefined;

  constructor(readonly tls: TLSSocket, private readonly hostHeader: string) {
    tls.on('data', (c: Buffer) => this.onData(c));
    tls.on('error', (e: Error) => this.fail(e));
    tls.on('close', () => this.fail(new Error('the connection closed')));
  }

  /** GET `path`; resolves to the body length once all of it has arrived. */
  get(path: string): Promise<number> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.inHead = true;
      this.head = Buffer.alloc(0);
      this.got = 0;
      this.tls.write(`GET ${path} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n\r\n`);
    });
  }

  close(): void {
    this.dead ??= new Error('closed by the client');
    this.tls.destroy();
  }

  private onData(chunk: Buffer): void {
    if (!this.pending) return this.fail(new Error('bytes arrived with no request pending'));
    let body = chunk;
    if (this.inHead) {
      this.head = this.head.length === 0 ? chunk : Buffer.concat([this.head, chunk]);
      const end = this.head.indexOf(HEAD_END);
      if (end < 0) return;
      const text = this.head.subarray(0, end).toString('latin1');
      const status = /^HTTP\/1\.1 (\d{3})/.exec(text)?.[1];
      const length = /\r\ncontent-length: *(\d+)/i.exec(text)?.[1];
      if (status !== '200' || length === undefined) return this.fail(new Error(`the upstream answered ${status ?? '?'} without a length`));
      this.want = Number(length);
      this.inHead = false;
      body = this.head.subarray(end + 4);
    }
    this.got += body.length;
    if (this.got < this.want) return;
    const p = this.pending;
    this.pending = undefined;
    if (this.got > this.want) return this.fail(new Error(`${this.got - this.want} bytes more than the content-length`));
    p.resolve(this.got);
  }

  private fail(e: Error): void {
    this.dead ??= e;
    const p = this.pending;
    this.pending = undefined;
    p?.reject(e);
    this.tls.destroy();
  }
}

/** Open a connection to the upstream, directly or through a proxy's tunnel, and finish the TLS handshake. */
async function openConn(s: ClientSetup, via: Via | undefined): Promise<Conn> {
  const raw = netConnect({ host: via?.host ?? '127.0.0.1', port: via?.port ?? s.upstreamPort, noDelay: true });
  raw.setTimeout(s.timeoutMs, () => raw.destroy(new Error(`no byte for ${s.timeoutMs} ms`)));
  try {
    if (via) await openTunnel(raw, via);
    const tls = tlsConnect({ socket: raw, servername: s.servername, ca: s.caPem });
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error): void => reject(e);
      tls.once('error', onError);
      tls.once('close', () => reject(new Error('closed during the TLS handshake')));
      tls.once('secureConnect', () => { tls.off('error', onError); resolve(); });
    });
    raw.setTimeout(0);
    tls.setTimeout(s.timeoutMs, () => tls.destroy(new Error(`no byte for ${s.timeoutMs} ms`)));
    return new Conn(tls, s.servername);
  } catch (err) {
    raw.destroy();
    throw err;
  }
}

/** At most this many errors per job before it gives up. */
const MAX_ERRORS = 20;

async function sequential(s: ClientSetup, job: Extract<ClientJob, { kind: 'tunnel' | 'keepalive' }>): Promise<ClientResult> {
  const out: ClientResult = { latenciesMs: [], errors: 0 };
  const lat = out.latenciesMs!;
  let shared: Conn | undefined;
  const one = async (): Promise<number> => {
    const t0 = nowMs();
    if (job.kind === 'tunnel') {
      const c = await openConn(s, job.via);
      try {
        await c.get('/');
      } finally {
        c.close();
      }
    } else {
      shared ??= await openConn(s, job.via);
      await shared.get('/').catch((e: Error) => { shared?.close(); shared = undefined; throw e; });
    }
    return nowMs() - t0;
  };
  const end = Date.now() + job.capMs;
  const t0 = nowMs();
  for (let i = 0; i < job.warmup + job.requests && Date.now() < end && out.errors < MAX_ERRORS; i++) {
    out.attempts = i + 1;
    try {
      const ms = await one();
      if (i >= job.warmup) lat.push(Math.round(ms * 1000) / 1000);
    } catch (err) {
      out.errors += 1;
      out.lastError = (err as Error).message;
    }
  }
  out.seconds = (nowMs() - t0) / 1000;
  shared?.close();
  return out;
}

async function requestsPerSecond(s: ClientSetup, job: Extract<ClientJob, { kind: 'rps' }>): Promise<ClientResult> {
  const out: ClientResult = { requests: 0, errors: 0 };
  const conns = await Promise.all(Array.from({ length: job.concurrency }, () => openConn(s, job.via)));
  try {
    await Promise.all(conns.map((c) => c.get('/'))); // warm-up: one request on each connection
    const end = Date.now() + job.seconds * 1000;
    const t0 = nowMs();
    let sent = 0;
    await Promise.all(conns.map(async function worker(c0) {
      let c: Conn | undefined = c0;
      while (Date.now() < end && sent < job.maxRequests && out.errors < MAX_ERRORS) {
        sent += 1;
        try {
          c ??= await openConn(s, job.via);
          await c.get('/');
          out.requests! += 1;
        } catch (err) {
          out.errors += 1;
          out.lastError = (err as Error).message;
          c?.close();
          c = undefined;
        }
      }
      if (c && c !== c0) c.close();
    }));
    out.seconds = (nowMs() - t0) / 1000;
    out.attempts = sent + conns.length;
  } finally {
    for (const c of conns) c.close();
  }
  return out;
}

async function download(s: ClientSetup, job: Extract<ClientJob, { kind: 'download' }>): Promise<ClientResult> {
  const c = await openConn(s, job.via);
  try {
    const t0 = nowMs();
    const n = await c.get(`/bytes/${job.bytes}`);
    const seconds = (nowMs() - t0) / 1000;
    if (n !== job.bytes) throw new Error(`downloaded ${n} of ${job.bytes} bytes`);
    return { requests: 1, seconds, errors: 0 };
  } finally {
    c.close();
  }
}

/** Run one job. @throws when the job could not start at all (e.g. the proxy refused every connection) */
export function runJob(s: ClientSetup, job: ClientJob): Promise<ClientResult> {
  switch (job.kind) {
    case 'tunnel': case 'keepalive': return sequential(s, job);
    case 'rps': return requestsPerSecond(s, job);
    case 'download': return download(s, job);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.send) {
  let setup: ClientSetup | undefined;
  process.on('message', (m: { setup?: ClientSetup; job?: ClientJob }) => {
    if (m.setup) {
      setup = m.setup;
      process.send?.({ ok: true });
      return;
    }
    if (!setup || !m.job) {
      process.send?.({ ok: false, error: 'the client expected { setup } first, then { job }' });
      return;
    }
    runJob(setup, m.job).then(
      (result) => process.send?.({ ok: true, result }),
      (err: Error) => process.send?.({ ok: false, error: err.message }),
    );
  });
  process.once('disconnect', () => process.exit(0));
}
