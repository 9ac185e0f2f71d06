/**
 * The bubblewrap command line, as pure functions (tested with a table of
 * expected flags): the `bwrap` arguments, and the launch chain that puts the
 * process into its cgroup, sets rlimits and drops to an unprivileged host uid
 * before bwrap starts.
 *
 * Two modes:
 * - `userns` (cordon runs as root): bwrap runs as an unprivileged host uid
 *   and gets a user namespace whose ids 0..65535 map to a range of host ids
 *   that no host account uses (written by cordon through `--userns-block-fd`).
 *   The guest agent is root of that namespace only, with six capabilities it
 *   needs to switch users and manage files; commands run as `agent` (uid 1000
 *   inside) with none. The unprivileged bwrap cannot walk `$CORDON_HOME`
 *   (private directories), so the launch chain first enters a private mount
 *   namespace and binds the tree on TREE_MOUNT_POINT there; the host's mount
 *   table never changes.
 * - `rootless` (cordon runs as a normal user): bwrap maps only the caller's
 *   uid, as uid 1000 inside; the agent and its commands all run as `agent`,
 *   and running a command as root is impossible.
 */
import { AGENT_USER, GUEST_HOSTNAME, TREE_AGENT_PATH } from '../image/index.js';

/** Capabilities the agent keeps (inside its user namespace only). */
export const AGENT_CAPABILITIES = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID'] as const;

/** Ids inside the sandbox, 0..65535, map to HOST_ID_BASE.. on the host (in systemd's container range; unused by accounts). */
export const HOST_ID_BASE = 0x4000_0000;
export const HOST_ID_COUNT = 65_536;

export const SANDBOX_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** userns mode: where the launch chain binds the tree, in its own mount namespace. */
export const TREE_MOUNT_POINT = '/mnt';

export type BwrapMode = 'userns' | 'rootless';

export interface BwrapArgsOptions {
  mode: BwrapMode;
  /** The rootfs tree as bwrap sees it: TREE_MOUNT_POINT in userns mode, the tree's path in rootless mode. */
  rootfsDir: string;
  /** userns mode: bwrap writes `{"child-pid": N}` here. */
  infoFd?: number;
  /** userns mode: bwrap waits for one byte here while cordon writes the id maps. */
  blockFd?: number;
  /** A classic BPF seccomp program to read from this fd (see seccomp.ts). */
  seccompFd?: number;
  /** Size of each writable tmpfs (/tmp, /var/tmp, /home/agent). */
  tmpfsBytes: number;
  /** Extra arguments for the guest agent after `--stdio`. */
  agentArgs?: readonly string[];
}

/** Size of /run and /dev/shm. */
const SMALL_TMPFS_BYTES = 64 * 1024 * 1024;

/**
 * The bwrap arguments that start the guest agent on stdin/stdout.
 * @example
 * bwrapArgs({ mode: 'userns', rootfsDir: TREE_MOUNT_POINT, infoFd: 3, blockFd: 4, tmpfsBytes: 1 << 30 })
 */
export function bwrapArgs(o: BwrapArgsOptions): string[] {
  const a: string[] = [];
  if (o.mode === 'userns') {
    if (o.infoFd === undefined || o.blockFd === undefined) throw new TypeError('userns mode needs infoFd and blockFd');
    // --disable-userns cannot be combined with --userns-block-fd; the id map
    // has no entry for the host's root, and the agent holds no CAP_SYS_ADMIN.
    a.push('--unshare-user', '--userns-block-fd', String(o.blockFd), '--info-fd', String(o.infoFd), '--uid', '0', '--gid', '0');
  } else {
    a.push('--unshare-user', '--disable-userns', '--uid', String(AGENT_USER.uid), '--gid', String(AGENT_USER.gid));
  }
  a.push(
    '--unshare-pid', '--unshare-net', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup',
    '--die-with-parent', '--new-session', '--hostname', GUEST_HOSTNAME,
  );
  a.push('--ro-bind', o.rootfsDir, '/');
  const tmpfs = (dest: string, perms: string, bytes: number) => a.push('--perms', perms, '--size', String(bytes), '--tmpfs', dest);
  a.push('--proc', '/proc', '--dev', '/dev');
  tmpfs('/dev/shm', '1777', SMALL_TMPFS_BYTES);
  tmpfs('/run', '0755', SMALL_TMPFS_BYTES);
  tmpfs('/tmp', '1777', o.tmpfsBytes);
  tmpfs('/var/tmp', '1777', o.tmpfsBytes);
  // userns mode: the agent chowns its home to uid 1000 before the first command; rootless: bwrap's own uid owns it.
  tmpfs(AGENT_USER.home, o.mode === 'userns' ? '0750' : '0700', o.tmpfsBytes);
  a.push('--chdir', '/', '--clearenv', '--setenv', 'PATH', SANDBOX_PATH);
  a.push('--cap-drop', 'ALL');
  if (o.mode === 'userns') for (const cap of AGENT_CAPABILITIES) a.push('--cap-add', cap);
  if (o.seccompFd !== undefined) a.push('--seccomp', String(o.seccompFd));
  a.push('--');
  // bwrap leaves its setup fds open (--userns-block-fd at least); close them so no command inherits one.
  const setupFds = [o.infoFd, o.blockFd, o.seccompFd].filter((fd): fd is number => fd !== undefined);
  if (setupFds.length > 0) a.push('/bin/sh', '-c', `exec ${setupFds.map((fd) => `${fd}<&-`).join(' ')}; exec "$0" "$@"`);
  a.push(TREE_AGENT_PATH, '--stdio', ...(o.agentArgs ?? []));
  return a;
}

