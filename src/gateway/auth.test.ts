/**
 * Who may call the gateway: the sandbox token, bound to the caller's channel;
 * anything else is refused in the dialect of the API called, audited, and
 * never forwarded. Also the three ways of serving: node handler with a
 * channel identity, standalone server, Hono app.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { createGateway } from './gateway.js';
import { createGatewayApp, presentedToken } from './server.js';
import { defaultAgents, memoryAudit, PROVIDER_KEYS, startHarness, type Harness } from './testing/harness.js';
import type { GatewayCaller } from './types.js';

let h: Harness;
before(async () => {
  h = await startHarness();
});
after(async () => {
  await h.close();
});

const chatBody = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] });
const messagesBody = JSON.stringify({ model: 'claude-test', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });

interface AuthCase {
  name: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  status: number;
  reason?: string;
  shape: 'openai' | 'anthropic';
}

const cases: AuthCase[] = [
  { name: 'no credentials (openai route)', path: '/v1/chat/completions', headers: {}, body: chatBody, status: 401, reason: 'missing-token', shape: 'openai' },
  { name: 'no credentials (anthropic route)', path: '/v1/messages', headers: {}, body: messagesBody, status: 401, reason: 'missing-token', shape: 'anthropic' },
  { name: 'the agent sends a real provider key', path: '/v1/chat/completions', headers: { authorization: `Bearer ${PROVIDER_KEYS.openai_key}` }, body: chatBody, status: 401, reason: 'unknown-token', shape: 'openai' },
  { name: 'the agent sends its own anthropic key', path: '/v1/messages', headers: { 'x-api-key': 'sk-ant-agent-own-key' }, body: messagesBody, status: 401, reason: 'unknown-token', shape: 'anthropic' },
  { name: 'bearer and x-api-key disagree', path: '/v1/chat/completions', headers: { authorization: 'Bearer tok-reviewer-sb1', 'x-api-key': 'sk-other' }, body: chatBody, status: 401, reason: 'missing-token', shape: 'openai' },
  { name: 'a malformed authorization header', path: '/v1/chat/completions', headers: { authorization: 'Basic dG9rOng=' }, body: chatBody, status: 401, reason: 'missing-token', shape: 'openai' },
  { name: 'an agent without llm: access', path: '/v1/chat/completions', headers: { authorization: 'Bearer tok-nollm' }, body: chatBody, status: 403, shape: 'openai' },
  { name: 'a model the agent may not use', path: '/v1/messages', headers: { 'x-api-key': 'tok-reviewer-sb1' }, body: JSON.stringify({ model: 'mistral-large', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }), status: 404, shape: 'anthropic' },
];

for (const c of cases) {
  test(`refused: ${c.name} → ${c.status}, in the ${c.shape} error shape, nothing forwarded`, async () => {
    const before = h.upstream.seen.length;
    const res = await fetch(`${h.url}${c.path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...c.headers }, body: c.body });
    assert.equal(res.status, c.status);
    const body = (await res.json()) as Record<string, any>;
    if (c.shape === 'openai') {
      assert.equal(typeof body.error.message, 'string');
      assert.ok('code' in body.error && 'type' in body.error);
    } else {
      assert.equal(body.type, 'error');
      assert.equal(typeof body.error.type, 'string');
    }
    assert.ok(res.headers.get('x-cordon-error'));
    assert.equal(h.upstream.seen.length, before, 'nothing reached the provider');
    if (c.reason) {
      const last = h.audit.events.filter((e) => e.type === 'llm.auth').pop()!;
      assert.equal(last.reason, c.reason);
      assert.equal(last.decision, 'deny');
    }
  });
}

test('the official clients surface refusals as their own error classes', async () => {
  const openai = new OpenAI({ apiKey: 'sk-not-a-sandbox-token', baseURL: `${h.url}/v1`, maxRetries: 0 });
  await assert.rejects(openai.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] }), OpenAI.AuthenticationError);
  const anthropic = new Anthropic({ apiKey: 'sk-ant-nope', baseURL: h.url, maxRetries: 0 });
  await assert.rejects(anthropic.messages.create({ model: 'claude-test', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }), Anthropic.AuthenticationError);
});

/** A node server that hands every request to the gateway as the egress proxy does: with the channel's identity. */
async function channelServer(caller: GatewayCaller): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => void h.gateway.handle(req, res, caller));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

test('through a channel: the sandbox\'s own token works, another sandbox\'s token is refused', async () => {
  const { url, server } = await channelServer({ sandboxId: 'sb-1', agent: 'reviewer' });
  try {
    const own = new OpenAI({ apiKey: 'tok-reviewer-sb1', baseURL: `${url}/v1`, maxRetries: 0 });
    const r = await own.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'via channel' }] });
    assert.equal(r.choices[0]!.message.content, 'via channel');
    const replayed = new OpenAI({ apiKey: 'tok-reviewer-sb2', baseURL: `${url}/v1`, maxRetries: 0 });
    await assert.rejects(replayed.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] }), OpenAI.AuthenticationError);
    const last = h.audit.events.filter((e) => e.type === 'llm.auth').pop()!;
    assert.deepEqual({ reason: last.reason, sandbox: last.sandbox }, { reason: 'token-of-another-sandbox', sandbox: 'sb-1' });
  } finally {
    server.close();
    server.closeAllConnections();
  }
});

