/**
 * Snapshots for fast starts: one per VM shape (image, accelerator, vCPUs,
 * memory, disk size), in `$CORDON_HOME/microvm/snapshots/<key hash>/`.
 *
 * How one is made: a template VM boots on its own overlay (`disk.qcow2`,
 * backed by the base image) with the control socket open but **no host
 * connected**. The guest agent starts, queues its `hello` and waits for a host
 * (it polls the port every 100 ms). Once QMP reports that the guest opened the
 * port, and after a short settle, cordon stops the vCPUs (QEMU drains and
 * flushes the disk) and migrates the whole machine state to a unix socket
 * that cordon listens on and writes to `state.bin`, then quits the template.
 * QEMU's `spawn=deny` seccomp rule forbids `exec:` migration and 7.2 has no
 * `file:` URI; an outgoing `fd:` needs SCM_RIGHTS, which Node cannot send.
 *
 * Why the disk stays consistent: the saved RAM (page cache, ext4 state) belongs
 * to exactly the disk content of `disk.qcow2` at the moment of `stop`. That
 * file is never written again (mode 0444, the template is gone); every
 * restored sandbox gets a new empty overlay whose backing file is it
 * (sandbox overlay → disk.qcow2 → base), so each clone starts from the same
 * disk its RAM expects and writes only its own layer.
 *
 * How one is restored (start.ts): a new QEMU with the same machine options
 * and `-incoming fd:8` (the state file as an inherited fd; an incoming `fd:`
 * accepts a number). It comes up paused; cordon connects to the control socket,
 * sends `cont`, and receives the hello the agent queued before the snapshot.
 * Then every clone gets fresh entropy, clock and machine id (identity.ts).
 * The snapshot files are cordon's (root-owned, read-only) and findSnapshot
 * ignores them otherwise: every clone's VMM parses the state.
 *
 * Measured (2-core development machine, QEMU 7.2, TCG, 256 MiB guest): making
 * a snapshot ~3.3 s (boot included; the state is ~61 MB, saved in ~0.6 s). A
 * restore: QEMU up ~55 ms, state loaded ~35–90 ms, hello 15–100 ms after
 * `cont` (the agent's 100 ms poll for a host), refresh ~150–250 ms (the first
 * dynamically linked program runs slowly while TCG translates the guest code
 * anew), so ~430 ms from create to the first exec result; the warm pool
 * (pool.ts) takes that to ~110 ms.
 *
 * Memory: a plain restore writes every non-zero page of the state into fresh
 * anonymous memory, so a clone starts with the template's ~61 MiB of guest
 * pages resident (more with transparent huge pages), ~142 MiB VmRSS when idle.
 * Where QEMU can open a RAM file read-only (8.2 and later: `readonly=on,rom=off`)
 * snapshots are **lazy** instead (`key.lazyRam`): the template's guest RAM is a
 * shared file mapping (`ram.bin`), which the migration leaves out of the state
 * (`x-ignore-shared`), and each clone maps that file privately and read-only:
 * it reads the template's pages from the page cache, shared by all clones, and
 * owns only the pages it writes (copy-on-write). The file is cordon's, mode
 * 0444, opened read-only by each VMM: no clone can change what another sees.
 * Measured (QEMU 10.0, TCG, same machine): state 68 KB instead of 61 MB,
 * restore to the first exec result 283 ms, idle VMM 72 MiB (42 of them
 * file-backed: QEMU's own binary and the template's pages, shared by all clones).
 * QEMU 7.2 opens a private RAM file read-write, so there every clone's VMM
 * could rewrite the RAM of all the others: it keeps the plain restore
 * (see BENCHMARKS.md for both figures).
 */
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { SandboxError } from '../../errors/index.js';
import { canonicalJson, ensurePrivateDir, sleep, writeFileAtomic } from '../../util/index.js';
import { FAILED_MARKER, type ImageManifest } from '../image/index.js';
import { CONTROL_PORT_ID, kernelCmdline, qemuOptionsSchema, type AccelProbe, type Vm } from '../qemu/index.js';
import { blankOverlay, copyOverlay, giveToVmm, reclaimFromVmm, releaseVmmIdentity, startVmm, VMM_FD, type VmmIdentity } from './vmm.js';

