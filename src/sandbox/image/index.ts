/**
 * The guest image: build it (`cordon image build`), find the newest one, and
 * give each sandbox its own copy-on-write disk on top of the shared base.
 */
import { existsSync, rmSync } from 'node:fs';
import { EnvironmentError } from '../../errors/index.js';
import { requireTools, runTool } from './exec.js';

export { buildImage, planImage, defaultAgentDir } from './build.js';
export type { BuildImageOptions, BuildProgress, BuildResult, BuildStep } from './build.js';
export { findImage, readManifest, imageId, RECIPE_VERSION } from './manifest.js';
export type { ImageInputs, ImageManifest } from './manifest.js';
export { READY_MARKER, FAILED_MARKER } from './initramfs.js';
export { AGENT_USER, GUEST_HOSTNAME } from './rootfs.js';
export { checkRootfsTree, ensureRootfsTree, findTreeImage, rootfsTreeDir, ROOTFS_TREE_DIR, TREE_AGENT_PATH } from './tree.js';
export type { EnsureTreeOptions } from './tree.js';
export { requireTools, runTool, whichTool, TOOL_PACKAGES } from './exec.js';
export {
  agentImagesDir, baseImageForAgents, buildAgentImage, diskSizeMiB, listAgentImages, planAgentImage, resolveAgentImage, AGENT_RECIPE_VERSION,
} from './agent-image.js';
export type { AgentImageConfig, AgentImagePlan, AgentImageRequest, AgentImageSteps, BuildAgentImageOptions } from './agent-image.js';
export { nodeProxyOptions, nodeProxySource, NODE_PROXY_GUEST_PATH } from './node-proxy.js';
export { findImageById, imagesInUse, listBaseImages, qcow2BackingFile, removeImage, RUN_IMAGE_FILE } from './usage.js';
export type { AgentImageInfo } from './manifest.js';
export type { ToolName } from './exec.js';

export interface OverlayOptions {
  /** Virtual size of the overlay; larger than the base grows the disk. @default the base's size */
  sizeMiB?: number;
}

/**
 * Create a qcow2 overlay whose backing file is the read-only base, for one
 * sandbox's writes. Fails if `overlayPath` exists.
 * @returns the time it took, in milliseconds
 * @example
 * const { createMs } = await createOverlay(image.rootfsPath, join(runDir, 'disk.qcow2'));
 */
export async function createOverlay(basePath: string, overlayPath: string, opts: OverlayOptions = {}): Promise<{ path: string; createMs: number }> {
  const started = performance.now();
  if (!existsSync(basePath)) {
    throw new EnvironmentError('env-no-image', `base image ${basePath} does not exist`, { fix: 'run `cordon image build`' });
  }
  if (existsSync(overlayPath)) {
    throw new EnvironmentError('env-overlay-exists', `${overlayPath} already exists`, { fix: 'use a fresh path per sandbox' });
  }
  const { 'qemu-img': qemuImg } = requireTools(['qemu-img'], 'creating a sandbox disk');
  const args = ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', basePath, overlayPath];
  if (opts.sizeMiB !== undefined) args.push(`${opts.sizeMiB}M`);
  try {
    await runTool(qemuImg, args);
  } catch (err) {
    rmSync(overlayPath, { force: true });
    throw err;
  }
  return { path: overlayPath, createMs: performance.now() - started };
}

/** Delete a sandbox's overlay (no error if it is already gone). */
export function removeOverlay(overlayPath: string): void {
  rmSync(overlayPath, { force: true });
}
