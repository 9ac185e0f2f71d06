/**
 * `cordon image build`: kernel, initramfs and root file system from Debian
 * packages, cached by the hash of their inputs. The root file system is kept
 * twice: as a qcow2 disk for microVMs and as a directory tree for the process
 * back ends (see tree.ts).
 *
 * The build runs in `images/.tmp-*` and is renamed to `images/<id>` only when
 * complete, so an interrupted or failed build never leaves an image that
 * `findImage` would pick. A lock file keeps two builds from racing; leftovers
 * of an interrupted build are removed by the next one.
 */
import { ensureGuestAgentBuilt } from './agent.js';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EnvironmentError } from '../../errors/index.js';
import { ensurePrivateDir, writeFileAtomic } from '../../util/index.js';
import { tryPidLock } from '../../util/pidlock.js';
import { fetchAndUnpack, findDebianMirror, resolveGuestPackages } from './apt.js';
import { requireTools } from './exec.js';
import { initScript, readyScript, buildInitramfs } from './initramfs.js';
import { extractVmlinux, parseKernelConfig } from './kernel.js';
import {
  fileSha256, imageId, imagesDir, MANIFEST_FILE, readManifest, RECIPE_VERSION,
  type ImageInputs, type ImageManifest,
} from './manifest.js';
import { GUEST_MODULES, openModuleTree, readModuleBytes, resolveModules } from './modules.js';
import { customizeRootfs, debootstrap, makeDisk } from './rootfs.js';
import { environmentFile, profileScript } from '../egress.js';
import { ROOTFS_TREE_DIR } from './tree.js';

export type BuildStep = 'kernel' | 'initramfs' | 'rootfs' | 'base' | 'packages' | 'copy' | 'disk' | 'done';

export interface BuildProgress {
  step: BuildStep;
  detail: string;
  /** Share of this step done, 0…1, when known. */
  fraction?: number;
}

export interface BuildImageOptions {
  /** The cordon state directory (`$CORDON_HOME`). */
  home: string;
  /** Called as the build advances; the CLI draws it. */
  onProgress?: (p: BuildProgress) => void;
  /**
   * Rebuild even if an image with the same inputs exists. The new image takes
   * the old one's place: do not force while sandboxes run on it. @default false
   */
  force?: boolean;
  /** Debian suite of the root file system. @default 'bookworm' */
  suite?: string;
  /** Extra packages in the root file system. @default ['ca-certificates','curl','git','python3'] */
  include?: readonly string[];
  /** Size of the ext4 root file system. @default 2048 */
  diskMiB?: number;
  /** Directory with the guest agent binaries. @default `<package>/guest/build` */
  agentDir?: string;
  /** apt configuration directory to read the mirror from. @default '/etc/apt' */
  aptDir?: string;
  /** Where to look for host tools (colon-separated). @default $PATH plus the sbin directories */
  searchPath?: string;
}

export type BuildResult = ImageManifest & {
  /** True when an image with the same inputs already existed and nothing was built. */
  cached: boolean;
};

const DEFAULT_INCLUDE = ['ca-certificates', 'curl', 'git', 'python3'];
const TOOLS = ['apt-get', 'apt-cache', 'dpkg-deb', 'debootstrap', 'mkfs.ext4', 'qemu-img', 'xz'] as const;
/** Kernel options the guest cannot work without. */
const REQUIRED_CONFIG: Record<string, RegExp> = {
  CONFIG_PVH: /^y$/,
  CONFIG_BLK_DEV_INITRD: /^y$/,
  CONFIG_RD_GZIP: /^y$/,
  CONFIG_DEVTMPFS: /^y$/,
  CONFIG_SERIAL_8250_CONSOLE: /^y$/,
  CONFIG_VIRTIO_MMIO: /^[ym]$/,
};

/** Where the guest agent build puts its binaries, relative to this file (src/ or dist/). */
export function defaultAgentDir(): string {
  return resolve(fileURLToPath(new URL('../../../guest/build/', import.meta.url)));
}

/**
 * Check the tools and work out the image's inputs and id, without building.
 * Resolving package versions reads the local apt lists only (no network).
 */
