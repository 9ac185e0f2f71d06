/**
 * Which accelerator a sandbox gets, decided by booting, not by looking.
 *
 * KVM is used only if a real probe boot succeeds: the guest kernel, with no
 * initramfs and no disk, must reach its "VFS: Unable to mount root fs" panic
 * and QEMU must then exit cleanly (`panic=-1 -no-reboot`). An openable
 * `/dev/kvm` is not enough: nested KVM can be present and still crash QEMU or
 * crawl. Otherwise sandboxes use TCG, and the probe also measures the TSC
 * rate the guest will see (the host's), which TCG boots need (see args.ts).
 *
 * The result is cached in `$CORDON_HOME/accel.json`, keyed by the host's boot
 * id, kernel release and QEMU version, so it is probed once per host boot.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { release } from 'node:os';
import { z } from 'zod';
import { EnvironmentError } from '../../errors/index.js';
import { cordonHome, writeFileAtomic } from '../../util/index.js';
import { requireTools, runTool } from '../image/index.js';
import { buildQemuArgs } from './args.js';

const ROOT_PANIC = /VFS: Unable to mount root fs/;
const TSC_DETECTED = /tsc: Detected (\d+)\.(\d{3}) MHz (processor|TSC)/;
const TSC_FAILED = /tsc: (Unable to calibrate against PIT|Marking TSC unstable due to could not calculate)/;

const kvmSchema = z.object({
  usable: z.boolean(),
  reason: z.string().describe('why KVM is or is not used, in words'),
  probeMs: z.number().describe('wall time of the probe boot (0 if none ran)'),
});
const tcgSchema = z.object({
  tscKhz: z.number().int().nullable().describe('TSC rate the guest sees under TCG; null if unknown'),
  tscSource: z.enum(['guest-pit', 'host-cpuinfo', 'none']).describe('how tscKhz was measured'),
  tscReliable: z.boolean().describe('host TSC is invariant, so the guest may trust it (tsc=reliable)'),
  calibrationMs: z.number(),
});
export const accelProbeSchema = z.object({
  accel: z.enum(['kvm', 'tcg']),
  kvm: kvmSchema,
  tcg: tcgSchema,
  key: z.object({ bootId: z.string(), hostKernel: z.string(), qemuVersion: z.string() }),
  probedAt: z.string(),
});
export type AccelProbe = z.infer<typeof accelProbeSchema> & { cached: boolean };

export interface ProbeAccelOptions {
  /** The guest kernel (uncompressed vmlinux) to probe with. */
  kernelPath: string;
  /** Longest a probe boot may take. @default 20000 */
  timeoutMs?: number;
  /** Where accel.json is cached. @default cordonHome() */
  home?: string;
  /** Ignore the cache. @default false */
  force?: boolean;
  /** @default `qemu-system-x86_64` on PATH */
  qemuPath?: string;
  /** @default '/dev/kvm' */
  kvmDevice?: string;
}

/**
 * Decide KVM or TCG by booting, and measure what TCG boots need.
 * @example
 * const { accel, kvm, tcg } = await probeAccel({ kernelPath: image.kernelPath });
 * if (!kvm.usable) log.warn(`using TCG: ${kvm.reason}`);
 */
export async function probeAccel(opts: ProbeAccelOptions): Promise<AccelProbe> {
  const qemu = opts.qemuPath ?? requireTools(['qemu-system-x86_64'], 'probing the accelerator')['qemu-system-x86_64'];
  const home = opts.home ?? cordonHome();
  const cachePath = join(home, 'accel.json');
  const key = { bootId: hostBootId(), hostKernel: release(), qemuVersion: await qemuVersion(qemu) };
  if (!opts.force) {
    const cached = readCache(cachePath);
    if (cached && JSON.stringify(cached.key) === JSON.stringify(key)) return { ...cached, cached: true };
  }
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const kvm = await probeKvm(qemu, opts.kernelPath, timeoutMs, opts.kvmDevice ?? '/dev/kvm');
  const tcg = kvm.usable
    ? { tscKhz: null, tscSource: 'none' as const, tscReliable: hostTscInvariant(), calibrationMs: 0 }
    : await calibrateTsc(qemu, opts.kernelPath, timeoutMs);
  const result = { accel: kvm.usable ? ('kvm' as const) : ('tcg' as const), kvm, tcg, key, probedAt: new Date().toISOString() };
  writeFileAtomic(cachePath, JSON.stringify(result, null, 2) + '\n');
  return { ...result, cached: false };
}

