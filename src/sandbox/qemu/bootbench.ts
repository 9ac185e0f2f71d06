/**
 * Boot the guest image many times and report how many boots reached the ready
 * marker and how long they took. This is how docs/boot-reliability.md was
 * measured; `cordon bench microvm` can reuse `measureBoots`.
 *
 * Run directly:
 *   node --import tsx src/sandbox/qemu/bootbench.ts --boots 20 --mode tuned [--vcpus 2] [--parallel 2]
 * (needs a built image in $CORDON_HOME, see `cordon image build`).
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cordonHome } from '../../util/index.js';
import { createOverlay, findImage, READY_MARKER, FAILED_MARKER, type ImageManifest } from '../image/index.js';
import { probeAccel } from './probe.js';
import { launchVm } from './vm.js';

export type BootMode = 'tuned' | 'plain';

export interface BootResult {
  ok: boolean;
  /** From spawning QEMU to the ready marker on the console. */
  markerMs?: number;
  rssKiB?: number;
  overlayMs: number;
  error?: string;
}

export interface MeasureBootsOptions {
  image: ImageManifest;
  boots: number;
  /** 'tuned': TSC rate given; 'plain': the kernel calibrates against the PIT. */
  mode: BootMode;
  tscKhz?: number;
  tscReliable?: boolean;
  /** @default 1 */
  vcpus?: number;
  /** @default 256 */
  memoryMiB?: number;
  /** Boots running at the same time (extra load). @default 1 */
  parallel?: number;
  /** A boot that has not printed the marker by then counts as stalled. @default 60000 */
  timeoutMs?: number;
  onBoot?: (index: number, r: BootResult) => void;
}

/** Boot `boots` times (with `parallel` at a time) and return each result. */
export async function measureBoots(o: MeasureBootsOptions): Promise<BootResult[]> {
  const results: BootResult[] = [];
  let next = 0;
  const worker = async () => {
    while (next < o.boots) {
      const i = next++;
      const r = await bootOnce(o);
      results[i] = r;
      o.onBoot?.(i, r);
    }
  };
  await Promise.all(Array.from({ length: o.parallel ?? 1 }, worker));
  return results;
}

async function bootOnce(o: MeasureBootsOptions): Promise<BootResult> {
  const runDir = mkdtempSync(join(tmpdir(), 'cordon-boot-'));
  const { path: diskPath, createMs } = await createOverlay(o.image.rootfsPath, join(runDir, 'disk.qcow2'));
  const vm = launchVm({
    runDir,
    machine: {
      accel: 'tcg',
      kernelPath: o.image.kernelPath,
      initrdPath: o.image.initrdPath,
      diskPath,
      vcpus: o.vcpus ?? 1,
      memoryMiB: o.memoryMiB ?? 256,
      tscKhz: o.mode === 'tuned' ? o.tscKhz : undefined,
      tscReliable: o.mode === 'tuned' ? (o.tscReliable ?? false) : false,
      kernelArgs: ['cordon.init=/sbin/cordon-ready'],
    },
  });
  try {
    const { line, elapsedMs } = await vm.waitForConsole(new RegExp(`${READY_MARKER}|${FAILED_MARKER}`), o.timeoutMs ?? 60_000);
    const rssKiB = vm.rssKiB();
    if (line.includes(FAILED_MARKER)) return { ok: false, overlayMs: createMs, error: line };
    return { ok: true, markerMs: Math.round(elapsedMs), rssKiB, overlayMs: createMs };
  } catch (err) {
    return { ok: false, overlayMs: createMs, error: err instanceof Error ? err.message : String(err) };
  } finally {
    await vm.stop(5000);
    rmSync(runDir, { recursive: true, force: true });
  }
}

/** p-th percentile (0…100) of the numbers, nearest-rank. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function summarize(results: readonly BootResult[]) {
  const ok = results.filter((r) => r.ok);
  const ms = ok.map((r) => r.markerMs ?? 0);
  const rss = ok.flatMap((r) => (r.rssKiB ? [r.rssKiB / 1024] : []));
  return {
    boots: results.length,
    reachedMarker: ok.length,
    markerP50Ms: percentile(ms, 50),
    markerP90Ms: percentile(ms, 90),
    markerMinMs: percentile(ms, 0),
    markerMaxMs: percentile(ms, 100),
    rssP50MiB: percentile(rss, 50),
    overlayP50Ms: percentile(results.map((r) => r.overlayMs), 50),
    failures: results.filter((r) => !r.ok).map((r) => r.error?.slice(0, 160)),
  };
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string, dflt: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
  };
  const home = cordonHome();
  const image = findImage(home);
  if (!image) throw new Error(`no image in ${home}; run \`cordon image build\` first`);
  const probe = await probeAccel({ kernelPath: image.kernelPath, home });
  const mode = arg('mode', 'tuned') as BootMode;
  const results = await measureBoots({
    image,
    boots: Number(arg('boots', '20')),
    mode,
    vcpus: Number(arg('vcpus', '1')),
    parallel: Number(arg('parallel', '1')),
    timeoutMs: Number(arg('timeout-ms', '60000')),
    tscKhz: probe.tcg.tscKhz ?? undefined,
    tscReliable: probe.tcg.tscReliable,
    onBoot: (i, r) => process.stderr.write(`boot ${i + 1}: ${r.ok ? `ok ${r.markerMs} ms` : `FAILED ${r.error?.slice(0, 100)}`}\n`),
  });
  const leftovers = readdirSync(tmpdir()).filter((n) => n.startsWith('cordon-boot-'));
  process.stdout.write(JSON.stringify({ mode, tscKhz: probe.tcg.tscKhz, ...summarize(results), leftoverRunDirs: leftovers.length }, null, 2) + '\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
