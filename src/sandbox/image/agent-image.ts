/**
 * Agent images (`agents.<name>.image` in cordon.yaml): the base image's root
 * file system plus Debian packages (installed with apt inside the tree at
 * build time) plus project directories, kept like the base image as a qcow2
 * disk for microVMs and a tree for the process back ends, in
 * `$CORDON_HOME/images/agents/<id>/`.
 *
 * The id is the SHA-256 of the inputs: the base image's id, the sorted package
 * list and, per copied directory, its guest path and content hash. Building
 * with unchanged inputs does nothing; any change names a new image. A sandbox
 * of the agent boots only from the image that matches its current inputs: a
 * stale or missing one is an error naming `cordon image build --agent NAME`,
 * never a silent fallback to an older image or to the base.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync, copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { AgentConfig } from '../../config/index.js';
import { EnvironmentError } from '../../errors/index.js';
import { canonicalJson, ensurePrivateDir, writeFileAtomic } from '../../util/index.js';
import { aptInstallInTree } from './apt-tree.js';
import { lockImages, mountsUnder, removeLeftovers, type BuildProgress, type BuildResult } from './build.js';
import { requireTools, runTool } from './exec.js';
import { findImage, imagesDir, MANIFEST_FILE, readManifest, type AgentImageInfo, type ImageManifest } from './manifest.js';
import { NODE_PROXY_GUEST_PATH, nodeProxySource } from './node-proxy.js';
import { copyProject, digestProject, resolveProjectDir } from './project.js';
import { AGENT_USER, makeDisk } from './rootfs.js';
import { ensureRootfsTree, ROOTFS_TREE_DIR } from './tree.js';

/** Bump when the agent image steps change in a way the inputs do not capture. */
export const AGENT_RECIPE_VERSION = 1;
export type AgentImageConfig = NonNullable<AgentConfig['image']>;

/** Where agent images live: beside the base images, in a folder `findImage` never picks from. */
export function agentImagesDir(home: string): string {
  return join(imagesDir(home), 'agents');
}

export interface AgentImageRequest {
  /** `$CORDON_HOME`. */
  home: string;
  /** The agent's name (used in messages and recorded in the manifest). */
  agent: string;
  image: AgentImageConfig;
  /** The directory of cordon.yaml: `copy.from` is relative to it. */
  configDir: string;
  /** @default the newest base image with the guest agent (the one microVM sandboxes use) */
  base?: ImageManifest;
}

export interface AgentImagePlan {
  id: string;
  base: ImageManifest;
  inputs: { recipeVersion: number; base: string; packages: string[]; copies: Array<{ to: string; sha256: string }>; nodeProxySha256: string };
  info: AgentImageInfo;
}

/** The base image agent images are built on, or `env-no-image`. */
export function baseImageForAgents(home: string): ImageManifest {
  const base = findImage(home, (m) => m.agent.init && m.agent.daemon);
  if (!base) throw new EnvironmentError('env-no-image', `no base image with the guest agent in ${imagesDir(home)}`, { fix: 'cordon image build' });
  return base;
}

/** Resolve and hash the inputs of an agent image (no building; reads the copied directories). */
export function planAgentImage(r: AgentImageRequest): AgentImagePlan {
  const base = r.base ?? baseImageForAgents(r.home);
  const packages = [...new Set(r.image.packages)].sort();
  const copies = r.image.copy.map((c, i) => {
    const dir = resolveProjectDir(r.configDir, c.from, `agents.${r.agent}.image.copy[${i}].from`);
    return { from: c.from, dir, to: c.to, ...digestProject(dir) };
  });
  const inputs = {
    recipeVersion: AGENT_RECIPE_VERSION, base: base.id, packages,
    copies: copies.map((c) => ({ to: c.to, sha256: c.sha256 })).sort((a, b) => (a.to < b.to ? -1 : 1)),
    nodeProxySha256: createHash('sha256').update(nodeProxySource()).digest('hex'),
  };
  const id = createHash('sha256').update(canonicalJson(inputs)).digest('hex');
  return { id, base, inputs, info: { agent: r.agent, base: base.id, packages, copies, configDir: r.configDir } };
}

/** Every complete agent image, newest first. */
export function listAgentImages(home: string): ImageManifest[] {
  const root = agentImagesDir(home);
  if (!existsSync(root)) return [];
  const out: ImageManifest[] = [];
  for (const name of readdirSync(root)) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue;
    const m = readManifest(join(root, name));
    if (m && m.id === name && m.agentImage) out.push(m);
  }
  return out.sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
}

/**
 * The image a sandbox of `agent` must boot from: the one built from the
 * agent's current inputs.
 * @param configDir the directory of cordon.yaml @default the one recorded by the agent's newest build
 * @throws EnvironmentError `env-agent-image-missing` (never built) or `env-agent-image-stale` (inputs changed), both with the build command
 */
