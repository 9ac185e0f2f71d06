/**
 * One QEMU process for one sandbox, started with as little as it needs.
 *
 * - **Its own uid.** When cordon runs as root, every VMM runs as a fresh,
 *   otherwise unused uid/gid (no /etc/passwd entry, no supplementary groups),
 *   so a guest that escapes into QEMU cannot signal, trace or read another
 *   sandbox's VMM, nor any file of the host that is not world-readable. QEMU
 *   7.2's `-runas` would need set*id calls, which `-sandbox …,elevateprivileges=deny`
 *   forbids; dropping the uid before exec needs neither. (Not root: QEMU runs as
 *   the caller; the seccomp filter is then the only wall behind the guest.)
 * - **Files by descriptor.** The image lives under `$CORDON_HOME` (mode 0700),
 *   which that uid cannot traverse. cordon opens the kernel, initrd, base disk,
 *   snapshot and the sandbox's overlay itself and hands them over as fds
 *   3…9, named `/proc/self/fd/N` on QEMU's command line; the overlay's qcow2
 *   header names its backing file the same way, so the backing chain resolves
 *   inside the VMM without any path into the state directory.
 * - **Sockets in a private directory** under the system temp dir (short, for
 *   the 107-byte unix socket limit), owned by the VMM uid, mode 0700.
 * - No network device, no shared host directory (see qemu/args.ts), and
 *   QEMU's seccomp filter `-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny`.
 */
