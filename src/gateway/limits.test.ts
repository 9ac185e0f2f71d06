/**
 * Per-agent limits: the token-bucket arithmetic on a fake clock (table-driven),
 * and the gateway under concurrency: 200 concurrent requests against 50 per
 * minute admit exactly 50; refusals are 429 with retry-after; usage corrects
 * the estimate; concurrency slots come back whatever way a call ends.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';
import { createLimiter, type LlmLimits } from './limits.js';
import { DEFAULT_LIMITS, defaultAgents, startHarness } from './testing/harness.js';

const limits = (over: Partial<LlmLimits>): LlmLimits => ({ ...DEFAULT_LIMITS, ...over });

interface Step {
  atMs: number;
  estimate: number;
  /** Tokens to settle right after admission (undefined: keep the estimate). */
  settle?: number;
  release?: boolean;
  expect: 'ok' | `refused:${string}`;
  retryAfterMs?: number;
}

const scenarios: Array<{ name: string; limits: LlmLimits; steps: Step[] }> = [
  {
    name: 'requests per minute: a burst of the capacity, then one per refill interval',
    limits: limits({ requestsPerMinute: 2 }),
    steps: [
      { atMs: 0, estimate: 0, expect: 'ok' },
      { atMs: 0, estimate: 0, expect: 'ok' },
      { atMs: 0, estimate: 0, expect: 'refused:requests-per-minute', retryAfterMs: 30_000 },
      { atMs: 29_999, estimate: 0, expect: 'refused:requests-per-minute', retryAfterMs: 1 },
      { atMs: 30_000, estimate: 0, expect: 'ok' },
    ],
  },
  {
    name: 'tokens per minute: the estimate is taken, usage gives back the difference',
    limits: limits({ tokensPerMinute: 1000 }),
    steps: [
      { atMs: 0, estimate: 900, settle: 100, expect: 'ok' },
      { atMs: 0, estimate: 900, expect: 'ok' },
      { atMs: 0, estimate: 100, expect: 'refused:tokens-per-minute', retryAfterMs: 6_000 },
    ],
  },
  {
    name: 'tokens per minute: usage above the estimate puts the bucket in debt',
    limits: limits({ tokensPerMinute: 600 }),
    steps: [
      { atMs: 0, estimate: 100, settle: 1200, expect: 'ok' },
      { atMs: 0, estimate: 1, expect: 'refused:tokens-per-minute', retryAfterMs: 60_100 },
      { atMs: 60_100, estimate: 1, expect: 'ok' },
    ],
  },
  {
    name: 'a request larger than the whole bucket waits for a full bucket',
    limits: limits({ tokensPerMinute: 100 }),
    steps: [
      { atMs: 0, estimate: 500, expect: 'ok' },
      { atMs: 59_000, estimate: 500, expect: 'refused:tokens-per-minute' },
      { atMs: 60_000 * 5, estimate: 500, expect: 'ok' },
    ],
  },
  {
    name: 'tokens per day refills over a day',
    limits: limits({ tokensPerDay: 1000 }),
    steps: [
      { atMs: 0, estimate: 1000, expect: 'ok' },
      { atMs: 60_000, estimate: 10, expect: 'refused:tokens-per-day' },
      { atMs: 86_400, estimate: 1, expect: 'ok' },
    ],
  },
  {
    name: 'concurrent requests: a slot frees on release',
    limits: limits({ concurrentRequests: 1 }),
    steps: [
      { atMs: 0, estimate: 1, expect: 'ok', release: false },
      { atMs: 1, estimate: 1, expect: 'refused:concurrent-requests', retryAfterMs: 1000 },
      { atMs: 2, estimate: 1, expect: 'refused:concurrent-requests' },
    ],
  },
];

for (const s of scenarios) {
  test(`limiter: ${s.name}`, () => {
    let now = 0;
    const limiter = createLimiter({ nowMs: () => now });
    for (const [i, step] of s.steps.entries()) {
      now = step.atMs;
      const a = limiter.acquire('agent', s.limits, step.estimate);
      const got = a.ok ? 'ok' : `refused:${a.reason}`;
      assert.equal(got, step.expect, `step ${i}`);
      if (!a.ok && step.retryAfterMs !== undefined) assert.equal(a.retryAfterMs, step.retryAfterMs, `step ${i} retry-after`);
      if (a.ok) {
        if (step.settle !== undefined) a.ticket.settle(step.settle);
        if (step.release !== false) a.ticket.release();
      }
    }
  });
}

test('limiter: settle and release are idempotent; agents do not share buckets', () => {
  const limiter = createLimiter({ nowMs: () => 0 });
  const a = limiter.acquire('a', limits({ tokensPerMinute: 100, concurrentRequests: 1 }), 50);
  assert.ok(a.ok);
  a.ticket.settle(10);
  a.ticket.settle(90);
  a.ticket.release();
  a.ticket.release();
  assert.deepEqual(limiter.snapshot('a'), { inFlight: 0, requestsAvailable: DEFAULT_LIMITS.requestsPerMinute - 1, tokensPerMinuteAvailable: 90, tokensPerDayAvailable: DEFAULT_LIMITS.tokensPerDay - 10 });
  assert.ok(limiter.acquire('b', limits({ tokensPerMinute: 100, concurrentRequests: 1 }), 100).ok);
});

