/**
 * Tool names and the per-tool decision. Agents see every upstream tool as
 * `<server>__<tool>` (two underscores; server names may not contain `__`, so
 * the first `__` always splits the name). The decision is pure, like the rest
 * of `policy/`: an agent's `tools:` entry in, `Decision` out. Order: no entry
 * for the server → deny; a `deny` pattern → deny (deny wins); an `approve`
 * pattern → approve; an `allow` pattern → allow; anything else → deny.
 * Patterns are tool names where `*` matches any run of characters.
 */
import type { Decision } from '../policy/index.js';
import { compileGlob, type GlobMatcher } from '../util/index.js';

/** Separates server and tool in the names the agent sees. */
export const TOOL_SEPARATOR = '__';
/** MCP tool names: 1-128 of `A-Z a-z 0-9 _ - .` (the MCP specification's recommendation). */
const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

/** One server's entry under an agent's `tools:` (the loaded `ToolPolicy` fits). */
export interface ToolPolicyInput {
  allow: readonly string[];
  deny?: readonly string[] | undefined;
  approve?: readonly string[] | undefined;
}

export type ToolReason = 'tool-allowed' | 'tool-approve' | 'tool-denied' | 'no-tool-rule' | 'server-not-allowed' | 'bad-tool-name';

export interface ToolDecision extends Decision {
  reason: ToolReason;
}

/** The name the agent sees for `tool` of `server`. */
export function gatewayToolName(server: string, tool: string): string {
  return `${server}${TOOL_SEPARATOR}${tool}`;
}

/** Split an agent-facing name; undefined when it has no server part or a part is malformed. */
export function splitToolName(name: unknown): { server: string; tool: string } | undefined {
  if (typeof name !== 'string' || name.length > 200) return undefined;
  const at = name.indexOf(TOOL_SEPARATOR);
  if (at <= 0) return undefined;
  const server = name.slice(0, at);
  const tool = name.slice(at + TOOL_SEPARATOR.length);
  if (!/^[A-Za-z0-9_-]{1,63}$/.test(server) || !TOOL_NAME.test(tool)) return undefined;
  return { server, tool };
}

/** Whether an upstream tool name is one cordon can pass on (and so list). */
export function isValidToolName(name: unknown): name is string {
  return typeof name === 'string' && TOOL_NAME.test(name);
}

const compiled = new Map<string, GlobMatcher>();
function matches(pattern: string, tool: string): boolean {
  let m = compiled.get(pattern);
  if (!m) {
    m = compileGlob(pattern);
    if (compiled.size < 10_000) compiled.set(pattern, m);
  }
  return m(tool);
}

function firstMatch(list: readonly string[] | undefined, tool: string): number {
  return (list ?? []).findIndex((p) => matches(p, tool));
}

/**
 * Decide one call of `tool` on `server` for `agent`.
 * @param tools the agent's whole `tools:` map
 * @example
 * decideTool('reviewer', { github: { allow: ['*'], approve: ['merge_*'] } }, 'github', 'merge_pull_request')
 * // { result: 'approve', reason: 'tool-approve', ruleId: 'agents.reviewer.tools.github.approve[0]' }
 */
export function decideTool(agent: string, tools: Readonly<Record<string, ToolPolicyInput>>, server: string, tool: string): ToolDecision {
  if (!isValidToolName(tool)) return { result: 'deny', reason: 'bad-tool-name' };
  const policy = Object.hasOwn(tools, server) ? tools[server] : undefined;
  if (!policy) return { result: 'deny', reason: 'server-not-allowed' };
  const base = `agents.${agent}.tools.${server}`;
  const d = firstMatch(policy.deny, tool);
  if (d >= 0) return { result: 'deny', reason: 'tool-denied', ruleId: `${base}.deny[${d}]` };
  const ap = firstMatch(policy.approve, tool);
  if (ap >= 0) return { result: 'approve', reason: 'tool-approve', ruleId: `${base}.approve[${ap}]` };
  const al = firstMatch(policy.allow, tool);
  if (al >= 0) return { result: 'allow', reason: 'tool-allowed', ruleId: `${base}.allow[${al}]` };
  return { result: 'deny', reason: 'no-tool-rule' };
}