import { chmodSync, chownSync, closeSync, copyFileSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import { SandboxError } from '../../errors/index.js';
import { sleep } from '../../util/index.js';
import { runTool, type ImageManifest } from '../image/index.js';
import { GuestChannel } from '../protocol/index.js';
import { launchVm, type AccelProbe, type Vm } from '../qemu/index.js';

/** Where each file sits in the VMM's fd table. */
export const VMM_FD = { kernel: 3, initrd: 4, base: 5, snapshotDisk: 6, disk: 7, state: 8, ram: 9 } as const;

/** The name QEMU (and a qcow2 backing-file header) uses for an inherited fd. */
export function fdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/** uid/gid a VMM runs as; undefined when cordon is not root (QEMU then runs as the caller). */
export type VmmIdentity = { uid: number; gid: number } | undefined;

/** VMM uids come from [BASE, BASE + SPAN): far above login and container (subuid) ranges. */
const VMM_ID_BASE = 0x6000_0000;
const VMM_ID_SPAN = 0x0100_0000;
/** uids handed out by this process; shared by every backend instance, since uids are a host-wide resource. */
const idsInUse = new Set<number>();

/**
 * A fresh uid/gid for one VMM (the same number for both), or undefined when not root.
 * @param kvmGroup run with this gid instead (KVM needs /dev/kvm, usually mode 0660 group kvm)
 */
export function allocateVmmIdentity(kvmGroup?: number): VmmIdentity {
  if (process.getuid?.() !== 0) return undefined;
  for (;;) {
    const id = VMM_ID_BASE + randomInt(VMM_ID_SPAN);
    if (idsInUse.has(id)) continue;
    idsInUse.add(id);
    return { uid: id, gid: kvmGroup ?? id };
  }
}

export function releaseVmmIdentity(identity: VmmIdentity): void {
  if (identity) idsInUse.delete(identity.uid);
}

/** Hand a file to the VMM's uid (it re-opens its fds through /proc, which checks the file's mode). */
export function giveToVmm(path: string, identity: VmmIdentity, mode = 0o600): void {
  chmodSync(path, mode);
  if (identity) chownSync(path, identity.uid, identity.gid);
}

/**
 * Take a file back from a VMM uid for good: owned by cordon, `mode`. (An owner
 * can chmod a file through an fd it holds, so nothing shared may stay owned by
 * a VMM uid, which may be handed out again later.)
 */
export function reclaimFromVmm(path: string, mode: number): void {
  if (process.getuid?.() === 0) chownSync(path, 0, 0);
  chmodSync(path, mode);
}

/** A private directory for one VMM's sockets. */
export function makeSocketDir(identity: VmmIdentity): string {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-vm-'));
  giveToVmm(dir, identity, 0o700);
  return dir;
}

/**
 * An empty qcow2 overlay whose backing file is `/proc/self/fd/<backingFd>`,
 * created once per (backing fd, size) in `cacheDir` and copied for each use
 * (a copy takes well under a millisecond; `qemu-img create` takes 20–40 ms).
 */
export async function blankOverlay(cacheDir: string, backingFd: number, sizeMiB: number, qemuImg: string): Promise<string> {
  const path = join(cacheDir, `blank-fd${backingFd}-${sizeMiB}M.qcow2`);
  if (existsSync(path)) return path;
  mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.${randomInt(1e9)}.tmp`;
  // -u: the backing file is only meaningful inside the VMM, so qemu-img must not open it.
  await runTool(qemuImg, ['create', '-q', '-f', 'qcow2', '-u', '-b', fdPath(backingFd), '-F', 'qcow2', tmp, `${sizeMiB}M`]);
  chmodSync(tmp, 0o444);
  try {
    copyFileSync(tmp, path, constants.COPYFILE_EXCL);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
  return path;
}

/** Copy a blank overlay to `dest` (which must not exist) and give it to the VMM. */
export function copyOverlay(blank: string, dest: string, identity: VmmIdentity): void {
  copyFileSync(blank, dest, constants.COPYFILE_EXCL);
  giveToVmm(dest, identity);
}

export interface StartVmmOptions {
  name: string;
  image: ImageManifest;
  probe: AccelProbe;
  vcpus: number;
  memoryMiB: number;
  /** This VMM's writable overlay (its backing chain names fds 5 and 6). */
  diskPath: string;
  /** Restore this snapshot instead of booting. */
  snapshot?: { diskPath: string; statePath: string };
  /**
   * Guest RAM in a file (lazy snapshots, see snapshot.ts): a `template` maps it
   * shared and read-write (its RAM ends up in the file); a `clone` opens it
   * read-only and maps it privately (copy-on-write). Anonymous memory when left out.
   */
  ram?: { path: string; role: 'template' | 'clone' };
  identity: VmmIdentity;
  kernelArgs: string[];
  qemuPath?: string;
}

/**
 * Start QEMU; the caller owns the returned VM and socket directory. Under
 * `snapshot`, QEMU loads the saved state from fd 8 (for a lazy clone: once
 * told to, see start.ts) and waits, paused, for `cont`.
 */
export function startVmm(o: StartVmmOptions): { vm: Vm; socketDir: string } {
  const socketDir = makeSocketDir(o.identity);
  const opened: number[] = [];
  const open = (path: string, flags: string) => {
    const fd = openSync(path, flags);
    opened.push(fd);
    return fd;
  };
  try {
    const fds: (number | 'ignore')[] = [
      open(o.image.kernelPath, 'r'),
      open(o.image.initrdPath, 'r'),
      open(o.image.rootfsPath, 'r'),
      o.snapshot ? open(o.snapshot.diskPath, 'r') : 'ignore',
      open(o.diskPath, 'r+'),
      o.snapshot ? open(o.snapshot.statePath, 'r') : 'ignore',
      o.ram ? open(o.ram.path, o.ram.role === 'template' ? 'r+' : 'r') : 'ignore',
    ];
    const tcg = o.probe.accel === 'tcg';
    const vm = launchVm({
      runDir: socketDir,
      qemuPath: o.qemuPath,
      inheritFds: fds,
      // A lazy clone must turn on x-ignore-shared before the state is read: it waits for `migrate-incoming` (start.ts).
      extraArgs: o.snapshot ? ['-incoming', o.ram?.role === 'clone' ? 'defer' : `fd:${VMM_FD.state}`] : [],
      uid: o.identity?.uid,
      gid: o.identity?.gid,
      machine: {
        name: o.name,
        accel: o.probe.accel,
        kernelPath: fdPath(VMM_FD.kernel),
        initrdPath: fdPath(VMM_FD.initrd),
        diskPath: fdPath(VMM_FD.disk),
        vcpus: o.vcpus,
        memoryMiB: o.memoryMiB,
        tscKhz: tcg ? o.probe.tcg.tscKhz ?? undefined : undefined,
        tscReliable: tcg && o.probe.tcg.tscReliable,
        kernelArgs: o.kernelArgs,
        ...(o.ram ? { ram: { path: fdPath(VMM_FD.ram), shared: o.ram.role === 'template', readonly: o.ram.role === 'clone' } } : {}),
      },
    });
    return { vm, socketDir };
  } catch (err) {
    rmSync(socketDir, { recursive: true, force: true });
    throw err;
  } finally {
    for (const fd of opened) closeSync(fd); // QEMU holds its own copies
  }
}

/**
 * Connect a GuestChannel to the VM's control socket as soon as QEMU has
 * created it. The channel's `ready` settles with the guest's hello.
 */
export async function connectChannel(vm: Vm, helloTimeoutMs: number, deadlineMs = 10_000): Promise<GuestChannel> {
  const until = performance.now() + deadlineMs;
  let exited = false;
  void vm.exited.then(() => (exited = true));
  while (!existsSync(vm.controlSocketPath)) {
    if (exited) throw new SandboxError('sandbox-exited', 'QEMU exited before it opened the control socket');
    if (performance.now() > until) throw new SandboxError('sandbox-start', `QEMU did not create ${vm.controlSocketPath} within ${deadlineMs} ms`);
    await sleep(2);
  }
  for (;;) {
    try {
      return new GuestChannel(await connectUnix(vm.controlSocketPath), { helloTimeoutMs });
    } catch (err) {
      // QEMU binds the socket a moment before it listens on it.
      if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED' || exited || performance.now() > until) {
        throw new SandboxError('sandbox-start', `cannot connect to the control socket: ${(err as Error).message}`, { cause: err });
      }
      await sleep(2);
    }
  }
}

function connectUnix(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** The uid a process runs as (for tests and `doctor`), from /proc. */
export function processUid(pid: number): number | undefined {
  try {
    return statSync(`/proc/${pid}`).uid;
  } catch {
    return undefined;
  }
}
