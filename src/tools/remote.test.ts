/**
 * Remote MCP servers are reached only where the calling agent's egress rules
 * allow: the host (and port, and path rules), then the resolved address
 * (loopback needs a cidr: rule), dialling the address that was checked. The
 * upstream is the test server over streamable HTTP on loopback, named
 * `tools.test` through the gateway's resolver.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createEgressCa, issueCertificate } from '../egress/index.js';
import { resultText, startHttpUpstream, startToolsHarness, type ToolsHarness } from './testing/harness.js';

let up: { port: number; close(): Promise<void> };
let tlsUp: { port: number; close(): Promise<void> };
/** Where each test name points now (a test may move one, as a rebinding attacker would). */
const dns = new Map<string, string>([['tools.test', '127.0.0.1'], ['secure.test', '127.0.0.1'], ['wrongname.test', '127.0.0.1']]);
let t: ToolsHarness;
const lookups: string[] = [];

before(async () => {
  up = await startHttpUpstream();
  const ca = createEgressCa({ commonName: 'cordon tools test CA' });
  tlsUp = await startHttpUpstream(issueCertificate(ca, { hosts: ['secure.test'] }));
  const host = { host: 'tools.test', ports: [up.port] };
  const loop = { cidr: '127.0.0.1/32', ports: [up.port] };
  const tlsLoop = { cidr: '127.0.0.1/32', ports: [tlsUp.port] };
  const tools = { remote: { allow: ['*'] } };
  t = await startToolsHarness({
    config: {
      version: 1,
      mcpServers: {
        remote: { url: `http://tools.test:${up.port}/mcp` },
        secure: { url: `https://secure.test:${tlsUp.port}/mcp` },
        wrongname: { url: `https://wrongname.test:${tlsUp.port}/mcp` },
      },
      agents: {
        coder: { isolation: 'bubblewrap', egress: [host, loop], tools },
        nocidr: { isolation: 'bubblewrap', egress: [host], tools },
        stranger: { isolation: 'bubblewrap', tools },
        otherport: { isolation: 'bubblewrap', egress: [{ host: 'tools.test', ports: [443] }, loop], tools },
        pathrules: { isolation: 'bubblewrap', egress: [{ ...host, rules: [{ method: 'POST', path: '/other', action: 'allow' }] }, loop], tools },
        approvepath: { isolation: 'bubblewrap', egress: [{ ...host, rules: [{ path: '/mcp', action: 'approve' }] }, loop], tools },
        tls: {
          isolation: 'bubblewrap',
          egress: [{ host: 'secure.test', ports: [tlsUp.port] }, { host: 'wrongname.test', ports: [tlsUp.port] }, tlsLoop],
          tools: { secure: { allow: ['echo'] }, wrongname: { allow: ['echo'] } },
        },
      },
    },
    gateway: {
      upstream: {
        remote: {
          ca: ca.certPem,
          lookup: async (name) => {
            lookups.push(name);
            const address = dns.get(name);
            if (address) return [{ address, family: 4 }];
            throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
          },
        },
      },
    },
  });
});
after(async () => {
  await t?.close();
  await up?.close();
  await tlsUp?.close();
});

let n = 0;
async function clientAs(agent: string) {
  const sandboxId = `sb-remote${'abcdefghijklmnopqrstuvwxyz'[n++]!.repeat(14)}`;
  const door = await t.door({ sandboxId, agent });
  return t.client(door, t.keys.issue(sandboxId));
}

test('an agent whose egress allows the host and its address reaches the remote server', async () => {
  const c = await clientAs('coder');
  const { tools } = await c.listTools();
  assert.ok(tools.some((x) => x.name === 'remote__echo'));
  const r = await c.callTool({ name: 'remote__echo', arguments: { text: 'over http' } });
  assert.equal(resultText(r), 'over http');
  assert.ok(lookups.includes('tools.test'), 'the gateway resolved the name itself');
  const ev = (await t.h.events('tool.call')).filter((e) => e.data.name === 'remote__echo').pop()!;
  assert.equal(ev.decision, 'allow');
});

test('agents whose egress does not allow the server are refused, with the policy\'s reason, and audited', async () => {
  const cases = [
    { agent: 'stranger', reason: 'host-not-allowed', why: 'no egress rule for the host' },
    { agent: 'otherport', reason: 'port-not-allowed', why: 'the host is allowed on another port' },
    { agent: 'nocidr', reason: 'loopback-address', why: 'the host is allowed but resolves to loopback, which needs a cidr: rule' },
    { agent: 'pathrules', reason: 'no-path-rule', why: 'the host has path rules and none matches POST /mcp' },
    { agent: 'approvepath', reason: 'egress-approve', why: 'an approve path rule: tool calls have their own approvals' },
  ];
  for (const c of cases) {
    const client = await clientAs(c.agent);
    const { tools } = await client.listTools();
    assert.deepEqual(tools, [], `${c.agent}: nothing listed (${c.why})`);
    const up = (await t.h.events('tool.upstream')).filter((e) => e.agent === c.agent).pop()!;
    assert.equal(up.reason, c.reason, c.why);
    const r = await client.callTool({ name: 'remote__echo', arguments: { text: 'x' } });
    assert.equal(r.isError, true, c.why);
    assert.match(resultText(r), new RegExp(`\\(${c.reason}\\)`), c.why);
    const ev = (await t.h.events('tool.call')).filter((e) => e.agent === c.agent).pop()!;
    assert.equal(ev.decision, 'deny', c.why);
    assert.equal(ev.reason, c.reason, c.why);
  }
  assert.equal((await t.h.events('tool.result')).filter((e) => e.agent !== 'coder').length, 0, 'nothing was called upstream for them');
});

test('HTTPS: the checked address is dialled with the server name kept for SNI and certificate checks', async () => {
  const c = await clientAs('tls');
  assert.equal(resultText(await c.callTool({ name: 'secure__echo', arguments: { text: 'over https' } })), 'over https');
  const r = await c.callTool({ name: 'wrongname__echo', arguments: { text: 'x' } });
  assert.equal(r.isError, true, 'a certificate for another name is refused, though the address is the same');
  assert.match(resultText(r), /upstream-unavailable.*fetch failed: Hostname\/IP does not match certificate's altnames/);
});

test('every request is checked again: a name that moves to a refused address is refused (no rebinding)', async () => {
  const c = await clientAs('coder');
  assert.equal(resultText(await c.callTool({ name: 'remote__echo', arguments: { text: 'before' } })), 'before');
  dns.set('tools.test', '169.254.169.254');
  try {
    const r = await c.callTool({ name: 'remote__echo', arguments: { text: 'after' } });
    assert.equal(r.isError, true);
    assert.match(resultText(r), /metadata-address|refused/);
    const ev = (await t.h.events('tool.result')).filter((e) => e.data.name === 'remote__echo').pop()!;
    assert.match(String(ev.data.error), /169\.254\.169\.254.*metadata/);
  } finally {
    dns.set('tools.test', '127.0.0.1');
  }
});
