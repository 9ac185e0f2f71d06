/**
 * A sandbox whose guest agent speaks the control protocol on the stdin and
 * stdout of a host process (bwrap, `runsc run`): the part of a BackendSandbox
 * that the process back ends share. It waits for the agent's hello, enforces
 * the wall-clock lifetime, and tears everything down exactly once: runtime
 * processes (every descendant is checked gone), the back end's own leftovers
 * (cgroup, runtime state), then the sandbox's run directory.
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { SandboxError } from '../../errors/index.js';
import { sleep } from '../../util/index.js';
import { GuestChannel, type GuestChannelOptions } from '../protocol/index.js';
import type { BackendExit, BackendSandbox, IsolationTier } from '../types.js';
import { isRunning, processTree, rssKiB } from './proc.js';

/** How each resource limit is enforced for one sandbox. */
export interface EnforcedLimits {
  memory: 'cgroup' | 'rlimit-per-process' | 'runtime' | 'none';
  pids: 'cgroup' | 'rlimit-per-uid' | 'runtime' | 'none';
  cpu: 'cgroup' | 'runtime' | 'none';
  pause: 'cgroup-freezer' | 'runtime' | 'none';
  /** System calls: a deny list (bubblewrap), the runtime's own kernel (gVisor), or nothing. */
  syscalls: 'seccomp-denylist' | 'runtime' | 'none';
}

export interface StdioSandboxHooks {
  /** Stop the runtime at once (SIGKILL, `runsc delete --force`). Must not throw. */
  kill(): Promise<void>;
  /** Remove what outlives the processes (cgroup, runtime state). Runs after every process is gone. */
  cleanup(): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
}

export interface StartStdioOptions {
  id: string;
  tier: IsolationTier;
  /** Removed, with everything in it, when the sandbox ends. */
  runDir: string;
  /** The runtime process; its stdin/stdout carry the control protocol. */
  child: ChildProcess;
  /** Name of the runtime in messages, e.g. `bwrap`. */
  runtime: string;
  /** Wall-clock lifetime; the sandbox is destroyed with reason `timeout` when it passes. */
  lifetimeMs: number;
  limits: EnforcedLimits;
  hooks: StdioSandboxHooks;
  channel?: GuestChannelOptions;
  /** What to tell the user when the agent never says hello. */
  startFix: string;
}

const STDERR_TAIL_BYTES = 16 * 1024;
const EXIT_WAIT_MS = 5_000;

export class StdioSandbox implements BackendSandbox {
  readonly id: string;
  readonly tier: IsolationTier;
  readonly channel: GuestChannel;
  readonly pid: number | undefined;
  readonly exited: Promise<BackendExit>;
  readonly limits: EnforcedLimits;
  readonly #o: StartStdioOptions;
  readonly #childExit: Promise<void>;
  #stderr = '';
  #resolveExited!: (e: BackendExit) => void;
  #destroying: Promise<void> | undefined;
  #lifetime: NodeJS.Timeout;
  #paused = false;

  private constructor(o: StartStdioOptions) {
    this.#o = o;
    this.id = o.id;
    this.tier = o.tier;
    this.pid = o.child.pid;
    this.limits = o.limits;
    this.exited = new Promise((resolve) => { this.#resolveExited = resolve; });
    const { stdin, stdout, stderr } = o.child;
    if (!stdin || !stdout || !stderr) throw new TypeError('the runtime process needs piped stdin, stdout and stderr');
    stderr.on('data', (b: Buffer) => { this.#stderr = (this.#stderr + b.toString('utf8')).slice(-STDERR_TAIL_BYTES); });
    stdin.on('error', () => undefined); // EPIPE when the runtime dies; the exit handler reports it
    this.channel = new GuestChannel(Duplex.from({ readable: stdout, writable: stdin }), o.channel);
    this.channel.on('protocol-error', (err) => void this.destroy('protocol-error', err.message));
    this.#childExit = new Promise((resolve) => {
      if (o.child.exitCode !== null || o.child.signalCode !== null) return resolve();
      o.child.once('exit', () => resolve());
      o.child.once('error', () => resolve());
    });
    void this.#childExit.then(() => {
      const how = o.child.signalCode ?? `exit ${String(o.child.exitCode)}`;
      void this.destroy('runtime-exited', `${o.runtime} ended (${how})${this.#stderr ? `: ${this.stderrTail(500)}` : ''}`);
    });
    this.#lifetime = setTimeout(() => void this.destroy('timeout', `lifetime of ${o.lifetimeMs} ms reached`), o.lifetimeMs);
    this.#lifetime.unref();
  }

