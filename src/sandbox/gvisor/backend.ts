/**
 * The gVisor back end (tier `gvisor`): the guest agent runs under runsc, a
 * user-space kernel that answers the sandbox's system calls itself, so the
 * host kernel sees only the small set runsc's own seccomp filter allows.
 * Stronger than bubblewrap, weaker than a microVM (no separate guest kernel
 * behind hardware virtualisation).
 *
 * Enforced: no network (`--network none`: loopback only), the rootfs tree
 * read-only with tmpfs for writes, no host paths, memory / pids / CPU through
 * runsc's cgroup (when cordon runs as root), pause and resume through runsc.
 * runsc runs as root: rootless runsc is not supported here.
 *
 * Known limits of Debian bookworm's runsc (release 20221219) on the ptrace
 * platform: exec round trips cost 15-25 ms (bubblewrap: 2 ms); `statx` with
 * AT_NO_AUTOMOUNT, which coreutils 9.1 uses, fails with EINVAL, so `ls -l`,
 * `stat` and `cp -a` fail inside the sandbox while plain `stat(2)` callers
 * (Python, git) work; and a sandbox over its memory limit is OOM-killed as a
 * whole (ends with `runtime-exited`), not one process at a time.
 */
import { GUEST_AGENT_ARGS } from '../egress.js';
import { assertTierFits, startOrClean } from '../tier.js';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EnvironmentError, SandboxError } from '../../errors/index.js';
import { cordonHome } from '../../util/index.js';
import { ensureRootfsTree, findTreeImage, whichTool } from '../image/index.js';
import { probeSpec, StdioSandbox, type EnforcedLimits } from '../bubblewrap/index.js';
import {
  type BackendAvailability, type BackendContext, type SandboxBackend, type SandboxSpec,
} from '../types.js';
import { ociSpec, runscGlobalArgs } from './spec.js';

export interface GvisorBackendOptions {
  /** `$CORDON_HOME`, where `available()` looks for the image. @default cordonHome() */
  home?: string;
  /** runsc platform. @default 'ptrace' */
  platform?: 'ptrace' | 'kvm' | 'systrap';
  /** Most processes and threads in one sandbox. @default 1024 */
  maxProcesses?: number;
  /** How long to wait for the agent's hello. @default 20000 */
  helloTimeoutMs?: number;
  /** Where to look for runsc. @default $PATH plus the sbin directories */
  searchPath?: string;
}

const FIX_INSTALL = 'apt-get install -y runsc';
const RUNSC_CMD_TIMEOUT_MS = 10_000;

export class GvisorBackend implements SandboxBackend {
  readonly isolation = 'gvisor' as const;
  readonly #o: Required<Omit<GvisorBackendOptions, 'searchPath'>> & { searchPath: string | undefined };
  #probe: Promise<BackendAvailability> | undefined;

