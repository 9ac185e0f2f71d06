/**
 * A per-sandbox cgroup for the process back ends: memory, process count and
 * CPU limits, freezing (pause/resume) and killing everything inside.
 *
 * The cgroup is created below the cgroup cordon itself runs in, for each
 * controller on its own hierarchy (cgroup v1) or once on the unified one
 * (v2). What could not be set up is reported in `enforced`, never silently
 * assumed: a host without writable cgroups (no root, no delegation) still
 * runs sandboxes, with only the rlimits the back end sets.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from '../../util/index.js';

export type CgroupController = 'memory' | 'pids' | 'cpu' | 'freezer';
export const CGROUP_CONTROLLERS: readonly CgroupController[] = ['memory', 'pids', 'cpu', 'freezer'];

export interface CgroupPlace {
  version: 1 | 2;
  /** The directory of cordon's own cgroup for this controller. */
  dir: string;
}

/**
 * Where each controller of the calling process lives, from the text of
 * `/proc/self/cgroup` and `/proc/self/mountinfo`. A v2 place is returned for
 * every controller not bound to a v1 hierarchy; whether v2 really offers it is
 * checked when the cgroup is created.
 */
export function locateCgroups(selfCgroup: string, mountinfo: string): Partial<Record<CgroupController, CgroupPlace>> {
  const mounts = mountinfo.split('\n').filter(Boolean).map((line) => {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    return {
      root: unescape(f[3] ?? ''), point: unescape(f[4] ?? ''),
      fstype: f[dash + 1] ?? '', superOpts: (f[dash + 3] ?? '').split(','),
    };
  });
  const under = (m: { root: string; point: string }, path: string): string => {
    const rel = m.root === '/' ? path : path.startsWith(m.root) ? path.slice(m.root.length) : path;
    const dir = join(m.point, rel);
    return dir.length > 1 ? dir.replace(/\/+$/, '') : dir;
  };
  const out: Partial<Record<CgroupController, CgroupPlace>> = {};
  let unifiedPath: string | undefined;
  for (const line of selfCgroup.split('\n').filter(Boolean)) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    const ctrls = m[1] ?? '';
    const path = m[2] ?? '/';
    if (ctrls === '') {
      unifiedPath = path;
      continue;
    }
    for (const c of ctrls.split(',')) {
      if (!(CGROUP_CONTROLLERS as readonly string[]).includes(c)) continue;
      const mount = mounts.find((x) => x.fstype === 'cgroup' && x.superOpts.includes(c));
      if (mount) out[c as CgroupController] = { version: 1, dir: under(mount, path) };
    }
  }
  const v2 = mounts.find((x) => x.fstype === 'cgroup2');
  if (v2 && unifiedPath !== undefined) {
    for (const c of CGROUP_CONTROLLERS) out[c] ??= { version: 2, dir: under(v2, unifiedPath) };
  }
  return out;
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export interface CgroupLimits {
  memoryMiB: number;
  /** Most processes and threads at once. */
  pids: number;
  /** CPU time as a number of CPUs (1 = one core's worth per period). */
  cpus: number;
}

export type Enforced = Record<CgroupController, boolean>;

/** One sandbox's cgroup(s). Every method is safe to call after `remove()`. */
export interface SandboxCgroup {
  /** Which limits are really in force. */
  readonly enforced: Enforced;
  /** `cgroup.procs` files a process must write its pid to, to join. */
  readonly procsFiles: readonly string[];
  /** Pids inside (from the first hierarchy). */
  pids(): number[];
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  /** SIGKILL everything inside (thawing first: frozen tasks cannot die), then remove the directories. */
  remove(): Promise<void>;
}

export interface CreateCgroupOptions {
  /** Directory name, e.g. `cordon-sb-…`. */
  name: string;
  limits: CgroupLimits;
  /** @default locateCgroups of this process */
  places?: Partial<Record<CgroupController, CgroupPlace>>;
}

const CPU_PERIOD_US = 100_000;

