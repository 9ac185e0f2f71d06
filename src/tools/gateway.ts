/**
 * The tools gateway: one MCP server (streamable HTTP, the official SDK) at
 * `http(s)://mcp.cordon.internal/mcp`, reached only through a sandbox's egress
 * door, that aggregates the upstream MCP servers the caller's agent names
 * under `tools:`. Tools appear as `<server>__<tool>`.
 *
 * Stateless mode (no `Mcp-Session-Id`): every POST is authenticated on its
 * own (the channel-bound service key or token of the door's sandbox), gets a
 * fresh SDK server, and is answered with one JSON response. Nothing an agent
 * could hijack or replay lives between requests, a daemon restart loses no
 * session, and the state that matters (upstream connections, approvals) is
 * keyed by the authenticated sandbox, not by anything the client sends. GET
 * (a server-sent event stream) and DELETE (session end) answer 405: the
 * gateway sends no notifications.
 *
 * Each call: split the name → unknown tool (JSON-RPC -32602) → the agent's
 * policy (deny wins, then approve, then allow, else deny) → a hidden
 * poisoned tool is refused → `approve` holds the call for an operator →
 * `tool.call` is appended (a call whose event cannot be written is refused)
 * → the upstream call, bounded by the server's `timeout` → `tool.result`
 * (bytes, duration, error). Refusals are tool results with `isError: true`
 * and a text that says why and what to do, plus `_meta["cordon/refusal"]`.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, McpError, type CallToolResult, type Tool } from '@modelcontextprotocol/sdk/types.js';
import type { Approvals, MaskSource } from '../approvals/index.js';
import { maskText, toolAction, underSupervision } from '../approvals/index.js';
import type { AuditEventInput } from '../audit/index.js';
import type { CordonConfig } from '../config/index.js';
import type { Authenticate, GatewayCaller, InjectionDetector } from '../gateway/index.js';
import { PLACEHOLDER_PATTERN } from '../secrets/index.js';
import { CORDON_VERSION } from '../version.js';
import { holdToolCall } from './approval.js';
import { ToolsError } from './errors.js';
import { checkCallParams, headerOf, readJson, rpcError } from './edge.js';
import { flaggedDescription } from './poison.js';
import { decideTool, gatewayToolName, splitToolName, type ToolDecision } from './policy.js';
import { createUpstreamPool, type ListedTools, type PoolOptions } from './pool.js';
import type { ResolveToolSecrets } from './upstream.js';

/** The path of the MCP endpoint. */
export const MCP_PATH = '/mcp';
/** Longest argument text kept in an audit event (the rest is summarised by size and hash). */
export const AUDIT_ARGS_CHARS = 8192;

export interface ToolsAuditSink {
  /** Must reject when the event is not durable. */
  append(event: AuditEventInput): Promise<unknown>;
}

export interface ToolsGatewayOptions {
  config: Pick<CordonConfig, 'agents' | 'mcpServers' | 'approvals'>;
  audit: ToolsAuditSink;
  /** Who is calling; `createSandboxAuthenticator({ …, audience: MCP_AUDIENCE })` fits. */
  authenticate: Authenticate;
  /** Where `approve` calls are held. @default none: such calls are refused (`approval-not-available`) */
  approvals?: Approvals;
  /** How long a held call waits. @default config.approvals.holdTimeoutMs */
  holdTimeoutMs?: number;
  /** The sandbox's secret values and placeholders, masked in audited arguments. @default placeholder shapes only */
  redact?: (sandboxId: string) => MaskSource;
  /** Reads `{{secret.NAME}}` of servers' `env` and `headers`. */
  resolveSecrets: ResolveToolSecrets;
  /** Largest request body. @default 1 MiB */
  maxBodyBytes?: number;
  /** Upstream connections: confinement host, remote egress (DNS, self addresses, CA), idle time, live sandboxes. */
  upstream?: Omit<PoolOptions, 'resolveSecrets' | 'detector' | 'poisonThreshold'>;
  /** Scores tool descriptions. @default the gateway's heuristic detector */
  detector?: InjectionDetector;
  /** @default 0.5 */
  poisonThreshold?: number;
}

export interface ToolsGateway {
  /** Serve one request (the egress proxy's internal dispatch calls this with the door's caller). */
  handle(req: IncomingMessage, res: ServerResponse, caller?: GatewayCaller): Promise<void>;
  /** Close the upstream connections of a sandbox that ended. */
  release(sandboxId: string): Promise<void>;
  close(): Promise<void>;
}

