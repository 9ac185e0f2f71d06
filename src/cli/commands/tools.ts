/**
 * `cordon tools ls SERVER [--agent NAME] [--json]`: start one `mcpServers:`
 * entry the way the tools gateway would for that agent (a local server under
 * bubblewrap, a remote one through the agent's egress rules), list its tools
 * with the agent's decision for each (allow, approve, deny) and the
 * poisoning findings, then stop it. For checking a server before agents use
 * it; no sandbox and no agent are involved, so nothing is written to the
 * audit log.
 */
import type { Command } from 'commander';
import { resolveSecrets } from '../../secrets/index.js';
import { InvalidInputError } from '../../errors/index.js';
import { decideTool, scanTools, type McpServerConfig } from '../../tools/index.js';
import { openUpstream } from '../../tools/upstream.js';
import { cliContext, printJson } from '../context.js';

interface ToolRow {
  name: string;
  gatewayName: string;
  decision: string;
  reason: string;
  poisoned?: { rules: string[]; score: number; where: string };
  description?: string;
}

export function registerTools(program: Command): void {
  const tools = program.command('tools').description('inspect the MCP servers of the tools gateway');
  tools
    .command('ls <server>')
    .description('start an MCP server as the gateway would, list its tools with the agent\'s decisions and poisoning flags')
    .option('--agent <name>', 'whose tools: policy and egress rules apply', 'default')
    .option('--json', 'print JSON')
    .action(async function toolsList(server: string, opts: { agent: string; json?: boolean }, cmd: Command) {
      const { home, config } = cliContext(cmd);
      const cfg: McpServerConfig | undefined = Object.hasOwn(config.mcpServers, server) ? config.mcpServers[server] : undefined;
      if (!cfg) {
        throw new InvalidInputError(`no MCP server ${JSON.stringify(server)} in the config`, { fix: `define it under mcpServers:, or use one of: ${Object.keys(config.mcpServers).join(', ') || '(none defined)'}` });
      }
      const agent = config.agents[opts.agent];
      if (!agent) throw new InvalidInputError(`no agent ${JSON.stringify(opts.agent)} in the config`, { fix: `use one of: ${Object.keys(config.agents).join(', ')}` });
      const policy = { agent: opts.agent, egress: agent.egress, egressMode: agent.egressMode };
      const up = await openUpstream(server, cfg, policy, {
        resolveSecrets: async (names) => new Map([...(await resolveSecrets(config, names, { home, purpose: `MCP server ${server}` }))].map(([n, v]) => [n, v.reveal()])),
      }, () => undefined);
      try {
        const list = await up.tools();
        const findings = new Map((await scanTools(list)).map((f) => [f.tool, f]));
        const rows: ToolRow[] = list.map((t) => {
          const d = decideTool(opts.agent, agent.tools, server, t.name);
          const f = findings.get(t.name);
          return {
            name: t.name, gatewayName: `${server}__${t.name}`, decision: d.result, reason: d.reason,
            ...(f ? { poisoned: { rules: f.rules, score: Number(f.score.toFixed(2)), where: f.where } } : {}),
            ...(t.description ? { description: t.description } : {}),
          };
        });
        if (opts.json) return printJson({ server, agent: opts.agent, kind: cfg.kind, poisonedTools: cfg.poisonedTools, tools: rows });
        process.stdout.write(`${server} (${cfg.kind}), for agent ${opts.agent}: ${rows.length} tool(s)\n`);
        for (const r of rows) {
          const flag = r.poisoned ? `  POISONED? ${r.poisoned.rules.join(',')} in ${r.poisoned.where}${cfg.poisonedTools === 'hide' ? ' (hidden)' : ''}` : '';
          process.stdout.write(`  ${r.decision.padEnd(8)} ${r.gatewayName}${flag}\n`);
        }
      } finally {
        await up.close();
      }
    });
}