/** Create the sandbox's cgroup(s) and set the limits that the host allows. */
export function createCgroup(opts: CreateCgroupOptions): SandboxCgroup {
  const places = opts.places ?? locateSelf();
  const enforced: Enforced = { memory: false, pids: false, cpu: false, freezer: false };
  const dirs = new Map<string, { version: 1 | 2; controllers: CgroupController[] }>();
  for (const c of CGROUP_CONTROLLERS) {
    const place = places[c];
    if (!place) continue;
    if (place.version === 2 && !enableV2(place.dir, c)) continue;
    const dir = join(place.dir, opts.name);
    try {
      mkdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') continue;
    }
    const entry = dirs.get(dir) ?? { version: place.version, controllers: [] };
    entry.controllers.push(c);
    dirs.set(dir, entry);
    enforced[c] = applyLimit(dir, place.version, c, opts.limits);
  }
  const list = [...dirs.entries()];
  const freezerDir = list.find(([, e]) => e.controllers.includes('freezer'));
  let removed = false;

  const readPids = (): number[] => {
    const first = list[0];
    if (!first || removed) return [];
    try {
      return readFileSync(join(first[0], 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const setFrozen = async (frozen: boolean): Promise<void> => {
    if (!freezerDir || removed) return;
    const [dir, { version }] = freezerDir;
    const file = version === 1 ? 'freezer.state' : 'cgroup.freeze';
    writeFileSync(join(dir, file), version === 1 ? (frozen ? 'FROZEN' : 'THAWED') : (frozen ? '1' : '0'));
    const done = (): boolean => version === 1
      ? readFileSync(join(dir, 'freezer.state'), 'utf8').trim() === (frozen ? 'FROZEN' : 'THAWED')
      : readFileSync(join(dir, 'cgroup.events'), 'utf8').includes(`frozen ${frozen ? 1 : 0}`);
    for (let i = 0; i < 200 && !done(); i++) await sleep(5);
  };

  return {
    enforced,
    procsFiles: list.map(([dir]) => join(dir, 'cgroup.procs')),
    pids: readPids,
    freeze: () => setFrozen(true),
    thaw: () => setFrozen(false),
    async remove() {
      if (removed) return;
      for (let attempt = 0; attempt < 100; attempt++) {
        const pids = readPids();
        if (pids.length === 0) break;
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        if (attempt === 0) await setFrozen(false);
        await sleep(10);
      }
      removed = true;
      for (const [dir] of list) {
        for (let attempt = 0; attempt < 100 && existsSync(dir); attempt++) {
          try {
            rmdirSync(dir);
          } catch {
            await sleep(10); // EBUSY until the last task has left
          }
        }
      }
    },
  };
}

function locateSelf(): Partial<Record<CgroupController, CgroupPlace>> {
  try {
    return locateCgroups(readFileSync('/proc/self/cgroup', 'utf8'), readFileSync('/proc/self/mountinfo', 'utf8'));
  } catch {
    return {};
  }
}

/** Make a v2 controller available to children of `dir`; false if the host does not allow it. */
function enableV2(dir: string, c: CgroupController): boolean {
  if (c === 'freezer') return true; // cgroup.freeze is core: every non-root v2 cgroup has it (Linux 5.2+)
  try {
    if (!readFileSync(join(dir, 'cgroup.controllers'), 'utf8').split(/\s+/).includes(c)) return false;
    if (readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes(c)) return true;
    writeFileSync(join(dir, 'cgroup.subtree_control'), `+${c}`);
    return true;
  } catch {
    return false; // EBUSY: cordon's own cgroup has processes ("no internal processes" rule), or no permission
  }
}

function applyLimit(dir: string, version: 1 | 2, c: CgroupController, l: CgroupLimits): boolean {
  const put = (file: string, value: string): void => writeFileSync(join(dir, file), value);
  try {
    const bytes = String(l.memoryMiB * 1024 * 1024);
    switch (c) {
      case 'memory':
        if (version === 1) {
          put('memory.limit_in_bytes', bytes);
          if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) put('memory.memsw.limit_in_bytes', bytes);
        } else {
          put('memory.max', bytes);
          if (existsSync(join(dir, 'memory.swap.max'))) put('memory.swap.max', '0');
        }
        return true;
      case 'pids':
        put('pids.max', String(l.pids));
        return true;
      case 'cpu': {
        const quota = String(Math.round(l.cpus * CPU_PERIOD_US));
        if (version === 1) {
          put('cpu.cfs_period_us', String(CPU_PERIOD_US));
          put('cpu.cfs_quota_us', quota);
        } else {
          put('cpu.max', `${quota} ${CPU_PERIOD_US}`);
        }
        return true;
      }
      case 'freezer':
        return existsSync(join(dir, version === 1 ? 'freezer.state' : 'cgroup.freeze'));
    }
  } catch {
    return false;
  }
}