interface Who {
  agent: string;
  sandboxId: string;
}

/** Build the gateway. */
export function createToolsGateway(o: ToolsGatewayOptions): ToolsGateway {
  const maxBody = o.maxBodyBytes ?? 1024 * 1024;
  const holdTimeoutMs = o.holdTimeoutMs ?? o.config.approvals.holdTimeoutMs;
  const pool = createUpstreamPool({
    ...o.upstream, resolveSecrets: o.resolveSecrets,
    ...(o.detector ? { detector: o.detector } : {}), ...(o.poisonThreshold !== undefined ? { poisonThreshold: o.poisonThreshold } : {}),
  });
  /** Poisoning findings already audited: server, tool and the hash of its texts. */
  const reported = new Set<string>();

  const policyOf = (agent: string) => ({ agent, egress: o.config.agents[agent]?.egress ?? [], egressMode: o.config.agents[agent]?.egressMode ?? 'enforce' as const });
  const toolsOf = (agent: string) => o.config.agents[agent]?.tools ?? {};
  const maskFor = (who: Who, extra: readonly string[] = []): MaskSource => {
    const base = o.redact?.(who.sandboxId) ?? {};
    return { values: [...(base.values ?? []), ...extra], patterns: base.patterns ?? [PLACEHOLDER_PATTERN] };
  };
  const event = (who: Who, type: string, decision: string | undefined, reason: string | undefined, data: Record<string, unknown>): AuditEventInput => ({
    type, actor: `agent:${who.agent}`, agent: who.agent, sandbox: who.sandboxId, ...(decision ? { decision } : {}), ...(reason ? { reason } : {}), data,
  });

  async function listed(who: Who, server: string): Promise<ListedTools> {
    const cfg = o.config.mcpServers[server];
    if (!cfg) throw new ToolsError('tools-no-server', 'server-not-defined', `MCP server ${server} is not defined`, { fix: `define mcpServers.${server} in cordon.yaml` });
    return pool.list(who.sandboxId, server, cfg, policyOf(who.agent), async function reportPoisoned(l) {
      const flagged = l.scanError ? l.tools.map((t) => ({ tool: t.name, rules: ['scan-failed'], score: 1, where: 'description', excerpt: l.scanError!, textSha256: '' })) : [...l.poisoned.values()];
      for (const f of flagged) {
        const key = `${server}\u0000${f.tool}\u0000${f.textSha256}`;
        if (reported.has(key)) continue;
        const hide = cfg.poisonedTools === 'hide';
        await o.audit.append(event(who, 'tool.poisoned', hide ? 'deny' : 'flag', 'injected-instructions', {
          server, tool: f.tool, name: gatewayToolName(server, f.tool), action: cfg.poisonedTools, score: f.score, rules: f.rules, where: f.where, excerpt: f.excerpt, textSha256: f.textSha256,
        }));
        reported.add(key);
      }
    });
  }

  async function listTools(who: Who): Promise<Tool[]> {
    const out: Tool[] = [];
    const servers = Object.keys(toolsOf(who.agent)).sort();
    // Servers start in parallel; one that fails is left out (and audited), the others are listed.
    const lists = await Promise.all(servers.map(async (server) => {
      try {
        return await listed(who, server);
      } catch (err) {
        const e = err instanceof ToolsError ? err : undefined;
        await o.audit.append(event(who, 'tool.upstream', 'deny', e?.reason ?? 'upstream-unavailable', { server, problem: String((err as Error)?.message ?? err).slice(0, 500) })).catch(() => undefined);
        return undefined;
      }
    }));
    for (const [i, server] of servers.entries()) {
      const l = lists[i];
      if (!l) continue;
      const hide = o.config.mcpServers[server]?.poisonedTools === 'hide';
      for (const t of l.tools) {
        const d = decideTool(who.agent, toolsOf(who.agent), server, t.name);
        if (d.result === 'deny') continue;
        const finding = l.poisoned.get(t.name) ?? (l.scanError ? { tool: t.name, score: 1, rules: ['scan-failed'], where: 'description', excerpt: '', textSha256: '' } : undefined);
        if (finding && hide) continue;
        let description = finding ? flaggedDescription(finding, t.description) : t.description;
        if (d.result === 'approve') description = `${description ?? ''} [cordon: each call waits for a human approval]`.trim();
        out.push({ ...t, name: gatewayToolName(server, t.name), ...(description !== undefined ? { description } : {}) });
      }
    }
    return out;
  }

  /** A supervised sandbox's allowed calls are held like `approve` ones (see approvals/supervise.ts); a check that throws holds too. */
  function supervisedTool(d: ToolDecision, sandboxId: string): ToolDecision {
    if (d.result !== 'allow' || !o.approvals) return d;
    let supervised: boolean;
    try {
      supervised = o.approvals.isSupervised(sandboxId);
    } catch {
      supervised = true;
    }
    return underSupervision(d.result, supervised) === 'approve' ? { ...d, result: 'approve' } : d;
  }

  function refusal(reason: string, text: string, extra: Record<string, unknown> = {}): CallToolResult {
    return { content: [{ type: 'text', text: `cordon refused this call (${reason}): ${text}` }], isError: true, _meta: { 'cordon/refusal': { reason, ...extra } } };
  }

  async function callTool(who: Who, name: string, args: Record<string, unknown> | undefined, signal: AbortSignal): Promise<CallToolResult> {
    const callId = randomUUID();
    const parts = splitToolName(name);
    const shownArgs = (secrets: readonly string[] = []) => auditArgs(toolAction({ agent: who.agent, sandboxId: who.sandboxId, toolName: name, args: args ?? {} }, maskFor(who, secrets)).action.args);
    const unknown = async (why: string): Promise<never> => {
      await o.audit.append(event(who, 'tool.call', 'deny', 'unknown-tool', { callId, name: String(name).slice(0, 200), ...(parts ? { server: parts.server, tool: parts.tool } : {}), args: shownArgs() })).catch(() => undefined);
      throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${JSON.stringify(String(name).slice(0, 200))} (${why}); list the tools with tools/list: their names are <server>__<tool>`);
    };
    if (!parts) return unknown('not of the form <server>__<tool>');
    const { server, tool } = parts;
    const cfg = o.config.mcpServers[server];
    if (!cfg || !Object.hasOwn(toolsOf(who.agent), server)) return unknown(`this agent has no MCP server ${server}`);
    const decision: ToolDecision = supervisedTool(decideTool(who.agent, toolsOf(who.agent), server, tool), who.sandboxId);
    const base = { callId, server, tool, name, ...(decision.ruleId ? { ruleId: decision.ruleId } : {}) };
    const deny = async (reason: string, text: string, extra: Record<string, unknown> = {}, secrets: readonly string[] = []): Promise<CallToolResult> => {
      await o.audit.append(event(who, 'tool.call', 'deny', reason, { ...base, ...extra, args: shownArgs(secrets) })).catch(() => undefined);
      return refusal(reason, text, extra);
    };
    if (decision.result === 'deny') {
      return deny(decision.reason, `the agent's policy does not allow ${name} (${decision.reason}${decision.ruleId ? `, ${decision.ruleId}` : ''})`);
    }
    let l: ListedTools;
    let up;
    try {
      up = await pool.get(who.sandboxId, server, cfg, policyOf(who.agent));
      l = await listed(who, server);
    } catch (err) {
      const e = err instanceof ToolsError ? err : undefined;
      return deny(e?.reason ?? 'upstream-unavailable', String((err as Error)?.message ?? err).slice(0, 500), e?.code === 'tools-egress-refused' ? { egress: true } : {});
    }
    if (!l.tools.some((t) => t.name === tool)) return unknown(`MCP server ${server} has no tool ${tool}`);
    if ((l.poisoned.has(tool) || l.scanError) && cfg.poisonedTools === 'hide') {
      return deny('tool-poisoned', `the description of ${name} looks like injected instructions, and this server's poisonedTools setting hides such tools`);
    }
    let approvalId: string | undefined;
    if (decision.result === 'approve') {
      const held = await holdToolCall(o.approvals, { agent: who.agent, sandboxId: who.sandboxId, toolName: name, args: args ?? {} }, {
        holdTimeoutMs, mask: maskFor(who, up.secretValues), signal,
      });
      if (!held.ok) return deny(held.reason, held.problem, { ...(held.approvalId ? { approvalId: held.approvalId } : {}), ...(held.state ? { state: held.state } : {}) }, up.secretValues);
      approvalId = held.approvalId;
    }
    try {
      await o.audit.append(event(who, 'tool.call', 'allow', approvalId ? 'approved' : decision.reason, { ...base, ...(approvalId ? { approvalId } : {}), args: shownArgs(up.secretValues) }));
    } catch {
      return refusal('audit-unavailable', 'the call could not be recorded in the audit log, so it was not made; try again later');
    }
    const started = Date.now();
    let result: CallToolResult | undefined;
    let error: string | undefined;
    try {
      result = await up.call(tool, args, signal);
    } catch (err) {
      error = String((err as Error)?.message ?? err).slice(0, 500);
    }
    const durationMs = Date.now() - started;
    if (result && up.secretValues.length > 0) result = maskResult(result, up.secretValues);
    const bytes = result ? Buffer.byteLength(JSON.stringify(result)) : 0;
    await o.audit.append(event(who, 'tool.result', error ? 'error' : 'ok', error ? 'upstream-error' : result?.isError ? 'tool-error' : 'ok', {
      callId, server, tool, name, bytes, durationMs, ...(result?.isError ? { isError: true } : {}), ...(error ? { error } : {}),
    })).catch(() => undefined);
    if (result) return result;
    return refusal('upstream-error', `MCP server ${server} failed on ${tool}: ${error}`);
  }

  function mcpServerFor(who: Who): Server {
    const server = new Server(
      { name: 'cordon-tools', version: CORDON_VERSION },
      { capabilities: { tools: { listChanged: false } }, instructions: 'Tools of this agent, named <server>__<tool>. cordon checks, audits and may hold each call for a human approval.' },
    );
    server.setRequestHandler(ListToolsRequestSchema, async function listForAgent() {
      return { tools: await listTools(who) };
    });
    server.setRequestHandler(CallToolRequestSchema, async function callForAgent(request, extra) {
      return callTool(who, request.params.name, request.params.arguments, extra.signal);
    });
    return server;
  }

  return {
    async handle(req, res, caller) {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== MCP_PATH) return rpcError(res, 404, -32000, `no MCP endpoint at ${path}; use ${MCP_PATH}`);
      if (req.method !== 'POST') {
        res.setHeader('Allow', 'POST');
        return rpcError(res, 405, -32000, `${req.method} is not served: this gateway is stateless (no sessions, no server-sent event stream); send each JSON-RPC message as a POST`);
      }
      let auth;
      try {
        auth = await o.authenticate({ method: req.method, path, header: (n) => headerOf(req, n) }, caller);
      } catch {
        auth = { ok: false as const, reason: 'authenticator-failed' };
      }
      if (!auth.ok) {
        await o.audit.append({ type: 'tool.auth', actor: caller ? `agent:${caller.agent}` : 'unknown', ...(caller ? { agent: caller.agent, sandbox: caller.sandboxId } : {}), decision: 'deny', reason: auth.reason, data: { path } })
          .catch(() => undefined);
        return rpcError(res, 401, -32001, `not authenticated (${auth.reason}): send this sandbox's service key or token as "Authorization: Bearer …" (CORDON_MCP_TOKEN in the guest), through the sandbox's own egress proxy`);
      }
      const who: Who = { agent: auth.agent, sandboxId: auth.sandboxId };
      const body = await readJson(req, maxBody);
      if (!body.ok) return rpcError(res, body.status, body.code, body.message);
      const badParams = checkCallParams(body.value);
      if (badParams) return rpcError(res, 200, ErrorCode.InvalidParams, badParams.message, badParams.id);
      const server = mcpServerFor(who);
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
      res.on('close', function closeRequestServer() {
        void transport.close().catch(() => undefined);
        void server.close().catch(() => undefined);
      });
      await server.connect(transport);
      await transport.handleRequest(req, res, body.value);
    },
    release: (sandboxId) => pool.release(sandboxId),
    close: () => pool.close(),
  };
}

/** Arguments as the audit log keeps them: masked, and summarised when long. */
function auditArgs(masked: unknown): unknown {
  const text = JSON.stringify(masked ?? null);
  if (text.length <= AUDIT_ARGS_CHARS) return masked;
  return { truncated: true, chars: text.length, excerpt: text.slice(0, AUDIT_ARGS_CHARS) };
}

/** A result with the server's own secret values masked (a tool must not hand the agent its server's credentials). */
function maskResult(result: CallToolResult, secrets: readonly string[]): CallToolResult {
  const text = JSON.stringify(result);
  if (!secrets.some((s) => s.length >= 4 && text.includes(s))) return result;
  // Secret values are JSON-escaped the same way inside the text, so a plain replacement keeps it valid JSON.
  return JSON.parse(maskText(text, { values: secrets.map((s) => JSON.stringify(s).slice(1, -1)), patterns: [] })) as CallToolResult;
}