async function probeKvm(qemu: string, kernelPath: string, timeoutMs: number, device: string): Promise<z.infer<typeof kvmSchema>> {
  if (!existsSync(device)) return { usable: false, reason: `${device} does not exist (no KVM module loaded, or no hardware virtualisation)`, probeMs: 0 };
  try {
    accessSync(device, constants.R_OK | constants.W_OK);
  } catch {
    return { usable: false, reason: `${device} is not readable and writable by this user (add it to the kvm group)`, probeMs: 0 };
  }
  const args = buildQemuArgs({ accel: 'kvm', kernelPath, memoryMiB: 128, quiet: false });
  const run = await bootUntil(qemu, args, timeoutMs, (line) => (ROOT_PANIC.test(line) ? 'stop-wait' : undefined));
  const probeMs = Math.round(run.elapsedMs);
  if (run.timedOut) return { usable: false, reason: `the probe boot did not reach the root-mount panic within ${timeoutMs} ms (KVM too slow or stuck)`, probeMs };
  if (!run.matched) {
    const why = run.stderr.split('\n').map((l) => l.trim()).find((l) => /KVM|kvm|MSR|error|Assertion/.test(l)) ?? run.stderr.trim().split('\n')[0] ?? 'no output';
    return { usable: false, reason: `QEMU failed under KVM (${run.exit}): ${why}`, probeMs };
  }
  if (run.exit !== 'code 0') return { usable: false, reason: `the probe kernel ran but QEMU did not exit cleanly (${run.exit})`, probeMs };
  return { usable: true, reason: `a probe boot under KVM reached the kernel's root-mount panic in ${probeMs} ms`, probeMs };
}

/**
 * Measure the TSC rate a TCG guest sees by letting the guest kernel calibrate
 * it against the PIT a few times (a calibration fails under host load; the
 * kernel then says so and we retry). The median of three good readings wins.
 */
async function calibrateTsc(qemu: string, kernelPath: string, timeoutMs: number): Promise<z.infer<typeof tcgSchema>> {
  const started = performance.now();
  const readings: number[] = [];
  const args = buildQemuArgs({ accel: 'tcg', kernelPath, memoryMiB: 128, quiet: false });
  for (let attempt = 0; attempt < 8 && readings.length < 3; attempt++) {
    let khz: number | undefined;
    await bootUntil(qemu, args, Math.min(timeoutMs, 10_000), (line) => {
      const m = TSC_DETECTED.exec(line);
      if (m?.[1] && m[2]) {
        khz = Number(m[1]) * 1000 + Number(m[2]);
        return 'kill';
      }
      return TSC_FAILED.test(line) ? 'kill' : undefined;
    });
    if (khz !== undefined) readings.push(khz);
  }
  const tscReliable = hostTscInvariant();
  const calibrationMs = Math.round(performance.now() - started);
  if (readings.length > 0) {
    const sorted = [...readings].sort((a, b) => a - b);
    return { tscKhz: sorted[Math.floor(sorted.length / 2)] ?? null, tscSource: 'guest-pit', tscReliable, calibrationMs };
  }
  const host = hostCpuinfoKhz();
  return host ? { tscKhz: host, tscSource: 'host-cpuinfo', tscReliable, calibrationMs } : { tscKhz: null, tscSource: 'none', tscReliable, calibrationMs };
}

interface BootRun {
  matched: boolean;
  timedOut: boolean;
  exit: string;
  stderr: string;
  elapsedMs: number;
}

/**
 * Run QEMU until `onLine` says to stop: 'kill' ends it at once, 'stop-wait'
 * marks success and waits for QEMU to exit by itself (within the timeout).
 */
function bootUntil(qemu: string, args: string[], timeoutMs: number, onLine: (line: string) => 'kill' | 'stop-wait' | undefined): Promise<BootRun> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let matched = false;
    let timedOut = false;
    let stderr = '';
    let partial = '';
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      const parts = (partial + d).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        const verdict = onLine(line);
        if (verdict === 'stop-wait') matched = true;
        if (verdict === 'kill') {
          matched = true;
          child.kill('SIGKILL');
        }
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (stderr = (stderr + d).slice(-4096)));
    child.on('error', (e) => (stderr += e.message));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ matched, timedOut: timedOut && !matched, exit: signal ? `signal ${signal}` : `code ${code}`, stderr, elapsedMs: performance.now() - started });
    });
  });
}

async function qemuVersion(qemu: string): Promise<string> {
  const { stdout } = await runTool(qemu, ['--version']);
  return /version (\S+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0] ?? 'unknown';
}

function hostBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

/** The host TSC keeps a constant rate and runs in all power states. */
function hostTscInvariant(): boolean {
  const flags = cpuFlags();
  return flags.has('constant_tsc') && flags.has('nonstop_tsc');
}

function cpuFlags(): Set<string> {
  try {
    const m = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return new Set((m?.[1] ?? '').split(/\s+/));
  } catch {
    return new Set();
  }
}

/**
 * Fallback TSC rate: /proc/cpuinfo's "cpu MHz" equals the TSC rate only when
 * no cpufreq driver changes the clock (typical of virtual machines).
 */
function hostCpuinfoKhz(): number | undefined {
  if (!hostTscInvariant() || existsSync('/sys/devices/system/cpu/cpu0/cpufreq')) return undefined;
  try {
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return m?.[1] ? Math.round(Number(m[1]) * 1000) : undefined;
  } catch {
    return undefined;
  }
}

function readCache(path: string): z.infer<typeof accelProbeSchema> | undefined {
  try {
    const parsed = accelProbeSchema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Throw unless the probe says TCG boots can be timed reliably. */
export function requireTscKhz(p: AccelProbe): number {
  if (p.tcg.tscKhz === null) {
    throw new EnvironmentError('env-tsc-unknown', 'cannot tell the TSC rate for TCG guests; boots may stall during TSC calibration', {
      fix: 'rerun the probe on an idle machine (`cordon doctor --reprobe`), or use a host with working KVM',
    });
  }
  return p.tcg.tscKhz;
}
