/**
 * `cordon bench sandbox`: how fast each sandbox back end starts and runs
 * commands, and whether it survives churn. Figures are grouped by back end,
 * units in the key names:
 *
 * - `coldMs`: create (a cold boot, for microvm) to the first exec result (median);
 * - `warmMs`: create from the warm pool (microvm) or a second create (others) to the first exec result (median);
 * - `snapshotMs` (microvm): create by snapshot restore to the first exec result (median);
 * - `execP50Ms`, `execP95Ms`: round trip of `true` in a running sandbox;
 * - `idleRssMiB`: resident memory of the VMM/runtime of an idle 256 MiB sandbox
 *   (microvm: cold-booted; `idleRssRestoredMiB`: restored from a snapshot, which touches less guest memory);
 *   microvm also reports the file-backed part of each (`idleRssFileMiB`, `idleRssRestoredFileMiB`:
 *   QEMU's binary and libraries and, after a cold boot, the mapped kernel; the page cache holds
 *   them once for all VMs) and `idleRssAfterBurstMiB`: a restored sandbox 5 s after a command
 *   that used 100 MiB (what free page reporting gives back);
 * - `cycles`, `failures`, `cycleP50Ms`: consecutive create → exec → destroy, any error or leftover process counted.
 *
 * A back end that is missing or unavailable is reported as `{ skipped: reason }`.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateDir, sleep } from '../util/index.js';
import { alive } from '../util/pidlock.js';
import { newSandboxId } from '../sandbox/index.js';
import { MicrovmBackend } from '../sandbox/index.js';
import type { BackendSandbox, Isolation, SandboxBackend, SandboxSpec } from '../sandbox/index.js';

export interface SandboxBenchOptions {
  /** `$CORDON_HOME` (image, snapshots); run directories are made in a temporary directory inside it. */
  home: string;
  /** create → exec → destroy cycles per back end. @default 50 */
  cycles?: number;
  /** Exec round trips timed per back end. @default 120 */
  execRuns?: number;
  /** Starts timed per start path (median reported). @default 5 */
  starts?: number;
  /** The back ends to measure (see `createBackends`); the bench closes them. */
  backends: Partial<Record<Isolation, SandboxBackend>>;
  /** Progress lines for a terminal. */
  onProgress?: (line: string) => void;
}

export interface BackendFigures {
  coldMs: number;
  warmMs: number;
  snapshotMs?: number;
  execP50Ms: number;
  execP95Ms: number;
  idleRssMiB: number | null;
  idleRssFileMiB?: number | null;
  idleRssRestoredMiB?: number | null;
  idleRssRestoredFileMiB?: number | null;
  idleRssAfterBurstMiB?: number | null;
  cycles: number;
  failures: number;
  cycleP50Ms: number;
  tier: string;
  /** The first few failure messages, if any. */
  errors?: string[];
}

export type SandboxBenchResult = Record<Isolation, BackendFigures | { skipped: string }>;

const ORDER: Isolation[] = ['microvm', 'gvisor', 'bubblewrap'];
/** The VM shape measured: a 256 MiB, 1 vCPU sandbox. */
const SHAPE = { vcpus: 1, memoryMiB: 256, diskMiB: 2048 };

/**
 * Measure every back end in `backends`, one after another (they share the CPU).
 * @example
 * const figures = await benchSandbox({ home: cordonHome(), backends: createBackends({ home }) });
 */