test('an authenticator that vouches for another sandbox than the channel\'s is overruled; one that throws refuses', async () => {
  const upstreamSeen = h.upstream.seen.length;
  const audit = memoryAudit();
  const warnings: string[] = [];
  const lying = createGateway({
    config: { agents: defaultAgents(), providers: { openai: { type: 'openai', baseUrl: `${h.upstream.url}/v1`, apiKey: '{{secret.k}}' } } },
    audit,
    authenticate: async () => ({ ok: true, agent: 'reviewer', sandboxId: 'sb-2' }),
    resolveSecret: async () => 'sk-x',
  });
  const throwing = createGateway({
    config: { agents: defaultAgents(), providers: {} },
    audit,
    authenticate: async () => {
      throw new Error('identity store down');
    },
    onError: (err) => warnings.push(String(err)),
  });
  const none = createGateway({ config: { agents: defaultAgents(), providers: {} }, audit });
  const request = () => new Request('http://llm.cordon.internal/v1/chat/completions', { method: 'POST', headers: { authorization: 'Bearer tok-reviewer-sb1' }, body: chatBody });
  const r1 = await lying.fetch(request(), { sandboxId: 'sb-1', agent: 'reviewer' });
  const r2 = await throwing.fetch(request(), { sandboxId: 'sb-1', agent: 'reviewer' });
  const r3 = await none.fetch(request());
  assert.deepEqual([r1.status, r2.status, r3.status], [401, 401, 401]);
  assert.deepEqual(audit.events.map((e) => e.reason), ['token-not-bound-to-channel', 'authenticator-error', 'no-authenticator-configured']);
  assert.equal(warnings.length, 1);
  assert.equal(h.upstream.seen.length, upstreamSeen);
  await Promise.all([lying.close(), throwing.close(), none.close()]);
});

test('presentedToken reads Bearer or x-api-key and refuses ambiguity', () => {
  const req = (headers: Record<string, string>) => ({ method: 'POST', path: '/', header: (n: string) => headers[n] });
  const table: Array<[string, Record<string, string>, string | undefined]> = [
    ['bearer', { authorization: 'Bearer abc' }, 'abc'],
    ['x-api-key', { 'x-api-key': 'abc' }, 'abc'],
    ['both equal', { authorization: 'Bearer abc', 'x-api-key': 'abc' }, 'abc'],
    ['both different', { authorization: 'Bearer abc', 'x-api-key': 'def' }, undefined],
    ['basic auth', { authorization: 'Basic abc' }, undefined],
    ['bearer with two words', { authorization: 'Bearer a b' }, undefined],
    ['nothing', {}, undefined],
  ];
  for (const [name, headers, expected] of table) assert.equal(presentedToken(req(headers)), expected, name);
});

test('the Hono app serves the gateway in-process, streaming included', async () => {
  const app = createGatewayApp(h.gateway);
  const auth = { authorization: 'Bearer tok-reviewer-sb1', 'content-type': 'application/json' };
  const models = await app.request('/v1/models', { headers: auth });
  assert.equal(models.status, 200);
  assert.equal(((await models.json()) as { object: string }).object, 'list');
  const unauth = await app.request('/v1/models');
  assert.equal(unauth.status, 401);
  const streamed = await app.request('/v1/chat/completions', {
    method: 'POST', headers: auth, body: JSON.stringify({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'through hono' }] }),
  });
  assert.equal(streamed.status, 200);
  assert.match(streamed.headers.get('content-type') ?? '', /text\/event-stream/);
  const text = await streamed.text();
  const content = text.split('\n\n').filter((e) => e.startsWith('data: {'))
    .map((e) => JSON.parse(e.slice(6)) as { choices: Array<{ delta: { content?: string } }> })
    .map((c) => c.choices[0]?.delta.content ?? '').join('');
  assert.equal(content, 'through hono');
  assert.ok(text.trimEnd().endsWith('data: [DONE]'));
  assert.equal((await app.request('/healthz')).status, 200);
});

test('the Fetch transport: the body cap holds, and a reader that cancels a stream frees the agent\'s slot', async () => {
  const audit = memoryAudit();
  const gw = createGateway({
    config: { agents: defaultAgents(), providers: { openai: { type: 'openai', baseUrl: `${h.upstream.url}/v1`, apiKey: '{{secret.k}}' } } },
    audit,
    authenticate: async () => ({ ok: true, agent: 'reviewer', sandboxId: 'sb-9' }),
    resolveSecret: async () => 'sk-fetch',
    settings: { maxRequestBodyBytes: 2048 },
  });
  try {
    const big = await gw.fetch(new Request('http://gw/v1/chat/completions', { method: 'POST', body: JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'z'.repeat(4096) }] }) }));
    assert.equal(big.status, 413);
    assert.equal(((await big.json()) as { error: { code: string } }).error.code, 'body-too-large');
    const abandonedBefore = h.upstream.abandoned;
    const res = await gw.fetch(new Request('http://gw/v1/chat/completions', {
      method: 'POST', body: JSON.stringify({ model: 'gpt-test-slow', stream: true, messages: [{ role: 'user', content: 'slow' }] }),
    }));
    const reader = res.body!.getReader();
    await reader.read();
    assert.equal(gw.limits('reviewer')?.inFlight, 1);
    await reader.cancel();
    const [closed] = await audit.waitFor('llm.response', 1);
    assert.equal(closed!.reason, 'client-closed');
    assert.equal(gw.limits('reviewer')?.inFlight, 0);
    const until = Date.now() + 2000;
    while (h.upstream.abandoned === abandonedBefore && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    assert.equal(h.upstream.abandoned, abandonedBefore + 1, 'the provider stream was closed too');
  } finally {
    await gw.close();
  }
});
