/**
 * Pick the kernel modules the initramfs needs and put them in load order.
 *
 * A kernel package unpacked with `dpkg-deb -x` has no `modules.dep` (depmod
 * writes it at install time), so dependencies come from each module's own
 * `.modinfo` section: `depends=` (hard) and `softdep=pre:` (loaded first when
 * present; ext4 asks for `crypto-crc32c` this way). Modules listed in
 * `modules.builtin` are compiled in and skipped.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { EnvironmentError } from '../../errors/index.js';
import { readElfSection } from './elf.js';
import { runTool } from './exec.js';

/**
 * What the guest needs: virtio transport, disk, console port, entropy, ext4
 * root, and the balloon driver, whose free page reporting hands the pages the
 * guest frees back to the host (the VMM's resident memory shrinks with them).
 */
export const GUEST_MODULES = ['virtio_mmio', 'virtio_blk', 'virtio_console', 'virtio_rng', 'virtio_balloon', 'ext4'] as const;

const KO_SUFFIX = /\.ko(\.xz|\.zst|\.gz)?$/;

export interface ModInfo {
  name: string;
  depends: string[];
  softdepPre: string[];
  aliases: string[];
}

export interface ResolvedModule {
  name: string;
  /** Path relative to `lib/modules/<release>/`. */
  path: string;
  /** Loaded because of a softdep: the init script tolerates its failure. */
  optional: boolean;
}

/** Module names compare with `-` and `_` as the same character. */
export function normalizeModName(name: string): string {
  return name.replace(/-/g, '_');
}

/** Parse the NUL-separated `key=value` strings of a `.modinfo` section. */
export function parseModinfo(section: Buffer, fallbackName: string): ModInfo {
  const info: ModInfo = { name: fallbackName, depends: [], softdepPre: [], aliases: [] };
  for (const entry of section.toString('latin1').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const key = entry.slice(0, eq);
    const value = entry.slice(eq + 1);
    if (key === 'name') info.name = normalizeModName(value);
    else if (key === 'depends') info.depends = value.split(',').filter(Boolean).map(normalizeModName);
    else if (key === 'alias') info.aliases.push(value);
    else if (key === 'softdep') info.softdepPre.push(...parseSoftdepPre(value));
  }
  return info;
}

/** `pre: a b post: c` → `['a', 'b']`. */
export function parseSoftdepPre(value: string): string[] {
  const out: string[] = [];
  let inPre = false;
  for (const tok of value.split(/\s+/).filter(Boolean)) {
    if (tok.endsWith(':')) inPre = tok === 'pre:';
    else if (inPre) out.push(tok);
  }
  return out;
}

/** Names of built-in modules from `modules.builtin` (`kernel/fs/ext4/ext4.ko` → `ext4`). */
export function parseModulesBuiltin(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const base = line.trim().split('/').pop();
    if (base) out.add(normalizeModName(base.replace(KO_SUFFIX, '')));
  }
  return out;
}

/**
 * A module tree (`lib/modules/<release>/`) that can read modules' metadata.
 * Reading is lazy: only the modules asked about are opened, except when a
 * softdep names an alias, which needs one scan of every module.
 */
export function openModuleTree(modDir: string) {
  const files = new Map<string, string>();
  walk(join(modDir, 'kernel'), (p) => {
    const base = p.split('/').pop() ?? '';
    if (KO_SUFFIX.test(base)) files.set(normalizeModName(base.replace(KO_SUFFIX, '')), relative(modDir, p));
  });
  const builtinPath = join(modDir, 'modules.builtin');
  const builtin = existsSync(builtinPath) ? parseModulesBuiltin(readFileSync(builtinPath, 'utf8')) : new Set<string>();
  const infos = new Map<string, ModInfo>();
  let aliasIndex: Map<string, string[]> | undefined;

  function info(name: string): ModInfo {
    const cached = infos.get(name);
    if (cached) return cached;
    const rel = files.get(name);
    if (!rel) throw new Error(`module ${name} not found`);
    const section = readElfSection(readFileSync(join(modDir, rel)), '.modinfo') ?? Buffer.alloc(0);
    const parsed = parseModinfo(section, name);
    infos.set(name, parsed);
    return parsed;
  }

  /** Modules that provide `aliasOrName` (a module name, or an `alias=` value). */
  function provide(aliasOrName: string): string[] {
    const n = normalizeModName(aliasOrName);
    if (files.has(n)) return [n];
    if (builtin.has(n)) return [];
    if (!aliasIndex) {
      aliasIndex = new Map();
      for (const mod of files.keys()) {
        for (const a of info(mod).aliases) aliasIndex.set(a, [...(aliasIndex.get(a) ?? []), mod]);
      }
    }
    return aliasIndex.get(aliasOrName) ?? [];
  }

  return {
    builtin,
    has: (name: string) => files.has(normalizeModName(name)),
    info,
    provide,
    pathOf: (name: string) => files.get(normalizeModName(name)),
  };
}

export type ModuleTree = ReturnType<typeof openModuleTree>;

/**
 * The modules to load, dependencies first. A wanted module that is neither a
 * file nor built in is an error; an unresolvable softdep is skipped.
 */
export function resolveModules(tree: ModuleTree, wanted: readonly string[]): ResolvedModule[] {
  const order: ResolvedModule[] = [];
  const state = new Map<string, 'visiting' | 'done'>();

  function visit(name: string, optional: boolean, chain: string[]): void {
    const n = normalizeModName(name);
    if (state.get(n) === 'done' || tree.builtin.has(n)) return;
    if (state.get(n) === 'visiting') throw new Error(`module dependency cycle: ${[...chain, n].join(' -> ')}`);
    const path = tree.pathOf(n);
    if (!path) {
      if (optional) return;
      throw new EnvironmentError('env-kernel-unusable', `kernel module ${n} is neither built in nor shipped (needed by ${chain.join(' -> ') || 'the guest'})`, {
        fix: 'use a Debian linux-image-amd64 kernel, which ships it',
      });
    }
    state.set(n, 'visiting');
    const mi = tree.info(n);
    for (const soft of mi.softdepPre) for (const p of tree.provide(soft)) visit(p, true, [...chain, n]);
    for (const dep of mi.depends) visit(dep, optional, [...chain, n]);
    state.set(n, 'done');
    order.push({ name: n, path, optional });
  }

  for (const w of wanted) visit(w, false, []);
  return order;
}

/** A module's bytes, decompressed if the package ships `.ko.xz`/`.ko.zst`/`.ko.gz`. */
export async function readModuleBytes(path: string, tools: { xz?: string; zstd?: string }): Promise<Buffer> {
  const raw = readFileSync(path);
  if (path.endsWith('.ko')) return raw;
  if (path.endsWith('.gz')) return gunzipSync(raw);
  const tool = path.endsWith('.xz') ? tools.xz : tools.zstd;
  if (!tool) throw new EnvironmentError('env-missing-tool', `${path} is compressed and the decompressor is missing`, { fix: 'apt-get install -y xz-utils zstd' });
  const dir = mkdtempSync(join(tmpdir(), 'cordon-ko-'));
  try {
    const out = join(dir, 'module.ko');
    await runTool(tool, ['-d', '-c', '-q'], { input: raw, stdoutFile: out });
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function walk(dir: string, visit: (path: string) => void): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, visit);
    else visit(p);
  }
}
