/**
 * `cordon tools ls SERVER --agent NAME --json`: the test upstream started
 * under bubblewrap as the gateway would, its tools with the agent's
 * decisions and the poisoned one flagged; an unknown server is a clear error.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { cordon, oneJson } from '../cli/commands/testing.js';
import { repoRoot, tempDir } from '../testkit/index.js';
import { UPSTREAM_SCRIPT } from './testing/harness.js';

test('cordon tools ls lists decisions and poisoning flags; an unknown server is an error naming the defined ones', async () => {
  const d = tempDir('cordon-tools-cli-');
  try {
    const file = join(d.path, 'cordon.yaml');
    writeFileSync(file, [
      'version: 1',
      'mcpServers:',
      `  local: { command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(UPSTREAM_SCRIPT)}, "--stdio"], paths: [${JSON.stringify(repoRoot())}] }`,
      'agents:',
      '  coder: { tools: { local: { allow: ["*"], deny: [crash], approve: [counter] } } }',
    ].join('\n'));
    const env = { CORDON_CONFIG: file };
    const r = await cordon(['tools', 'ls', 'local', '--agent', 'coder', '--json'], { home: d.path, env });
    assert.equal(r.code, 0, r.stderr);
    const out = oneJson<{ tools: Array<{ gatewayName: string; decision: string; poisoned?: { rules: string[] } }> }>(r);
    const by = new Map(out.tools.map((t) => [t.gatewayName, t]));
    const cases = [
      { name: 'local__echo', decision: 'allow', poisoned: false },
      { name: 'local__crash', decision: 'deny', poisoned: false },
      { name: 'local__counter', decision: 'approve', poisoned: false },
      { name: 'local__notes_lookup', decision: 'allow', poisoned: true },
    ];
    for (const c of cases) {
      assert.equal(by.get(c.name)?.decision, c.decision, c.name);
      assert.equal(by.get(c.name)?.poisoned !== undefined, c.poisoned, c.name);
    }
    const bad = await cordon(['tools', 'ls', 'nosuch', '--agent', 'coder'], { home: d.path, env });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /no MCP server "nosuch".*\n.*local/);
  } finally {
    d.cleanup();
  }
});
