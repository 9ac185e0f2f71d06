/**
 * Which images live sandboxes use, and removing an image that none uses.
 *
 * Every live sandbox has a run directory (`$CORDON_HOME/run/<id>/`, removed
 * when it ends). Its image is read from what is in there: the marker the
 * sandbox manager writes for agent images (`image-id`), the backing file of a
 * microVM's qcow2 overlay, or the root of a gVisor bundle. A run directory
 * with none of these (a bubblewrap sandbox on the base image) counts as using
 * the current base image. When in doubt an image counts as used: removal
 * refuses rather than pull an image from under a running sandbox.
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, rmSync } from 'node:fs';
import { join, sep } from 'node:path';
import { InvalidInputError, NotFoundError, SandboxError } from '../../errors/index.js';
import { agentImagesDir, listAgentImages } from './agent-image.js';
import { findImage, imagesDir, readManifest, type ImageManifest } from './manifest.js';

/** The file in a sandbox's run directory that names the agent image it boots from. */
export const RUN_IMAGE_FILE = 'image-id';

/** Every complete base image, newest first. */
export function listBaseImages(home: string): ImageManifest[] {
  const root = imagesDir(home);
  if (!existsSync(root)) return [];
  const out: ImageManifest[] = [];
  for (const name of readdirSync(root)) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue;
    const m = readManifest(join(root, name));
    if (m && m.id === name) out.push(m);
  }
  return out.sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
}

/** The backing file named in a qcow2 header, or undefined. */
export function qcow2BackingFile(path: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const head = Buffer.alloc(24);
    if (readSync(fd, head, 0, 24, 0) < 24 || head.readUInt32BE(0) !== 0x514649fb) return undefined;
    const offset = Number(head.readBigUInt64BE(8));
    const size = head.readUInt32BE(16);
    if (offset === 0 || size === 0 || size > 4096) return undefined;
    const name = Buffer.alloc(size);
    readSync(fd, name, 0, size, offset);
    return name.toString('utf8');
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** The image id a path inside an image directory belongs to. */
function imageOfPath(home: string, path: string): string | undefined {
  for (const root of [agentImagesDir(home), imagesDir(home)]) {
    if (!path.startsWith(root + sep)) continue;
    const id = path.slice(root.length + 1).split(sep)[0] ?? '';
    if (/^[0-9a-f]{64}$/.test(id)) return id;
  }
  return undefined;
}

/** Image id → the live sandboxes (by run directory) that use it. */
export function imagesInUse(home: string): Map<string, string[]> {
  const used = new Map<string, string[]>();
  const add = (id: string | undefined, sandbox: string) => {
    const key = id ?? findImage(home, (m) => m.agent.init && m.agent.daemon)?.id ?? 'unknown';
    used.set(key, [...(used.get(key) ?? []), sandbox]);
  };
  const run = join(home, 'run');
  if (!existsSync(run)) return used;
  for (const sandbox of readdirSync(run)) {
    const dir = join(run, sandbox);
    const marker = join(dir, RUN_IMAGE_FILE);
    if (existsSync(marker)) {
      add(readFileSync(marker, 'utf8').trim(), sandbox);
      continue;
    }
    const backing = existsSync(join(dir, 'disk.qcow2')) ? qcow2BackingFile(join(dir, 'disk.qcow2')) : undefined;
    if (backing) {
      add(imageOfPath(home, backing), sandbox);
      continue;
    }
    let bundleRoot: string | undefined;
    try {
      bundleRoot = (JSON.parse(readFileSync(join(dir, 'bundle', 'config.json'), 'utf8')) as { root?: { path?: string } }).root?.path;
    } catch { /* no gVisor bundle */ }
    add(bundleRoot ? imageOfPath(home, bundleRoot) : undefined, sandbox);
  }
  return used;
}

/** The image (base or agent) whose id starts with `prefix` (at least 8 hex digits). */
export function findImageById(home: string, prefix: string): ImageManifest {
  if (!/^[0-9a-f]{8,64}$/.test(prefix)) {
    throw new InvalidInputError(`"${prefix}" is not an image id`, { fix: 'give at least 8 hex digits of an id from `cordon image ls`' });
  }
  const hits = [...listBaseImages(home), ...listAgentImages(home)].filter((m) => m.id.startsWith(prefix));
  if (hits.length === 0) throw new NotFoundError(`no image ${prefix}`, { fix: 'list images with `cordon image ls`' });
  if (hits.length > 1) throw new InvalidInputError(`${prefix} names ${hits.length} images`, { fix: 'give more hex digits of the id' });
  return hits[0]!;
}

/**
 * Remove an image's directory, unless a live sandbox uses it.
 * @throws SandboxError `sandbox-image-in-use` naming the sandboxes
 */
export function removeImage(home: string, image: ImageManifest): void {
  const users = imagesInUse(home).get(image.id) ?? [];
  if (users.length > 0) {
    throw new SandboxError('sandbox-image-in-use', `image ${image.id.slice(0, 12)} is used by running sandbox${users.length > 1 ? 'es' : ''} ${users.join(', ')}`, {
      fix: `destroy ${users.length > 1 ? 'them' : 'it'} first (\`cordon sandbox rm ${users[0]}\`), then remove the image`,
      details: { image: image.id, sandboxes: users },
    });
  }
  const dir = join(image.agentImage ? agentImagesDir(home) : imagesDir(home), image.id);
  rmSync(dir, { recursive: true, force: true });
}
