/**
 * The bench's floor, the bare Node.js pass-through: it must really carry a
 * call to the upstream and back, answers and streams alike, or the floor's
 * figures would measure nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startFakeUpstream } from '../gateway/testing/fake-upstream.js';
import { Pool } from 'undici';
import { startPassThrough } from './gateway-floor.js';

test('the pass-through carries a call, its body and the caller\'s authorization to the upstream, and the answer back', async () => {
  const up = await startFakeUpstream({ streamWrites: 'per-event' });
  const floor = await startPassThrough(up.url);
  try {
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'floor check' }] });
    const res = await fetch(`${floor.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer sk-up' }, body });
    assert.equal(res.status, 200);
    const answer = await res.json() as { choices: Array<{ message: { content: string } }> };
    assert.equal(answer.choices[0]!.message.content, 'floor check');
    assert.equal(up.seen.length, 1);
    assert.equal(up.seen[0]!.path, '/v1/chat/completions');
    assert.equal(up.seen[0]!.headers.authorization, 'Bearer sk-up');

    const stream = await fetch(`${floor.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer sk-up' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'twelve chars' }], stream: true }),
    });
    assert.equal(stream.headers.get('content-type'), 'text/event-stream');
    const text = await stream.text();
    const pieces = [...text.matchAll(/"content":"([^"]*)"/g)].map((m) => m[1]).join('');
    assert.equal(pieces, 'twelve chars');
    assert.match(text, /data: \[DONE\]/);
  } finally {
    await floor.close();
    await up.close();
  }
});

test('an upstream that is gone is a 502 naming the failure, not a hang', async () => {
  const up = await startFakeUpstream();
  const url = up.url;
  await up.close();
  const floor = await startPassThrough(url);
  try {
    const res = await fetch(`${floor.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}', signal: AbortSignal.timeout(10_000) });
    assert.equal(res.status, 502);
    assert.match(await res.text(), /the upstream failed/);
  } finally {
    await floor.close();
  }
});

test('the pass-through calls the upstream by undici\'s handler interface, as cordon\'s gateway does, not by request() and its stream machinery', async () => {
  const up = await startFakeUpstream({ streamWrites: 'per-event' });
  const floor = await startPassThrough(up.url);
  const request = Pool.prototype.request;
  let requestCalls = 0;
  // A floor that paid for request()'s streams and promises would be slower than cordon's own transport.
  Pool.prototype.request = function countedRequest(this: Pool, ...args: unknown[]) {
    requestCalls += 1;
    return (request as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof Pool.prototype.request;
  try {
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'by dispatch' }] });
    const res = await fetch(`${floor.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content, 'by dispatch');
    assert.equal(requestCalls, 0);
  } finally {
    Pool.prototype.request = request;
    await floor.close();
    await up.close();
  }
});
