/**
 * Image identity and the on-disk cache: `$CORDON_HOME/images/<id>/` holds
 * `vmlinux`, `initrd.img`, `rootfs.qcow2` and `manifest.json`. The id is the
 * SHA-256 of the canonical JSON of everything the image is built from, so the
 * same inputs always name the same directory and any changed input names a new
 * one. A directory only gets its final name once complete (rename is atomic),
 * and the manifest is validated before an image is used.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { canonicalJson } from '../../util/index.js';

/** Bump when the build steps change in a way the inputs below do not capture. */
export const RECIPE_VERSION = 1;

export const imageInputsSchema = z.object({
  recipeVersion: z.number().int().describe('RECIPE_VERSION of the code that built the image'),
  kernelPackage: z.object({ name: z.string(), version: z.string() }).describe('Debian kernel package behind linux-image-amd64'),
  busyboxPackage: z.object({ name: z.string(), version: z.string() }).describe('Debian busybox-static package'),
  suite: z.string().describe('Debian suite given to debootstrap'),
  include: z.array(z.string()).describe('extra packages given to debootstrap --include'),
  mirror: z.string().describe('Debian mirror URI read from the host apt sources'),
  modules: z.array(z.string()).describe('kernel modules asked for in the initramfs'),
  diskMiB: z.number().int().positive().describe('size of the ext4 root file system'),
  initScriptSha256: z.string().describe('hash of the initramfs /init template and stand-in init'),
  agentInitSha256: z.string().nullable().describe('hash of guest/build/cordon-init, null when absent'),
  agentDaemonSha256: z.string().nullable().describe('hash of guest/build/cordon-agent, null when absent'),
});
export type ImageInputs = z.infer<typeof imageInputsSchema>;

/** What an agent image adds to its base (absent on base images). */
export const agentImageInfoSchema = z.object({
  agent: z.string().describe('the agent it was built for (an identical image serves every agent with the same inputs)'),
  base: z.string().regex(/^[0-9a-f]{64}$/).describe('id of the base image it was built from'),
  packages: z.array(z.string()).describe('Debian packages installed on top of the base, sorted'),
  copies: z.array(z.object({
    from: z.string().describe('copy.from as written in cordon.yaml'),
    dir: z.string().describe('the absolute host directory it was resolved to at build time'),
    to: z.string().describe('absolute guest path'),
    sha256: z.string().describe('content hash of the directory (paths, types, modes, bytes)'),
    files: z.number().int(),
    bytes: z.number().int(),
  })).describe('project directories copied in'),
  configDir: z.string().describe('directory of cordon.yaml at build time (copy.from is relative to it)'),
});
export type AgentImageInfo = z.infer<typeof agentImageInfoSchema>;

export const imageManifestSchema = z.object({
  id: z.string().regex(/^[0-9a-f]{64}$/).describe('SHA-256 of the canonical inputs'),
  kernelPath: z.string().describe('uncompressed ELF kernel, booted through PVH'),
  initrdPath: z.string().describe('gzip newc initramfs'),
  rootfsPath: z.string().describe('read-only qcow2 base of the root file system'),
  kernelRelease: z.string().describe('uname -r of the guest kernel'),
  createdAt: z.string().describe('ISO-8601 time the build finished'),
  inputs: imageInputsSchema,
  modules: z.array(z.string()).describe('modules in the initramfs, in load order'),
  agent: z.object({ init: z.boolean(), daemon: z.boolean() }).describe('which guest agent binaries are in the image'),
  sizes: z.object({ kernelBytes: z.number(), initrdBytes: z.number(), rootfsBytes: z.number() }),
  buildMs: z.number().describe('wall time of the build'),
  agentImage: agentImageInfoSchema.optional().describe('set on agent images: what they add to their base'),
});
export type ImageManifest = z.infer<typeof imageManifestSchema>;

export const MANIFEST_FILE = 'manifest.json';

/** The image id for a set of inputs. */
export function imageId(inputs: ImageInputs): string {
  return createHash('sha256').update(canonicalJson(inputs)).digest('hex');
}

export function imagesDir(home: string): string {
  return join(home, 'images');
}

/**
 * Read and validate the manifest in `dir`; undefined if it is missing, does
 * not parse, or any file it names is gone.
 */
export function readManifest(dir: string): ImageManifest | undefined {
  const path = join(dir, MANIFEST_FILE);
  if (!existsSync(path)) return undefined;
  let parsed: z.SafeParseReturnType<unknown, ImageManifest>;
  try {
    parsed = imageManifestSchema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
  } catch {
    return undefined;
  }
  if (!parsed.success) return undefined;
  const m = parsed.data;
  if (![m.kernelPath, m.initrdPath, m.rootfsPath].every((p) => existsSync(p))) return undefined;
  return m;
}

/**
 * The newest complete image under `$home/images`, or undefined.
 * @param home the cordon state directory
 * @param accept only consider images it returns true for (e.g. `(m) => m.agent.daemon`) @default every image
 */
export function findImage(home: string, accept: (m: ImageManifest) => boolean = () => true): ImageManifest | undefined {
  const root = imagesDir(home);
  if (!existsSync(root)) return undefined;
  let best: ImageManifest | undefined;
  for (const name of readdirSync(root)) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue; // skips .tmp-* build dirs
    const m = readManifest(join(root, name));
    if (m && m.id === name && accept(m) && (!best || m.createdAt > best.createdAt)) best = m;
  }
  return best;
}

/** SHA-256 of a file, or null if it does not exist. */
export function fileSha256(path: string): string | null {
  if (!existsSync(path)) return null;
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}
