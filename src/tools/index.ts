/**
 * tools/: the MCP tools gateway. One MCP server (streamable HTTP, official
 * SDK) at `mcp.cordon.internal/mcp`, reached only through a sandbox's door
 * and authenticated by that sandbox's channel-bound service key or token,
 * that aggregates the agent's upstream MCP servers as `<server>__<tool>`:
 * local ones run on the host under bubblewrap (no network unless
 * configured), remote ones are reached through the agent's egress policy.
 * Each call is decided by the agent's `tools:` policy (deny, approve, allow),
 * held for a human when marked `approve`, and audited with its arguments
 * (secrets masked) before it is made; tool descriptions are scanned for
 * injected instructions when first listed.
 *
 * @example
 * const tools = createToolsGateway({ config, audit, authenticate: createSandboxAuthenticator({ identity, keys, audience: MCP_AUDIENCE }), approvals, resolveSecrets });
 * createEgressProxy({ internal: { [MCP_AUDIENCE]: { name: 'mcp', handle: (req, res, caller) => tools.handle(req, res, caller) } } });
 */
export { createToolsGateway, MCP_PATH, AUDIT_ARGS_CHARS, type ToolsGateway, type ToolsGatewayOptions, type ToolsAuditSink } from './gateway.js';
export { decideTool, gatewayToolName, splitToolName, TOOL_SEPARATOR, type ToolDecision, type ToolPolicyInput, type ToolReason } from './policy.js';
export { confinedCommand, CONFINED_PATH, UNPRIVILEGED_ID, type ConfineHost, type ConfineInput, type ConfinedCommand } from './confine.js';
export { createCheckedFetch, type CheckedFetch, type RemoteEgressOptions } from './remote.js';
export { scanTools, toolTexts, flaggedDescription, POISON_THRESHOLD, type PoisonFinding, type ScannedTool } from './poison.js';
export { holdToolCall, type ToolHoldResult, type ToolHoldInput } from './approval.js';
export { ToolsError } from './errors.js';
export type { McpServerConfig, ResolveToolSecrets } from './upstream.js';

/** The audience of tokens the tools gateway accepts, and its host name. */
export const MCP_AUDIENCE = 'mcp.cordon.internal';
/** What guests get as `CORDON_MCP_URL`: plain HTTP to the internal name, through the door (it never leaves the host). */
export const GUEST_MCP_URL = `http://${MCP_AUDIENCE}/mcp`;
