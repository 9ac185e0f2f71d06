/**
 * Checks that span the whole file and so cannot live on one schema field:
 * every `{{secret.NAME}}` anywhere must name a declared secret, and an agent
 * with model access needs a provider, and every MCP server an agent names
 * under `tools:` must be defined under `mcpServers:`. They run on the raw data, so they are
 * reported together with schema problems even when the schema check fails.
 */
import { scanTemplate } from './templates.js';
import { closest } from './errors/suggest.js';
import type { PathSegment } from './source.js';

export interface RawIssue {
  path: PathSegment[];
  problem: string;
  fix: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Visit every string value in `data` with its path. */
function eachString(data: unknown, path: PathSegment[], visit: (text: string, path: PathSegment[]) => void): void {
  if (typeof data === 'string') visit(data, path);
  else if (Array.isArray(data)) data.forEach((item, i) => eachString(item, [...path, i], visit));
  else if (isRecord(data)) for (const [key, value] of Object.entries(data)) eachString(value, [...path, key], visit);
}

/** Visit every mapping key in `data` with its path. */
function eachKey(data: unknown, path: PathSegment[], visit: (key: string, path: PathSegment[]) => void): void {
  if (Array.isArray(data)) data.forEach((item, i) => eachKey(item, [...path, i], visit));
  else if (isRecord(data)) {
    for (const [key, value] of Object.entries(data)) {
      visit(key, [...path, key]);
      eachKey(value, [...path, key], visit);
    }
  }
}

/** Problems that involve more than one part of the document. */
export function crossCheck(data: Record<string, unknown>): RawIssue[] {
  const issues: RawIssue[] = [];
  const declared = isRecord(data.secrets) ? Object.keys(data.secrets) : [];

  eachKey(data, [], (key, path) => {
    if (key === '__proto__') {
      issues.push({ path, problem: 'the key "__proto__" is not allowed', fix: 'rename or remove it' });
    }
  });

  eachString(data, [], (text, path) => {
    const scan = scanTemplate(text);
    for (const name of scan.secrets) {
      if (declared.includes(name)) continue;
      const suggestion = closest(name, declared);
      issues.push({
        path,
        problem: `refers to the undeclared secret "${name}"`,
        fix: suggestion
          ? `did you mean {{secret.${suggestion}}}? Otherwise declare it: secrets: { ${name}: { from: env, name: ${name.toUpperCase()} } }`
          : `declare it under secrets:, e.g. secrets: { ${name}: { from: env, name: ${name.toUpperCase()} } }`,
      });
    }
    for (const bad of scan.malformed) {
      issues.push({
        path,
        problem: `"${bad}" is not a secret reference`,
        fix: 'write secret references as {{secret.NAME}}; no other {{…}} templates exist',
      });
    }
  });

  const hasProviders = isRecord(data.providers) && Object.keys(data.providers).length > 0;
  if (!hasProviders && isRecord(data.agents)) {
    for (const [name, agent] of Object.entries(data.agents)) {
      if (isRecord(agent) && agent.llm !== undefined && agent.llm !== null) {
        issues.push({
          path: ['agents', name, 'llm'],
          problem: 'the agent has model access, but no providers are configured',
          fix: 'add one under providers:, e.g. openai: { baseUrl: "https://api.openai.com/v1", apiKey: "{{secret.openai_key}}" }',
        });
      }
    }
  }
  // Every MCP server an agent names under tools: must be defined under mcpServers:.
  const servers = isRecord(data.mcpServers) ? Object.keys(data.mcpServers) : [];
  if (isRecord(data.agents)) {
    for (const [name, agent] of Object.entries(data.agents)) {
      if (!isRecord(agent) || !isRecord(agent.tools)) continue;
      for (const server of Object.keys(agent.tools)) {
        if (servers.includes(server)) continue;
        const suggestion = closest(server, servers);
        issues.push({
          path: ['agents', name, 'tools', server],
          problem: `names the MCP server "${server}", which is not defined under mcpServers:`,
          fix: suggestion
            ? `did you mean "${suggestion}"? Otherwise define it: mcpServers: { ${server}: { command: ["/usr/bin/node", "server.js"] } }`
            : `define it, e.g. mcpServers: { ${server}: { command: ["/usr/bin/node", "server.js"] } } or { url: "https://mcp.example.com/mcp" }`,
        });
      }
    }
  }
  return issues;
}
