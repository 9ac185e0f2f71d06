/**
 * The open upstream connections of the tools gateway, keyed by sandbox and
 * server, with each connection's tool list scanned for poisoning once.
 * Connections close after `idleMs` without use, when their sandbox is
 * released (or no longer live), and all at `close()`.
 */
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import type { EgressPolicy } from '../policy/index.js';
import { ToolsError } from './errors.js';
import { scanTools, type PoisonFinding } from './poison.js';
import type { InjectionDetector } from '../gateway/index.js';
import { openUpstream, type McpServerConfig, type Upstream, type UpstreamDeps } from './upstream.js';

export interface ListedTools {
  tools: Tool[];
  /** Flagged tools by upstream name. */
  poisoned: ReadonlyMap<string, PoisonFinding>;
  /** Set when the scan itself failed: every tool counts as flagged. */
  scanError?: string;
}

interface Entry {
  sandboxId: string;
  opening: Promise<Upstream>;
  listing?: Promise<ListedTools>;
  lastUsedMs: number;
}

export interface UpstreamPool {
  get(sandboxId: string, server: string, cfg: McpServerConfig, policy: EgressPolicy): Promise<Upstream>;
  /** The server's tools and the poisoning findings; `onFindings` runs once per fetched list. */
  list(sandboxId: string, server: string, cfg: McpServerConfig, policy: EgressPolicy, onFindings: (l: ListedTools) => Promise<void>): Promise<ListedTools>;
  release(sandboxId: string): Promise<void>;
  close(): Promise<void>;
  readonly size: number;
}

export interface PoolOptions extends UpstreamDeps {
  /** @default 300000 */
  idleMs?: number;
  /** Sandboxes that exist; connections of others are closed by the sweep. @default all count as live */
  liveSandboxes?: () => Iterable<string>;
  detector?: InjectionDetector;
  poisonThreshold?: number;
}

export function createUpstreamPool(o: PoolOptions): UpstreamPool {
  const entries = new Map<string, Entry>();
  const idleMs = o.idleMs ?? 300_000;
  let closed = false;
  const keyOf = (sandboxId: string, server: string): string => `${sandboxId}\u0000${server}`;

  async function drop(key: string, e: Entry): Promise<void> {
    if (entries.get(key) === e) entries.delete(key);
    await e.opening.then((u) => u.close(), () => undefined);
  }

  const sweep = setInterval(() => {
    const live = o.liveSandboxes ? new Set(o.liveSandboxes()) : undefined;
    const now = Date.now();
    for (const [key, e] of entries) if (now - e.lastUsedMs > idleMs || (live && !live.has(e.sandboxId))) void drop(key, e);
  }, Math.min(30_000, Math.max(1000, Math.floor(idleMs / 2))));
  sweep.unref();

  function entryFor(sandboxId: string, server: string, cfg: McpServerConfig, policy: EgressPolicy): Entry {
    if (closed) throw new ToolsError('tools-closed', 'gateway-closed', 'the tools gateway is shutting down');
    const key = keyOf(sandboxId, server);
    let e = entries.get(key);
    if (!e) {
      const entry: Entry = { sandboxId, lastUsedMs: Date.now(), opening: Promise.resolve(undefined as never) };
      entry.opening = openUpstream(server, cfg, policy, o, () => {
        if (entries.get(key) === entry) entries.delete(key);
      });
      entry.opening.catch(() => {
        if (entries.get(key) === entry) entries.delete(key);
      });
      entries.set(key, (e = entry));
    }
    e.lastUsedMs = Date.now();
    return e;
  }

  return {
    get(sandboxId, server, cfg, policy) {
      try {
        return entryFor(sandboxId, server, cfg, policy).opening;
      } catch (err) {
        return Promise.reject(err);
      }
    },
    list(sandboxId, server, cfg, policy, onFindings) {
      let e: Entry;
      try {
        e = entryFor(sandboxId, server, cfg, policy);
      } catch (err) {
        return Promise.reject(err);
      }
      if (!e.listing) {
        const entry = e;
        entry.listing = (async function listAndScan(): Promise<ListedTools> {
          const up = await entry.opening;
          const tools = await up.tools();
          let listed: ListedTools;
          try {
            const findings = await scanTools(tools, { ...(o.detector ? { detector: o.detector } : {}), ...(o.poisonThreshold !== undefined ? { threshold: o.poisonThreshold } : {}) });
            listed = { tools, poisoned: new Map(findings.map((f) => [f.tool, f])) };
          } catch (err) {
            listed = { tools, poisoned: new Map(), scanError: String((err as Error)?.message ?? err).slice(0, 300) };
          }
          await onFindings(listed);
          return listed;
        })();
        entry.listing.catch(() => { entry.listing = undefined; });
        return entry.listing;
      }
      return e.listing;
    },
    async release(sandboxId) {
      await Promise.all([...entries].filter(([, e]) => e.sandboxId === sandboxId).map(([k, e]) => drop(k, e)));
    },
    async close() {
      closed = true;
      clearInterval(sweep);
      await Promise.all([...entries].map(([k, e]) => drop(k, e)));
    },
    get size() {
      return entries.size;
    },
  };
}
