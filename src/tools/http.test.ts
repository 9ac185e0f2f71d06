/**
 * Who may call the tools gateway, and what malformed requests get: the
 * service key or token of the door's own sandbox is accepted; no channel,
 * another sandbox's key, a token for another audience, or nothing at all is
 * a 401 that is audited. Malformed HTTP and MCP messages get precise JSON-RPC
 * errors, and the gateway keeps serving afterwards.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { localUpstream, resultText, SANDBOX_A, SANDBOX_B, startToolsHarness, type ToolsHarness } from './testing/harness.js';

let t: ToolsHarness;
let keyA: string;
before(async () => {
  t = await startToolsHarness({
    config: {
      version: 1,
      mcpServers: { local: localUpstream() },
      agents: { coder: { isolation: 'bubblewrap', tools: { local: { allow: ['echo'] } } } },
    },
  });
  keyA = t.keys.issue(SANDBOX_A.sandboxId);
  t.keys.issue(SANDBOX_B.sandboxId);
});
after(async () => {
  await t?.close();
});

const INIT = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

async function post(url: string, body: string, headers: Record<string, string>): Promise<{ status: number; json: any }> {
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

test('credentials: only the door\'s own sandbox key or token is accepted; refusals are 401 and audited', async () => {
  const tokenA = (await t.identity.issue({ id: SANDBOX_A.sandboxId, agent: SANDBOX_A.agent }, 'mcp.cordon.internal')).token;
  const llmOnly = (await t.identity.issue({ id: SANDBOX_A.sandboxId, agent: SANDBOX_A.agent }, 'llm.cordon.internal')).token;
  const cases = [
    { name: 'service key on its own door', door: t.doors.a, cred: keyA, status: 200 },
    { name: 'token (mcp audience) on its own door', door: t.doors.a, cred: tokenA, status: 200 },
    { name: 'no channel at all', door: t.doors.none, cred: keyA, status: 401, reason: 'no-channel' },
    { name: 'sandbox A\'s key through sandbox B\'s door', door: t.doors.b, cred: keyA, status: 401, reason: 'service-key-wrong-channel' },
    { name: 'sandbox A\'s token through sandbox B\'s door', door: t.doors.b, cred: tokenA, status: 401, reason: 'token-wrong-channel' },
    { name: 'a token for the LLM gateway only', door: t.doors.a, cred: llmOnly, status: 401, reason: 'token-wrong-audience' },
    { name: 'no credentials', door: t.doors.a, cred: undefined, status: 401, reason: 'no-credentials' },
    { name: 'garbage', door: t.doors.a, cred: 'not-a-key', status: 401, reason: 'token-malformed' },
  ];
  for (const c of cases) {
    const r = await post(c.door.url, INIT, { ...MCP_HEADERS, ...(c.cred ? { authorization: `Bearer ${c.cred}` } : {}) });
    assert.equal(r.status, c.status, c.name);
    if (c.status === 401) {
      assert.equal(r.json.error.code, -32001, c.name);
      assert.match(r.json.error.message, new RegExp(`not authenticated \\(${c.reason}\\)`), c.name);
      const ev = (await t.h.events('tool.auth')).pop()!;
      assert.equal(ev.reason, c.reason, c.name);
      assert.equal(ev.decision, 'deny', c.name);
    } else {
      assert.equal(r.json.result.serverInfo.name, 'cordon-tools', c.name);
    }
  }
});

test('malformed requests get precise errors and the gateway keeps serving', async () => {
  const auth = { authorization: `Bearer ${keyA}` };
  const url = t.doors.a.url;
  const cases: Array<{ name: string; path?: string; method?: string; headers?: Record<string, string>; body?: string; status: number; code?: number; message: RegExp }> = [
    { name: 'body is not JSON', body: '{"jsonrpc": "2.0", "id": 1, "method": ', status: 400, code: -32700, message: /Parse error: the body is not JSON/ },
    { name: 'wrong content type', headers: { 'content-type': 'text/plain' }, body: INIT, status: 415, code: -32000, message: /Content-Type must be application\/json/ },
    { name: 'GET (no event stream in stateless mode)', method: 'GET', status: 405, code: -32000, message: /stateless/ },
    { name: 'DELETE (no sessions)', method: 'DELETE', status: 405, code: -32000, message: /POST/ },
    { name: 'another path', path: '/v1/tools', body: INIT, status: 404, code: -32000, message: /use \/mcp/ },
    { name: 'JSON that is not JSON-RPC', body: '{"hello": "world"}', status: 400, message: /Invalid|JSON-RPC|Parse/i },
    { name: 'an array of garbage', body: '[1, 2, 3]', status: 400, message: /Invalid|JSON-RPC|Parse/i },
    { name: 'no Accept header for event streams', headers: { accept: 'application/json' }, body: INIT, status: 406, message: /Accept/ },
    { name: 'body too large', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'local__echo', arguments: { text: 'x'.repeat(1_100_000) } } }), status: 413, code: -32600, message: /larger than/ },
  ];
  for (const c of cases) {
    const target = c.path ? url.replace('/mcp', c.path) : url;
    const res = await fetch(target, { method: c.method ?? 'POST', headers: { ...MCP_HEADERS, ...auth, ...c.headers }, ...(c.body !== undefined ? { body: c.body } : {}) });
    assert.equal(res.status, c.status, c.name);
    const json = JSON.parse(await res.text()) as { error: { code: number; message: string } };
    if (c.code !== undefined) assert.equal(json.error.code, c.code, c.name);
    assert.match(json.error.message, c.message, c.name);
  }
  // MCP-level mistakes inside a well-formed request: JSON-RPC errors, not crashes.
  const rpc = async (method: string, params: unknown) => (await post(url, JSON.stringify({ jsonrpc: '2.0', id: 7, method, params }), { ...MCP_HEADERS, ...auth })).json;
  const bad = [
    { name: 'tools/call without a name', method: 'tools/call', params: { arguments: {} }, code: -32602 },
    { name: 'tools/call with a number as name', method: 'tools/call', params: { name: 42 }, code: -32602 },
    { name: 'tools/call with arguments that are not an object', method: 'tools/call', params: { name: 'local__echo', arguments: 'text' }, code: -32602 },
    { name: 'an unknown method', method: 'resources/list', params: {}, code: -32601 },
  ];
  for (const b of bad) {
    const j = await rpc(b.method, b.params);
    assert.equal(j.error?.code, b.code, `${b.name}: ${JSON.stringify(j)}`);
  }
  const client = await t.client(t.doors.a, keyA);
  assert.equal(resultText(await client.callTool({ name: 'local__echo', arguments: { text: 'alive' } })), 'alive');
});
