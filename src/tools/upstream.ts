/**
 * Connections to upstream MCP servers, one per (sandbox, server): a local
 * server is one confined process per sandbox (state kept by a tool server
 * never crosses sandboxes), a remote one is one client session per sandbox
 * whose every request goes through that agent's egress checks. A connection
 * opens on first use, lists the server's tools once (and scans them for
 * poisoning), and closes when idle, when its sandbox is released, or when it
 * breaks (a crashed server is started again on the next call).
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js';
import type { CordonConfig } from '../config/index.js';
import { renderTemplate, scanTemplate } from '../config/index.js';
import type { EgressPolicy } from '../policy/index.js';
import { confinedCommand, type ConfineHost } from './confine.js';
import { ToolsError } from './errors.js';
import { isValidToolName } from './policy.js';
import { createCheckedFetch, type RemoteEgressOptions } from './remote.js';
import { CORDON_VERSION } from '../version.js';

export type McpServerConfig = CordonConfig['mcpServers'][string];
/** Resolves `{{secret.NAME}}` names to values. */
export type ResolveToolSecrets = (names: readonly string[]) => Promise<ReadonlyMap<string, string>>;

/** Most tools taken from one server (pages are followed up to this). */
export const MAX_TOOLS_PER_SERVER = 500;
const MAX_LIST_PAGES = 20;
/** How much of a local server's stderr is kept for error messages. */
const STDERR_TAIL_CHARS = 2000;

export interface Upstream {
  readonly server: string;
  /** The server's tools (fetched once per connection). */
  tools(): Promise<Tool[]>;
  call(tool: string, args: Record<string, unknown> | undefined, signal?: AbortSignal): Promise<CallToolResult>;
  /** Secret values this server was given (masked in audit events and results). */
  readonly secretValues: readonly string[];
  close(): Promise<void>;
}

export interface UpstreamDeps {
  resolveSecrets: ResolveToolSecrets;
  confineHost?: ConfineHost;
  /** Egress for remote servers, minus the policy (which is the caller's). */
  remote?: Omit<RemoteEgressOptions, 'policy'>;
  /** Also copy a local server's stderr to the daemon's. @default 'ignore' (only its end is kept, for error messages) */
  stderr?: 'ignore' | 'inherit';
}

/** Open one connection (connect + initialize). */
export async function openUpstream(name: string, cfg: McpServerConfig, policy: EgressPolicy, deps: UpstreamDeps, onClose: () => void): Promise<Upstream> {
  const names = cfg.kind === 'local'
    ? Object.values(cfg.env).flatMap((v) => scanTemplate(v).secrets)
    : Object.values(cfg.headers).flatMap((v) => scanTemplate(v).secrets);
  const values = names.length > 0 ? await deps.resolveSecrets([...new Set(names)]) : new Map<string, string>();
  const render = (t: string): string => renderTemplate(t, (n) => {
    const v = values.get(n);
    if (v === undefined) throw new ToolsError('tools-secret-missing', 'secret-missing', `the secret ${n} of MCP server ${name} resolved to nothing`, { fix: `check secrets.${n} in cordon.yaml` });
    return v;
  });
  let transport: Transport;
  let stderrTail = '';
  let closeExtra = async (): Promise<void> => undefined;
  if (cfg.kind === 'local') {
    const env = Object.fromEntries(Object.entries(cfg.env).map(([k, v]) => [k, render(v)]));
    const c = confinedCommand({ command: cfg.command, env, network: cfg.network, paths: cfg.paths, ...(cfg.cwd ? { cwd: cfg.cwd } : {}) }, deps.confineHost);
    const stdio = new StdioClientTransport({ command: c.command, args: c.args, env: c.env, stderr: 'pipe', cwd: '/' });
    // Keep the end of the server's stderr (bubblewrap's own errors land there) for the error message.
    stdio.stderr?.on('data', (chunk: Buffer) => {
      stderrTail = (stderrTail + chunk.toString('utf8')).slice(-STDERR_TAIL_CHARS);
      if (deps.stderr === 'inherit') process.stderr.write(chunk);
    });
    transport = stdio;
  } else {
    const checked = createCheckedFetch({ ...deps.remote, policy });
    closeExtra = () => checked.close();
    const headers = Object.fromEntries(Object.entries(cfg.headers).map(([k, v]) => [k, render(v)]));
    transport = new StreamableHTTPClientTransport(new URL(cfg.url), { fetch: checked.fetch, requestInit: { headers } });
  }
  const client = new Client({ name: 'cordon-tools-gateway', version: CORDON_VERSION });
  let closed = false;
  client.onclose = () => {
    closed = true;
    onClose();
  };
  try {
    await client.connect(transport, { timeout: cfg.timeoutMs });
  } catch (err) {
    await client.close().catch(() => undefined);
    await closeExtra().catch(() => undefined);
    if (err instanceof ToolsError) throw err;
    const cause = err as Error & { cause?: unknown };
    if (cause?.cause instanceof ToolsError) throw cause.cause;
    const said = stderrTail.trim() ? `; its stderr ends with: ${stderrTail.trim().slice(-300)}` : '';
    throw new ToolsError('tools-upstream-failed', 'upstream-unavailable', `MCP server ${name} could not be started or reached: ${describeCauses(err).slice(0, 400)}${said}`, {
      fix: cfg.kind === 'local' ? `run its command by hand to see why; check mcpServers.${name}.command and paths` : `check mcpServers.${name}.url and the agent's egress rules`,
      cause: err,
    });
  }
  let listed: Promise<Tool[]> | undefined;
  return {
    server: name,
    secretValues: [...values.values()],
    tools() {
      listed ??= (async function listUpstreamTools() {
        const all: Tool[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < MAX_LIST_PAGES; page++) {
          const r = await client.listTools(cursor ? { cursor } : {}, { timeout: cfg.timeoutMs });
          for (const t of r.tools) if (isValidToolName(t.name) && all.length < MAX_TOOLS_PER_SERVER) all.push(t);
          cursor = r.nextCursor;
          if (!cursor) break;
        }
        return all;
      })();
      listed.catch(() => { listed = undefined; });
      return listed;
    },
    async call(tool, args, signal) {
      if (closed) throw new ToolsError('tools-upstream-closed', 'upstream-closed', `the connection to MCP server ${name} closed`, { fix: 'call again: the server is started again' });
      return (await client.callTool({ name: tool, ...(args ? { arguments: args } : {}) }, undefined, { timeout: cfg.timeoutMs, ...(signal ? { signal } : {}) })) as CallToolResult;
    },
    async close() {
      await client.close().catch(() => undefined);
      await closeExtra().catch(() => undefined);
    },
  };
}

/** An error's message followed by those of its causes ("fetch failed: Hostname/IP does not match …"). */
function describeCauses(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let i = 0; i < 4 && e; i++) {
    const m = (e as Error)?.message ?? String(e);
    if (m && !parts.includes(m)) parts.push(m);
    e = (e as { cause?: unknown })?.cause;
  }
  return parts.join(': ');
}