export interface Rlimits {
  /** RLIMIT_NOFILE, soft and hard. */
  nofile: number;
  /** RLIMIT_FSIZE: largest file a process may write. */
  fsizeBytes?: number;
  /** RLIMIT_NPROC: only when no pids cgroup (it counts per uid, not per sandbox). */
  nproc?: number;
  /** RLIMIT_AS per process: only when no memory cgroup. */
  asBytes?: number;
}

/** /proc/self/limits row names of the limits cordon sets. */
const LIMIT_ROWS: Record<keyof Rlimits, string> = {
  nofile: 'Max open files', fsizeBytes: 'Max file size', nproc: 'Max processes', asBytes: 'Max address space',
};

/**
 * Lower each wanted limit to the host's hard limit (text of /proc/self/limits):
 * without CAP_SYS_RESOURCE a hard limit can only go down, and prlimit fails.
 */
export function capRlimits(wanted: Rlimits, procSelfLimits: string): Rlimits {
  const out: Rlimits = { ...wanted };
  for (const key of Object.keys(LIMIT_ROWS) as (keyof Rlimits)[]) {
    const v = wanted[key];
    if (v === undefined) continue;
    const row = procSelfLimits.split('\n').find((l) => l.startsWith(LIMIT_ROWS[key]));
    const hard = row?.slice(26).trim().split(/\s+/)[1];
    if (hard !== undefined && hard !== 'unlimited' && Number(hard) < v) out[key] = Number(hard);
  }
  return out;
}

export interface LaunchOptions {
  /** Absolute paths of the host tools (unshare and setpriv: userns mode). */
  tools: { bash: string; prlimit: string; bwrap: string; unshare?: string; setpriv?: string };
  /** userns mode: the rootfs tree on the host, bound on TREE_MOUNT_POINT in a private mount namespace. */
  treePath?: string;
  /** `cgroup.procs` files to join before anything else runs. */
  procsFiles: readonly string[];
  /** Descriptors 0..keepFds stay open; every other inherited fd is closed before bwrap starts. */
  keepFds: number;
  rlimits: Rlimits;
  /** userns mode: the host uid/gid bwrap runs as (setpriv). */
  hostId?: number;
  bwrap: readonly string[];
}

/**
 * The launch chain, one process image after another (the pid stays the same):
 * [unshare --mount] bash joins the cgroups, closes stray fds and binds the
 * tree, prlimit sets the rlimits, setpriv drops to `hostId`, then bwrap. The
 * bash script is fixed text; every value reaches it as an argument.
 */
export const LAUNCH_SCRIPT = [
  'keep=$1; tree=$2; shift 2',
  'for f in /proc/$$/fd/*; do n=${f##*/}; if [ "$n" -gt "$keep" ]; then eval "exec $n>&-"; fi; done',
  'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift',
  `if [ "$tree" != - ]; then mount --bind "$tree" ${TREE_MOUNT_POINT} || exit 125; fi`,
  'exec "$@"',
].join('\n');

export function launchArgv(o: LaunchOptions): string[] {
  const limits = [`--core=0`, `--nofile=${o.rlimits.nofile}:${o.rlimits.nofile}`];
  if (o.rlimits.fsizeBytes !== undefined) limits.push(`--fsize=${o.rlimits.fsizeBytes}:${o.rlimits.fsizeBytes}`);
  if (o.rlimits.nproc !== undefined) limits.push(`--nproc=${o.rlimits.nproc}:${o.rlimits.nproc}`);
  if (o.rlimits.asBytes !== undefined) limits.push(`--as=${o.rlimits.asBytes}:${o.rlimits.asBytes}`);
  const userns = o.hostId !== undefined;
  if (userns && (!o.tools.unshare || !o.tools.setpriv || !o.treePath)) throw new TypeError('userns mode needs unshare, setpriv and treePath');
  const mountNs = userns ? [o.tools.unshare!, '--mount', '--propagation', 'private', '--'] : [];
  const drop = userns ? [o.tools.setpriv!, `--reuid=${o.hostId}`, `--regid=${o.hostId}`, '--clear-groups', '--inh-caps=-all'] : [];
  return [
    ...mountNs, o.tools.bash, '--norc', '--noprofile', '-c', LAUNCH_SCRIPT, 'cordon-launch',
    String(o.keepFds), userns ? o.treePath! : '-', ...o.procsFiles, '--',
    o.tools.prlimit, ...limits, ...drop, o.tools.bwrap, ...o.bwrap,
  ];
}
