/**
 * Load generator of `cordon bench gateway`, run in its own process (forked
 * with an IPC channel): the same client for every system. Each job POSTs one
 * chat completion body to a URL over keep-alive connections (an undici
 * `Pool` driven through its handler interface, the lightest client Node
 * offers, so that it takes as little as it can of the cores it shares), `concurrency`
 * requests in flight, bounded by a request count and a time cap, and times
 * each request with `process.hrtime` (sub-millisecond). A streamed job times
 * the first whole server-sent event instead of the whole answer.
 */
import { Pool } from 'undici';

export interface LoadJob {
  url: string;
  headers: Record<string, string>;
  body: string;
  concurrency: number;
  /** Stop after this many timed requests. */
  requests: number;
  /** Untimed requests first (at the same concurrency). */
  warmup: number;
  /** Stop after this many seconds in any case. */
  capSeconds: number;
  /**
   * Time to the first whole server-sent event (the first blank line of the
   * body) instead of the whole response: the first piece an SDK can hand to
   * the application, whatever the sizes of the TCP reads that carried it.
   */
  firstChunk?: boolean;
  /** Keep at most this many latency samples (evenly spaced); requests/s still counts all. @default 20000 */
  keepSamples?: number;
}

export interface LoadResult {
  latencyMs: number[];
  done: number;
  seconds: number;
  errors: number;
  lastError?: string;
}

/**
 * One request on the pool, through undici's handler interface (no stream or
 * promise per chunk: the load generator shares the machine with what it
 * measures, so it should cost as little as it can). Resolves with the ms to
 * the whole answer, or to its first whole event (`firstChunk`).
 */
function once(pool: Pool, path: string, headers: Record<string, string>, job: LoadJob): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    let first = 0;
    let status = 0;
    let bytes = 0;
    let head = '';
    pool.dispatch({ path, method: 'POST', headers, body: job.body, headersTimeout: 10_000, bodyTimeout: 10_000 }, {
      onRequestStart() { /* nothing to set up */ },
      onResponseStart(_controller, statusCode) {
        status = statusCode;
      },
      onResponseData(_controller, chunk: Buffer) {
        bytes += chunk.length;
        if (!job.firstChunk || first !== 0) return;
        // The first whole server-sent event: what an SDK hands to the application.
        head += chunk.toString('latin1');
        if (/\r?\n\r?\n/.test(head)) first = Number(process.hrtime.bigint() - start) / 1e6;
      },
      onResponseEnd() {
        const whole = Number(process.hrtime.bigint() - start) / 1e6;
        if (status !== 200 || bytes === 0) reject(new Error(`HTTP ${status}, ${bytes} bytes`));
        else if (job.firstChunk && first === 0) reject(new Error(`no whole server-sent event in ${bytes} bytes`));
        else resolve(job.firstChunk ? first : whole);
      },
      onResponseError(_controller, err: Error) {
        reject(err);
      },
    });
  });
}

export async function runLoad(job: LoadJob): Promise<LoadResult> {
  const u = new URL(job.url);
  const pool = new Pool(u.origin, { connections: job.concurrency, pipelining: 1 });
  const path = u.pathname + u.search;
  const headers = { ...job.headers, 'content-length': String(Buffer.byteLength(job.body)) };
  const result: LoadResult = { latencyMs: [], done: 0, seconds: 0, errors: 0 };
  const fail = (e: unknown): void => { result.errors++; result.lastError = (e as Error).message; };
  try {
    let left = job.warmup;
    await Promise.all(Array.from({ length: job.concurrency }, async () => {
      while (left-- > 0 && result.errors < 100) await once(pool, path, headers, job).catch(fail);
    }));
    const all: number[] = [];
    const end = Date.now() + job.capSeconds * 1000;
    let started = 0;
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: job.concurrency }, async () => {
      while (started < job.requests && Date.now() < end && result.errors < 1000) {
        started++;
        try { all.push(await once(pool, path, headers, job)); } catch (e) { fail(e); }
      }
    }));
    result.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    result.done = all.length;
    const keep = job.keepSamples ?? 20_000;
    const step = Math.max(1, all.length / keep);
    for (let i = 0; i < all.length; i += step) result.latencyMs.push(all[Math.floor(i)]!);
  } finally {
    await pool.destroy();
  }
  return result;
}

if (process.send) {
  process.on('message', (job: LoadJob) => {
    runLoad(job).then(
      (r) => process.send!(r),
      (e: unknown) => process.send!({ latencyMs: [], done: 0, seconds: 0, errors: 1, lastError: (e as Error).message } satisfies LoadResult),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
