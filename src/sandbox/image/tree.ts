/**
 * The root file system as a directory tree, for the process back ends
 * (bubblewrap, gVisor), which mount a directory rather than boot a disk.
 *
 * It lives at `$CORDON_HOME/images/<id>/rootfs-tree/`, owned by root. A new
 * build keeps its debootstrap tree there; for an image built before that (or
 * whose tree was deleted) `ensureRootfsTree` unpacks the qcow2 base once with
 * `qemu-img convert` and `debugfs rdump`: no loop device, no mount privilege.
 * The tree only gets its final name when complete, so a sandbox never sees a
 * half-written one. Sandboxes mount it read-only; their writes go to tmpfs.
 *
 * An unpacked tree differs from the build tree in ways that do not matter to
 * a sandbox that sets no_new_privs: `debugfs rdump` drops set-user-ID,
 * set-group-ID and sticky bits, file capabilities and device nodes.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { EnvironmentError } from '../../errors/index.js';
import { requireTools, runTool } from './exec.js';
import { findImage, type ImageManifest } from './manifest.js';
import { AGENT_USER } from './rootfs.js';
import { alive } from '../../util/pidlock.js';

/** Name of the tree inside an image directory. */
export const ROOTFS_TREE_DIR = 'rootfs-tree';
/** Where the guest agent sits inside the tree (and inside every guest). */
export const TREE_AGENT_PATH = '/usr/sbin/cordon-agent';

/**
 * The newest image that holds the guest agent (an image built while
 * guest/build was empty cannot run a process sandbox).
 * @throws EnvironmentError `env-no-image` with the build command
 */
export function findTreeImage(home: string): ImageManifest {
  const image = findImage(home, (m) => m.agent.daemon);
  if (!image) {
    throw new EnvironmentError('env-no-image', `no guest image with the guest agent in ${join(home, 'images')}`, {
      fix: 'make -C guest/agent && cordon image build',
    });
  }
  return image;
}

/** The tree's path for an image (it may not exist yet). */
export function rootfsTreeDir(image: Pick<ImageManifest, 'rootfsPath'>): string {
  return join(dirname(image.rootfsPath), ROOTFS_TREE_DIR);
}

/** A tree is usable when it is a root-owned directory with the guest agent and the agent user. */
export function checkRootfsTree(dir: string): string | undefined {
  if (!existsSync(dir)) return `${dir} does not exist`;
  const st = statSync(dir);
  if (!st.isDirectory()) return `${dir} is not a directory`;
  if (st.uid !== 0 && process.getuid?.() === 0) return `${dir} is owned by uid ${st.uid}, not root`;
  const agent = join(dir, TREE_AGENT_PATH);
  if (!existsSync(agent) || (statSync(agent).mode & 0o111) === 0) return `${dir} has no executable ${TREE_AGENT_PATH}`;
  const passwd = join(dir, 'etc/passwd');
  if (!existsSync(passwd) || !readFileSync(passwd, 'utf8').split('\n').some((l) => l.startsWith(`${AGENT_USER.name}:x:${AGENT_USER.uid}:`))) {
    return `${dir}/etc/passwd has no ${AGENT_USER.name} user with uid ${AGENT_USER.uid}`;
  }
  return undefined;
}

export interface EnsureTreeOptions {
  /** Where to look for qemu-img and debugfs. @default $PATH plus the sbin directories */
  searchPath?: string;
}

/**
 * The image's root file system tree, unpacked from the qcow2 base on first
 * use (about 3 s and 300 MB for the default image).
 * @returns the absolute path of the tree
 * @throws EnvironmentError `env-no-agent` when the image holds no guest agent
 * @example
 * const tree = await ensureRootfsTree(findImage(cordonHome())!);
 */
export async function ensureRootfsTree(image: ImageManifest, opts: EnsureTreeOptions = {}): Promise<string> {
  const dir = rootfsTreeDir(image);
  if (!image.agent.daemon) {
    throw new EnvironmentError('env-no-agent', `image ${image.id.slice(0, 12)} was built without the guest agent`, {
      fix: 'run `make -C guest/agent`, then `cordon image build`',
    });
  }
  if (existsSync(dir)) {
    const problem = checkRootfsTree(dir);
    if (problem) throw new EnvironmentError('env-bad-rootfs-tree', problem, { fix: `rm -rf ${dir} (it is unpacked again on next use), or run \`cordon image build --force\`` });
    return dir;
  }
  const tools = requireTools(['qemu-img', 'debugfs'], 'unpacking the root file system tree', opts.searchPath);
  const imageDir = dirname(image.rootfsPath);
  removeDeadUnpacks(imageDir);
  const tmp = join(imageDir, `.tree-tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(join(tmp, 'tree'), { recursive: true, mode: 0o700 });
  try {
    await runTool(tools['qemu-img'], ['convert', '-q', '-f', 'qcow2', '-O', 'raw', image.rootfsPath, join(tmp, 'raw.img')]);
    // cwd-relative paths: debugfs splits its -R command on spaces.
    const { stderr } = await runTool(tools.debugfs, ['-R', 'rdump / tree', 'raw.img'], { cwd: tmp });
    rmSync(join(tmp, 'raw.img'), { force: true });
    const tree = join(tmp, 'tree');
    const problem = checkRootfsTree(tree);
    if (problem) {
      throw new EnvironmentError('env-bad-rootfs-tree', `unpacking ${image.rootfsPath} gave an unusable tree: ${problem}`, {
        fix: 'run `cordon image build --force`', details: { debugfs: stderr.slice(-2000) },
      });
    }
    chmodSync(tree, 0o755);
    for (const sticky of ['tmp', 'var/tmp']) if (existsSync(join(tree, sticky))) chmodSync(join(tree, sticky), 0o1777);
    try {
      renameSync(tree, dir);
    } catch (err) {
      // Another process finished first: use its tree.
      const code = (err as NodeJS.ErrnoException).code;
      if (!(code === 'ENOTEMPTY' || code === 'EEXIST') || checkRootfsTree(dir)) throw err;
    }
    return dir;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Remove `.tree-tmp-<pid>-*` directories whose process is gone. */
function removeDeadUnpacks(imageDir: string): void {
  for (const name of readdirSync(imageDir)) {
    const m = /^\.tree-tmp-(\d+)-/.exec(name);
    if (!m) continue;
    if (!alive(Number(m[1]))) rmSync(join(imageDir, name), { recursive: true, force: true });
  }
}
