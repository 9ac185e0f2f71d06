/**
 * The tools gateway end to end on real parts: the official SDK client calls
 * through a door, the test upstream runs under bubblewrap, events land in
 * the real audit log. Listing (policy, poisoning), allowed calls audited
 * with masked arguments, denied and unknown tools, the confinement of local
 * servers (environment, user, no network), a crashing upstream.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, test } from 'node:test';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { localUpstream, resultText, SANDBOX_A, startToolsHarness, type ToolsHarness } from './testing/harness.js';

const SECRET = 'tool-token-value-0123456789';
const AGENT_SECRET = 'agent-secret-value-42';
let t: ToolsHarness;
let client: Client;
let listener: Server;
let listenerPort: number;

before(async () => {
  t = await startToolsHarness({
    secrets: { tool_token: SECRET },
    redact: () => ({ values: [AGENT_SECRET] }),
    config: {
      version: 1,
      secrets: { tool_token: { from: 'env', name: 'TOOL_TOKEN' } },
      mcpServers: {
        local: localUpstream({ env: { TOOL_TOKEN: '{{secret.tool_token}}', MODE: 'test' } }),
        hidden: localUpstream({ poisonedTools: 'hide' }),
        net: localUpstream({ network: true }),
        slowsrv: localUpstream({ timeout: '1s' }),
        broken: { command: ['/bin/sh', '-c', 'echo this is not JSON-RPC; exec sleep 30'], timeout: '1s' },
        missing: { command: ['/nonexistent/mcp-server'] },
      },
      agents: {
        coder: {
          isolation: 'bubblewrap',
          tools: {
            local: { allow: ['*'], deny: ['read_file'], approve: ['counter'] },
            hidden: { allow: ['echo', 'notes_lookup'] },
            net: { allow: ['connect'] },
            slowsrv: { allow: ['slow', 'echo'] },
            broken: { allow: ['*'] },
            missing: { allow: ['*'] },
          },
        },
      },
    },
  });
  client = await t.client(t.doors.a, t.keys.issue(SANDBOX_A.sandboxId));
  listener = createServer((s) => s.end());
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  listenerPort = (listener.address() as { port: number }).port;
});

after(async () => {
  listener?.close();
  await t?.close();
});

async function lastEvent(type: string, pred: (e: { data: Record<string, any>; decision?: string; reason?: string }) => boolean = () => true) {
  const events = await t.h.events(type);
  return events.filter(pred).pop();
}

test('tools/list: <server>__<tool>, denied tools left out, approve marked, poisoned flagged or hidden and audited', async () => {
  const { tools } = await client.listTools();
  const names = tools.map((x) => x.name).sort();
  const cases: Array<{ name: string; listed: boolean; why: string }> = [
    { name: 'local__echo', listed: true, why: 'allowed by "*"' },
    { name: 'local__read_file', listed: false, why: 'deny wins over allow "*"' },
    { name: 'local__counter', listed: true, why: 'approve tools are listed' },
    { name: 'local__notes_lookup', listed: true, why: 'poisonedTools: flag lists it with a warning' },
    { name: 'hidden__echo', listed: true, why: 'allowed' },
    { name: 'hidden__add', listed: false, why: 'not in allow: default deny' },
    { name: 'hidden__notes_lookup', listed: false, why: 'poisonedTools: hide' },
    { name: 'net__connect', listed: true, why: 'allowed' },
    { name: 'slowsrv__slow', listed: true, why: 'allowed' },
  ];
  assert.ok(!names.some((n) => n.startsWith('broken__')), 'a server that does not speak MCP contributes nothing, and the list still works');
  const broken = (await t.h.events('tool.upstream')).find((e) => e.data.server === 'broken')!;
  assert.equal(broken.reason, 'upstream-unavailable');
  for (const c of cases) assert.equal(names.includes(c.name), c.listed, `${c.name}: ${c.why}`);
  const counter = tools.find((x) => x.name === 'local__counter')!;
  assert.match(counter.description ?? '', /human approval/);
  const flagged = tools.find((x) => x.name === 'local__notes_lookup')!;
  assert.match(flagged.description ?? '', /^\[cordon: this description looks like injected instructions/);
  assert.ok(!/looks like injected/.test(tools.find((x) => x.name === 'local__echo')!.description ?? ''), 'a clean tool is not flagged');

  const poisoned = await t.h.events('tool.poisoned');
  const local = poisoned.find((e) => e.data.server === 'local')!;
  const hidden = poisoned.find((e) => e.data.server === 'hidden')!;
  assert.equal(local.decision, 'flag');
  assert.equal(hidden.decision, 'deny');
  assert.equal(local.data.tool, 'notes_lookup');
  assert.ok((local.data.rules as string[]).includes('ignore-instructions'), `rules: ${local.data.rules}`);
  assert.match(String(local.data.excerpt), /id_rsa/);
  assert.equal(poisoned.filter((e) => e.data.server === 'local').length, 1, 'only the poisoned tool is flagged');
  await client.listTools();
  assert.equal((await t.h.events('tool.poisoned')).length, poisoned.length, 'a second listing does not report the same finding again');
});

test('an allowed call works and is audited before it runs, with the secrets in its arguments masked', async () => {
  const text = `deploy with ${AGENT_SECRET} and ${SECRET}`;
  const r = await client.callTool({ name: 'local__echo', arguments: { text } });
  assert.equal(r.isError, undefined);
  assert.equal(resultText(r), text.replace(SECRET, '[masked]'), 'the server\'s own secret is masked in results');
  const call = (await lastEvent('tool.call', (e) => e.data.name === 'local__echo'))!;
  const result = (await lastEvent('tool.result', (e) => e.data.callId === call.data.callId))!;
  assert.equal(call.decision, 'allow');
  assert.equal(call.reason, 'tool-allowed');
  assert.equal(call.data.ruleId, 'agents.coder.tools.local.allow[0]');
  assert.equal(call.agent, 'coder');
  assert.equal(call.sandbox, SANDBOX_A.sandboxId);
  assert.equal((call.data.args as { text: string }).text, 'deploy with [masked] and [masked]');
  assert.ok(!JSON.stringify(call).includes(AGENT_SECRET) && !JSON.stringify(call).includes(SECRET));
  assert.ok(call.seq < result.seq, 'tool.call comes before tool.result');
  assert.equal(result.data.bytes, Buffer.byteLength(JSON.stringify(r)) , 'result size in bytes');
  assert.equal(typeof result.data.durationMs, 'number');
});

test('a local server runs confined: only its configured environment, no host user, read-only binds', async () => {
  const keys = JSON.parse(resultText(await client.callTool({ name: 'local__env_keys', arguments: {} }))) as string[];
  assert.deepEqual(keys, ['MODE', 'PATH', 'PWD', 'TOOL_TOKEN'], 'the configured variables, the default PATH and the PWD that bubblewrap sets: nothing of the daemon\'s environment');
  const who = JSON.parse(resultText(await client.callTool({ name: 'local__whoami', arguments: {} }))) as { uid: number };
  if (process.getuid?.() === 0) assert.equal(who.uid, 65534, 'a root daemon drops to nobody');
  else assert.notEqual(who.uid, undefined);
});

test('a local server has no network unless its config says network: true', async () => {
  const denied = await client.callTool({ name: 'local__connect', arguments: { port: listenerPort } });
  assert.equal(denied.isError, true, resultText(denied));
  assert.match(resultText(denied), /^failed: (ECONNREFUSED|ENETUNREACH|EADDRNOTAVAIL)/);
  const control = await client.callTool({ name: 'net__connect', arguments: { port: listenerPort } });
  assert.equal(resultText(control), 'connected', 'the same tool with network: true reaches the port, so the refusal above is the confinement');
});

test('denied tools are refused with the reason and audited; nothing reaches the server', async () => {
  const cases = [
    { name: 'local__read_file', args: { path: '/etc/hostname' }, reason: 'tool-denied', rule: 'agents.coder.tools.local.deny[0]' },
    { name: 'hidden__add', args: { a: 1, b: 2 }, reason: 'no-tool-rule', rule: undefined },
    { name: 'hidden__notes_lookup', args: { keyword: 'x' }, reason: 'tool-poisoned', rule: 'agents.coder.tools.hidden.allow[1]' },
  ];
  for (const c of cases) {
    const r = await client.callTool({ name: c.name, arguments: c.args });
    assert.equal(r.isError, true, c.name);
    assert.match(resultText(r), new RegExp(`^cordon refused this call \\(${c.reason}\\)`), c.name);
    assert.equal((r._meta as any)['cordon/refusal'].reason, c.reason);
    const e = (await lastEvent('tool.call', (x) => x.data.name === c.name))!;
    assert.equal(e.decision, 'deny', c.name);
    assert.equal(e.reason, c.reason, c.name);
    assert.equal(e.data.ruleId, c.rule, c.name);
    assert.equal((await t.h.events('tool.result')).filter((x) => x.data.name === c.name).length, 0, `${c.name} never ran`);
  }
});

test('unknown tools are JSON-RPC errors (-32602) and audited', async () => {
  const cases = [
    { name: 'echo', why: 'no server part' },
    { name: 'local__no_such_tool', why: 'the server has no such tool' },
    { name: 'other__echo', why: 'the agent has no such server' },
    { name: 'local__', why: 'empty tool part' },
  ];
  for (const c of cases) {
    await assert.rejects(client.callTool({ name: c.name, arguments: {} }), (err: unknown) => {
      assert.ok(err instanceof McpError, c.why);
      assert.equal(err.code, -32602, c.why);
      assert.match(err.message, /Unknown tool/, c.why);
      return true;
    });
    const e = (await lastEvent('tool.call', (x) => x.data.name === c.name))!;
    assert.equal(e.reason, 'unknown-tool', c.why);
  }
});

test('an upstream that crashes gives an error result, and the next call starts it again', async () => {
  const r = await client.callTool({ name: 'local__crash', arguments: {} });
  assert.equal(r.isError, true);
  assert.match(resultText(r), /upstream-error/);
  const ev = (await lastEvent('tool.result', (x) => x.data.name === 'local__crash'))!;
  assert.equal(ev.decision, 'error');
  assert.equal(typeof ev.data.error, 'string');
  const again = await client.callTool({ name: 'local__echo', arguments: { text: 'still here' } });
  assert.equal(resultText(again), 'still here');
});

test('an upstream that hangs is cut at its timeout; one that does not speak MCP is refused; the gateway goes on', async () => {
  const started = Date.now();
  const r = await client.callTool({ name: 'slowsrv__slow', arguments: { ms: 20_000 } });
  assert.equal(r.isError, true);
  assert.match(resultText(r), /upstream-error.*timed out/i);
  assert.ok(Date.now() - started < 10_000, 'cut at the server\'s 1s timeout, not after 20s');
  const ev = (await lastEvent('tool.result', (x) => x.data.name === 'slowsrv__slow'))!;
  assert.equal(ev.decision, 'error');
  assert.equal(resultText(await client.callTool({ name: 'slowsrv__echo', arguments: { text: 'next' } })), 'next');
  const b = await client.callTool({ name: 'broken__anything', arguments: {} });
  assert.equal(b.isError, true);
  assert.match(resultText(b), /^cordon refused this call \(upstream-unavailable\): MCP server broken could not be started or reached/);
  const m = await client.callTool({ name: 'missing__anything', arguments: {} });
  assert.match(resultText(m), /MCP server missing could not be started or reached: .*stderr ends with: .*\/nonexistent\/mcp-server/, 'bubblewrap\'s own error is in the message');
});
