/**
 * Bring one guest up to the point where its agent has said hello: a cold
 * boot, or a restore from a snapshot. On any failure everything started so far
 * (QEMU, sockets, overlay, the VMM uid) is released and a SandboxError carries
 * the tail of the guest console.
 */
import { readdirSync, rmSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { CordonError, SandboxError } from '../../errors/index.js';
import type { ImageManifest } from '../image/index.js';
import type { GuestChannel, GuestHello } from '../protocol/index.js';
import type { AccelProbe, Vm } from '../qemu/index.js';
import type { Snapshot, VmShape } from './snapshot.js';
import { blankOverlay, connectChannel, copyOverlay, releaseVmmIdentity, startVmm, VMM_FD, type VmmIdentity } from './vmm.js';
import { sleep } from '../../util/index.js';

/** A running guest whose agent said hello; not yet given its own entropy and identity. */
export interface StartedGuest {
  vm: Vm;
  channel: GuestChannel;
  hello: GuestHello;
  socketDir: string;
  diskPath: string;
  identity: VmmIdentity;
  /** ms from the start of `startGuest` to the hello. */
  helloMs: number;
}

export interface StartGuestOptions {
  /** Process name (`-name`), e.g. the sandbox id. */
  name: string;
  home: string;
  image: ImageManifest;
  probe: AccelProbe;
  shape: VmShape;
  kernelArgs: string[];
  /** Where this guest's overlay is created (must not exist). */
  diskPath: string;
  identity: VmmIdentity;
  qemuImg: string;
  qemuPath?: string;
  /** Restore this snapshot instead of booting. */
  snapshot?: Snapshot;
  /** Longest wait for the agent's hello. */
  helloTimeoutMs: number;
}

export async function startGuest(o: StartGuestOptions): Promise<StartedGuest> {
  const started = performance.now();
  let vm: Vm | undefined;
  let socketDir: string | undefined;
  let channel: GuestChannel | undefined;
  try {
    const blank = o.snapshot?.blankPath ?? (await blankOverlay(join(o.home, 'microvm', 'blank'), VMM_FD.base, o.shape.diskMiB, o.qemuImg));
    copyOverlay(blank, o.diskPath, o.identity);
    ({ vm, socketDir } = startVmm({
      name: o.name, image: o.image, probe: o.probe, vcpus: o.shape.vcpus, memoryMiB: o.shape.memoryMiB,
      diskPath: o.diskPath, snapshot: o.snapshot, identity: o.identity, kernelArgs: o.kernelArgs, qemuPath: o.qemuPath,
      ...(o.snapshot?.ramPath ? { ram: { path: o.snapshot.ramPath, role: 'clone' as const } } : {}),
    }));
    channel = await connectChannel(vm, o.helloTimeoutMs);
    if (o.snapshot) await resumeRestored(vm, o.helloTimeoutMs, o.snapshot.ramPath !== undefined);
    const exited = vm.exited.then((e) => {
      throw new SandboxError('sandbox-exited', `QEMU exited (${e.signal ?? `code ${e.code}`}) before the guest agent said hello`);
    });
    exited.catch(() => undefined);
    const hello = await Promise.race([channel.ready, exited]).catch(async (err: unknown) => {
      // The socket closes just before QEMU's exit is reported; prefer the exit, which says more.
      if (err instanceof CordonError && err.code === 'sandbox-disconnected') await Promise.race([exited, sleep(1000)]);
      throw err;
    });
    return { vm, channel, hello, socketDir, diskPath: o.diskPath, identity: o.identity, helloMs: performance.now() - started };
  } catch (err) {
    const tail = vm?.consoleTail() ?? '';
    channel?.close();
    if (vm) await vm.stop(500);
    if (socketDir) rmSync(socketDir, { recursive: true, force: true });
    rmSync(o.diskPath, { force: true });
    releaseVmmIdentity(o.identity);
    throw startError(err, tail, o.snapshot !== undefined);
  }
}

/**
 * Wait for the incoming migration to finish loading, then run the vCPUs. A
 * lazy clone (`lazyRam`) first turns on `x-ignore-shared`, as its template
 * did, and then starts reading the state: its RAM is the template's file.
 */
async function resumeRestored(vm: Vm, timeoutMs: number, lazyRam: boolean): Promise<void> {
  const qmp = await vm.qmp();
  if (lazyRam) {
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await qmp.execute('migrate-incoming', { uri: `fd:${VMM_FD.state}` });
  }
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const s = (await qmp.execute('query-status')) as { status?: string };
    if (s.status === 'paused' || s.status === 'postmigrate') break;
    if (s.status !== 'inmigrate') throw new SandboxError('sandbox-restore', `the restored VM is in state ${s.status ?? 'unknown'}, not paused`);
    if (performance.now() > deadline) throw new SandboxError('sandbox-restore', `loading the snapshot took more than ${timeoutMs} ms`);
    await sleep(3);
  }
  await qmp.execute('cont');
}

/** Console lines that explain a failed start better than the last lines do (a panic is followed by a long trace). */
const TELLING_LINE = /Kernel panic|CORDON-GUEST-FAILED|Attempted to kill init|Unable to mount|not syncing/;

function startError(err: unknown, consoleTail: string, restoring: boolean): SandboxError {
  const all = consoleTail.replace(/\r/g, '').trim().split('\n').filter(Boolean);
  const lines = all.slice(-8);
  const telling = all.slice(0, -8).find((l) => TELLING_LINE.test(l));
  if (telling) lines.unshift(telling, '…');
  const cause = err instanceof Error ? err.message : String(err);
  const code = err instanceof CordonError && err.code === 'sandbox-hello-timeout' ? 'sandbox-boot-timeout' : 'sandbox-start';
  return new SandboxError(code, `the microVM did not come up (${restoring ? 'snapshot restore' : 'boot'}): ${cause}` +
    (lines.length > 0 ? `\nlast console lines:\n  ${lines.join('\n  ')}` : '\n(the guest console was empty)'), {
    fix: restoring
      ? 'Delete the snapshots (`rm -r $CORDON_HOME/microvm/snapshots`) so they are made again; if a cold boot fails too, rebuild the image (`cordon image build`).'
      : 'Check the console lines above; rebuild the image (`cordon image build`) and rerun the accelerator probe (`cordon doctor`).',
    cause: err,
    details: { consoleTail: consoleTail.slice(-4000), restoring },
  });
}

/** Stop a guest that never became a sandbox (a failed refresh, a pool member) and remove its files. */
export async function stopGuest(g: StartedGuest): Promise<void> {
  try {
    g.channel.close();
    await g.vm.stop(500);
  } finally {
    rmSync(g.socketDir, { recursive: true, force: true });
    rmSync(g.diskPath, { force: true });
    releaseVmmIdentity(g.identity);
  }
}

/**
 * Set the CPU priority of every thread of a VMM (nice is per thread in Linux,
 * and QEMU's vCPU threads inherit it only when they are created). Needs root
 * to lower it again; ignored otherwise.
 */
export function setVmmNice(pid: number, nice: number): void {
  if (process.getuid?.() !== 0) return;
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return; // gone
  }
  for (const tid of tids) {
    try {
      setPriority(Number(tid), nice);
    } catch {
      // the thread ended meanwhile
    }
  }
}
