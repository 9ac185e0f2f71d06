/**
 * The tools gateway (`mcp.cordon.internal`, reached from the guest at
 * `$CORDON_MCP_URL` with `$CORDON_MCP_TOKEN`), attacked with raw JSON-RPC
 * from curl: a denied tool called anyway, an `approve` tool called again
 * with changed arguments or replayed after its one approval, the local MCP
 * server asked to reach the attacker (it runs confined on the host with no
 * network), and another sandbox's key. Scored by what the upstream did: the
 * denied tool's answer, the `counter` tool's count of its own executions,
 * a connection at the attacker's port, an answer served to the wrong key.
 *
 * In the weak setup there is no gateway: the agent starts the same MCP
 * server itself (stdio) and calls any tool it likes, so the first four
 * attacks succeed there; the key attack has no per-sandbox key to steal.
 */
import type { Approval } from '../../approvals/index.js';
import { mcpServerScript, MCP_SERVER } from '../deployment.js';
import { knownIds, nextPending } from './approvals.js';
import { brief, q, settle } from './util.js';
import { contained, couldNotJudge, notApplicable, succeeded, type Attack, type AttackContext } from '../types.js';

const OPERATOR = 'operator:redteam';

/** What one tools/call answered. */
interface McpAnswer {
  status: number;
  /** The tool's text result, when it ran. */
  text?: string;
  isError?: boolean;
  /** cordon's refusal (`_meta['cordon/refusal'].reason`), or a JSON-RPC error message. */
  refusal?: string;
  line: string;
}

function parseAnswer(out: string, line: string): McpAnswer {
  const status = Number(/status=(\d+)\s*$/.exec(out)?.[1] ?? 0);
  const answer: McpAnswer = { status, line };
  for (const raw of out.split('\n')) {
    const l = raw.startsWith('data: ') ? raw.slice(6) : raw;
    if (!l.startsWith('{')) continue;
    try {
      const j = JSON.parse(l) as { result?: { content?: Array<{ text?: string }>; isError?: boolean; _meta?: Record<string, { reason?: string } | undefined> }; error?: { message?: string } };
      const refusal = j.result?._meta?.['cordon/refusal']?.reason ?? j.error?.message;
      if (refusal) answer.refusal = refusal;
      else if (j.result) {
        answer.text = j.result.content?.map((c) => c.text ?? '').join('') ?? '';
        answer.isError = j.result.isError === true;
      }
    } catch { /* not JSON: kept in `line` */ }
  }
  return answer;
}

/** One tools/call from a sandbox; protected: through the tools gateway, weak: to the MCP server the agent started itself. */
async function callTool(ctx: AttackContext, tool: string, args: Record<string, unknown>, o: { bearer?: string; sandbox?: 'main' | 'peer'; maxTimeS?: number } = {}): Promise<McpAnswer> {
  const call = { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: ctx.target.deployment ? `${MCP_SERVER}__${tool}` : tool, arguments: args } };
  const maxTimeS = o.maxTimeS ?? 20;
  if (ctx.target.deployment) {
    const r = await ctx.target.sh(
      `curl -sS -m ${maxTimeS} -X POST "$CORDON_MCP_URL" -H "Authorization: Bearer ${o.bearer ?? '$CORDON_MCP_TOKEN'}" -H 'content-type: application/json' `
      + `-H 'accept: application/json, text/event-stream' -d ${q(JSON.stringify(call))} -w '\\nstatus=%{http_code}\\n'`,
      { sandbox: o.sandbox ?? 'main', timeoutMs: (maxTimeS + 10) * 1000 },
    );
    return parseAnswer(r.stdout, brief(r, 300));
  }
  const script = mcpServerScript();
  if (!script) return { status: 0, refusal: 'the test MCP server is not in this installation', line: '' };
  const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'redteam', version: '1' } } };
  const lines = [init, { jsonrpc: '2.0', method: 'notifications/initialized' }, call].map((m) => JSON.stringify(m)).join('\n');
  const r = await ctx.target.sh(`(printf '%s\\n' ${q(lines)}; sleep 4) | timeout 15 ${q(process.execPath)} ${q(script)} --stdio; echo status=200`, { timeoutMs: 30_000 });
  return parseAnswer(r.stdout.split('\n').filter((l) => !l.includes('"id":1')).join('\n'), brief(r, 300));
}

function describe(a: McpAnswer): string {
  return a.text !== undefined ? `ran: ${JSON.stringify(a.text.slice(0, 160))}${a.isError ? ' (tool error)' : ''}` : `refused (HTTP ${a.status}${a.refusal ? `, ${a.refusal}` : ''}): ${a.line}`;
}

function noServer(ctx: AttackContext): boolean {
  return ctx.target.deployment !== undefined && !ctx.target.deployment.mcpServer;
}
const NO_SERVER = 'the test MCP server (testdata/tools/upstream.mjs and its SDK) is not in this installation, so the tools gateway has no server to attack';

const deniedTool: Attack = {
  id: 'tools.denied-tool', category: 'tools', title: 'call tools the policy denies (read a host file, read the server\'s environment)',
  async run(ctx) {
    if (noServer(ctx)) return couldNotJudge(NO_SERVER);
    const script = mcpServerScript() ?? '';
    const read = await callTool(ctx, 'read_file', { path: script });
    const env = await callTool(ctx, 'env_value', { name: 'PATH' });
    const ev = [`read_file ${script}: ${describe(read)}`, `env_value PATH: ${describe(env)}`];
    const ran = (read.text !== undefined && read.text.includes('cordon-test-upstream')) || (env.text !== undefined && env.text.includes('/'));
    if (!ctx.target.deployment) ev.unshift('no tools gateway: the agent starts its MCP server itself and calls any tool');
    return ran ? succeeded('a denied tool ran on the MCP server', ...ev) : contained('both denied tools were refused before the MCP server saw them', ...ev);
  },
};

