/**
 * The bubblewrap back end (tier `bubblewrap`, development only): the guest
 * agent runs as a host process inside Linux namespaces, on the image's root
 * file system tree mounted read-only, with tmpfs for what it may write.
 *
 * What it enforces (see `StdioSandbox.limits` for one sandbox):
 * - no network: a new, empty network namespace (only a down `lo`);
 * - no host files: the rootfs tree read-only, fresh /proc, a minimal /dev,
 *   tmpfs on /tmp, /var/tmp, /run, /dev/shm and /home/agent; nothing else;
 * - new pid, ipc, uts, cgroup and user namespaces; no_new_privs; a new
 *   session (no TIOCSTI into a host terminal); die-with-parent;
 * - root-run cordon: bwrap itself runs as an unused host uid and the
 *   sandbox's ids map to an unused host range, so the guest's root is not
 *   the host's root (see args.ts);
 * - memory, processes and CPU through a per-sandbox cgroup when the host
 *   lets cordon create one; otherwise RLIMIT_AS per process and RLIMIT_NPROC
 *   per uid (weaker, and stated); RLIMIT_FSIZE = diskMiB, no core dumps.
 * - a seccomp deny list (seccomp.ts): no new user namespaces, keyring, eBPF,
 *   perf, io_uring, mounts, modules (x86_64 only; elsewhere none, and stated).
 * What it cannot do: it shares the host kernel (a kernel bug is an escape),
 * and tmpfs writes count as memory.
 */
import { GUEST_AGENT_ARGS } from '../egress.js';
import { assertTierFits, startOrClean } from '../tier.js';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { EnvironmentError, SandboxError } from '../../errors/index.js';
import { cordonHome } from '../../util/index.js';
import { AGENT_USER, ensureRootfsTree, findTreeImage, whichTool } from '../image/index.js';
import {
  type BackendAvailability, type BackendContext, type SandboxBackend, type SandboxSpec,
} from '../types.js';
import { bwrapArgs, capRlimits, HOST_ID_BASE, HOST_ID_COUNT, launchArgv, TREE_MOUNT_POINT, type BwrapMode } from './args.js';
import { createCgroup, type SandboxCgroup } from './cgroup.js';
import { seccompFilter } from './seccomp.js';
import { StdioSandbox, type EnforcedLimits } from './stdio-sandbox.js';

export interface BubblewrapBackendOptions {
  /** `$CORDON_HOME`, where `available()` looks for the image. @default cordonHome() */
  home?: string;
  /** @default 'userns' when cordon runs as root, 'rootless' otherwise */
  mode?: BwrapMode;
  /** Most processes and threads in one sandbox (pids cgroup). @default 1024 */
  maxProcesses?: number;
  /** First host id of the range the sandbox's ids 0..65535 map to (userns mode). @default 0x40000000 */
  hostIdBase?: number;
  /** Put each sandbox in its own cgroup when the host allows it. @default true */
  cgroups?: boolean;
  /** How long to wait for the agent's hello. @default 15000 */
  helloTimeoutMs?: number;
  /** Where to look for bwrap, bash, prlimit and setpriv. @default $PATH plus the sbin directories */
  searchPath?: string;
}

const MIN_VERSION = [0, 8, 0] as const;
const FIX_INSTALL = 'apt-get install -y bubblewrap';
const INFO_TIMEOUT_MS = 5_000;

export class BubblewrapBackend implements SandboxBackend {
  readonly isolation = 'bubblewrap' as const;
  readonly #o: Required<Omit<BubblewrapBackendOptions, 'searchPath'>> & { searchPath: string | undefined };
  #probe: Promise<BackendAvailability> | undefined;

  constructor(opts: BubblewrapBackendOptions = {}) {
    const root = process.getuid?.() === 0;
    this.#o = {
      home: opts.home ?? cordonHome(),
      mode: opts.mode ?? (root ? 'userns' : 'rootless'),
      maxProcesses: opts.maxProcesses ?? 1024,
      hostIdBase: opts.hostIdBase ?? HOST_ID_BASE,
      cgroups: opts.cgroups ?? true,
      helloTimeoutMs: opts.helloTimeoutMs ?? 15_000,
      searchPath: opts.searchPath,
    };
    if (this.#o.mode === 'userns' && !root) throw new TypeError('userns mode needs cordon to run as root');
  }

  /** Checks the tools, the image and its tree, then starts and destroys one real sandbox (once per instance). */
  available(): Promise<BackendAvailability> {
    this.#probe ??= this.#checkAvailable();
    return this.#probe;
  }