  /**
   * Wrap a started runtime process and wait for the agent's hello.
   * @throws SandboxError `sandbox-start-failed` (with the runtime's stderr) if it never comes; everything is cleaned up
   */
  static async start(o: StartStdioOptions): Promise<StdioSandbox> {
    const sb = new StdioSandbox(o);
    try {
      await Promise.race([sb.channel.ready, sb.#childExit.then(() => { throw new Error(`${o.runtime} exited`); })]);
      return sb;
    } catch (err) {
      await sb.destroy('start-failed');
      const end = await sb.exited;
      const why = end.reason === 'start-failed' ? (err as Error).message : `${end.reason}${end.detail ? ` (${end.detail})` : ''}`;
      const stderr = sb.stderrTail(2000);
      throw new SandboxError('sandbox-start-failed',
        `${o.runtime} did not start the guest agent: ${why}${stderr && !why.includes(stderr) ? `; ${o.runtime} said: ${stderr}` : ''}`,
        { fix: o.startFix, cause: err });
    }
  }

  /** The last bytes the runtime (and the agent) wrote to stderr. */
  stderrTail(bytes = 2000): string {
    return this.#stderr.slice(-bytes).trim();
  }

  /** Resident memory of the runtime, the agent and whatever runs inside, in KiB. */
  async rssKiB(): Promise<number | undefined> {
    if (this.pid === undefined || this.#destroying) return undefined;
    return rssKiB(processTree(this.pid));
  }

  async pause(): Promise<void> {
    this.#alive('pause');
    if (this.#o.limits.pause === 'none') {
      throw new SandboxError('sandbox-pause-unsupported', `sandbox ${this.id} cannot be paused: no freezer cgroup on this host`, {
        fix: 'run cordon as root on a host with the cgroup freezer (v1 freezer or v2), or use isolation: microvm',
      });
    }
    await this.#o.hooks.pause();
    this.#paused = true;
  }

  async resume(): Promise<void> {
    this.#alive('resume');
    if (!this.#paused) return;
    await this.#o.hooks.resume();
    this.#paused = false;
  }

  destroy(reason = 'destroyed', detail?: string): Promise<void> {
    this.#destroying ??= this.#teardown(reason, detail);
    return this.#destroying;
  }

  async #teardown(reason: string, detail: string | undefined): Promise<void> {
    clearTimeout(this.#lifetime);
    const problems: string[] = [];
    const step = async (name: string, fn: () => Promise<void> | void): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${name}: ${(err as Error).message}`);
      }
    };
    const before = this.pid === undefined ? [] : processTree(this.pid);
    this.channel.close();
    await step('kill', () => this.#o.hooks.kill());
    await step('wait', async () => {
      if (await settlesWithin(this.#childExit, EXIT_WAIT_MS)) return;
      this.#o.child.kill('SIGKILL');
      await settlesWithin(this.#childExit, EXIT_WAIT_MS);
    });
    await step('reap', async () => {
      for (let i = 0; i < 300 && before.some(isRunning); i++) {
        if (i === 100) for (const pid of before.filter(isRunning)) process.kill(pid, 'SIGKILL');
        await sleep(10);
      }
      const left = before.filter(isRunning);
      if (left.length > 0) throw new Error(`processes ${left.join(', ')} survived SIGKILL`);
    });
    await step('cleanup', () => this.#o.hooks.cleanup());
    await step('run directory', () => rmSync(this.#o.runDir, { recursive: true, force: true }));
    const details = [detail, ...problems].filter(Boolean).join('; ');
    this.#resolveExited(details ? { reason, detail: details } : { reason });
  }

  #alive(op: string): void {
    if (this.#destroying) throw new SandboxError('sandbox-gone', `sandbox ${this.id} is destroyed; cannot ${op}`, { fix: 'create a new sandbox' });
  }
}

async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms); });
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
