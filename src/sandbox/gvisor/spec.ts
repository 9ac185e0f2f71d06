/**
 * The OCI runtime spec (config.json) and the runsc command line for one
 * gVisor sandbox, as pure functions (tested with tables).
 *
 * The container process is the guest agent on stdin/stdout, as root of the
 * gVisor kernel with only the capabilities it needs to switch users and
 * manage files; commands run as `agent` (uid 1000) with none. The root file
 * system is the image's tree, read-only; /tmp, /var/tmp, /run, /dev/shm and
 * /home/agent are tmpfs inside the sandbox's memory. No network (`--network
 * none`: loopback only), no host paths besides the tree.
 */
import { AGENT_USER, GUEST_HOSTNAME, TREE_AGENT_PATH } from '../image/index.js';
import { AGENT_CAPABILITIES, SANDBOX_PATH } from '../bubblewrap/index.js';

export interface OciSpecOptions {
  /** Absolute path of the rootfs tree (mounted read-only). */
  rootfsDir: string;
  memoryMiB: number;
  /** CPU quota as a number of CPUs. */
  cpus: number;
  /** Most processes and threads. */
  maxProcesses: number;
  /** Size of each writable tmpfs (/tmp, /var/tmp, /home/agent). */
  tmpfsMiB: number;
  /** cgroup path for runsc's limits, or undefined with `--ignore-cgroups`. */
  cgroupsPath?: string;
  agentArgs?: readonly string[];
}

const CPU_PERIOD_US = 100_000;
const SMALL_TMPFS_MIB = 64;

/** An OCI 1.0 config.json for the sandbox. */
export function ociSpec(o: OciSpecOptions): Record<string, unknown> {
  const caps = [...AGENT_CAPABILITIES];
  const tmpfs = (destination: string, mode: string, sizeMiB: number, extra: string[] = []) => ({
    destination, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', `mode=${mode}`, `size=${sizeMiB}m`, ...extra],
  });
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [TREE_AGENT_PATH, '--stdio', ...(o.agentArgs ?? [])],
      env: [`PATH=${SANDBOX_PATH}`],
      cwd: '/',
      noNewPrivileges: true,
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 65_536, soft: 65_536 }, { type: 'RLIMIT_CORE', hard: 0, soft: 0 }],
    },
    root: { path: o.rootfsDir, readonly: true },
    hostname: GUEST_HOSTNAME,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=1m'] },
      tmpfs('/dev/shm', '1777', SMALL_TMPFS_MIB, ['noexec']),
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      tmpfs('/run', '755', SMALL_TMPFS_MIB),
      tmpfs('/tmp', '1777', o.tmpfsMiB),
      tmpfs('/var/tmp', '1777', o.tmpfsMiB),
      tmpfs(AGENT_USER.home, '750', o.tmpfsMiB, [`uid=${AGENT_USER.uid}`, `gid=${AGENT_USER.gid}`]),
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      resources: {
        memory: { limit: o.memoryMiB * 1024 * 1024 },
        pids: { limit: o.maxProcesses },
        cpu: { quota: Math.round(o.cpus * CPU_PERIOD_US), period: CPU_PERIOD_US },
      },
      ...(o.cgroupsPath ? { cgroupsPath: o.cgroupsPath } : {}),
    },
  };
}

export interface RunscGlobalOptions {
  /** runsc's state directory (inside the sandbox's run directory). */
  stateDir: string;
  /** Where runsc writes its own log (never stdout: that is the control channel). */
  logPath: string;
  /** @default 'ptrace' (works everywhere; 'kvm' needs a usable /dev/kvm) */
  platform?: string;
  /** No cgroup: runsc cannot enforce memory/pids/CPU. */
  ignoreCgroups?: boolean;
}

/** Flags that go before every runsc subcommand for this sandbox. */
export function runscGlobalArgs(o: RunscGlobalOptions): string[] {
  return [
    '--root', o.stateDir, '--network', 'none', '--platform', o.platform ?? 'ptrace',
    '--log', o.logPath, '--panic-log', o.logPath, ...(o.ignoreCgroups ? ['--ignore-cgroups'] : []),
  ];
}