test('200 concurrent requests against 50 per minute: exactly 50 admitted, the rest 429 with retry-after', async () => {
  const h = await startHarness();
  try {
    const body = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: 'count me' }] });
    const results = await Promise.all(Array.from({ length: 200 }, () => fetch(`${h.url}/v1/chat/completions`, {
      method: 'POST', headers: { authorization: 'Bearer tok-tight', 'content-type': 'application/json' }, body,
    }).then(async (r) => ({ status: r.status, retryAfter: r.headers.get('retry-after'), reason: r.headers.get('x-cordon-error'), body: await r.text() }))));
    const ok = results.filter((r) => r.status === 200);
    const limited = results.filter((r) => r.status === 429);
    assert.equal(ok.length, 50);
    assert.equal(limited.length, 150);
    for (const r of limited) {
      assert.equal(r.reason, 'limit-requests-per-minute');
      assert.ok(Number(r.retryAfter) >= 1);
      assert.equal((JSON.parse(r.body) as { error: { type: string } }).error.type, 'rate_limit_error');
    }
    assert.equal(h.upstream.seen.length, 50);
    const denied = h.audit.events.filter((e) => e.type === 'llm.request' && e.reason === 'limit-requests-per-minute');
    assert.equal(denied.length, 150);
    assert.equal(h.gateway.limits('tight')?.inFlight, 0);
  } finally {
    await h.close();
  }
});

test('tokens: the pre-flight estimate is corrected from reported usage', async () => {
  const agents = defaultAgents();
  agents.tight = { llm: { models: ['gpt-*'], limits: limits({ tokensPerMinute: 5000 }) }, egress: [] };
  const h = await startHarness({ agents, extra: { nowMs: () => 0 } });
  try {
    const openai = new OpenAI({ apiKey: 'tok-tight', baseURL: `${h.url}/v1`, maxRetries: 0 });
    await openai.chat.completions.create({ model: 'gpt-test', max_tokens: 4000, messages: [{ role: 'user', content: 'x'.repeat(400) }] });
    // Estimate was 100 + 4000; the provider reported 11 + 7.
    assert.equal(h.gateway.limits('tight')?.tokensPerMinuteAvailable, 5000 - 18);
    const req = h.audit.events.find((e) => e.type === 'llm.request' && e.agent === 'tight')!;
    assert.ok(Number((req.data as { estimateTokens: number }).estimateTokens) >= 4100);
    // A request whose estimate does not fit is refused before it reaches the provider.
    const seen = h.upstream.seen.length;
    await assert.rejects(
      openai.chat.completions.create({ model: 'gpt-test', max_tokens: 4999, messages: [{ role: 'user', content: 'x'.repeat(400) }] }),
      (err: unknown) => err instanceof OpenAI.RateLimitError && err.headers.get('x-cordon-error') === 'limit-tokens-per-minute',
    );
    assert.equal(h.upstream.seen.length, seen);
  } finally {
    await h.close();
  }
});

test('concurrent requests: the cap holds, and slots come back after a client disconnects mid-stream', async () => {
  const agents = defaultAgents();
  agents.tight = { llm: { models: ['gpt-*'], limits: limits({ concurrentRequests: 2 }) }, egress: [] };
  const h = await startHarness({ agents });
  try {
    const body = JSON.stringify({ model: 'gpt-test-slow', stream: true, messages: [{ role: 'user', content: 'slow' }] });
    const aborters = [new AbortController(), new AbortController()];
    const streams = await Promise.all(aborters.map((a) => fetch(`${h.url}/v1/chat/completions`, {
      method: 'POST', headers: { authorization: 'Bearer tok-tight', 'content-type': 'application/json' }, body, signal: a.signal,
    })));
    for (const s of streams) assert.equal(s.status, 200);
    assert.equal(h.gateway.limits('tight')?.inFlight, 2);
    const third = await fetch(`${h.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: 'Bearer tok-tight', 'content-type': 'application/json' }, body });
    assert.equal(third.status, 429);
    assert.equal(third.headers.get('x-cordon-error'), 'limit-concurrent-requests');
    await third.text();
    // Read a little of each stream, then go away.
    for (const s of streams) await s.body!.getReader().read();
    for (const a of aborters) a.abort();
    const closed = await h.audit.waitFor('llm.response', 2);
    assert.deepEqual(closed.map((e) => e.reason), ['client-closed', 'client-closed']);
    assert.equal(h.gateway.limits('tight')?.inFlight, 0);
    // The provider's side of both streams was closed too, not left running.
    const until = Date.now() + 2000;
    while (h.upstream.active > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    assert.equal(h.upstream.active, 0);
    assert.equal(h.upstream.abandoned, 2);
  } finally {
    await h.close();
  }
});
