/**
 * Bad input from either side, table-driven: malformed or oversized requests,
 * unknown models and routes, a provider that fails, hangs, lies or cuts a
 * stream, an audit log or secret store that is down. Every case ends in a
 * clean answer in the dialect of the API called, nothing hangs, and the
 * agent's limit counters are back at rest afterwards.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { startHarness, type Harness } from './testing/harness.js';

let h: Harness;
before(async () => {
  h = await startHarness({ settings: { maxRequestBodyBytes: 64 * 1024, maxResponseBodyBytes: 1024 * 1024, upstream: { headersTimeoutMs: 300, bodyTimeoutMs: 300 } } });
});
after(async () => {
  await h.close();
});

const TOKEN = 'tok-reviewer-sb1';
const chat = (model: string, extra: Record<string, unknown> = {}) => JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], ...extra });
const msgs = (model: string, extra: Record<string, unknown> = {}) => JSON.stringify({ model, max_tokens: 20, messages: [{ role: 'user', content: 'hi' }], ...extra });

interface Case {
  name: string;
  method?: string;
  path: string;
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  status: number;
  reason: string;
  /** Reached the provider. */
  forwarded: boolean;
}

const CASES: Case[] = [
  { name: 'invalid JSON', path: '/v1/chat/completions', body: '{"model": "gpt-test",', status: 400, reason: 'invalid-json', forwarded: false },
  { name: 'invalid JSON (anthropic)', path: '/v1/messages', body: 'not json', status: 400, reason: 'invalid-json', forwarded: false },
  { name: 'a JSON array body', path: '/v1/chat/completions', body: '[1,2]', status: 400, reason: 'invalid-json', forwarded: false },
  { name: 'no messages', path: '/v1/chat/completions', body: JSON.stringify({ model: 'gpt-test' }), status: 400, reason: 'invalid-request', forwarded: false },
  { name: 'model is a number', path: '/v1/chat/completions', body: JSON.stringify({ model: 5, messages: [] }), status: 400, reason: 'invalid-request', forwarded: false },
  { name: 'messages without max_tokens', path: '/v1/messages', body: JSON.stringify({ model: 'claude-test', messages: [{ role: 'user', content: 'x' }] }), status: 400, reason: 'invalid-request', forwarded: false },
  { name: 'stream is a string', path: '/v1/chat/completions', body: chat('gpt-test', { stream: 'yes' }), status: 400, reason: 'invalid-request', forwarded: false },
  { name: 'a body over the limit (content-length)', path: '/v1/chat/completions', body: chat('gpt-test', { pad: 'x'.repeat(70_000) }), status: 413, reason: 'body-too-large', forwarded: false },
  { name: 'a gzip body', path: '/v1/chat/completions', body: chat('gpt-test'), headers: { 'content-encoding': 'gzip' }, status: 415, reason: 'unsupported-encoding', forwarded: false },
  { name: 'an unknown model', path: '/v1/chat/completions', body: chat('mistral-large'), status: 404, reason: 'model-not-allowed', forwarded: false },
  { name: 'an openai provider named on the anthropic route', path: '/v1/messages', body: msgs('openai/gpt-test'), status: 404, reason: 'model-unroutable', forwarded: false },
  { name: 'an unknown route', path: '/v1/fine_tuning/jobs', body: '{}', status: 404, reason: 'no-route', forwarded: false },
  { name: 'GET on a POST route', method: 'GET', path: '/v1/chat/completions', status: 405, reason: 'method-not-allowed', forwarded: false },
  { name: 'the provider answers 500', path: '/v1/chat/completions', body: chat('gpt-test-500'), status: 500, reason: '', forwarded: true },
  { name: 'the provider answers 429 (its retry-after is passed on)', path: '/v1/messages', body: msgs('claude-test-429'), status: 429, reason: '', forwarded: true },
  { name: 'the provider refuses cordon\'s key', path: '/v1/chat/completions', body: chat('gpt-test-401'), status: 502, reason: 'upstream-auth', forwarded: true },
  { name: 'the provider never answers', path: '/v1/messages', body: msgs('claude-test-hang'), status: 504, reason: 'upstream-timeout', forwarded: true },
  { name: 'the provider sends HTML', path: '/v1/chat/completions', body: chat('gpt-test-malformed'), status: 502, reason: 'upstream-malformed', forwarded: true },
  { name: 'the provider cuts a whole answer', path: '/v1/responses', body: JSON.stringify({ model: 'gpt-test-cut', input: 'x' }), status: 502, reason: 'upstream-cut', forwarded: true },
];

