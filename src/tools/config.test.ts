/**
 * The `mcpServers:` section of cordon.yaml: local (command) and remote (url)
 * servers load with their defaults; mistakes are reported at their path
 * with a problem and a fix; an agent's `tools:` must name defined servers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../config/index.js';
import { ConfigError } from '../errors/index.js';

test('local and remote servers load with their defaults', () => {
  const c = parseConfig([
    'version: 1',
    'secrets: { gh: { from: env, name: GH_TOKEN } }',
    'mcpServers:',
    '  github: { command: ["/usr/bin/node", "/opt/mcp/github.js"], env: { GITHUB_TOKEN: "{{secret.gh}}" }, paths: [/opt/mcp] }',
    '  search: { url: "https://mcp.example.com/mcp", headers: { authorization: "Bearer {{secret.gh}}" }, timeout: 30s, poisonedTools: hide }',
    'agents:',
    '  coder: { tools: { github: { allow: ["*"], approve: [merge_pull_request] }, search: { allow: [query] } } }',
  ].join('\n'), 'ok.yaml');
  assert.deepEqual(c.mcpServers.github, {
    kind: 'local', command: ['/usr/bin/node', '/opt/mcp/github.js'], env: { GITHUB_TOKEN: '{{secret.gh}}' }, network: false, paths: ['/opt/mcp'],
    timeout: '60s', timeoutMs: 60_000, poisonedTools: 'flag',
  });
  assert.deepEqual(c.mcpServers.search, {
    kind: 'remote', url: 'https://mcp.example.com/mcp', headers: { authorization: 'Bearer {{secret.gh}}' }, timeout: '30s', timeoutMs: 30_000, poisonedTools: 'hide',
  });
  assert.deepEqual(parseConfig('version: 1\n', 'empty.yaml').mcpServers, {});
});

test('mistakes are reported at their path with a fix', () => {
  const cases = [
    { why: 'both kinds', yaml: 'mcpServers: { s: { command: [x], url: "https://a.example.com/mcp" } }', path: 'mcpServers.s', problem: 'both command and url' },
    { why: 'neither kind', yaml: 'mcpServers: { s: { timeout: 10s } }', path: 'mcpServers.s', problem: 'neither command nor url' },
    { why: 'env on a remote server', yaml: 'mcpServers: { s: { url: "https://a.example.com/mcp", env: { A: b } } }', path: 'mcpServers.s.env', problem: 'local servers (command:) only' },
    { why: 'headers on a local server', yaml: 'secrets: { t: { from: env, name: T } }\nmcpServers: { s: { command: [x], headers: { a: "{{secret.t}}" } } }', path: 'mcpServers.s.headers', problem: 'remote servers (url:) only' },
    { why: 'a credential written into a header', yaml: 'mcpServers: { s: { url: "https://a.example.com/mcp", headers: { authorization: "Bearer abc" } } }', path: 'mcpServers.s.headers.authorization', problem: 'no {{secret.NAME}} reference' },
    { why: '"__" in a server name', yaml: 'mcpServers: { my__srv: { command: [x] } }', path: 'mcpServers.my__srv', problem: 'not a valid MCP server name' },
    { why: 'a trailing "_" in a server name (a_ + __x would split as a + _x)', yaml: 'mcpServers: { a_: { command: [x] } }', path: 'mcpServers.a_', problem: 'not a valid MCP server name' },
    { why: 'the whole host file system', yaml: 'mcpServers: { s: { command: [x], paths: ["/"] } }', path: 'mcpServers.s.paths[0]', problem: 'too broad' },
    { why: 'host credentials', yaml: 'mcpServers: { s: { command: [x], paths: [/etc/] } }', path: 'mcpServers.s.paths[0]', problem: 'too broad' },
    { why: 'another process\'s state', yaml: 'mcpServers: { s: { command: [x], paths: [/proc/1] } }', path: 'mcpServers.s.paths[0]', problem: 'holds host state' },
    { why: 'a relative path', yaml: 'mcpServers: { s: { command: [x], paths: [opt/mcp] } }', path: 'mcpServers.s.paths[0]', problem: 'not an absolute path' },
    { why: 'a misspelt key', yaml: 'mcpServers: { s: { command: [x], netwrk: true } }', path: 'mcpServers.s.netwrk', problem: 'unknown key' },
    { why: 'not a URL', yaml: 'mcpServers: { s: { url: "mcp.example.com" } }', path: 'mcpServers.s.url', problem: 'is not a URL' },
    { why: 'an undefined server under tools:', yaml: 'mcpServers: { github: { command: [x] } }\nagents: { a: { tools: { githb: { allow: ["*"] } } } }', path: 'agents.a.tools.githb', problem: 'not defined under mcpServers' },
  ];
  for (const c of cases) {
    assert.throws(() => parseConfig(`version: 1\n${c.yaml}\n`, 'bad.yaml'), (err: unknown) => {
      assert.ok(err instanceof ConfigError, c.why);
      const issue = err.issues.find((i) => i.path === c.path && i.problem.includes(c.problem));
      assert.ok(issue, `${c.why}: wanted ${c.path}: ${c.problem}; got\n${err.describe()}`);
      assert.ok(issue.fix && issue.fix.length > 5, `${c.why}: has a fix`);
      return true;
    }, c.why);
  }
  assert.throws(() => parseConfig('version: 1\nmcpServers: { github: { command: [x] } }\nagents: { a: { tools: { githb: { allow: ["*"] } } } }\n', 'b.yaml'),
    (err: unknown) => err instanceof ConfigError && /did you mean "github"/.test(err.describe()), 'a near miss names the server it probably meant');
});
