/**
 * Load generator of `cordon bench gateway`, run in its own process (forked
 * with an IPC channel): the same client for every system. Each job POSTs one
 * chat completion body to a URL over keep-alive connections, `concurrency`
 * requests in flight, bounded by a request count and a time cap, and times
 * each request with `process.hrtime` (sub-millisecond). A streamed job times
 * the first body chunk instead of the whole answer.
 */
import { Agent, request } from 'node:http';

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
  /** Time to the first body chunk instead of the whole response. */
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

/** One request; resolves with [ms to the whole answer or to its first chunk]. */
function once(agent: Agent, u: URL, job: LoadJob): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    let first = 0;
    const req = request({ agent, host: u.hostname, port: u.port, path: u.pathname, method: 'POST',
      headers: { ...job.headers, 'content-length': String(Buffer.byteLength(job.body)) } }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        if (bytes === 0) first = Number(process.hrtime.bigint() - start) / 1e6;
        bytes += c.length;
      });
      res.on('end', () => {
        const whole = Number(process.hrtime.bigint() - start) / 1e6;
        if (res.statusCode !== 200 || bytes === 0) reject(new Error(`HTTP ${res.statusCode}, ${bytes} bytes`));
        else resolve(job.firstChunk ? first : whole);
      });
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout after 10 s')));
    req.on('error', reject);
    req.end(job.body);
  });
}

export async function runLoad(job: LoadJob): Promise<LoadResult> {
  const u = new URL(job.url);
  const agent = new Agent({ keepAlive: true, maxSockets: job.concurrency });
  const result: LoadResult = { latencyMs: [], done: 0, seconds: 0, errors: 0 };
  const fail = (e: unknown): void => { result.errors++; result.lastError = (e as Error).message; };
  try {
    let left = job.warmup;
    await Promise.all(Array.from({ length: job.concurrency }, async () => {
      while (left-- > 0 && result.errors < 100) await once(agent, u, job).catch(fail);
    }));
    const all: number[] = [];
    const end = Date.now() + job.capSeconds * 1000;
    let started = 0;
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: job.concurrency }, async () => {
      while (started < job.requests && Date.now() < end && result.errors < 1000) {
        started++;
        try { all.push(await once(agent, u, job)); } catch (e) { fail(e); }
      }
    }));
    result.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    result.done = all.length;
    const keep = job.keepSamples ?? 20_000;
    const step = Math.max(1, all.length / keep);
    for (let i = 0; i < all.length; i += step) result.latencyMs.push(all[Math.floor(i)]!);
  } finally {
    agent.destroy();
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
