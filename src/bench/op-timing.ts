/**
 * Timing of one in-process operation repeated many times, shared by
 * `cordon bench identity` and `cordon bench secrets`: wall time of each call
 * (p50, p99, mean, µs) and the process's CPU time over the whole batch
 * divided by the number of calls. Each call is awaited before the next
 * starts, so the figures are what one request pays on an otherwise idle
 * process.
 */
import { cpus, loadavg } from 'node:os';

/** The figures of one operation. */
export interface OpFigures {
  /** Timed calls. */
  ops: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  /** User + system CPU time of the process over the batch, per call. */
  cpuUsPerOp: number;
  /** Calls per second, one at a time. */
  opsPerSec: number;
}

/** Where and under what load a run happened. */
export interface MachineSetup {
  node: string;
  cpus: number;
  loadAverageStart: number;
  loadAverageEnd: number;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;

/** The q-quantile (0..1) of sorted samples, nearest rank. */
function quantileSorted(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
}

function figures(samplesUs: Float64Array, cpuUs: number, wallMs: number): OpFigures {
  const n = samplesUs.length;
  const sorted = Float64Array.from(samplesUs).sort();
  let sum = 0;
  for (const s of sorted) sum += s;
  return {
    ops: n,
    p50Us: round1(quantileSorted(sorted, 0.5)),
    p99Us: round1(quantileSorted(sorted, 0.99)),
    meanUs: round1(sum / n),
    cpuUsPerOp: round1(cpuUs / n),
    opsPerSec: Math.round(n / (wallMs / 1000)),
  };
}

function cpuSince(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return d.user + d.system;
}

/**
 * Call `op(i)` for i = 0 … count-1, awaiting each, timing each call.
 * @param count at least 1
 */
export async function timeAsync(count: number, op: (i: number) => Promise<unknown>): Promise<OpFigures> {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`count ${count} must be a whole number ≥ 1`);
  const samples = new Float64Array(count);
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await op(i);
    samples[i] = (performance.now() - t0) * 1000;
  }
  const wallMs = performance.now() - wall0;
  return figures(samples, cpuSince(cpu0), wallMs);
}

/** The synchronous twin of {@link timeAsync} (no microtask between calls). */
export function timeSync(count: number, op: (i: number) => unknown): OpFigures {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`count ${count} must be a whole number ≥ 1`);
  const samples = new Float64Array(count);
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    op(i);
    samples[i] = (performance.now() - t0) * 1000;
  }
  const wallMs = performance.now() - wall0;
  return figures(samples, cpuSince(cpu0), wallMs);
}

/** Node version, cores and the 1-minute load average now (call `finish` at the end). */
export function machineSetup(): { finish(): MachineSetup } {
  const start = loadavg()[0]!;
  return {
    finish: () => ({ node: process.version, cpus: cpus().length, loadAverageStart: round1(start), loadAverageEnd: round1(loadavg()[0]!) }),
  };
}

/** A text table: one row per operation, p50 / p99 / mean µs, CPU µs per call, calls/s. */
export function formatOpTable(rows: ReadonlyArray<readonly [string, OpFigures]>): string {
  const head = ['operation', 'p50 µs', 'p99 µs', 'mean µs', 'CPU µs/op', 'ops/s'];
  const body = rows.map(([name, f]) => [name, f.p50Us.toFixed(1), f.p99Us.toFixed(1), f.meanUs.toFixed(1), f.cpuUsPerOp.toFixed(1), f.opsPerSec.toLocaleString('en')]);
  const widths = head.map((h, c) => Math.max(h.length, ...body.map((r) => r[c]!.length)));
  const line = (cells: string[]): string => cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}
