/**
 * Project directories copied into an agent image (`agents.<name>.image.copy`).
 *
 * A `from` directory is resolved against the directory of cordon.yaml and must
 * stay inside it after symbolic links are followed (no path escapes). The walk
 * never follows a link: links are copied as links (they resolve inside the
 * guest, never on the host), and sockets, FIFOs and device nodes are refused.
 * The content hash covers every entry's relative path, type, permission bits
 * and bytes (or link target), so a change to any of them names a new image.
 */
import { createHash } from 'node:crypto';
import {
  chmodSync, copyFileSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync, symlinkSync,
} from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { ConfigError } from '../../errors/index.js';

/** One entry of a project directory, relative to its root ('' is the root itself). */
export interface ProjectEntry {
  rel: string;
  kind: 'dir' | 'file' | 'link';
  /** Permission bits (0o7777 masked to 0o777: set-id bits are never copied). */
  mode: number;
  size: number;
  /** Link target, for links. */
  target?: string;
}

export interface ProjectDigest {
  /** SHA-256 over every entry (path, type, mode, content). */
  sha256: string;
  files: number;
  bytes: number;
}

/** Most entries one copied directory may hold. */
export const MAX_PROJECT_ENTRIES = 200_000;

/**
 * Resolve a `copy.from` directory against the config directory.
 * @param where the config path of the field, e.g. `agents.coder.image.copy[0].from` (used in errors)
 * @throws ConfigError when it does not exist, is not a directory, or leaves the config directory
 */
export function resolveProjectDir(configDir: string, from: string, where: string): string {
  const base = realpathSync(configDir);
  const wanted = resolve(base, from);
  let real: string;
  try {
    real = realpathSync(wanted);
  } catch {
    throw new ConfigError(`${where}: ${wanted} does not exist`, [{ path: where, problem: `${wanted} does not exist`, fix: 'create the directory, or correct the path (relative to cordon.yaml)' }], {
      fix: `create ${wanted}, or correct ${where} (it is relative to the directory of cordon.yaml)`,
    });
  }
  if (real !== base && !real.startsWith(base + sep)) {
    throw new ConfigError(`${where}: ${from} resolves to ${real}, outside ${base}`, [{ path: where, problem: `${from} leaves the directory of cordon.yaml`, fix: 'copy only directories below the one that holds cordon.yaml' }], {
      fix: `move the project below ${base}, or point ${where} at a directory there`,
    });
  }
  if (!statSync(real).isDirectory()) {
    throw new ConfigError(`${where}: ${real} is not a directory`, [{ path: where, problem: `${real} is not a directory`, fix: 'name a directory; its contents are copied' }], {
      fix: `point ${where} at a directory`,
    });
  }
  return real;
}

/** Every entry below `root`, in a stable (sorted) order; links are not followed. */
export function walkProject(root: string): ProjectEntry[] {
  const out: ProjectEntry[] = [];
  const visit = (rel: string): void => {
    const abs = rel === '' ? root : join(root, rel);
    const st = lstatSync(abs);
    const mode = st.mode & 0o777;
    if (out.length >= MAX_PROJECT_ENTRIES) {
      throw new ConfigError(`${root} holds more than ${MAX_PROJECT_ENTRIES} entries`, [], { fix: 'copy a smaller directory (leave build outputs and caches out)' });
    }
    if (st.isSymbolicLink()) {
      out.push({ rel, kind: 'link', mode, size: 0, target: readlinkSync(abs) });
    } else if (st.isFile()) {
      out.push({ rel, kind: 'file', mode, size: st.size });
    } else if (st.isDirectory()) {
      out.push({ rel, kind: 'dir', mode, size: 0 });
      for (const name of readdirSync(abs).sort()) visit(rel === '' ? name : `${rel}/${name}`);
    } else {
      throw new ConfigError(`${abs} is a socket, FIFO or device node, which an image cannot hold`, [], { fix: `remove it from ${root}, or copy a directory without it` });
    }
  };
  visit('');
  return out;
}

/** The content hash of a project directory. */
export function digestProject(root: string): ProjectDigest {
  const h = createHash('sha256');
  let files = 0;
  let bytes = 0;
  for (const e of walkProject(root)) {
    h.update(`${e.kind}\0${e.rel}\0${e.mode.toString(8)}\0`);
    if (e.kind === 'file') {
      const data = readFileSync(join(root, e.rel));
      h.update(`${data.length}\0`).update(data);
      files++;
      bytes += data.length;
    } else if (e.kind === 'link') {
      h.update(`${e.target}\0`);
    }
  }
  return { sha256: h.digest('hex'), files, bytes };
}

/**
 * Copy a project directory into an image tree at `guestPath`, owned by
 * `uid:gid`. Parents that do not exist are created (root-owned, 0755).
 */
export function copyProject(root: string, tree: string, guestPath: string, owner: { uid: number; gid: number }): void {
  const dest = join(tree, guestPath.slice(1));
  if (relative(tree, dest).startsWith('..')) throw new ConfigError(`${guestPath} is outside the image`, [], { fix: 'use an absolute guest path' });
  mkdirSync(join(dest, '..'), { recursive: true, mode: 0o755 });
  for (const e of walkProject(root)) {
    const to = e.rel === '' ? dest : join(dest, e.rel);
    if (e.kind === 'dir') {
      mkdirSync(to, { recursive: true, mode: 0o700 });
      chmodSync(to, e.mode);
    } else if (e.kind === 'file') {
      copyFileSync(join(root, e.rel), to);
      chmodSync(to, e.mode);
    } else {
      symlinkSync(e.target!, to);
    }
    lchownSync(to, owner.uid, owner.gid);
  }
}
