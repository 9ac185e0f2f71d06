/**
 * The tools gateway as `cordon up` wires it: the control plane serves
 * `mcp.cordon.internal` through every sandbox's door, accepts the sandbox's
 * service key (`CORDON_MCP_TOKEN`) and its refreshed identity token
 * (`CORDON_TOKEN_FILE`, which carries the MCP audience), and records the
 * calls in the deployment's audit log.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { queryEvents } from '../audit/index.js';
import { parseConfig } from '../config/index.js';
import { startControlPlane, type ControlPlane } from '../controlplane/index.js';
import type { SandboxInfo } from '../sandbox/index.js';
import { fastestIsolation, sandboxTestHome, type SandboxTestHome } from '../sdk/testing.js';
import { repoRoot } from '../testkit/index.js';
import { UPSTREAM_SCRIPT } from './testing/harness.js';

const skip = process.getuid?.() === 0 ? false : 'the test image is built with debootstrap, which needs root';
const caller = { actor: 'operator:test' };

describe('the control plane serves the tools gateway', { skip, timeout: 5 * 60_000 }, () => {
  let home: SandboxTestHome;
  let cp: ControlPlane;
  let sb: SandboxInfo;

  before(async () => {
    home = await sandboxTestHome();
    const isolation = await fastestIsolation(home.path);
    const config = parseConfig([
      'version: 1',
      'mcpServers:',
      `  local: { command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(UPSTREAM_SCRIPT)}, "--stdio"], paths: [${JSON.stringify(repoRoot())}] }`,
      'agents:',
      `  dev: { isolation: ${isolation}, tools: { local: { allow: [echo] } } }`,
    ].join('\n'));
    cp = await startControlPlane({ home: home.path, config, port: 0, dashboardDir: false });
    sb = await cp.sandboxes.create({ agent: 'dev', caller });
  });
  after(async () => {
    await cp?.stop();
    home?.cleanup();
  });

  async function sh(command: string, user?: string): Promise<string> {
    let out = '';
    await cp.sandboxes.run(sb.id, { argv: ['sh', '-c', command], timeoutMs: 60_000, ...(user ? { user } : {}), onStdout: (b) => (out += b), onStderr: (b) => (out += b) }, caller);
    return out;
  }
  const call = (text: string, bearer: string) =>
    `curl -sS --max-time 30 -X POST "$CORDON_MCP_URL" -H "Authorization: Bearer ${bearer}" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' ` +
    `-d '${JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'local__echo', arguments: { text } } })}'`;

  test('the service key and the identity token both work from the guest; the calls are in the audit log', async () => {
    const cases = [
      { name: 'service key', bearer: '$CORDON_MCP_TOKEN', user: undefined },
      // The token file is readable by root only in the guest (its directory is 0750 root).
      { name: 'identity token', bearer: '$(cat "$CORDON_TOKEN_FILE")', user: 'root' },
    ];
    for (const c of cases) {
      const out = await sh(call(c.name, c.bearer), c.user);
      const r = JSON.parse(out) as { result?: { content: Array<{ text: string }> } };
      assert.equal(r.result?.content[0]?.text, c.name, `${c.name}: ${out}`);
    }
    const calls = (await queryEvents(cp.store, { type: 'tool.call', limit: 100 })).filter((e) => e.sandbox === sb.id);
    assert.deepEqual(calls.map((e) => [e.decision, e.data.name, (e.data.args as { text: string }).text]), [['allow', 'local__echo', 'service key'], ['allow', 'local__echo', 'identity token']]);
  });
});