for (const c of CASES) {
  test(`bad input: ${c.name} → ${c.status} ${c.reason}`, async () => {
    const seen = h.upstream.seen.length;
    const res = await fetch(`${h.url}${c.path}`, {
      method: c.method ?? 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...c.headers },
      ...(c.body !== undefined ? { body: c.body } : {}),
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(res.status, c.status);
    if (c.reason) assert.equal(res.headers.get('x-cordon-error'), c.reason);
    const body = (await res.json()) as Record<string, any>;
    if (c.path.startsWith('/v1/messages')) assert.equal(body.type, 'error', 'anthropic error shape');
    else assert.equal(typeof body.error?.message, 'string', 'openai error shape');
    assert.equal(h.upstream.seen.length - seen, c.forwarded ? 1 : 0);
    assert.equal(h.gateway.limits('reviewer')?.inFlight ?? 0, 0);
  });
}

test('a body over the limit sent chunked (no content-length) is cut off with 413', async () => {
  const big = new TextEncoder().encode(chat('gpt-test', { pad: 'y'.repeat(100_000) }));
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < big.length; i += 8192) c.enqueue(big.slice(i, i + 8192));
      c.close();
    },
  });
  const res = await fetch(`${h.url}/v1/chat/completions`, {
    method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: stream, duplex: 'half', signal: AbortSignal.timeout(5000),
  } as RequestInit);
  assert.equal(res.status, 413);
  await res.body?.cancel();
});

test('the provider\'s own 429 keeps its retry-after; a 500 keeps its body', async () => {
  const r429 = await fetch(`${h.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': TOKEN }, body: msgs('claude-test-429') });
  assert.equal(r429.headers.get('retry-after'), '7');
  assert.equal(((await r429.json()) as { error: { type: string } }).error.type, 'rate_limit_error');
  const r500 = await fetch(`${h.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: chat('gpt-test-500') });
  assert.equal(((await r500.json()) as { error: { message: string } }).error.message, 'fake upstream 500');
});

interface StreamCase {
  name: string;
  client: 'openai-chat' | 'openai-responses' | 'anthropic';
  model: string;
  /** Substring of the error the client must raise. */
  error: RegExp;
  outcome: string;
}

const STREAM_CASES: StreamCase[] = [
  { name: 'cut mid-stream (chat)', client: 'openai-chat', model: 'gpt-test-cut', error: /ended the stream|broke during the stream/, outcome: 'upstream-cut' },
  { name: 'cut mid-stream (responses)', client: 'openai-responses', model: 'gpt-test-cut', error: /ended the stream|broke during the stream/, outcome: 'upstream-cut' },
  { name: 'cut mid-stream (anthropic)', client: 'anthropic', model: 'claude-test-cut', error: /ended the stream|broke during the stream/, outcome: 'upstream-cut' },
  { name: 'ends without its terminal event (chat)', client: 'openai-chat', model: 'gpt-test-eos', error: /ended the stream before it was complete/, outcome: 'upstream-cut' },
  { name: 'ends without its terminal event (anthropic)', client: 'anthropic', model: 'claude-test-eos', error: /ended the stream before it was complete/, outcome: 'upstream-cut' },
  { name: 'events that are not JSON (chat)', client: 'openai-chat', model: 'gpt-test-malformed', error: /cannot read/, outcome: 'upstream-malformed' },
  { name: 'events that are not JSON (anthropic)', client: 'anthropic', model: 'claude-test-malformed', error: /cannot read/, outcome: 'upstream-malformed' },
  { name: 'never answers a streamed request (chat)', client: 'openai-chat', model: 'gpt-test-hang', error: /did not answer in time/, outcome: 'upstream-timeout' },
  { name: 'goes silent mid-stream (chat)', client: 'openai-chat', model: 'gpt-test-stall', error: /did not answer in time/, outcome: 'upstream-timeout' },
  // Without a cap the event would be held whole, however large (up to the longest string, where splitting it throws).
  { name: 'an event that never ends, past the answer cap (chat)', client: 'openai-chat', model: 'gpt-test-unending', error: /stream event larger than 1048576 bytes/, outcome: 'upstream-malformed' },
  { name: 'goes silent mid-stream (anthropic)', client: 'anthropic', model: 'claude-test-stall', error: /did not answer in time/, outcome: 'upstream-timeout' },
];

