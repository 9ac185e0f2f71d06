/**
 * The gateway with the official clients (`openai`, `@anthropic-ai/sdk`), in
 * front of a fake provider on loopback: every API, streamed and not, with
 * tools. The provider must see cordon's key and never the agent's token.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { PROVIDER_KEYS, startHarness, type Harness } from './testing/harness.js';

const AGENT_TOKEN = 'tok-reviewer-sb1';
let h: Harness;
let openai: OpenAI;
let anthropic: Anthropic;

before(async () => {
  h = await startHarness();
  openai = new OpenAI({ apiKey: AGENT_TOKEN, baseURL: `${h.url}/v1`, maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: AGENT_TOKEN, baseURL: h.url, maxRetries: 0 });
});
after(async () => {
  await h.close();
});

/** The last request the provider saw, with the checks every forwarded request must pass. */
function lastSeen(expectKey: 'openai' | 'anthropic' | 'none') {
  const seen = h.upstream.seen[h.upstream.seen.length - 1]!;
  const headers = JSON.stringify(seen.headers);
  assert.ok(!headers.includes(AGENT_TOKEN), 'the agent token must never reach the provider');
  if (expectKey === 'openai') assert.equal(seen.headers.authorization, `Bearer ${PROVIDER_KEYS.openai_key}`);
  if (expectKey === 'anthropic') {
    assert.equal(seen.headers['x-api-key'], PROVIDER_KEYS.anthropic_key);
    assert.equal(seen.headers.authorization, undefined);
  }
  if (expectKey === 'none') {
    assert.equal(seen.headers.authorization, undefined);
    assert.equal(seen.headers['x-api-key'], undefined);
  }
  return seen;
}

const fetchTool = {
  type: 'function' as const,
  function: { name: 'fetch_url', description: 'Fetch a URL', parameters: { type: 'object', properties: { url: { type: 'string' } }, required: ['url'] } },
};

test('openai chat.completions, not streamed: answer and usage pass through; the provider gets its key', async () => {
  const r = await openai.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hello there' }] });
  assert.equal(r.choices[0]!.message.content, 'hello there');
  assert.equal(r.usage?.total_tokens, 18);
  const seen = lastSeen('openai');
  assert.equal(seen.path, '/v1/chat/completions');
});

test('openai chat.completions, streamed: chunks in order, no usage chunk the client did not ask for', async () => {
  const stream = await openai.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'stream me please' }], stream: true });
  let text = '';
  let usageChunks = 0;
  for await (const chunk of stream) {
    if (chunk.choices.length === 0) usageChunks += 1;
    text += chunk.choices[0]?.delta.content ?? '';
  }
  assert.equal(text, 'stream me please');
  assert.equal(usageChunks, 0);
  const seen = lastSeen('openai');
  assert.deepEqual(seen.body.stream_options, { include_usage: true }, 'the gateway asks the provider for usage');
  const [resp] = (await h.audit.waitFor('llm.response', 2)).slice(-1);
  assert.deepEqual({ in: resp!.data!.tokensIn, out: resp!.data!.tokensOut, reported: resp!.data!.usageReported }, { in: 11, out: 7, reported: true });
});

test('openai chat.completions, streamed with include_usage: the client gets the usage chunk', async () => {
  const stream = await openai.chat.completions.create({
    model: 'gpt-test', messages: [{ role: 'user', content: 'usage please' }], stream: true, stream_options: { include_usage: true },
  });
  let usage: number | undefined;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage.total_tokens;
  assert.equal(usage, 18);
});

