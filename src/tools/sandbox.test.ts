/**
 * End to end from inside real sandboxes, one shared suite per back end (a
 * microVM, and bubblewrap: fastest to start, same door and guest agent): the
 * guest finds the tools gateway in `CORDON_MCP_URL`, calls tools with `curl`
 * through its own door with the key in `CORDON_MCP_TOKEN`, and the calls run
 * on a local MCP server confined on the host. An allowed tool runs, a denied
 * tool and a call without the key are refused, and an approval-gated tool
 * waits until an operator approves it, then runs once. (The guest image has
 * curl and python3 but no MCP SDK, so the client is raw JSON-RPC over curl.)
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, queryEvents } from '../audit/index.js';
import { createApprovals, type Approvals } from '../approvals/index.js';
import { parseConfig } from '../config/index.js';
import { createSandboxAuthenticator } from '../controlplane/services.js';
import { createEgressCa, createEgressProxy, type EgressProxy } from '../egress/index.js';
import { createIdentityService, createSandboxKeys, type IdentityService } from '../identity/index.js';
import { BubblewrapBackend } from '../sandbox/bubblewrap/index.js';
import { ensureTestImage, testHome } from '../sandbox/image/testing.js';
import { vmFixture, vmSkipReason } from '../sandbox/microvm/testing.js';
import { createSandboxManager, type SandboxBackend, type SandboxInfo, type SandboxManager } from '../sandbox/index.js';
import { openStore, type Store } from '../store/index.js';
import { repoRoot } from '../testkit/index.js';
import { createToolsGateway, MCP_AUDIENCE, type ToolsGateway } from './index.js';
import { UPSTREAM_SCRIPT } from './testing/harness.js';

const caller = { actor: 'operator:test' };
const needsRoot = process.getuid?.() === 0 ? false : 'the test image is built with debootstrap, which needs root';

interface BackendCase {
  isolation: 'bubblewrap' | 'microvm';
  skip: string | false;
  /** The back end, or why it cannot run here. */
  make(home: string): Promise<SandboxBackend | string>;
}

const BACKENDS: BackendCase[] = [
  {
    isolation: 'bubblewrap', skip: needsRoot,
    async make(home) {
      const b = new BubblewrapBackend({ home });
      const a = await b.available();
      return a.ok ? b : `bubblewrap is not usable here: ${a.reason ?? 'unknown reason'} (${a.fix ?? 'see cordon doctor'})`;
    },
  },
  { isolation: 'microvm', skip: vmSkipReason(), make: async () => (await vmFixture()).backend() },
];