export function resolveAgentImage(o: { home: string; agent: string; image: AgentImageConfig; configDir?: string }): ImageManifest {
  const fix = `cordon image build --agent ${o.agent}`;
  const all = listAgentImages(o.home);
  const built = all.filter((m) => m.agentImage!.agent === o.agent);
  const own = o.configDir ?? built[0]?.agentImage?.configDir;
  // Images are content-addressed: another agent's build with the same inputs serves this agent too.
  const others = [...new Set(all.map((m) => m.agentImage!.configDir))].filter((d) => d !== own);
  let plan: AgentImagePlan | undefined;
  for (const dir of [...(own === undefined ? [] : [own]), ...others]) {
    let p: AgentImagePlan;
    try {
      p = planAgentImage({ home: o.home, agent: o.agent, image: o.image, configDir: dir });
    } catch (err) {
      if (dir === own) throw err; // this agent's own project is unreadable: say why
      continue; // that project is not this agent's
    }
    plan ??= p;
    const m = all.find((x) => x.id === p.id);
    if (m) return m;
  }
  if (own === undefined || plan === undefined) {
    throw new EnvironmentError('env-agent-image-missing', `agent "${o.agent}" has its own image in cordon.yaml, and it has not been built`, { fix });
  }
  const last = built[0]?.agentImage;
  const changed = !last ? ['never built'] : [
    ...(last.base !== plan.inputs.base ? ['the base image was rebuilt'] : []),
    ...(canonicalJson(last.packages) !== canonicalJson(plan.inputs.packages) ? ['packages'] : []),
    ...(canonicalJson(last.copies.map((c) => [c.to, c.sha256]).sort()) !== canonicalJson(plan.info.copies.map((c) => [c.to, c.sha256]).sort()) ? ['copied files'] : []),
  ];
  throw new EnvironmentError('env-agent-image-stale', `the image of agent "${o.agent}" is out of date (${changed.join(', ') || 'inputs changed'})`, {
    fix, details: { agent: o.agent, want: plan.id },
  });
}

/** Replaceable build steps (tests swap in cheap ones; the defaults are the real ones). */
export interface AgentImageSteps {
  /** Install `packages` into `tree`. @default apt-get inside the tree, under bubblewrap */
  install?: (tree: string, packages: readonly string[], onLine: (line: string) => void) => Promise<void>;
  /** Pack `tree` into `qcow2Path`. @default mkfs.ext4 -d, then qemu-img convert */
  disk?: (tree: string, rawPath: string, qcow2Path: string, diskMiB: number) => Promise<void>;
}

export interface BuildAgentImageOptions extends AgentImageRequest {
  onProgress?: (p: BuildProgress) => void;
  /** Rebuild even if the image exists; do not force while its sandboxes run. @default false */
  force?: boolean;
  steps?: AgentImageSteps;
  /** Where to look for host tools. @default $PATH plus the sbin directories */
  searchPath?: string;
}

/**
 * Build an agent image, or return the cached one with the same inputs.
 * @example
 * const image = await buildAgentImage({ home, agent: 'coder', image: agent.image, configDir: dirname(configPath) });
 */