test('openai chat.completions with tools, streamed and not: tool calls to allowed hosts arrive whole', async () => {
  const whole = await openai.chat.completions.create({
    model: 'gpt-test-tool', messages: [{ role: 'user', content: 'get https://api.example.com/v1/items' }], tools: [fetchTool],
  });
  const call = whole.choices[0]!.message.tool_calls![0]!;
  assert.equal(call.type, 'function');
  assert.deepEqual(JSON.parse((call as { function: { arguments: string } }).function.arguments), { url: 'https://api.example.com/v1/items', method: 'GET' });
  assert.equal((lastSeen('openai').body.tools as unknown[]).length, 1);

  const stream = openai.chat.completions.stream({
    model: 'gpt-test-tool', messages: [{ role: 'user', content: 'get https://api.example.com/v1/items' }], tools: [fetchTool],
  });
  const final = await stream.finalChatCompletion();
  const streamed = final.choices[0]!.message.tool_calls![0]! as { function: { name: string; arguments: string } };
  assert.equal(streamed.function.name, 'fetch_url');
  assert.equal(JSON.parse(streamed.function.arguments).url, 'https://api.example.com/v1/items');
});

test('openai responses, streamed and not', async () => {
  const r = await openai.responses.create({ model: 'gpt-test', input: 'respond to this' });
  assert.equal(r.output_text, 'respond to this');
  assert.equal(lastSeen('openai').path, '/v1/responses');
  const stream = await openai.responses.create({ model: 'gpt-test', input: 'and stream it', stream: true });
  let text = '';
  let completed = false;
  for await (const ev of stream) {
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') completed = true;
  }
  assert.equal(text, 'and stream it');
  assert.ok(completed);
});

test('openai responses with a function call, streamed', async () => {
  const stream = await openai.responses.create({
    model: 'gpt-test-tool', input: 'fetch https://api.example.com/x', stream: true,
    tools: [{ type: 'function', name: 'fetch_url', parameters: { type: 'object', properties: { url: { type: 'string' } } }, strict: false }],
  });
  let args = '';
  for await (const ev of stream) if (ev.type === 'response.function_call_arguments.done') args = ev.arguments;
  assert.equal(JSON.parse(args).url, 'https://api.example.com/x');
});

test('openai embeddings (base64, as the SDK asks by default) and models', async () => {
  const e = await openai.embeddings.create({ model: 'text-embedding-test', input: ['one', 'two'] });
  assert.equal(e.data.length, 2);
  assert.deepEqual(Array.from(e.data[1]!.embedding), [0.25, -0.5, 1]);
  assert.equal(lastSeen('openai').path, '/v1/embeddings');
  const models = await openai.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['gpt-4.1-mini', 'claude-sonnet-4-5'], 'named models are listed, glob entries are not');
  assert.equal((await openai.models.retrieve('gpt-4.1-mini')).id, 'gpt-4.1-mini');
  await assert.rejects(openai.models.retrieve('gpt-5-secret'), (err: unknown) => err instanceof OpenAI.NotFoundError);
});

test('an openai-compatible provider without a key gets no credentials at all', async () => {
  const r = await openai.chat.completions.create({ model: 'llama-test', messages: [{ role: 'user', content: 'local' }] });
  assert.equal(r.choices[0]!.message.content, 'local');
  const seen = lastSeen('none');
  assert.equal(seen.path, '/compat/v1/chat/completions');
});

test('provider/model names route to that provider and send the bare model name', async () => {
  await openai.chat.completions.create({ model: 'openai/gpt-test', messages: [{ role: 'user', content: 'named' }] });
  const seen = lastSeen('openai');
  assert.equal(seen.body.model, 'gpt-test');
});

test('anthropic messages, not streamed, with usage', async () => {
  const m = await anthropic.messages.create({ model: 'claude-test', max_tokens: 100, messages: [{ role: 'user', content: 'hi claude' }] });
  assert.deepEqual(m.content, [{ type: 'text', text: 'hi claude' }]);
  assert.equal(m.usage.output_tokens, 7);
  const seen = lastSeen('anthropic');
  assert.equal(seen.path, '/v1/messages');
  assert.match(String(seen.headers['anthropic-version']), /^\d{4}-\d{2}-\d{2}$/);
});