async function consume(c: StreamCase): Promise<void> {
  if (c.client === 'anthropic') {
    const client = new Anthropic({ apiKey: TOKEN, baseURL: h.url, maxRetries: 0 });
    const s = await client.messages.create({ model: c.model, max_tokens: 20, stream: true, messages: [{ role: 'user', content: 'abcdefghijkl' }] });
    for await (const _ of s) { /* drain */ }
    return;
  }
  const client = new OpenAI({ apiKey: TOKEN, baseURL: `${h.url}/v1`, maxRetries: 0 });
  if (c.client === 'openai-responses') {
    const s = await client.responses.create({ model: c.model, input: 'abcdefghijkl', stream: true });
    for await (const _ of s) { /* drain */ }
    return;
  }
  const s = await client.chat.completions.create({ model: c.model, stream: true, messages: [{ role: 'user', content: 'abcdefghijkl' }] });
  for await (const _ of s) { /* drain */ }
}

for (const c of STREAM_CASES) {
  test(`stream trouble: ${c.name} → the client raises an error, nothing hangs`, async () => {
    const before = h.audit.events.filter((e) => e.type === 'llm.response').length;
    await assert.rejects(consume(c), (err: unknown) => {
      assert.match(String((err as Error).message), c.error);
      return true;
    });
    const events = await h.audit.waitFor('llm.response', before + 1);
    assert.equal(events[before]!.reason, c.outcome);
    assert.equal(h.gateway.limits('reviewer')?.inFlight, 0);
  });
}

for (const client of ['openai-chat', 'anthropic'] as const) {
  test(`a provider that holds the stream open after its terminal event (${client}): the client's stream ends with that event`, async () => {
    const before = h.audit.events.filter((e) => e.type === 'llm.response').length;
    const started = Date.now();
    // The provider keeps the connection for 1.5 s after the terminal event (longer than the 0.3 s body timeout here).
    await consume({ name: 'linger', client, model: client === 'anthropic' ? 'claude-test-linger' : 'gpt-test-linger', error: /never/, outcome: 'ok' });
    assert.ok(Date.now() - started < 1000, `the stream took ${Date.now() - started} ms`);
    const events = await h.audit.waitFor('llm.response', before + 1);
    assert.equal(events[before]!.reason, 'ok');
    assert.equal(h.gateway.limits('reviewer')?.inFlight, 0);
  });
}

test('a provider that trickles bytes after its terminal event loses the connection once the drain time is over', async () => {
  // Drained until it ends, each such call would keep a pool connection (uncounted by the limits) for as long as the provider likes:
  // the body timeout never fires while bytes keep coming.
  for (let i = 0; i < 40 && h.upstream.active > 0; i++) await new Promise((r) => setTimeout(r, 50)); // earlier calls' connections are done
  const abandoned = h.upstream.abandoned;
  await consume({ name: 'trickle', client: 'openai-chat', model: 'gpt-test-trickle', error: /never/, outcome: 'ok' });
  await new Promise((r) => setTimeout(r, 1500)); // past the 1 s drain, before the provider's own end at 3 s
  assert.equal(h.upstream.abandoned, abandoned + 1, 'the gateway still holds the trickling upstream connection');
  assert.equal(h.upstream.active, 0);
});

