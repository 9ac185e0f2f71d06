/**
 * Provider-side tools that reach the network: remote MCP servers (OpenAI
 * `{type: "mcp"}` tools, Anthropic `mcp_servers`), web search and web fetch.
 * The provider, not the sandbox, would open those connections, so the egress
 * proxy would never see them; with `serverTools: deny` (the default) such a
 * request is refused. Client-side tools (functions the agent runs itself) are
 * not affected.
 */
import type { ApiKind } from '../types.js';

/** Tool `type` values (or prefixes ending in "_") that make the provider reach the network. */
const NETWORK_TOOL_TYPES = ['mcp', 'web_search', 'web_search_preview', 'web_fetch'];

function isNetworkTool(type: unknown): type is string {
  if (typeof type !== 'string') return false;
  return NETWORK_TOOL_TYPES.some((t) => type === t || type.startsWith(`${t}_`));
}

/**
 * The first network-reaching server tool a request asks for, e.g. `mcp` or `web_search_20250305`.
 * @returns undefined when there is none
 */
export function findServerTool(api: ApiKind, body: Record<string, unknown>): string | undefined {
  if (api === 'messages' && Array.isArray(body.mcp_servers) && body.mcp_servers.length > 0) return 'mcp_servers';
  const tools = body.tools;
  if (!Array.isArray(tools)) return undefined;
  for (const tool of tools) {
    if (tool !== null && typeof tool === 'object' && isNetworkTool((tool as { type?: unknown }).type)) {
      return (tool as { type: string }).type;
    }
  }
  return undefined;
}