test('anthropic messages, streamed (raw events and the stream helper)', async () => {
  const raw = await anthropic.messages.create({ model: 'claude-test', max_tokens: 100, messages: [{ role: 'user', content: 'stream it' }], stream: true });
  let text = '';
  for await (const ev of raw) if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
  assert.equal(text, 'stream it');
  const helper = anthropic.messages.stream({ model: 'claude-test', max_tokens: 100, messages: [{ role: 'user', content: 'helper' }] });
  const final = await helper.finalMessage();
  assert.equal(final.content.length, 1);
  assert.deepEqual({ type: final.content[0]!.type, text: (final.content[0] as { text: string }).text }, { type: 'text', text: 'helper' });
  assert.equal(final.usage.output_tokens, 7);
  lastSeen('anthropic');
});

test('anthropic tool use, streamed and not', async () => {
  const tools = [{ name: 'fetch_url', description: 'Fetch', input_schema: { type: 'object' as const, properties: { url: { type: 'string' } } } }];
  const m = await anthropic.messages.create({ model: 'claude-test-tool', max_tokens: 100, tools, messages: [{ role: 'user', content: 'https://api.example.com/a' }] });
  const block = m.content[0]!;
  assert.equal(block.type, 'tool_use');
  assert.deepEqual((block as { input: unknown }).input, { url: 'https://api.example.com/a', method: 'GET' });
  const final = await anthropic.messages.stream({ model: 'claude-test-tool', max_tokens: 100, tools, messages: [{ role: 'user', content: 'https://api.example.com/b' }] }).finalMessage();
  assert.deepEqual((final.content[0] as { input: unknown }).input, { url: 'https://api.example.com/b', method: 'GET' });
});

test('anthropic models list uses the Anthropic shape', async () => {
  const page = await anthropic.models.list();
  assert.deepEqual(page.data.map((m) => [m.type, m.id]), [['model', 'gpt-4.1-mini'], ['model', 'claude-sonnet-4-5']]);
});

test('every forwarded call is audited twice, without content', async () => {
  const requests = h.audit.events.filter((e) => e.type === 'llm.request' && e.decision === 'allow' && (e.data as { api: string }).api !== 'models');
  const responses = h.audit.events.filter((e) => e.type === 'llm.response');
  assert.ok(requests.length >= 10);
  assert.equal(responses.length, requests.length);
  for (const e of [...requests, ...responses]) {
    assert.equal(e.agent, 'reviewer');
    assert.equal(e.sandbox, 'sb-1');
    assert.ok(!JSON.stringify(e).includes('hello there'), 'no prompt text in audit events');
  }
  const r = responses[0]!.data as Record<string, unknown>;
  for (const k of ['provider', 'model', 'tokensIn', 'tokensOut', 'latencyMs', 'outcome', 'status']) assert.ok(k in r, `llm.response carries ${k}`);
});

test('a gateway built straight from a parsed cordon.yaml serves its agent', async () => {
  const { parseConfig } = await import('../config/index.js');
  const { createGateway } = await import('./gateway.js');
  const { memoryAudit } = await import('./testing/harness.js');
  const config = parseConfig([
    'version: 1',
    'agents:',
    '  writer:',
    '    egress: [{ host: api.example.com }]',
    '    llm: { models: [gpt-4.1-mini], limits: { requestsPerMinute: 5 } }',
    'secrets:',
    '  openai_key: { from: env, name: OPENAI_API_KEY }',
    'providers:',
    `  openai: { baseUrl: "${h.upstream.url}/v1", apiKey: "{{secret.openai_key}}" }`,
  ].join('\n'));
  const audit = memoryAudit();
  const gateway = createGateway({
    config, audit,
    authenticate: async () => ({ ok: true, agent: 'writer', sandboxId: 'sb-w' }),
    resolveSecret: async (name) => (name === 'openai_key' ? PROVIDER_KEYS.openai_key : Promise.reject(new Error('unknown'))),
  });
  try {
    const res = await gateway.fetch(new Request('http://llm.cordon.internal/v1/chat/completions', {
      method: 'POST', body: JSON.stringify({ model: 'gpt-4.1-mini', messages: [{ role: 'user', content: 'from yaml' }] }),
    }));
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content, 'from yaml');
    assert.equal(lastSeen('openai').body.model, 'gpt-4.1-mini');
    assert.equal(gateway.limits('writer')?.requestsAvailable, 4);
  } finally {
    await gateway.close();
  }
});