  async #checkAvailable(): Promise<BackendAvailability> {
    const bwrap = whichTool('bwrap', this.#o.searchPath);
    if (!bwrap) return { ok: false, reason: 'bwrap is not installed', fix: FIX_INSTALL };
    const version = await bwrapVersion(bwrap);
    if (!version || compareVersions(version, MIN_VERSION) < 0) {
      return { ok: false, reason: `bwrap ${version?.join('.') ?? '(unknown version)'} is too old: cordon needs 0.8.0 or newer (--size, --disable-userns)`, fix: FIX_INSTALL };
    }
    for (const tool of ['bash', 'prlimit', ...(this.#o.mode === 'userns' ? ['setpriv', 'unshare'] : [])]) {
      if (!whichTool(tool, this.#o.searchPath)) return { ok: false, reason: `${tool} is not installed`, fix: 'apt-get install -y bash util-linux' };
    }
    try {
      await ensureRootfsTree(findTreeImage(this.#o.home));
    } catch (err) {
      return unavailable(err, 'cordon image build --force');
    }
    const runDir = mkdtempSync(join(this.#o.home, 'bwrap-probe-'));
    try {
      const sb = await this.create(probeSpec(), { home: this.#o.home, runDir });
      await sb.destroy('probe');
      return { ok: true };
    } catch (err) {
      return unavailable(err, 'check that user namespaces are enabled (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1)');
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
    assertTierFits(spec, 'bubblewrap', 'bubblewrap');
    const tree = await ensureRootfsTree(ctx.image ?? findTreeImage(ctx.home));
    const tools = this.#tools();
    const userns = this.#o.mode === 'userns';
    const cgroup = userns && this.#o.cgroups
      ? createCgroup({ name: `cordon-${spec.id}`, limits: { memoryMiB: spec.memoryMiB, pids: this.#o.maxProcesses, cpus: spec.vcpus } })
      : undefined;
    const filter = seccompFilter();
    const seccompFd = filter ? (userns ? 5 : 3) : undefined;
    const enforced = cgroup?.enforced ?? { memory: false, pids: false, cpu: false, freezer: false };
    const limits: EnforcedLimits = {
      memory: enforced.memory ? 'cgroup' : 'rlimit-per-process',
      pids: enforced.pids ? 'cgroup' : 'rlimit-per-uid',
      cpu: enforced.cpu ? 'cgroup' : 'none',
      pause: enforced.freezer ? 'cgroup-freezer' : 'none',
      syscalls: filter ? 'seccomp-denylist' : 'none',
    };
    let child;
    try {
      const argv = launchArgv({
        tools,
        treePath: userns ? tree : undefined,
        procsFiles: cgroup?.procsFiles ?? [],
        keepFds: seccompFd ?? (userns ? 4 : 2),
        rlimits: capRlimits({
          nofile: 65_536,
          fsizeBytes: spec.diskMiB * 1024 * 1024,
          nproc: enforced.pids ? undefined : this.#o.maxProcesses,
          asBytes: enforced.memory ? undefined : spec.memoryMiB * 1024 * 1024,
        }, readFileSync('/proc/self/limits', 'utf8')),
        hostId: userns ? this.#o.hostIdBase : undefined,
        bwrap: bwrapArgs(userns
          ? { mode: 'userns', rootfsDir: TREE_MOUNT_POINT, infoFd: 3, blockFd: 4, seccompFd, tmpfsBytes: spec.diskMiB * 1024 * 1024, agentArgs: GUEST_AGENT_ARGS }
          : { mode: 'rootless', rootfsDir: tree, seccompFd, tmpfsBytes: spec.diskMiB * 1024 * 1024, agentArgs: GUEST_AGENT_ARGS }),
      });
      child = spawn(argv[0]!, argv.slice(1), {
        stdio: Array<'pipe'>(1 + (seccompFd ?? (userns ? 4 : 2))).fill('pipe'),
        cwd: '/',
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
      });
    } catch (err) {
      await cgroup?.remove();
      throw err;
    }
    const spawned = child;
    if (filter && seccompFd !== undefined) {
      const w = (spawned.stdio as unknown[])[seccompFd] as Writable;
      w.on('error', () => undefined); // bwrap died first: the start fails with its stderr
      w.end(filter);
    }
    if (userns) void mapIds(spawned.stdio[3] as Readable, spawned.stdio[4] as Writable, this.#o.hostIdBase).catch(() => spawned.kill('SIGKILL'));
    const sb = await StdioSandbox.start({
      id: spec.id,
      tier: 'bubblewrap',
      runDir: ctx.runDir,
      child: spawned,
      runtime: 'bwrap',
      lifetimeMs: spec.timeoutMs,
      limits,
      channel: { helloTimeoutMs: this.#o.helloTimeoutMs },
      startFix: 'run `cordon doctor`; check that user namespaces are enabled and the image has the guest agent (`cordon image build`)',
      hooks: hooksFor(spawned.pid, cgroup),
    });
    if (userns) await prepareHome(sb);
    return sb;
  }

  async close(): Promise<void> {
    // Sandboxes are owned by the manager; nothing is pooled here.
  }

  #tools() {
    const find = (name: string): string => {
      const p = whichTool(name, this.#o.searchPath);
      if (!p) throw new EnvironmentError('env-missing-tool', `the bubblewrap back end needs ${name}`, { fix: name === 'bwrap' ? FIX_INSTALL : 'apt-get install -y bash util-linux' });
      return p;
    };
    return {
      bash: find('bash'), prlimit: find('prlimit'), bwrap: find('bwrap'),
      ...(this.#o.mode === 'userns' ? { setpriv: find('setpriv'), unshare: find('unshare') } : {}),
    };
  }
}

function hooksFor(pid: number | undefined, cgroup: SandboxCgroup | undefined) {
  return {
    async kill() {
      // bwrap's pid-1 inside dies with it (--die-with-parent), and the kernel kills the rest of the pid namespace.
      if (pid !== undefined) try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    },
    cleanup: async () => { await cgroup?.remove(); },
    pause: async () => { await cgroup?.freeze(); },
    resume: async () => { await cgroup?.thaw(); },
  };
}

/**
 * Wait for bwrap's `{"child-pid": N}` on the info fd, give the new user
 * namespace its id maps (0..65535 → base..), then release bwrap.
 */
async function mapIds(info: Readable, block: Writable, base: number): Promise<void> {
  let text = '';
  const pid = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('bwrap did not report its child pid')), INFO_TIMEOUT_MS);
    info.on('data', (b: Buffer) => {
      text += b.toString('utf8');
      const m = /"child-pid"\s*:\s*(\d+)/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    info.on('error', reject);
    info.on('end', () => reject(new Error('bwrap closed its info fd without a child pid')));
  });
  // Keep reading to the end: bwrap writes the rest of its JSON later, and a closed pipe would kill it (SIGPIPE).
  const map = `0 ${base} ${HOST_ID_COUNT}\n`;
  writeFileSync(`/proc/${pid}/uid_map`, map);
  writeFileSync(`/proc/${pid}/gid_map`, map);
  block.on('error', () => undefined);
  block.end('1');
}

/** /home/agent is a fresh tmpfs owned by the namespace's root: give it to the agent user, with the skeleton files. */
async function prepareHome(sb: StdioSandbox): Promise<void> {
  const { uid, gid, home } = AGENT_USER;
  const r = await sb.channel.exec({
    argv: ['/bin/sh', '-c', `cp -a /etc/skel/. ${home}/ 2>/dev/null; chown -R ${uid}:${gid} ${home} && chmod 0750 ${home}`],
    timeoutMs: 10_000,
  }).catch((err: unknown) => ({ exitCode: -1, error: err }));
  if (r.exitCode !== 0) {
    await sb.destroy('start-failed');
    throw new SandboxError('sandbox-start-failed', `could not prepare ${home} in sandbox ${sb.id} (exit ${String(r.exitCode)})`, {
      fix: 'rebuild the image (`cordon image build --force`)',
    });
  }
}

async function bwrapVersion(bwrap: string): Promise<number[] | undefined> {
  const out = await new Promise<string>((resolve) => {
    const c = spawn(bwrap, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let s = '';
    c.stdout.on('data', (b: Buffer) => { s += b.toString(); });
    c.on('close', () => resolve(s));
    c.on('error', () => resolve(''));
  });
  const m = /(\d+)\.(\d+)\.(\d+)/.exec(out);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

export function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function unavailable(err: unknown, fallbackFix: string): BackendAvailability {
  const e = err as { message?: string; fix?: string };
  return { ok: false, reason: e.message ?? String(err), fix: e.fix ?? fallbackFix };
}

/** A fresh sandbox id: `sb-` and 20 base32 characters. */
export function randomSandboxId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  return 'sb-' + [...randomBytes(20)].map((b) => alphabet[b & 31]).join('');
}

/** A small sandbox used only to prove the back end works on this host. */
export function probeSpec(isolation: SandboxSpec['isolation'] = 'bubblewrap'): SandboxSpec {
  return {
    id: randomSandboxId(), agent: 'probe', isolation,
    vcpus: 1, memoryMiB: 256, diskMiB: 64, timeoutMs: 60_000, maxOutputBytes: 1024 * 1024, env: {},
  };
}