/**
 * Bump when the way snapshots are made changes (old ones are then ignored),
 * including QEMU options that the key does not list: a restore needs exactly
 * the devices the template had. 3: a virtio-balloon device and a capped TCG cache; 4: lazy RAM (`lazyRam`).
 */
const MIB = 1024 * 1024;

export const SNAPSHOT_RECIPE = 4;

/**
 * Whether this QEMU can map a snapshot's RAM file read-only and copy-on-write
 * (`memory-backend-file,readonly=on,rom=off`, added in 8.2): lazy snapshots.
 */
export function supportsLazyRam(qemuVersion: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(qemuVersion);
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 8 || (major === 8 && minor >= 2);
}

export const snapshotKeySchema = z.object({
  recipe: z.number().int(),
  imageId: z.string(),
  accel: z.enum(['kvm', 'tcg']),
  tscKhz: z.number().int().nullable(),
  tscReliable: z.boolean(),
  qemuVersion: z.string(),
  lazyRam: z.boolean().describe('guest RAM in a read-only file that clones map copy-on-write (QEMU >= 8.2), instead of in the state'),
  vcpus: z.number().int(),
  memoryMiB: z.number().int(),
  diskMiB: z.number().int(),
  kernelArgs: z.array(z.string()),
  cmdline: z.string().describe('the whole guest kernel command line: a snapshot only fits the kernel state it was booted with'),
}).strict();
export type SnapshotKey = z.infer<typeof snapshotKeySchema>;

const manifestSchema = z.object({
  key: snapshotKeySchema,
  stateBytes: z.number().int().positive(),
  buildMs: z.number(),
  createdAt: z.string(),
}).strict();

export interface Snapshot {
  key: SnapshotKey;
  dir: string;
  /** The template's disk at the moment of the snapshot (read-only). */
  diskPath: string;
  /** The migration stream. */
  statePath: string;
  /** The template's guest RAM (lazy snapshots only): each clone maps it privately. */
  ramPath?: string;
  /** An empty overlay backed by fd 6 (the snapshot disk), copied for each clone. */
  blankPath: string;
  stateBytes: number;
  buildMs: number;
}

/** The shape of a VM, as far as a snapshot is concerned. */
export interface VmShape {
  vcpus: number;
  memoryMiB: number;
  /** Virtual size of the writable disk (at least the base image's). */
  diskMiB: number;
}

export function snapshotKey(image: ImageManifest, probe: AccelProbe, shape: VmShape, kernelArgs: string[]): SnapshotKey {
  return {
    recipe: SNAPSHOT_RECIPE,
    imageId: image.id,
    accel: probe.accel,
    tscKhz: probe.accel === 'tcg' ? probe.tcg.tscKhz : null,
    tscReliable: probe.tcg.tscReliable,
    qemuVersion: probe.key.qemuVersion,
    lazyRam: supportsLazyRam(probe.key.qemuVersion),
    vcpus: shape.vcpus,
    memoryMiB: shape.memoryMiB,
    diskMiB: shape.diskMiB,
    kernelArgs: [...kernelArgs],
    cmdline: kernelCmdline(qemuOptionsSchema.parse({
      accel: probe.accel,
      kernelPath: image.kernelPath,
      ...(probe.accel === 'tcg' && probe.tcg.tscKhz ? { tscKhz: probe.tcg.tscKhz, tscReliable: probe.tcg.tscReliable } : {}),
      kernelArgs,
    })),
  };
}

export function snapshotId(key: SnapshotKey): string {
  return createHash('sha256').update(canonicalJson(key)).digest('hex').slice(0, 32);
}

export function snapshotsDir(home: string): string {
  return join(home, 'microvm', 'snapshots');
}

