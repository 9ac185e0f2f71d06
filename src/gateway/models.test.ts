/**
 * Model access and routing, table-driven: which names an agent may call, and
 * which provider serves each (qualified names, provider model lists, the only
 * provider of a dialect, well-known names, and the refusals that name a fix).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { GatewayError } from './errors.js';
import { createModelRouter, matchesAny } from './models.js';
import { createProviderRegistry, type GatewayProviderConfig } from './providers/registry.js';
import { resolveSettings } from './settings.js';

const upstream = resolveSettings().upstream;
const registries: Array<{ close(): Promise<void> }> = [];
after(async () => {
  await Promise.all(registries.map((r) => r.close()));
});

function router(providers: Record<string, GatewayProviderConfig>) {
  const reg = createProviderRegistry(providers, async () => 'k', upstream, 1000);
  registries.push(reg);
  return createModelRouter(reg);
}

const TWO_OPENAI = router({
  openai: { type: 'openai', baseUrl: 'https://api.openai.com/v1', apiKey: '{{secret.a}}' },
  vllm: { type: 'openai-compatible', baseUrl: 'http://10.0.0.5:8000/v1' },
  anthropic: { type: 'anthropic', baseUrl: 'https://api.anthropic.com', apiKey: '{{secret.b}}' },
  ollama: { type: 'openai-compatible', baseUrl: 'http://10.0.0.6:11434/v1', models: ['llama*', 'qwen*'] },
});

const ALLOWED = ['gpt-4.1-mini', 'claude-*', 'llama3.1', 'vllm/*', 'mystery-model', 'openai/*', 'anthropic/claude-x'];

const CASES: Array<{ name: string; model: string; dialect: 'openai' | 'anthropic'; provider?: string; upstreamModel?: string; reason?: string }> = [
  { name: 'a well-known OpenAI name among several OpenAI-dialect providers', model: 'gpt-4.1-mini', dialect: 'openai', provider: 'openai', upstreamModel: 'gpt-4.1-mini' },
  { name: 'the only anthropic provider', model: 'claude-sonnet-4-5', dialect: 'anthropic', provider: 'anthropic', upstreamModel: 'claude-sonnet-4-5' },
  { name: 'a provider models list', model: 'llama3.1', dialect: 'openai', provider: 'ollama', upstreamModel: 'llama3.1' },
  { name: 'a provider-qualified name', model: 'vllm/meta/llama-70b', dialect: 'openai', provider: 'vllm', upstreamModel: 'meta/llama-70b' },
  { name: 'an ambiguous unknown name', model: 'mystery-model', dialect: 'openai', reason: 'model-unroutable' },
  { name: 'a qualified name on the wrong route', model: 'anthropic/claude-x', dialect: 'openai', reason: 'model-unroutable' },
  { name: 'a name the agent may not use', model: 'gpt-5', dialect: 'openai', reason: 'model-not-allowed' },
  { name: 'a qualified name goes to that provider with the rest verbatim', model: 'openai/../vllm', dialect: 'openai', provider: 'openai', upstreamModel: '../vllm' },
];

for (const c of CASES) {
  test(`route: ${c.name}`, () => {
    try {
      const r = TWO_OPENAI.route('agent', ALLOWED, c.model, c.dialect);
      assert.equal(c.reason, undefined, `expected a refusal, got ${r.provider.name}`);
      assert.deepEqual([r.provider.name, r.upstreamModel], [c.provider, c.upstreamModel]);
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      assert.equal(err.reason, c.reason, err.message);
      assert.ok(err.fix, 'a refusal names a fix');
    }
  });
}

test('matchesAny: exact names and * globs, nothing else is special', () => {
  assert.ok(matchesAny(['gpt-4.1*'], 'gpt-4.1-mini'));
  assert.ok(!matchesAny(['gpt-4.1'], 'gpt-4.1-mini'));
  assert.ok(!matchesAny(['gpt-4.1'], 'gpt-401'), 'a dot is literal');
  assert.ok(matchesAny(['*'], 'anything'));
  assert.ok(!matchesAny([], 'x'));
});

test('provider base paths: a URL without a path gets /v1', () => {
  const reg = createProviderRegistry({
    a: { type: 'anthropic', baseUrl: 'https://api.anthropic.com', apiKey: '{{secret.x}}' },
    b: { type: 'openai-compatible', baseUrl: 'http://h:1/openai/v1/' },
  }, async () => 'k', upstream, 1000);
  registries.push(reg);
  assert.equal(reg.get('a')!.pathFor('/messages'), '/v1/messages');
  assert.equal(reg.get('b')!.pathFor('/chat/completions'), '/openai/v1/chat/completions');
});

test('provider headers: built from scratch, key from the secret, client headers only anthropic-version/beta', async () => {
  const reg = createProviderRegistry({
    a: { type: 'anthropic', baseUrl: 'https://api.anthropic.com', apiKey: '{{secret.ak}}' },
    o: { type: 'openai', baseUrl: 'https://api.openai.com/v1', apiKey: '{{secret.ok}}' },
    bad: { type: 'openai', baseUrl: 'https://x/v1', apiKey: '{{secret.crlf}}' },
    nokey: { type: 'openai', baseUrl: 'https://y/v1' },
  }, async (n) => (n === 'crlf' ? 'k\r\nx-evil: 1' : `value-of-${n}`), upstream, 1000);
  registries.push(reg);
  const client = (h: Record<string, string>) => (n: string) => h[n];
  const a = await reg.headers(reg.get('a')!, client({ 'anthropic-version': '2023-06-01', 'anthropic-beta': 'tools-2024-04-04', 'x-api-key': 'agent' }), true);
  assert.deepEqual(a, {
    'content-type': 'application/json', accept: 'text/event-stream', 'user-agent': 'cordon-gateway',
    'anthropic-version': '2023-06-01', 'anthropic-beta': 'tools-2024-04-04', 'x-api-key': 'value-of-ak',
  });
  const bogus = await reg.headers(reg.get('a')!, client({ 'anthropic-version': 'x\r\nevil', 'anthropic-beta': 'a b' }), false);
  assert.equal(bogus['anthropic-version'], '2023-06-01');
  assert.equal(bogus['anthropic-beta'], undefined);
  assert.equal((await reg.headers(reg.get('o')!, client({ authorization: 'Bearer agent' }), false)).authorization, 'Bearer value-of-ok');
  await assert.rejects(reg.headers(reg.get('bad')!, client({}), false), (e: unknown) => e instanceof GatewayError && e.reason === 'provider-key-unavailable');
  await assert.rejects(reg.headers(reg.get('nokey')!, client({}), false), (e: unknown) => e instanceof GatewayError && /add apiKey/.test(e.fix ?? ''));
});