  constructor(opts: GvisorBackendOptions = {}) {
    this.#o = {
      home: opts.home ?? cordonHome(),
      platform: opts.platform ?? 'ptrace',
      maxProcesses: opts.maxProcesses ?? 1024,
      helloTimeoutMs: opts.helloTimeoutMs ?? 20_000,
      searchPath: opts.searchPath,
    };
  }

  /** Checks runsc, root and the image, then really runs one sandbox (once per instance). */
  available(): Promise<BackendAvailability> {
    this.#probe ??= this.#checkAvailable();
    return this.#probe;
  }

  async #checkAvailable(): Promise<BackendAvailability> {
    if (!whichTool('runsc', this.#o.searchPath)) return { ok: false, reason: 'runsc (gVisor) is not installed', fix: FIX_INSTALL };
    if (process.getuid?.() !== 0) {
      return { ok: false, reason: 'the gVisor back end runs runsc as root; cordon is not running as root', fix: 'run cordon as root, or use isolation: bubblewrap' };
    }
    try {
      await ensureRootfsTree(findTreeImage(this.#o.home));
    } catch (err) {
      return unavailable(err, 'cordon image build --force');
    }
    const runDir = mkdtempSync(join(this.#o.home, 'runsc-probe-'));
    try {
      const sb = await this.create(probeSpec('gvisor'), { home: this.#o.home, runDir });
      const r = await sb.channel.exec({ argv: ['/bin/true'], timeoutMs: 20_000 }).finally(() => sb.destroy('probe'));
      if (r.exitCode !== 0) return { ok: false, reason: `runsc started, but /bin/true exited with ${String(r.exitCode ?? r.signal)}`, fix: 'run `runsc --version`, and check the runsc log with --debug' };
      return { ok: true };
    } catch (err) {
      return unavailable(err, `runsc cannot run on this host; try \`runsc --platform ${this.#o.platform} do true\` to see why`);
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
  }

  /**
   * Start a sandbox and wait for its agent. On any failure, everything it made
   * is removed, `ctx.runDir` included.
   */
  create(spec: SandboxSpec, ctx: BackendContext): Promise<StdioSandbox> {
    return startOrClean(ctx.runDir, () => this.#create(spec, ctx));
  }

  async #create(spec: SandboxSpec, ctx: BackendContext): Promise<StdioSandbox> {
    assertTierFits(spec, 'gvisor', 'gVisor');
    const runsc = whichTool('runsc', this.#o.searchPath);
    if (!runsc) throw new EnvironmentError('env-missing-tool', 'the gVisor back end needs runsc', { fix: FIX_INSTALL });
    const tree = await ensureRootfsTree(ctx.image ?? findTreeImage(ctx.home));
    const root = process.getuid?.() === 0;
    const cgroupsPath = root ? cgroupPathFor(spec.id) : undefined;
    const bundle = join(ctx.runDir, 'bundle');
    mkdirSync(bundle, { recursive: true, mode: 0o700 });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(ociSpec({
      rootfsDir: tree, memoryMiB: spec.memoryMiB, cpus: spec.vcpus, maxProcesses: this.#o.maxProcesses,
      tmpfsMiB: spec.diskMiB, cgroupsPath, agentArgs: GUEST_AGENT_ARGS,
    })), { mode: 0o600 });
    const global = runscGlobalArgs({
      stateDir: join(ctx.runDir, 'state'), logPath: join(ctx.runDir, 'runsc.log'),
      platform: this.#o.platform, ignoreCgroups: !root,
    });
    const runscCmd = (args: string[]) => runQuiet(runsc, [...global, ...args]);
    const child = spawn(runsc, [...global, 'run', '--bundle', bundle, spec.id], {
      stdio: ['pipe', 'pipe', 'pipe'], cwd: '/', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
    });
    const how: EnforcedLimits['memory'] = root ? 'runtime' : 'none';
    return StdioSandbox.start({
      id: spec.id,
      tier: 'gvisor',
      runDir: ctx.runDir,
      child,
      runtime: 'runsc',
      lifetimeMs: spec.timeoutMs,
      limits: { memory: how, pids: root ? 'runtime' : 'none', cpu: root ? 'runtime' : 'none', pause: 'runtime', syscalls: 'runtime' },
      channel: { helloTimeoutMs: this.#o.helloTimeoutMs },
      startFix: `read ${join(ctx.runDir, 'runsc.log')} (kept only while the sandbox exists); \`runsc --platform ${this.#o.platform} do true\` shows whether runsc works on this host`,
      hooks: {
        async kill() {
          await runscCmd(['delete', '--force', spec.id]);
          if (child.pid !== undefined) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
        },
        async cleanup() {
          await runscCmd(['delete', '--force', spec.id]); // idempotent: removes state and cgroup if anything is left
        },
        async pause() {
          await runscCmd(['pause', spec.id]).then(orThrow('pause'));
        },
        async resume() {
          await runscCmd(['resume', spec.id]).then(orThrow('resume'));
        },
      },
    });
  }

  async close(): Promise<void> {
    // Nothing pooled.
  }
}

/** The cgroup runsc creates for a sandbox: below cordon's own memory cgroup, so host-level limits still apply. */
export function cgroupPathFor(id: string, selfCgroup?: string): string {
  let text = selfCgroup;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/cgroup', 'utf8');
    } catch {
      text = '';
    }
  }
  const lines = text.split('\n');
  const mine = lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l)) ?? lines.find((l) => l.startsWith('0::'));
  const base = mine?.slice(mine.indexOf(':', mine.indexOf(':') + 1) + 1) ?? '/';
  return `${base.replace(/\/$/, '')}/cordon-${id}`;
}

interface Quiet {
  code: number | null;
  stderr: string;
}

function runQuiet(cmd: string, args: string[]): Promise<Quiet> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: '/' });
    let stderr = '';
    c.stderr.on('data', (b: Buffer) => { stderr = (stderr + b.toString()).slice(-4000); });
    const timer = setTimeout(() => c.kill('SIGKILL'), RUNSC_CMD_TIMEOUT_MS);
    c.on('close', (code) => { clearTimeout(timer); resolve({ code, stderr }); });
    c.on('error', (e) => { clearTimeout(timer); resolve({ code: -1, stderr: e.message }); });
  });
}

function orThrow(op: string) {
  return (r: Quiet): void => {
    if (r.code !== 0) throw new SandboxError('sandbox-runtime-failed', `runsc ${op} failed: ${r.stderr.trim().slice(-500)}`, { fix: 'check the runsc log in the sandbox run directory' });
  };
}

function unavailable(err: unknown, fallbackFix: string): BackendAvailability {
  const e = err as { message?: string; fix?: string };
  return { ok: false, reason: e.message ?? String(err), fix: e.fix ?? fallbackFix };
}