/** The snapshot for `key`, if a complete one exists. */
export function findSnapshot(home: string, key: SnapshotKey): Snapshot | undefined {
  const dir = join(snapshotsDir(home), snapshotId(key));
  const files = paths(dir);
  const needed = [files.disk, files.state, files.blank, ...(key.lazyRam ? [files.ram] : [])];
  if (![files.manifest, ...needed].every((p) => existsSync(p))) return undefined;
  try {
    const m = manifestSchema.parse(JSON.parse(readFileSync(files.manifest, 'utf8')));
    if (canonicalJson(m.key) !== canonicalJson(key) || statSync(files.state).size !== m.stateBytes) return undefined;
    // Every clone trusts these files: they must be cordon's and read-only.
    if (!needed.every(ownedReadOnly)) return undefined;
    if (key.lazyRam && statSync(files.ram).size !== key.memoryMiB * MIB) return undefined;
    return {
      key, dir, diskPath: files.disk, statePath: files.state, blankPath: files.blank, stateBytes: m.stateBytes, buildMs: m.buildMs,
      ...(key.lazyRam ? { ramPath: files.ram } : {}),
    };
  } catch {
    return undefined;
  }
}

/** Delete a snapshot (e.g. one that failed to restore); sandboxes already running on it keep their open files. */
export function removeSnapshot(s: Snapshot): void {
  rmSync(s.dir, { recursive: true, force: true });
}

export interface BuildSnapshotOptions {
  home: string;
  key: SnapshotKey;
  image: ImageManifest;
  probe: AccelProbe;
  identity: VmmIdentity;
  qemuImg: string;
  qemuPath?: string;
  /** Longest the template may take to boot. @default 120000 */
  bootTimeoutMs?: number;
  /** Quiet time between the agent opening its port and the snapshot. @default 500 */
  settleMs?: number;
  /** Called with the template's pid once it runs (e.g. to lower its CPU priority). */
  onStarted?: (pid: number) => void;
}

/**
 * Boot a template VM for `key` and save it as a snapshot. Built in a temporary
 * directory and renamed into place, so a crash never leaves a half snapshot.
 */
