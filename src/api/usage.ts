/**
 * `GET /v1/usage/sandboxes`: resource use of every live sandbox, behind the
 * operator-token and audit middleware of `app.ts`: the agent's limits from
 * the config (vCPUs, memory, disk) and what the sandbox's host processes
 * use now (resident memory and CPU time of the VMM or runtime process and its
 * descendants, read from `/proc`). A figure that cannot be measured (no pid,
 * the process gone, no `/proc`) is left out rather than guessed.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Hono } from 'hono';
import type { SandboxInfo } from '../sandbox/index.js';

type Vars = { Variables: { actor: string } };

export interface UsageRoutesOptions {
  sandboxes: { list(): SandboxInfo[] };
  /** The configured limits of an agent, if it is known. */
  limits?: (agent: string) => { vcpus: number; memoryMiB: number; diskMiB: number } | undefined;
  /** @default '/proc' */
  procRoot?: string;
}

export interface ProcessTreeUse {
  rssKiB: number;
  cpuTicks: number;
  processes: number;
}

/** Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ: 100 on Linux). */
const USER_HZ = 100;

type ProcTable = Map<number, { ppid: number; ticks: number; rssPages: number }>;

/** Parent, CPU ticks and resident pages of every process, from one pass over `/proc`; undefined without `/proc`. */
function readProcTable(procRoot: string): ProcTable | undefined {
  const stats: ProcTable = new Map();
  let names: string[];
  try {
    names = readdirSync(procRoot);
  } catch {
    return undefined;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const text = readFileSync(`${procRoot}/${name}/stat`, 'utf8');
      // The command name is in parentheses and may hold spaces: split after its last ')'.
      const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(name), { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]), rssPages: Number(rest[21]) });
    } catch {
      // exited meanwhile
    }
  }
  return stats;
}

function treeUse(stats: ProcTable, pid: number): ProcessTreeUse | undefined {
  if (!stats.has(pid)) return undefined;
  const children = new Map<number, number[]>();
  for (const [p, s] of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), p]);
  const use: ProcessTreeUse = { rssKiB: 0, cpuTicks: 0, processes: 0 };
  const todo = [pid];
  const seen = new Set<number>();
  while (todo.length > 0 && use.processes < 10_000) {
    const p = todo.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    const s = stats.get(p);
    if (!s) continue;
    use.processes++;
    use.cpuTicks += s.ticks;
    use.rssKiB += s.rssPages * 4;
    todo.push(...(children.get(p) ?? []));
  }
  return use;
}

/** RSS (4 KiB pages) and CPU time of `pid` and its descendants, or undefined when `pid` is not there. */
export function processTreeUse(pid: number, procRoot = '/proc'): ProcessTreeUse | undefined {
  const stats = readProcTable(procRoot);
  return stats ? treeUse(stats, pid) : undefined;
}

/** The routes, to be mounted at `/v1/usage`. */
export function usageRoutes(o: UsageRoutesOptions): Hono<Vars> {
  const app = new Hono<Vars>();
  app.get('/sandboxes', function sandboxUsage(c) {
    const list = o.sandboxes.list();
    const table = list.some((s) => s.pid !== undefined) ? readProcTable(o.procRoot ?? '/proc') : undefined;
    const usage = list.map((s) => {
      const limits = o.limits?.(s.agent);
      const tree = table && s.pid !== undefined && s.state !== 'destroyed' ? treeUse(table, s.pid) : undefined;
      return {
        id: s.id,
        ...(limits ? { vcpus: limits.vcpus, memoryMiB: limits.memoryMiB, diskMiB: limits.diskMiB } : {}),
        ...(tree ? { rssMiB: Math.round(tree.rssKiB / 102.4) / 10, cpuSeconds: Math.round(tree.cpuTicks / USER_HZ * 10) / 10, processes: tree.processes } : {}),
      };
    });
    return c.json({ usage }, 200, { 'cache-control': 'no-store' });
  });
  return app;
}