test('a provider that cannot be reached: 502 upstream-unreachable', async () => {
  const dead = await startHarness();
  await dead.upstream.close();
  try {
    const r = await fetch(`${dead.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: chat('gpt-test') });
    assert.equal(r.status, 502);
    assert.equal(r.headers.get('x-cordon-error'), 'upstream-unreachable');
    assert.match(((await r.json()) as { error: { message: string } }).error.message, /providers\.openai\.baseUrl/);
    assert.equal(dead.gateway.limits('reviewer')?.inFlight, 0);
    assert.equal(dead.gateway.limits('reviewer')?.tokensPerMinuteAvailable, 100_000_000, 'a call that never reached the provider costs no tokens');
  } finally {
    await dead.server.close();
    await dead.gateway.close();
  }
});

test('an audit log that cannot write: 503, nothing reaches the provider', async () => {
  const seen = h.upstream.seen.length;
  h.audit.failing = true;
  try {
    const r = await fetch(`${h.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: chat('gpt-test') });
    assert.equal(r.status, 503);
    assert.equal(r.headers.get('x-cordon-error'), 'audit-unavailable');
  } finally {
    h.audit.failing = false;
  }
  assert.equal(h.upstream.seen.length, seen);
  assert.equal(h.gateway.limits('reviewer')?.inFlight, 0);
});

test('a secret store that cannot give the provider key: 503 naming the fix', async () => {
  const broken = await startHarness({ extra: { resolveSecret: async () => { throw new Error('vault sealed'); } } });
  try {
    const r = await fetch(`${broken.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': TOKEN }, body: msgs('claude-test') });
    assert.equal(r.status, 503);
    const body = (await r.json()) as { type: string; error: { message: string } };
    assert.equal(body.type, 'error');
    assert.match(body.error.message, /providers\.anthropic\.apiKey/);
    assert.equal(broken.upstream.seen.length, 0);
  } finally {
    await broken.close();
  }
});

test('a call that outlives upstream.callTimeoutMs is cut: a trickling stream ends with an error event, a silent provider gets 504; limits come back', async () => {
  const short = await startHarness({ settings: { upstream: { callTimeoutMs: 400 } } });
  try {
    const started = Date.now();
    const client = new OpenAI({ apiKey: TOKEN, baseURL: `${short.url}/v1`, maxRetries: 0 });
    // `-slow` sends one event every 20 ms for 10 s: never silent long enough for the body timeout.
    await assert.rejects((async () => {
      const s = await client.chat.completions.create({ model: 'gpt-test-slow', stream: true, messages: [{ role: 'user', content: 'x' }] });
      for await (const _ of s) { /* drain */ }
    })(), /did not answer in time/);
    assert.ok(Date.now() - started < 3_000, `cut after ${Date.now() - started} ms`);
    const hang = await fetch(`${short.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: chat('gpt-test-hang') });
    assert.equal(hang.status, 504);
    assert.equal(hang.headers.get('x-cordon-error'), 'upstream-timeout');
    const events = await short.audit.waitFor('llm.response', 2);
    assert.deepEqual(events.map((e) => e.reason), ['upstream-timeout', 'upstream-timeout']);
    assert.equal(short.gateway.limits('reviewer')?.inFlight, 0);
  } finally {
    await short.close();
  }
});

test('a provider that sends its stream headers long before its first event: the client gets the headers at once, then the events', async () => {
  // Its own harness: the shared one's 0.3 s body timeout would cut the 0.8 s wait.
  const patient = await startHarness();
  try {
    await lateHeaders(patient);
  } finally {
    await patient.close();
  }
});

async function lateHeaders(hh: Harness): Promise<void> {
  const started = Date.now();
  const r = await fetch(`${hh.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: chat('gpt-test-late', { stream: true }) });
  const headersMs = Date.now() - started;
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /text\/event-stream/);
  assert.ok(headersMs < 500, `headers after ${headersMs} ms (the first event comes at 800 ms)`);
  const text = await r.text();
  assert.ok(Date.now() - started >= 700, 'the events came later');
  assert.match(text, /data: \[DONE\]/);
}
