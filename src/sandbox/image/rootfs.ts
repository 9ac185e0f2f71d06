/**
 * The guest's root file system: a Debian minbase tree from debootstrap, made
 * into a sandbox guest (agent binaries, an unprivileged `agent` user, no DNS,
 * the egress proxy variables for login shells), then packed into an ext4
 * image with `mkfs.ext4 -d` (no loop mount, no mount privileges) and converted
 * to a compact qcow2 base.
 */
import {
  appendFileSync, chmodSync, copyFileSync, existsSync, lchownSync, mkdirSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { runTool } from './exec.js';
import { READY_SCRIPT_PATH, readyScript } from './initramfs.js';
import { environmentFile, GUEST_CA_PATH, profileScript } from '../egress.js';

/** The unprivileged account the agent's commands run as. */
export const AGENT_USER = { name: 'agent', uid: 1000, gid: 1000, home: '/home/agent', shell: '/bin/bash' } as const;
export const GUEST_HOSTNAME = 'cordon';

export interface DebootstrapOptions {
  debootstrap: string;
  dir: string;
  suite: string;
  mirror: string;
  include: readonly string[];
  /** Progress, 0…1, estimated from debootstrap's `I:` lines. */
  onFraction?: (fraction: number, line: string) => void;
}

/** debootstrap's phases in order, with the share of the run each one ends at. */
const PHASES: [RegExp, number][] = [
  [/^I: Retrieving (In)?Release/, 0.02],
  [/^I: Retrieving Packages/, 0.05],
  [/^I: Resolving dependencies/, 0.08],
  [/^I: Retrieving /, 0.3],
  [/^I: Validating /, 0.35],
  [/^I: Extracting /, 0.5],
  [/^I: Installing (core|base)/, 0.6],
  [/^I: Unpacking /, 0.75],
  [/^I: Configuring /, 0.95],
  [/^I: Base system installed successfully/, 1],
];

export async function debootstrap(o: DebootstrapOptions): Promise<void> {
  let fraction = 0;
  const args = ['--variant=minbase', `--include=${o.include.join(',')}`, o.suite, o.dir, o.mirror];
  await runTool(o.debootstrap, args, {
    onLine: (line) => {
      for (const [re, f] of PHASES) {
        if (re.test(line) && f >= fraction) {
          fraction = f;
          o.onFraction?.(fraction, line);
          break;
        }
      }
    },
  });
}

export interface CustomizeOptions {
  /** Host paths of the guest agent binaries; missing ones are skipped. */
  agentInit?: string;
  agentDaemon?: string;
}

/** Make a debootstrapped tree into a cordon guest. Returns which agent binaries went in. */
export function customizeRootfs(root: string, o: CustomizeOptions): { agentInit: boolean; agentDaemon: boolean } {
  const put = (rel: string, text: string, mode = 0o644) => {
    writeFileSync(join(root, rel), text, { mode });
    chmodSync(join(root, rel), mode);
  };
  put('etc/hostname', `${GUEST_HOSTNAME}\n`);
  put('etc/hosts', `127.0.0.1\tlocalhost\n127.0.1.1\t${GUEST_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n`);
  // The guest has no DNS: the egress proxy resolves names. An empty file makes that explicit.
  rmSync(join(root, 'etc/resolv.conf'), { force: true });
  put('etc/resolv.conf', '');
  put('etc/fstab', '/dev/vda / ext4 rw,noatime 0 1\n');
  // The only way out is the egress proxy behind 127.0.0.1:3128. Commands get these
  // variables from the sandbox manager; login shells and PAM sessions from here.
  mkdirSync(join(root, 'etc/profile.d'), { recursive: true });
  put('etc/profile.d/cordon-egress.sh', profileScript());
  put('etc/environment', environmentFile());
  // The manager puts the deployment CA here (and into the system bundle) when a sandbox starts.
  mkdirSync(join(root, GUEST_CA_PATH.slice(1), '..'), { recursive: true, mode: 0o755 });
  addAgentUser(root);
  put(READY_SCRIPT_PATH.slice(1), readyScript(), 0o755);
  const agentInit = installBinary(o.agentInit, join(root, 'sbin/cordon-init'));
  const agentDaemon = installBinary(o.agentDaemon, join(root, 'usr/sbin/cordon-agent'));
  // Package caches are dead weight in every sandbox's disk.
  for (const dir of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
    rmSync(join(root, dir), { recursive: true, force: true });
    mkdirSync(join(root, dir, 'partial'), { recursive: true });
  }
  return { agentInit, agentDaemon };
}

function addAgentUser(root: string): void {
  const u = AGENT_USER;
  const has = (file: string) => readFileSync(join(root, file), 'utf8').split('\n').some((l) => l.startsWith(`${u.name}:`));
  if (!has('etc/passwd')) appendFileSync(join(root, 'etc/passwd'), `${u.name}:x:${u.uid}:${u.gid}:cordon agent:${u.home}:${u.shell}\n`);
  if (!has('etc/group')) appendFileSync(join(root, 'etc/group'), `${u.name}:x:${u.gid}:\n`);
  if (!has('etc/shadow')) appendFileSync(join(root, 'etc/shadow'), `${u.name}:!:19000:0:99999:7:::\n`);
  if (existsSync(join(root, 'etc/gshadow')) && !has('etc/gshadow')) appendFileSync(join(root, 'etc/gshadow'), `${u.name}:!::\n`);
  const home = join(root, u.home.slice(1));
  mkdirSync(home, { recursive: true, mode: 0o750 });
  for (const f of ['.bashrc', '.profile']) {
    const skel = join(root, 'etc/skel', f);
    if (existsSync(skel)) copyFileSync(skel, join(home, f));
  }
  // mkfs.ext4 -d copies ownership from the tree, so chown here (we run as root).
  chownTree(home, u.uid, u.gid);
}

function chownTree(dir: string, uid: number, gid: number): void {
  lchownSync(dir, uid, gid);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) chownTree(p, uid, gid);
    else lchownSync(p, uid, gid);
  }
}

function installBinary(src: string | undefined, dest: string): boolean {
  if (!src || !existsSync(src)) return false;
  copyFileSync(src, dest);
  chmodSync(dest, 0o755);
  return true;
}

export interface DiskTools {
  'mkfs.ext4': string;
  'qemu-img': string;
}

/**
 * Pack `root` into an ext4 image of `sizeMiB` and convert it to qcow2 at
 * `qcow2Path` (only used clusters are stored). The raw image is removed.
 */
export async function makeDisk(tools: DiskTools, root: string, rawPath: string, qcow2Path: string, sizeMiB: number): Promise<void> {
  writeFileSync(rawPath, '');
  truncateSync(rawPath, sizeMiB * 1024 * 1024);
  await runTool(tools['mkfs.ext4'], ['-q', '-F', '-L', 'cordon-root', '-m', '0', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', root, rawPath]);
  await runTool(tools['qemu-img'], ['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', rawPath, qcow2Path]);
  rmSync(rawPath, { force: true });
}
