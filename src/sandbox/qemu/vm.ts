/**
 * One running QEMU microVM: start it, watch its serial console, talk QMP to
 * it, and stop it leaving nothing behind (no process, no socket file).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SandboxError } from '../../errors/index.js';
import { sleep } from '../../util/index.js';
import { requireTools } from '../image/index.js';
import { buildQemuArgs, type QemuOptions } from './args.js';
import { connectQmp, type QmpClient } from './qmp.js';

export interface LaunchVmOptions {
  /** Machine options; the socket paths are chosen inside `runDir`. */
  machine: Omit<QemuOptions, 'controlSocketPath' | 'qmpSocketPath' | 'consoleLogPath'>;
  /** A private directory for this VM's sockets (keep it short: unix socket paths are limited to 107 bytes). */
  runDir: string;
  /** @default `qemu-system-x86_64` found on PATH */
  qemuPath?: string;
  /** Called with each console line. */
  onConsoleLine?: (line: string) => void;
  /** How much console output to keep for `consoleTail()`. @default 65536 */
  consoleTailBytes?: number;
  /** Arguments appended after the machine's (e.g. `-incoming fd:8` for a snapshot restore). @default [] */
  extraArgs?: string[];
  /** Open file descriptors QEMU inherits as fd 3, 4, … ('ignore' leaves a gap); name them `/proc/self/fd/N` in paths. @default [] */
  inheritFds?: (number | 'ignore')[];
  /** Run QEMU as this uid/gid (the caller must be root); supplementary groups are dropped. @default the caller's */
  uid?: number;
  gid?: number;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Vm {
  readonly pid: number;
  readonly controlSocketPath: string;
  readonly qmpSocketPath: string;
  /** The last `consoleTailBytes` of console output. */
  consoleTail(): string;
  /** Resolve with the first console line matching `pattern` (already seen lines count). */
  waitForConsole(pattern: RegExp, timeoutMs: number): Promise<{ line: string; elapsedMs: number }>;
  /** The QMP connection (opened on first use). */
  qmp(): Promise<QmpClient>;
  /** Settles when QEMU exits. */
  readonly exited: Promise<VmExit>;
  /** Resident memory of the QEMU process in KiB, if it is running. */
  rssKiB(): number | undefined;
  /**
   * Stop QEMU (QMP `quit`, then SIGKILL after `graceMs`) and remove its sockets.
   * @param graceMs @default 2000
   */
  stop(graceMs?: number): Promise<VmExit>;
}

/**
 * Start QEMU with the given machine.
 * @example
 * const vm = launchVm({ machine: { accel: 'tcg', kernelPath, initrdPath, diskPath, tscKhz }, runDir });
 * await vm.waitForConsole(/CORDON-GUEST-READY/, 60_000);
 * await vm.stop();
 */
export function launchVm(opts: LaunchVmOptions): Vm {
  const qemu = opts.qemuPath ?? requireTools(['qemu-system-x86_64'], 'starting a microVM')['qemu-system-x86_64'];
  const controlSocketPath = join(opts.runDir, 'control.sock');
  const qmpSocketPath = join(opts.runDir, 'qmp.sock');
  const args = [...buildQemuArgs({ ...opts.machine, controlSocketPath, qmpSocketPath }), ...(opts.extraArgs ?? [])];
  const started = performance.now();
  const child: ChildProcess = spawn(qemu, args, {
    stdio: ['ignore', 'pipe', 'pipe', ...(opts.inheritFds ?? [])],
    ...(opts.uid === undefined ? {} : { uid: opts.uid }),
    ...(opts.gid === undefined ? {} : { gid: opts.gid }),
  });
  child.on('error', () => undefined); // a failed spawn leaves pid undefined (thrown below); without a listener it would crash the process
  if (child.pid === undefined) throw new SandboxError('sandbox-start', `could not start ${qemu}`);
  const pid = child.pid;
  const tailMax = opts.consoleTailBytes ?? 65536;
  let tail = '';
  let stderr = '';
  const lines: string[] = [];
  const lineWaiters = new Set<(line: string) => void>();
  let partial = '';

  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => {
    tail = (tail + d).slice(-tailMax);
    const parts = (partial + d).split('\n');
    partial = parts.pop() ?? '';
    for (const raw of parts) {
      const line = raw.replace(/\r$/, '');
      if (lines.length < 10_000) lines.push(line);
      opts.onConsoleLine?.(line);
      for (const w of lineWaiters) w(line);
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => (stderr = (stderr + d).slice(-8192)));

  const exited = new Promise<VmExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  let exitInfo: VmExit | undefined;
  void exited.then((e) => (exitInfo = e));
  let qmpClient: Promise<QmpClient> | undefined;

  function waitForConsole(pattern: RegExp, timeoutMs: number): Promise<{ line: string; elapsedMs: number }> {
    const seen = lines.find((l) => pattern.test(l));
    if (seen !== undefined) return Promise.resolve({ line: seen, elapsedMs: performance.now() - started });
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        lineWaiters.delete(onLine);
      };
      const onLine = (line: string) => {
        if (!pattern.test(line)) return;
        done();
        resolve({ line, elapsedMs: performance.now() - started });
      };
      const timer = setTimeout(() => {
        done();
        reject(new SandboxError('sandbox-boot-timeout', `no console line matching ${pattern} within ${timeoutMs} ms`, {
          details: { consoleTail: tail.slice(-2000) },
        }));
      }, timeoutMs);
      lineWaiters.add(onLine);
      void exited.then((e) => {
        if (!lineWaiters.has(onLine)) return;
        done();
        reject(new SandboxError('sandbox-exited', `QEMU exited (${e.signal ?? `code ${e.code}`}) before the console matched ${pattern}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`, {
          details: { consoleTail: tail.slice(-2000), stderr: stderr.slice(-2000) },
        }));
      });
    });
  }

  async function openQmp(): Promise<QmpClient> {
    const deadline = performance.now() + 5000;
    for (;;) {
      if (exitInfo) throw new SandboxError('sandbox-exited', `QEMU exited before QMP was reachable: ${stderr.trim()}`);
      if (existsSync(qmpSocketPath)) {
        try {
          return await connectQmp(qmpSocketPath);
        } catch (err) {
          if (performance.now() > deadline) throw err;
        }
      }
      if (performance.now() > deadline) throw new SandboxError('sandbox-qmp', `QMP socket ${qmpSocketPath} did not appear`);
      await sleep(20);
    }
  }

  async function stop(graceMs = 2000): Promise<VmExit> {
    if (!exitInfo) {
      try {
        const q = await Promise.race([qmp(), sleep(500).then(() => undefined)]);
        await Promise.race([q?.execute('quit').catch(() => undefined), sleep(500)]);
      } catch {
        // QMP unreachable: fall through to signals
      }
      const quit = await Promise.race([exited, sleep(graceMs).then(() => undefined)]);
      if (!quit) child.kill('SIGKILL');
    }
    const e = await exited;
    if (qmpClient) void qmpClient.then((c) => c.close(), () => undefined);
    for (const p of [controlSocketPath, qmpSocketPath]) rmSync(p, { force: true });
    return e;
  }

  function qmp(): Promise<QmpClient> {
    qmpClient ??= openQmp();
    qmpClient.catch(() => (qmpClient = undefined));
    return qmpClient;
  }

  return {
    pid,
    controlSocketPath,
    qmpSocketPath,
    consoleTail: () => tail,
    waitForConsole,
    qmp,
    exited,
    rssKiB: () => readRssKiB(pid),
    stop,
  };
}

/** VmRSS of a process from /proc, in KiB. */
export function readRssKiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
