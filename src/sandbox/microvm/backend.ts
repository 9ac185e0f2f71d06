/**
 * The microVM back end: each sandbox is a QEMU `microvm` with its own guest
 * kernel, KVM when a probe boot proved it works, TCG otherwise (tier
 * `microvm-kvm` / `microvm-tcg`).
 *
 * A sandbox starts in one of three ways, fastest first:
 * 1. **pool**: a member of the warm pool for its VM shape (pool.ts);
 * 2. **snapshot**: a new QEMU restored from the shape's snapshot (snapshot.ts);
 * 3. **boot**: a cold boot. With `snapshots: 'auto'` the first cold boot of a
 *    shape also makes its snapshot, in the background and at low CPU priority.
 *
 * Whatever the start, the guest gets fresh entropy, clock and machine id before
 * create() returns (identity.ts). A restore that fails deletes the snapshot
 * (it is made again later) and falls back to a cold boot, which is the same tier.
 *
 * @example
 * const backend = new MicrovmBackend({ home: cordonHome(), poolSize: 1 });
 * await backend.warm({ vcpus: 1, memoryMiB: 512, diskMiB: 2048 });
 * const sb = await backend.create(spec, { home, runDir });
 * await sb.channel.exec({ argv: ['uname', '-r'], user: 'agent' });
 * await sb.destroy();
 */
import { renameSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { EnvironmentError, SandboxError } from '../../errors/index.js';
import { ensurePrivateDir } from '../../util/index.js';
import { findImage, requireTools, whichTool, type ImageManifest } from '../image/index.js';
import { probeAccel, requireTscKhz, type AccelProbe } from '../qemu/index.js';
import type { BackendAvailability, BackendContext, IsolationTier, SandboxBackend, SandboxSpec } from '../types.js';
import { refreshGuest } from './identity.js';
import { WarmPool } from './pool.js';
import { MicrovmSandbox, type StartedFrom } from './sandbox.js';
import { buildSnapshot, findSnapshot, removeSnapshot, snapshotId, snapshotKey, type Snapshot, type SnapshotKey, type VmShape } from './snapshot.js';
import { setVmmNice, startGuest, stopGuest, type StartedGuest } from './start.js';
import { allocateVmmIdentity } from './vmm.js';

export interface MicrovmBackendOptions {
  /** `$CORDON_HOME`: images, the accelerator probe cache, snapshots. */
  home: string;
  /** @default the newest image in `$home/images` (`findImage`) */
  image?: ImageManifest;
  /** @default `probeAccel()` (cached per host boot in `$home/accel.json`) */
  accel?: AccelProbe;
  /** 'auto': make one snapshot per VM shape and restore from it; 'off': always boot. @default 'auto' */
  snapshots?: 'auto' | 'off';
  /** Running guests kept ready per VM shape (each holds its memory). @default 0 */
  poolSize?: number;
  /** @default `qemu-system-x86_64` on PATH */
  qemuPath?: string;
  /** Longest wait for the agent's hello on a cold boot. @default 60000 */
  bootTimeoutMs?: number;
  /** Longest wait for the agent's hello after a snapshot restore. @default 15000 */
  restoreTimeoutMs?: number;
  /** Extra guest kernel arguments (part of the snapshot key). @default [] */
  kernelArgs?: string[];
}

interface Environment {
  image: ImageManifest;
  probe: AccelProbe;
  tier: IsolationTier;
  qemuImg: string;
  qemuPath: string;
  kvmGroup: number | undefined;
}

const QEMU_FIX = 'apt-get install -y qemu-system-x86 qemu-utils';
/** CPU priority of VMMs that only prepare snapshots or pool members. */
const BACKGROUND_NICE = 10;

export class MicrovmBackend implements SandboxBackend {
  readonly isolation = 'microvm' as const;
  readonly #o: Required<Omit<MicrovmBackendOptions, 'image' | 'accel' | 'qemuPath'>> & Pick<MicrovmBackendOptions, 'image' | 'accel' | 'qemuPath'>;
  #env: Promise<Environment> | undefined;
  readonly #building = new Map<string, Promise<Snapshot>>();
  readonly #keys = new Map<string, SnapshotKey>();
  readonly #images = new Map<string, ImageManifest>();
  readonly #live = new Set<MicrovmSandbox>();
  readonly #pool: WarmPool;
  #closed = false;

  constructor(o: MicrovmBackendOptions) {
    this.#o = {
      snapshots: 'auto', poolSize: 0, bootTimeoutMs: 60_000, restoreTimeoutMs: 15_000, kernelArgs: [], ...o,
    };
    this.#pool = new WarmPool({
      size: this.#o.poolSize,
      make: (keyId) => this.#makePoolMember(keyId),
      dispose: stopGuest,
    });
  }

  /** The options this back end was made with (to make a sibling with other settings, e.g. in benchmarks). */
  get options(): MicrovmBackendOptions {
    return { ...this.#o, kernelArgs: [...this.#o.kernelArgs] };
  }

  /** Members of the warm pool ready now for a VM shape. */
  async poolReady(shape: Pick<SandboxSpec, 'vcpus' | 'memoryMiB' | 'diskMiB'>): Promise<number> {
    return this.#pool.ready(snapshotId(this.#key(await this.#environment(), shape)));
  }

  /** What this machine lacks to run microVM sandboxes, and the command that fixes it. */
  async available(): Promise<BackendAvailability> {
    const missing = ['qemu-img', ...(this.#o.qemuPath ? [] : ['qemu-system-x86_64'])].filter((t) => !whichTool(t));
    if (missing.length > 0) return { ok: false, reason: `${missing.join(' and ')} not installed`, fix: QEMU_FIX };
    try {
      await this.#environment();
      return { ok: true };
    } catch (err) {
      const e = err as EnvironmentError;
      return { ok: false, reason: e.message, fix: e.fix ?? 'cordon image build' };
    }
  }

  async create(spec: SandboxSpec, ctx: BackendContext): Promise<MicrovmSandbox> {
    if (this.#closed) throw new SandboxError('sandbox-closed', 'the microvm back end is closed', { fix: 'create a new back end' });
    const base = await this.#environment();
    // An agent with its own image boots from it (same kernel); its snapshots and pool are keyed by that image's id.
    const env = ctx.image ? { ...base, image: ctx.image } : base;
    const key = this.#key(env, spec);
    const keyId = snapshotId(key);
    const diskPath = join(ctx.runDir, 'disk.qcow2');
    let guest: StartedGuest;
    let from: StartedFrom;
    const pooled = this.#pool.take(keyId);
    if (pooled) {
      guest = adopt(pooled, diskPath);
      from = 'pool';
    } else {
      ({ guest, from } = await this.#start(env, key, spec.id, diskPath));
    }
    try {
      await refreshGuest(guest.channel, { setClock: from !== 'boot', requireReseed: from !== 'boot' });
    } catch (err) {
      await stopGuest(guest);
      throw err;
    }
    const sandbox = new MicrovmSandbox(spec.id, env.tier, guest, from, ctx.runDir);
    if (this.#closed) {
      await sandbox.destroy('backend-closed');
      throw new SandboxError('sandbox-closed', 'the microvm back end closed while the sandbox started', { fix: 'create a new back end' });
    }
    this.#live.add(sandbox);
    void sandbox.exited.then(() => this.#live.delete(sandbox));
    if (this.#o.snapshots === 'auto') void this.#prepareInBackground(env, key, keyId);
    return sandbox;
  }

  /**
   * Make the snapshot for a VM shape now (if missing) and fill its warm pool.
   * Call at daemon start for the shapes of the configured agents; tests and
   * benchmarks use it to measure restores without a cold first start.
   */
  async warm(shape: Pick<SandboxSpec, 'vcpus' | 'memoryMiB' | 'diskMiB'>): Promise<{ snapshot: Snapshot; poolReady: number }> {
    if (this.#o.snapshots === 'off') {
      throw new SandboxError('sandbox-snapshots-off', 'this microvm back end was made with snapshots: off, so there is nothing to warm', { fix: "use snapshots: 'auto'" });
    }
    const env = await this.#environment();
    const key = this.#key(env, shape);
    const keyId = snapshotId(key);
    const snapshot = await this.#snapshot(env, key, keyId, false);
    await this.#pool.fill(keyId);
    return { snapshot, poolReady: this.#pool.ready(keyId) };
  }

  /** Stop pool members, wait for snapshots being made, destroy live sandboxes. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#pool.close();
    await Promise.allSettled(this.#building.values());
    await Promise.all([...this.#live].map((s) => s.destroy('backend-closed')));
  }

  /** Boot, or restore when the shape has a snapshot; a failed restore falls back to a boot. */
  async #start(env: Environment, key: SnapshotKey, name: string, diskPath: string): Promise<{ guest: StartedGuest; from: StartedFrom }> {
    const snapshot = this.#o.snapshots === 'auto' ? findSnapshot(this.#o.home, key) : undefined;
    const common = {
      name, home: this.#o.home, image: env.image, probe: env.probe, kernelArgs: this.#o.kernelArgs,
      shape: { vcpus: key.vcpus, memoryMiB: key.memoryMiB, diskMiB: key.diskMiB }, diskPath,
      qemuImg: env.qemuImg, qemuPath: env.qemuPath,
    };
    if (snapshot) {
      try {
        const guest = await startGuest({ ...common, identity: allocateVmmIdentity(env.kvmGroup), snapshot, helloTimeoutMs: this.#o.restoreTimeoutMs });
        return { guest, from: 'snapshot' };
      } catch {
        removeSnapshot(snapshot); // made again in the background after this boot
      }
    }
    const guest = await startGuest({ ...common, identity: allocateVmmIdentity(env.kvmGroup), helloTimeoutMs: this.#o.bootTimeoutMs });
    return { guest, from: 'boot' };
  }

  async #prepareInBackground(env: Environment, key: SnapshotKey, keyId: string): Promise<void> {
    if (this.#closed) return;
    try {
      await this.#snapshot(env, key, keyId, true);
      await this.#pool.fill(keyId);
    } catch {
      // A failed snapshot leaves cold boots working; warm() reports the error when asked directly.
    }
  }

  /** The snapshot for `key`, made once even when asked for concurrently. */
  #snapshot(env: Environment, key: SnapshotKey, keyId: string, background: boolean): Promise<Snapshot> {
    this.#keys.set(keyId, key);
    this.#images.set(keyId, env.image);
    const found = findSnapshot(this.#o.home, key);
    if (found) return Promise.resolve(found);
    let p = this.#building.get(keyId);
    if (!p) {
      p = buildSnapshot({
        home: this.#o.home, key, image: env.image, probe: env.probe, identity: allocateVmmIdentity(env.kvmGroup),
        qemuImg: env.qemuImg, qemuPath: env.qemuPath, bootTimeoutMs: Math.max(this.#o.bootTimeoutMs, 60_000),
        onStarted: (pid) => background && setTimeout(() => setVmmNice(pid, BACKGROUND_NICE), 50).unref(),
      }).finally(() => this.#building.delete(keyId));
      this.#building.set(keyId, p);
    }
    return p;
  }

  async #makePoolMember(keyId: string): Promise<StartedGuest> {
    const env = await this.#environment();
    const image = this.#images.get(keyId) ?? env.image;
    const key = this.#keys.get(keyId);
    const snapshot = key && findSnapshot(this.#o.home, key);
    if (!key || !snapshot) throw new SandboxError('sandbox-snapshot', `no snapshot for VM shape ${keyId} to fill the pool from`);
    const poolDir = ensurePrivateDir(join(this.#o.home, 'microvm', 'pool'));
    const guest = await startGuest({
      name: 'cordon-pool', home: this.#o.home, image, probe: env.probe, kernelArgs: this.#o.kernelArgs,
      shape: { vcpus: key.vcpus, memoryMiB: key.memoryMiB, diskMiB: key.diskMiB },
      diskPath: join(poolDir, `${randomBytes(8).toString('hex')}.qcow2`), qemuImg: env.qemuImg, qemuPath: env.qemuPath,
      identity: allocateVmmIdentity(env.kvmGroup), snapshot, helloTimeoutMs: this.#o.restoreTimeoutMs,
    });
    try {
      setVmmNice(guest.vm.pid, BACKGROUND_NICE);
      // Entropy, clock and identity are given again when the member is taken; this run warms the exec path.
      await refreshGuest(guest.channel, { setClock: true, requireReseed: true });
      await guest.channel.exec({ argv: ['true'], user: 'agent', timeoutMs: 10_000 });
      return guest;
    } catch (err) {
      await stopGuest(guest);
      throw err;
    }
  }

  #key(env: Environment, shape: Pick<SandboxSpec, 'vcpus' | 'memoryMiB' | 'diskMiB'>): SnapshotKey {
    return snapshotKey(env.image, env.probe, vmShape(env.image, shape), this.#o.kernelArgs);
  }

  /** Image, tools and accelerator, resolved once (again after a failure). */
  #environment(): Promise<Environment> {
    this.#env ??= resolveEnvironment(this.#o).catch((err: unknown) => {
      this.#env = undefined;
      throw err;
    });
    return this.#env;
  }
}

async function resolveEnvironment(o: MicrovmBackendOptions): Promise<Environment> {
  const tools = requireTools(o.qemuPath ? ['qemu-img'] : ['qemu-img', 'qemu-system-x86_64'], 'microVM sandboxes');
  const qemuPath = o.qemuPath ?? (tools as Record<string, string>)['qemu-system-x86_64']!;
  const image = o.image ?? findImage(o.home, (m) => m.agent.init && m.agent.daemon);
  if (!image) {
    throw new EnvironmentError('env-no-image', `no guest image in ${join(o.home, 'images')}`, { fix: 'cordon image build' });
  }
  if (!image.agent.init || !image.agent.daemon) {
    throw new EnvironmentError('env-image-no-agent', `image ${image.id.slice(0, 12)} has no guest agent, so sandboxes cannot be controlled`, {
      fix: 'make -C guest/agent && cordon image build --force',
    });
  }
  const probe = o.accel ?? (await probeAccel({ kernelPath: image.kernelPath, home: o.home, qemuPath }));
  if (probe.accel === 'tcg') requireTscKhz(probe);
  const kvmGroup = probe.accel === 'kvm' ? statSync('/dev/kvm').gid : undefined;
  return { image, probe, tier: probe.accel === 'kvm' ? 'microvm-kvm' : 'microvm-tcg', qemuImg: tools['qemu-img'], qemuPath, kvmGroup };
}

/** The VM shape of a spec: the disk is never smaller than the image's root file system. */
export function vmShape(image: ImageManifest, s: Pick<SandboxSpec, 'vcpus' | 'memoryMiB' | 'diskMiB'>): VmShape {
  return { vcpus: s.vcpus, memoryMiB: s.memoryMiB, diskMiB: Math.max(s.diskMiB, image.inputs.diskMiB) };
}

/** A pool member becomes a sandbox: its overlay moves into the sandbox's run directory and it runs at normal priority. */
function adopt(g: StartedGuest, diskPath: string): StartedGuest {
  setVmmNice(g.vm.pid, 0);
  try {
    renameSync(g.diskPath, diskPath); // QEMU keeps its open fd; only the name moves
    return { ...g, diskPath };
  } catch {
    return g; // another file system: it stays in the pool directory and is removed from there
  }
}