export async function benchSandbox(o: SandboxBenchOptions): Promise<SandboxBenchResult> {
  const out = {} as SandboxBenchResult;
  const work = mkdtempSync(join(ensurePrivateDir(join(o.home, 'run')), 'bench-'));
  try {
    for (const isolation of ORDER) {
      const backend = o.backends[isolation];
      if (!backend) {
        out[isolation] = { skipped: `no ${isolation} back end in this build` };
        continue;
      }
      try {
        const a = await backend.available();
        if (!a.ok) {
          out[isolation] = { skipped: `${a.reason ?? 'unavailable'}${a.fix ? ` (fix: ${a.fix})` : ''}` };
          continue;
        }
        o.onProgress?.(`${isolation}: measuring`);
        out[isolation] = backend instanceof MicrovmBackend
          ? await benchMicrovm(backend, o, { home: o.home, work })
          : await benchGeneric(backend, o, { home: o.home, work });
      } catch (err) {
        out[isolation] = { skipped: `the benchmark failed: ${(err as Error).message}` };
      } finally {
        await backend.close();
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return out;
}

async function benchMicrovm(pooled: MicrovmBackend, o: SandboxBenchOptions, at: Place): Promise<BackendFigures> {
  const starts = o.starts ?? 5;
  const base = pooled.options;
  const cold = new MicrovmBackend({ ...base, snapshots: 'off', poolSize: 0 });
  const restore = new MicrovmBackend({ ...base, snapshots: 'auto', poolSize: 0 });
  const pool = new MicrovmBackend({ ...base, snapshots: 'auto', poolSize: 1 });
  try {
    o.onProgress?.('microvm: cold boots');
    const coldRuns = await startRuns(cold, Math.min(starts, 3), at, 'agent');
    const coldIdle = await idleResident(cold, at);
    o.onProgress?.('microvm: snapshot (made once per VM shape) and restores');
    await restore.warm(SHAPE);
    const snapshotRuns = await startRuns(restore, starts, at, 'agent');
    const restoredIdle = await idleResident(restore, at);
    const idleRssAfterBurstMiB = await rssAfterBurst(restore, at);
    o.onProgress?.('microvm: warm pool');
    const poolRuns: number[] = [];
    for (let i = 0; i < starts; i++) {
      await pool.warm(SHAPE); // waits until the pool is full again
      poolRuns.push(...(await startRuns(pool, 1, at, 'agent')));
    }
    o.onProgress?.('microvm: exec round trips');
    const exec = await execTimes(restore, o.execRuns ?? 120, at, 'agent');
    o.onProgress?.(`microvm: ${o.cycles ?? 50} create → exec → destroy cycles`);
    const cycles = await churn(pool, o.cycles ?? 50, at, 'agent');
    return {
      coldMs: median(coldRuns), warmMs: median(poolRuns), snapshotMs: median(snapshotRuns),
      execP50Ms: round1(percentile(exec.times, 0.5)), execP95Ms: round1(percentile(exec.times, 0.95)),
      idleRssMiB: coldIdle.rssMiB, idleRssFileMiB: coldIdle.fileMiB,
      idleRssRestoredMiB: restoredIdle.rssMiB, idleRssRestoredFileMiB: restoredIdle.fileMiB, idleRssAfterBurstMiB,
      ...cycles, tier: exec.tier,
    };
  } finally {
    await Promise.all([cold.close(), restore.close(), pool.close()]);
  }
}

async function benchGeneric(backend: SandboxBackend, o: SandboxBenchOptions, at: Place): Promise<BackendFigures> {
  const starts = o.starts ?? 5;
  const runs = await startRuns(backend, starts + 1, at, undefined);
  const exec = await execTimes(backend, o.execRuns ?? 120, at, undefined);
  const idleRssMiB = await idleRss(backend, at);
  const cycles = await churn(backend, o.cycles ?? 50, at, undefined);
  return {
    coldMs: runs[0]!, warmMs: median(runs.slice(1)), execP50Ms: round1(percentile(exec.times, 0.5)),
    execP95Ms: round1(percentile(exec.times, 0.95)), idleRssMiB, ...cycles, tier: exec.tier,
  };
}

function spec(isolation: Isolation): SandboxSpec {
  return { id: newSandboxId(), agent: 'bench', isolation, ...SHAPE, timeoutMs: 600_000, maxOutputBytes: 1 << 20, env: {} };
}

/** Where the run directories go, and the home the back ends get. */
interface Place {
  home: string;
  work: string;
}

async function create(backend: SandboxBackend, at: Place): Promise<BackendSandbox> {
  const runDir = mkdtempSync(join(at.work, 'sb-'));
  try {
    return await backend.create(spec(backend.isolation), { home: at.home, runDir });
  } catch (err) {
    rmSync(runDir, { recursive: true, force: true });
    throw err;
  }
}

async function execTrue(sb: BackendSandbox, user: string | undefined): Promise<void> {
  const r = await sb.channel.exec({ argv: ['true'], ...(user ? { user } : {}), timeoutMs: 30_000 });
  if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode ?? r.signal}`);
}

/** ms from create() to the result of the first exec, `n` times. */
async function startRuns(backend: SandboxBackend, n: number, at: Place, user: string | undefined): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    const sb = await create(backend, at);
    try {
      await execTrue(sb, user);
      times.push(Math.round(performance.now() - started));
    } finally {
      await sb.destroy();
    }
  }
  return times;
}

async function execTimes(backend: SandboxBackend, n: number, at: Place, user: string | undefined): Promise<{ times: number[]; tier: string }> {
  const sb = await create(backend, at);
  try {
    for (let i = 0; i < 5; i++) await execTrue(sb, user); // warm up
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      await execTrue(sb, user);
      times.push(performance.now() - t);
    }
    return { times, tier: sb.tier };
  } finally {
    await sb.destroy();
  }
}

async function idleRss(backend: SandboxBackend, at: Place): Promise<number | null> {
  const sb = await create(backend, at);
  try {
    await sleep(2_000);
    const kib = await sb.rssKiB();
    return kib === undefined ? null : Math.round(kib / 1024);
  } finally {
    await sb.destroy();
  }
}

/** Resident and file-backed memory of an idle sandbox's VMM (VmRSS and RssFile of its process), 2 s after it started. */
async function idleResident(backend: SandboxBackend, at: Place): Promise<{ rssMiB: number | null; fileMiB: number | null }> {
  const sb = await create(backend, at);
  try {
    await sleep(2_000);
    return residentMiB(sb.pid);
  } finally {
    await sb.destroy();
  }
}

/** How long the guest gets to report the pages it freed (Linux waits 2 s before reporting). */
const AFTER_BURST_MS = 5_000;

/** VmRSS of a sandbox's VMM `AFTER_BURST_MS` after a command that filled a 100 MiB buffer and exited. */
async function rssAfterBurst(backend: SandboxBackend, at: Place): Promise<number | null> {
  const sb = await create(backend, at);
  try {
    const r = await sb.channel.exec({ argv: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=100M', 'count=1'], user: 'agent', timeoutMs: 60_000 });
    if (r.exitCode !== 0) throw new Error(`dd exited ${r.exitCode ?? r.signal}`);
    await sleep(AFTER_BURST_MS);
    return residentMiB(sb.pid).rssMiB;
  } finally {
    await sb.destroy();
  }
}

/** VmRSS and RssFile of a process, in MiB (null when it cannot be read). */
export function residentMiB(pid: number | undefined): { rssMiB: number | null; fileMiB: number | null } {
  let status = '';
  try {
    if (pid !== undefined) status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    // gone, or another system's /proc
  }
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
    return m?.[1] ? Math.round(Number(m[1]) / 1024) : null;
  };
  return { rssMiB: field('VmRSS'), fileMiB: field('RssFile') };
}

async function churn(backend: SandboxBackend, n: number, at: Place, user: string | undefined): Promise<{ cycles: number; failures: number; cycleP50Ms: number; errors?: string[] }> {
  let failures = 0;
  const errors: string[] = [];
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    try {
      const sb = await create(backend, at);
      try {
        await execTrue(sb, user);
      } finally {
        await sb.destroy();
      }
      if (sb.pid !== undefined && alive(sb.pid)) throw new Error(`process ${sb.pid} survived destroy`);
      times.push(performance.now() - started);
    } catch (err) {
      failures++;
      if (errors.length < 5) errors.push((err as Error).message.split('\n')[0] ?? String(err));
    }
  }
  return { cycles: n, failures, cycleP50Ms: median(times), ...(errors.length > 0 ? { errors } : {}) };
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

function median(values: number[]): number {
  return Math.round(percentile(values, 0.5));
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