export async function buildAgentImage(o: BuildAgentImageOptions): Promise<BuildResult> {
  const started = Date.now();
  const progress = o.onProgress ?? (() => undefined);
  const plan = planAgentImage(o);
  const root = ensurePrivateDir(agentImagesDir(o.home));
  const finalDir = join(root, plan.id);
  const existing = readManifest(finalDir);
  if (existing?.agentImage && !o.force) {
    progress({ step: 'done', detail: `agent image ${plan.id.slice(0, 12)} of "${o.agent}" is already built from the same inputs; nothing to do`, fraction: 1 });
    return { ...existing, cached: true };
  }
  if (process.getuid?.() !== 0) {
    throw new EnvironmentError('env-needs-root', 'building an agent image installs packages and sets file owners, which needs root', {
      fix: `run it as root (e.g. \`sudo cordon image build --agent ${o.agent}\`); sandboxes themselves do not need root`,
    });
  }
  const needBwrap = !o.steps?.install && plan.info.packages.length > 0;
  const tools = requireTools(['cp', 'mkfs.ext4', 'qemu-img', ...(needBwrap ? ['bwrap' as const] : [])], 'cordon image build --agent', o.searchPath);
  const install = o.steps?.install ?? ((tree, packages, onLine) => aptInstallInTree({
    bwrap: (tools as Record<string, string>).bwrap!, tree, packages, onLine, where: `agents.${o.agent}.image.packages`,
  }));
  const disk = o.steps?.disk ?? ((tree, raw, qcow2, mib) => makeDisk(tools, tree, raw, qcow2, mib));

  const unlock = lockImages(root);
  const tmp = join(root, `.tmp-${plan.id.slice(0, 12)}-${randomBytes(4).toString('hex')}`);
  try {
    removeLeftovers(root);
    mkdirSync(tmp, { mode: 0o700 });
    const tree = join(tmp, 'tree');
    progress({ step: 'base', detail: `copying base image ${plan.base.id.slice(0, 12)}`, fraction: 0 });
    const baseTree = await ensureRootfsTree(plan.base, o.searchPath === undefined ? {} : { searchPath: o.searchPath });
    await runTool(tools.cp, ['-a', '--reflink=auto', baseTree, tree]);
    progress({ step: 'base', detail: `base image ${plan.base.id.slice(0, 12)} copied`, fraction: 1 });

    const pk = plan.info.packages;
    progress({ step: 'packages', detail: pk.length ? `apt-get install ${pk.join(' ')}` : 'no extra packages', fraction: 0 });
    let seen = 0;
    await install(tree, pk, (line) => {
      // apt prints Get:/Unpacking/Setting up lines; count them for a rough fraction.
      if (/^(Get:|Unpacking |Setting up )/.test(line)) progress({ step: 'packages', detail: line.slice(0, 120), fraction: Math.min(0.95, ++seen / (pk.length * 12 + 10)) });
    });
    progress({ step: 'packages', detail: pk.length ? `${pk.length} package(s) installed` : 'no extra packages', fraction: 1 });

    plan.info.copies.forEach((c, i) => {
      progress({ step: 'copy', detail: `${c.from} -> ${c.to} (${c.files} files)`, fraction: i / plan.info.copies.length });
      copyProject(c.dir, tree, c.to, { uid: AGENT_USER.uid, gid: AGENT_USER.gid });
      // The image must hold exactly what was hashed: a directory changed mid-build fails the build.
      if (digestProject(join(tree, c.to.slice(1))).sha256 !== c.sha256) {
        throw new EnvironmentError('env-agent-image-changed', `${c.dir} changed while it was copied into the image`, { fix: 'run the build again when the directory is not being written' });
      }
    });
    // Node's fetch ignores the proxy variables; every agent image carries the preload that fixes that (see node-proxy.ts).
    mkdirSync(join(tree, NODE_PROXY_GUEST_PATH.slice(1), '..'), { recursive: true, mode: 0o755 });
    writeFileSync(join(tree, NODE_PROXY_GUEST_PATH.slice(1)), nodeProxySource(), { mode: 0o644 });
    progress({ step: 'copy', detail: `${plan.info.copies.length} directory(ies) copied`, fraction: 1 });

    const diskMiB = diskSizeMiB(treeBytes(tree), plan.base.inputs.diskMiB);
    progress({ step: 'disk', detail: `mkfs.ext4 (${diskMiB} MiB) and qcow2`, fraction: 0 });
    await disk(tree, join(tmp, 'rootfs.ext4'), join(tmp, 'rootfs.qcow2'), diskMiB);
    chmodSync(join(tmp, 'rootfs.qcow2'), 0o444);
    chmodSync(tree, 0o755);
    renameSync(tree, join(tmp, ROOTFS_TREE_DIR));
    // Kernel and initramfs are the base's: hard links when possible, so the image stands alone if the base is removed.
    for (const [from, name] of [[plan.base.kernelPath, 'vmlinux'], [plan.base.initrdPath, 'initrd.img']] as const) {
      try {
        linkSync(from, join(tmp, name));
      } catch {
        copyFileSync(from, join(tmp, name));
      }
    }
    progress({ step: 'disk', detail: `rootfs.qcow2 and ${ROOTFS_TREE_DIR}/`, fraction: 1 });

    const manifest: ImageManifest = {
      id: plan.id,
      kernelPath: join(finalDir, 'vmlinux'),
      initrdPath: join(finalDir, 'initrd.img'),
      rootfsPath: join(finalDir, 'rootfs.qcow2'),
      kernelRelease: plan.base.kernelRelease,
      createdAt: new Date().toISOString(),
      inputs: { ...plan.base.inputs, diskMiB },
      modules: plan.base.modules,
      agent: plan.base.agent,
      sizes: { ...plan.base.sizes, rootfsBytes: statSync(join(tmp, 'rootfs.qcow2')).size },
      buildMs: Date.now() - started,
      agentImage: plan.info,
    };
    writeFileAtomic(join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n', 0o644);
    if (existsSync(finalDir)) renameSync(finalDir, join(root, `.tmp-old-${plan.id.slice(0, 12)}-${randomBytes(4).toString('hex')}`));
    renameSync(tmp, finalDir);
    removeLeftovers(root);
    progress({ step: 'done', detail: `agent image ${plan.id.slice(0, 12)} of "${o.agent}" built in ${Math.round(manifest.buildMs / 1000)} s`, fraction: 1 });
    return { ...manifest, cached: false };
  } finally {
    if (mountsUnder(tmp).length === 0) rmSync(tmp, { recursive: true, force: true });
    unlock();
  }
}

/** Room for the tree plus a quarter and 512 MiB of working space, in 256 MiB steps; never below the base's size. */
export function diskSizeMiB(bytes: number, baseMiB: number): number {
  const need = Math.ceil((bytes * 1.25) / 1048576) + 512;
  return Math.max(baseMiB, Math.ceil(need / 256) * 256);
}

/** Bytes of every file below `dir` (links not followed). */
function treeBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += treeBytes(p);
    else if (e.isFile()) total += lstatSync(p).size;
  }
  return total;
}