export async function buildSnapshot(o: BuildSnapshotOptions): Promise<Snapshot> {
  const started = performance.now();
  const root = ensurePrivateDir(snapshotsDir(o.home));
  const finalDir = join(root, snapshotId(o.key));
  const tmp = join(root, `.tmp-${randomBytes(6).toString('hex')}`);
  mkdirSync(tmp, { mode: 0o700 });
  const files = paths(tmp);
  let vm: Vm | undefined;
  let socketDir: string | undefined;
  try {
    const baseBlank = await blankOverlay(join(o.home, 'microvm', 'blank'), VMM_FD.base, o.key.diskMiB, o.qemuImg);
    copyOverlay(baseBlank, files.disk, o.identity);
    if (o.key.lazyRam) {
      // A sparse file of the guest's size: pages the guest never touches stay holes.
      writeFileSync(files.ram, '', { mode: 0o600 });
      truncateSync(files.ram, o.key.memoryMiB * MIB);
      giveToVmm(files.ram, o.identity, 0o600);
    }
    ({ vm, socketDir } = startVmm({
      name: 'cordon-template', image: o.image, probe: o.probe, vcpus: o.key.vcpus, memoryMiB: o.key.memoryMiB,
      diskPath: files.disk, identity: o.identity, kernelArgs: o.key.kernelArgs, qemuPath: o.qemuPath,
      ...(o.key.lazyRam ? { ram: { path: files.ram, role: 'template' as const } } : {}),
    }));
    o.onStarted?.(vm.pid);
    const qmp = await vm.qmp();
    const portOpen = qmp.waitForEvent((e) => e.event === 'VSERPORT_CHANGE' && e.data?.['id'] === CONTROL_PORT_ID && e.data?.['open'] === true, o.bootTimeoutMs ?? 120_000);
    const failed = vm.waitForConsole(new RegExp(FAILED_MARKER), o.bootTimeoutMs ?? 120_000).then((l) => {
      throw new SandboxError('sandbox-snapshot', `the template guest failed to boot: ${l.line}`, { details: { consoleTail: vm?.consoleTail().slice(-2000) } });
    });
    failed.catch(() => undefined);
    await Promise.race([portOpen, failed]);
    await sleep(o.settleMs ?? 500);
    await qmp.execute('stop');
    const bytes = await migrateToFile(vm, socketDir, files.state, o.identity, o.key.lazyRam);
    await vm.stop();
    vm = undefined;
    reclaimFromVmm(files.disk, 0o444); // never written again; clones read it through fd 6
    reclaimFromVmm(files.state, 0o444);
    if (o.key.lazyRam) reclaimFromVmm(files.ram, 0o444); // the template's RAM at the stop; clones map it read-only
    const cloneBlank = await blankOverlay(tmp, VMM_FD.snapshotDisk, o.key.diskMiB, o.qemuImg);
    renameSync(cloneBlank, files.blank);
    const buildMs = Math.round(performance.now() - started);
    writeFileAtomic(files.manifest, JSON.stringify({ key: o.key, stateBytes: bytes, buildMs, createdAt: new Date().toISOString() }, null, 2) + '\n');
    if (existsSync(finalDir) && !findSnapshot(o.home, o.key)) rmSync(finalDir, { recursive: true, force: true }); // a broken leftover
    try {
      renameSync(tmp, finalDir);
    } catch (err) {
      // Another process finished the same snapshot first: use theirs.
      if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
    }
    const done = findSnapshot(o.home, o.key);
    if (!done) throw new SandboxError('sandbox-snapshot', `the snapshot in ${finalDir} is incomplete after it was written`);
    return done;
  } finally {
    if (vm) await vm.stop(500);
    if (socketDir) rmSync(socketDir, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
    releaseVmmIdentity(o.identity);
  }
}

/** `migrate` the stopped VM to a unix socket we listen on; the stream goes to `statePath`. */
async function migrateToFile(vm: Vm, socketDir: string, statePath: string, identity: VmmIdentity, lazyRam: boolean): Promise<number> {
  const sockPath = join(socketDir, 'migrate.sock');
  let server: Server | undefined;
  try {
    const received = new Promise<void>((resolve, reject) => {
      server = createServer({ pauseOnConnect: false }, (conn) => {
        server?.close(); // exactly one connection
        const out = createWriteStream(statePath, { mode: 0o600 });
        conn.pipe(out);
        out.on('finish', resolve);
        out.on('error', reject);
        conn.on('error', reject);
      });
      server.on('error', reject);
    });
    received.catch(() => undefined);
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(sockPath, () => resolve());
    });
    giveToVmm(sockPath, identity, 0o600);
    const qmp = await vm.qmp();
    // Lazy snapshots: the RAM is in the shared file already; only device state goes to the stream.
    if (lazyRam) await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await qmp.execute('migrate', { uri: `unix:${sockPath}` });
    const deadline = performance.now() + 120_000;
    for (;;) {
      const s = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
      if (s.status === 'completed') break;
      if (s.status === 'failed' || s.status === 'cancelled') {
        throw new SandboxError('sandbox-snapshot', `saving the template VM failed: ${s['error-desc'] ?? s.status}`);
      }
      if (performance.now() > deadline) throw new SandboxError('sandbox-snapshot', 'saving the template VM took more than 120 s');
      await sleep(20);
    }
    await received;
    return statSync(statePath).size;
  } finally {
    server?.close();
    rmSync(sockPath, { force: true });
  }
}

function ownedReadOnly(path: string): boolean {
  const st = statSync(path);
  return st.uid === (process.getuid?.() ?? st.uid) && (st.mode & 0o222) === 0;
}

function paths(dir: string) {
  return {
    manifest: join(dir, 'snapshot.json'),
    disk: join(dir, 'disk.qcow2'),
    state: join(dir, 'state.bin'),
    blank: join(dir, 'blank.qcow2'),
    ram: join(dir, 'ram.bin'),
  };
}