export async function planImage(opts: BuildImageOptions) {
  const tools = requireTools(TOOLS, 'cordon image build', opts.searchPath);
  const suite = opts.suite ?? 'bookworm';
  // The default agent is always built from source first; an explicit agentDir
  // (tests of the image pipeline) is taken as it is.
  if (opts.agentDir === undefined) ensureGuestAgentBuilt(defaultAgentDir());
  const agentDir = opts.agentDir ?? defaultAgentDir();
  const agentInit = join(agentDir, 'cordon-init');
  const agentDaemon = join(agentDir, 'cordon-agent');
  const packages = await resolveGuestPackages(tools);
  const inputs: ImageInputs = {
    recipeVersion: RECIPE_VERSION,
    kernelPackage: packages.kernel,
    busyboxPackage: packages.busybox,
    suite,
    include: [...(opts.include ?? DEFAULT_INCLUDE)].sort(),
    mirror: findDebianMirror(suite, opts.aptDir),
    modules: [...GUEST_MODULES],
    diskMiB: opts.diskMiB ?? 2048,
    // Every text file cordon writes into the guest counts, so a change to any of them rebuilds the image.
    initScriptSha256: createHash('sha256').update(initScript([])).update(readyScript()).update(profileScript()).update(environmentFile()).digest('hex'),
    agentInitSha256: fileSha256(agentInit),
    agentDaemonSha256: fileSha256(agentDaemon),
  };
  return { id: imageId(inputs), inputs, tools, agentInit, agentDaemon };
}

/**
 * Build the guest image, or return the cached one with the same inputs.
 * @example
 * const image = await buildImage({ home: cordonHome(), onProgress: (p) => console.log(p.step, p.detail) });
 */