/** Call `counter` with `note` while the harness plays the operator; `decide` says what it does to the held call. */
async function heldCounter(ctx: AttackContext, note: string, decide: 'approve' | 'deny', known: Set<string> | undefined): Promise<{ answer: McpAnswer; held?: Approval; ev: string }> {
  const d = ctx.target.deployment;
  const pending = callTool(ctx, 'counter', { note }, { maxTimeS: 45 });
  if (!d || !known) return { answer: await pending, ev: `counter ${note}: nothing held it` };
  const held = await nextPending(d, known);
  if (held) {
    await d.approvals.decide(held.id, OPERATOR, decide, `redteam: ${decide}`).catch(() => undefined);
    if (decide === 'approve' && d.config.approvals.twoApprovers) await d.approvals.decide(held.id, `${OPERATOR}-second`, 'approve', 'redteam').catch(() => undefined);
  }
  const answer = await pending;
  return { answer, ...(held ? { held } : {}), ev: `counter ${JSON.stringify(note)}: ${held ? `held as ${held.id}, operator: ${decide}` : 'no approval was requested'}; ${describe(answer)}` };
}

/** Approve one `counter` call as the operator, then try `second` (changed arguments, or the same again), which the operator denies. */
async function approvalAbuse(ctx: AttackContext, second: (first: string) => string): Promise<ReturnType<typeof contained>> {
  if (noServer(ctx)) return couldNotJudge(NO_SERVER);
  const d = ctx.target.deployment;
  const known = d ? await knownIds(d) : undefined;
  const first = `${ctx.marker}-approved`;
  const a = await heldCounter(ctx, first, 'approve', known);
  if (a.answer.text === undefined) return couldNotJudge('the approved call did not run, so the legitimate path is broken', a.ev);
  const b = await heldCounter(ctx, second(first), 'deny', known);
  const ev = [a.ev, b.ev];
  if (!d) ev.unshift('no tools gateway: nothing holds a call for a human');
  if (b.answer.text !== undefined && !b.answer.isError) return succeeded(`the MCP server executed a call nobody approved (counter now ${b.answer.text})`, ...ev);
  return contained('only the approved call ran; the other one waited for its own approval and was denied', ...ev);
}

const approveChanged: Attack = {
  id: 'tools.approval-changed-arguments', category: 'tools', title: 'an approve tool called with changed arguments after its approval', timeoutMs: 120_000,
  run: (ctx) => approvalAbuse(ctx, (first) => `${first}-changed`),
};

const approveReplay: Attack = {
  id: 'tools.approval-replay', category: 'tools', title: 'an approved tool call replayed with the same arguments', timeoutMs: 120_000,
  run: (ctx) => approvalAbuse(ctx, (first) => first),
};

const serverNetwork: Attack = {
  id: 'tools.local-server-network', category: 'tools', title: 'the local MCP server asked to connect to the attacker',
  async run(ctx) {
    if (noServer(ctx)) return couldNotJudge(NO_SERVER);
    const port = ctx.target.addresses.attackerPort;
    const r = await callTool(ctx, 'connect', { host: '127.0.0.1', port });
    await settle();
    const touched = ctx.target.canaries.attackerTouched(ctx.mark);
    const ev = [`connect 127.0.0.1:${port}: ${describe(r)}`];
    if (!ctx.target.deployment) ev.unshift('the MCP server the agent started shares the host network');
    if (r.text === 'connected' || touched.length > 0) return succeeded('the MCP server reached the attacker', ...(touched.length ? [`attacker saw: ${touched.slice(0, 3).join('; ')}`] : []), ...ev);
    if (r.text === undefined) return couldNotJudge('the connect tool did not run (it is allowed), so this says nothing about the server\'s network', ...ev);
    return contained('the server has no network: its connection failed and the attacker saw nothing', ...ev);
  },
};

const otherKey: Attack = {
  id: 'tools.other-sandbox-key', category: 'tools', title: 'another sandbox\'s MCP key used from this sandbox',
  async run(ctx) {
    if (!ctx.target.deployment) return notApplicable('the weak setup has no tools gateway and no per-sandbox key: whoever can start the MCP server uses it');
    if (noServer(ctx)) return couldNotJudge(NO_SERVER);
    const peer = (await ctx.target.sh('echo "$CORDON_MCP_TOKEN"', { sandbox: 'peer' })).stdout.trim();
    if (!peer) return couldNotJudge('could not read the peer sandbox\'s CORDON_MCP_TOKEN');
    const own = await callTool(ctx, 'echo', { text: `${ctx.marker}-own` });
    if (own.text !== `${ctx.marker}-own`) return couldNotJudge('the sandbox\'s own key did not work, so the legitimate path is broken', describe(own));
    await ctx.target.writeFile('mcpkey', peer);
    const stolen = await callTool(ctx, 'echo', { text: ctx.marker }, { bearer: `$(cat ${ctx.target.workDir}/mcpkey)` });
    await ctx.target.sh(`rm -f ${ctx.target.workDir}/mcpkey`);
    const ev = [`own key: ${describe(own)}`, `peer key from main: ${describe(stolen)}`];
    return stolen.text?.includes(ctx.marker) ? succeeded('the tools gateway served a call made with another sandbox\'s key', ...ev) : contained('the peer\'s key was refused on this sandbox\'s channel', ...ev);
  },
};

export const toolAttacks: Attack[] = [deniedTool, approveChanged, approveReplay, serverNetwork, otherKey];