for (const backend of BACKENDS) describe(`a ${backend.isolation} sandbox calls tools through its door`, { skip: backend.skip, timeout: 5 * 60_000 }, () => {
  let work: string;
  let store: Store;
  let audit: AuditLog;
  let proxy: EgressProxy;
  let manager: SandboxManager;
  let tools: ToolsGateway;
  let ids: IdentityService;
  let sb: SandboxInfo;
  let approvals: Approvals;
  let unavailable: string | undefined;

  before(async () => {
    const home = testHome();
    await ensureTestImage(home);
    const made = await backend.make(home);
    if (typeof made === 'string') {
      unavailable = made;
      return;
    }
    work = mkdtempSync(join(tmpdir(), 'cordon-tools-e2e-'));
    store = await openStore({ kind: 'sqlite', path: join(work, 'cordon.db') });
    audit = await AuditLog.open({ store, keyDir: join(work, 'keys'), checkpointIntervalMs: 60_000 });
    const config = parseConfig([
      'version: 1',
      'mcpServers:',
      `  local: { command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(UPSTREAM_SCRIPT)}, "--stdio"], paths: [${JSON.stringify(repoRoot())}] }`,
      'agents:',
      `  dev: { isolation: ${backend.isolation}, tools: { local: { allow: [echo], deny: [read_file], approve: [counter] } } }`,
    ].join('\n'));
    ids = createIdentityService({ home: work, trustDomain: 'test.local', audiences: ['llm.cordon.internal', MCP_AUDIENCE] });
    const keys = createSandboxKeys();
    approvals = await createApprovals({ store, audit, config: config.approvals });
    tools = createToolsGateway({
      config, audit, approvals, authenticate: createSandboxAuthenticator({ identity: ids, keys, audience: MCP_AUDIENCE }),
      resolveSecrets: async () => new Map(),
    });
    proxy = createEgressProxy({ ca: createEgressCa(), internal: { [MCP_AUDIENCE]: { name: 'mcp', handle: (req, res, c) => tools.handle(req, res, c) } } });
    manager = createSandboxManager({ home, config, audit, backends: { [backend.isolation]: made }, egress: proxy, serviceKeys: keys });
    sb = await manager.create({ agent: 'dev', caller });
  });

  after(async () => {
    await manager?.close();
    await proxy?.close();
    approvals?.close();
    await tools?.close();
    ids?.close();
    await audit?.close();
    await store?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  async function sh(command: string): Promise<string> {
    let out = '';
    await manager.run(sb.id, { argv: ['sh', '-c', command], timeoutMs: 60_000, onStdout: (b) => (out += b), onStderr: (b) => (out += b) }, caller);
    return out;
  }
  const call = (name: string, args: object, auth = '-H "Authorization: Bearer $CORDON_MCP_TOKEN"') =>
    `curl -sS --max-time 30 -X POST "$CORDON_MCP_URL" ${auth} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' ` +
    `-d '${JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } })}'`;

  test('curl in the guest: allowed tool runs, denied tool and missing key are refused, all audited', async (t) => {
    if (unavailable) return t.skip(unavailable);
    assert.equal(await sh('printf %s "$CORDON_MCP_URL"'), 'http://mcp.cordon.internal/mcp');
    const ok = JSON.parse(await sh(call('local__echo', { text: 'from the guest' }))) as { result: { content: Array<{ text: string }> } };
    assert.equal(ok.result.content[0]!.text, 'from the guest');
    const denied = JSON.parse(await sh(call('local__read_file', { path: '/etc/hostname' }))) as { result: { isError: boolean; content: Array<{ text: string }> } };
    assert.equal(denied.result.isError, true);
    assert.match(denied.result.content[0]!.text, /tool-denied/);
    const anonymous = JSON.parse(await sh(call('local__echo', { text: 'x' }, ''))) as { error: { code: number; message: string } };
    assert.match(anonymous.error.message, /not authenticated \(no-credentials\)/);
    const events = await queryEvents(store, { limit: 1000 });
    const calls = events.filter((e) => e.type === 'tool.call' && e.sandbox === sb.id).map((e) => [e.decision, e.reason, e.data.name]);
    assert.deepEqual(calls, [['allow', 'tool-allowed', 'local__echo'], ['deny', 'tool-denied', 'local__read_file']]);
    const door = events.filter((e) => e.type === 'egress.request' && e.sandbox === sb.id && e.data.host === MCP_AUDIENCE);
    assert.ok(door.length >= 3 && door.every((e) => e.decision === 'allow' && e.reason === 'internal'), 'every call went through the sandbox\'s door');
  });

  test('curl in the guest: an approval-gated tool waits for the operator, then runs once', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const held = sh(call('local__counter', { note: 'from the guest' }));
    let pending;
    for (let i = 0; i < 200 && !pending; i++) {
      pending = (await approvals.list({ state: 'pending' })).find((a) => a.action.sandboxId === sb.id);
      if (!pending) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(pending, 'the call is held for approval');
    assert.deepEqual(pending.action.args, { note: 'from the guest' });
    await approvals.decide(pending.id, 'operator:test', 'approve');
    const done = JSON.parse(await held) as { result: { content: Array<{ text: string }> } };
    assert.equal(done.result.content[0]!.text, '1', 'ran once, after the approval');
  });
});