export async function buildImage(opts: BuildImageOptions): Promise<BuildResult> {
  const started = Date.now();
  const progress = opts.onProgress ?? (() => undefined);
  const { id, inputs, tools, agentInit, agentDaemon } = await planImage(opts);
  const suite = inputs.suite;
  const root = ensurePrivateDir(imagesDir(opts.home));
  const finalDir = join(root, id);
  const existing = readManifest(finalDir);
  if (existing && !opts.force) {
    progress({ step: 'done', detail: `image ${id.slice(0, 12)} is already built from the same inputs; nothing to do`, fraction: 1 });
    return { ...existing, cached: true };
  }
  if (process.getuid?.() !== 0) {
    throw new EnvironmentError('env-needs-root', 'cordon image build runs debootstrap, which needs root', {
      fix: 'run the build as root (e.g. `sudo cordon image build`); sandboxes themselves do not need root',
    });
  }

  const unlock = lockImages(root);
  const tmp = join(root, `.tmp-${id.slice(0, 12)}-${randomBytes(4).toString('hex')}`);
  try {
    removeLeftovers(root);
    const work = join(tmp, 'work');
    mkdirSync(work, { recursive: true, mode: 0o700 });

    // kernel
    const kp = inputs.kernelPackage;
    progress({ step: 'kernel', detail: `downloading ${kp.name} ${kp.version}`, fraction: 0 });
    const kdir = await fetchAndUnpack(tools, kp, work);
    const release = kernelRelease(kdir);
    const config = parseKernelConfig(readFileSync(join(kdir, 'boot', `config-${release}`), 'utf8'));
    checkKernelConfig(config, release);
    progress({ step: 'kernel', detail: `extracting vmlinux ${release}`, fraction: 0.6 });
    const kernelTmp = join(tmp, 'vmlinux');
    await extractVmlinux(join(kdir, 'boot', `vmlinuz-${release}`), kernelTmp, { xz: tools.xz });
    progress({ step: 'kernel', detail: `vmlinux ${release} (PVH)`, fraction: 1 });

    // initramfs
    progress({ step: 'initramfs', detail: `downloading busybox-static ${inputs.busyboxPackage.version}`, fraction: 0 });
    const bdir = await fetchAndUnpack(tools, inputs.busyboxPackage, work);
    const modDir = join(kdir, 'lib', 'modules', release);
    const mods = resolveModules(openModuleTree(modDir), inputs.modules);
    const withData = [];
    for (const m of mods) withData.push({ ...m, data: await readModuleBytes(join(modDir, m.path), { xz: tools.xz }) });
    const initrd = buildInitramfs({ busybox: readFileSync(join(bdir, 'bin', 'busybox')), modules: withData });
    writeFileSync(join(tmp, 'initrd.img'), initrd, { mode: 0o644 });
    progress({ step: 'initramfs', detail: `${mods.length} modules: ${mods.map((m) => m.name).join(' ')}`, fraction: 1 });
    rmSync(kdir, { recursive: true, force: true });

    // rootfs
    const tree = join(work, 'rootfs');
    progress({ step: 'rootfs', detail: `debootstrap ${suite} (minbase + ${inputs.include.join(',')})`, fraction: 0 });
    await debootstrap({
      debootstrap: tools.debootstrap, dir: tree, suite, mirror: inputs.mirror, include: inputs.include,
      onFraction: (fraction, line) => progress({ step: 'rootfs', detail: line.replace(/^I: /, ''), fraction }),
    });
    const agent = customizeRootfs(tree, { agentInit, agentDaemon });
    progress({ step: 'rootfs', detail: agent.agentInit ? 'guest agent installed' : 'no guest agent built; using the stand-in init', fraction: 1 });

    // disk
    progress({ step: 'disk', detail: `mkfs.ext4 (${inputs.diskMiB} MiB) and qcow2`, fraction: 0 });
    await makeDisk(tools, tree, join(work, 'rootfs.ext4'), join(tmp, 'rootfs.qcow2'), inputs.diskMiB);
    chmodSync(join(tmp, 'rootfs.qcow2'), 0o444); // the shared base is never written
    // The same tree, kept for the process back ends (bubblewrap, gVisor), which mount it read-only.
    chmodSync(tree, 0o755);
    renameSync(tree, join(tmp, ROOTFS_TREE_DIR));
    rmSync(work, { recursive: true, force: true });
    progress({ step: 'disk', detail: `rootfs.qcow2 and ${ROOTFS_TREE_DIR}/`, fraction: 1 });

    const manifest: ImageManifest = {
      id,
      kernelPath: join(finalDir, 'vmlinux'),
      initrdPath: join(finalDir, 'initrd.img'),
      rootfsPath: join(finalDir, 'rootfs.qcow2'),
      kernelRelease: release,
      createdAt: new Date().toISOString(),
      inputs,
      modules: mods.map((m) => m.name),
      agent: { init: agent.agentInit, daemon: agent.agentDaemon },
      sizes: {
        kernelBytes: statSync(kernelTmp).size,
        initrdBytes: initrd.length,
        rootfsBytes: statSync(join(tmp, 'rootfs.qcow2')).size,
      },
      buildMs: Date.now() - started,
    };
    writeFileAtomic(join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n', 0o644);
    if (existsSync(finalDir)) renameSync(finalDir, join(root, `.tmp-old-${id.slice(0, 12)}-${randomBytes(4).toString('hex')}`));
    renameSync(tmp, finalDir);
    removeLeftovers(root);
    progress({ step: 'done', detail: `image ${id.slice(0, 12)} built in ${Math.round(manifest.buildMs / 1000)} s`, fraction: 1 });
    return { ...manifest, cached: false };
  } finally {
    if (mountsUnder(tmp).length === 0) rmSync(tmp, { recursive: true, force: true });
    unlock();
  }
}

function kernelRelease(kdir: string): string {
  const dirs = readdirSync(join(kdir, 'lib', 'modules'));
  if (dirs.length !== 1 || !dirs[0]) throw new EnvironmentError('env-kernel-unusable', `expected one lib/modules/<release> in the kernel package, found ${dirs.join(', ') || 'none'}`);
  return dirs[0];
}

function checkKernelConfig(config: Record<string, string>, release: string): void {
  const bad = Object.entries(REQUIRED_CONFIG).filter(([k, re]) => !re.test(config[k] ?? 'n'));
  if (bad.length > 0) {
    throw new EnvironmentError('env-kernel-unusable', `kernel ${release} lacks ${bad.map(([k]) => k).join(', ')}`, {
      fix: 'use Debian linux-image-amd64 (bookworm), which has them',
    });
  }
}

/** Take the build lock, or fail if a live process holds it. Returns the release function. */
export function lockImages(root: string): () => void {
  const path = join(root, '.lock');
  let got;
  try {
    got = tryPidLock(path);
  } catch (err) {
    throw new EnvironmentError('env-image-lock', `cannot take the image build lock ${path}: ${(err as Error).message}`, {
      fix: `make ${root} writable by this user, on a file system with hard links (lock files are hard-linked into place)`,
      cause: err,
    });
  }
  if (got.ok) return got.release;
  throw new EnvironmentError('env-image-busy', got.pid !== undefined ? `another image build (pid ${got.pid}) is running` : 'could not take the image build lock', {
    fix: got.pid !== undefined ? `wait for it to finish, or remove ${path} if that process is not a cordon build` : `try again in a few seconds; remove ${path} if no build runs`,
  });
}

/**
 * Remove `.tmp-*` directories: with the lock held, they belong to dead builds.
 * A debootstrap killed mid-run can leave /proc, /sys or host /dev nodes
 * mounted inside its tree; a recursive delete must never walk into those.
 */
export function removeLeftovers(root: string): void {
  for (const name of readdirSync(root)) {
    if (!name.startsWith('.tmp-')) continue;
    const dir = join(root, name);
    const mounts = mountsUnder(dir);
    if (mounts.length > 0) {
      throw new EnvironmentError('env-image-mounts', `an interrupted build left ${mounts.length} mount(s) under ${dir}`, {
        fix: `umount -R ${dir} && rm -rf ${dir}`,
        details: { mounts },
      });
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Mount points at or below `dir`, from /proc/self/mountinfo. */
export function mountsUnder(dir: string, mountinfo?: string): string[] {
  let text = mountinfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/mountinfo', 'utf8');
    } catch {
      return [];
    }
  }
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return text
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(prefix));
}
