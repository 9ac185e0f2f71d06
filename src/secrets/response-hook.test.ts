/**
 * The response hook the request hook returns for a sandbox holding values:
 * identity encoding asked for, gzip/deflate/br bodies decoded before the
 * scan, other encodings refused (unless there is no body), header names and
 * values masked, body streamed through the scrubber,
 * and reports of name, form and count only, one per kind.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import type { OutgoingHttpHeaders } from 'node:http';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { createSecretsRequestHook, UNSCANNABLE_REASON, type ReflectedReport } from './index.js';
import { GH_VALUE, PROVIDER_VALUE, reviewerSecrets } from './testing.js';

async function drain(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

describe('secrets response hook', () => {
  const s = reviewerSecrets();
  const gh = s.placeholderOf('gh')!;
  const mask = '*'.repeat(GH_VALUE.length);

  function hookFor(method = 'GET', seen: ReflectedReport[] = []) {
    const headers: OutgoingHttpHeaders = { authorization: `Bearer ${gh}`, 'Accept-Encoding': 'gzip' };
    const r = createSecretsRequestHook(s, { onReflected: (rep) => seen.push(rep) })({ host: 'api.github.com', port: 443, path: '/user', method, headers });
    assert.ok(r.response, 'a sandbox holding values gets a response hook');
    return { response: r.response, headers, seen };
  }

  test('the request asks for identity encoding, replacing what the guest asked', () => {
    const { headers } = hookFor();
    assert.equal(headers['accept-encoding'], 'identity');
    assert.equal(headers['Accept-Encoding'], undefined);
  });

  const encodings: Array<{ name: string; method: string; status: number; encoding: string; outcome: 'refused' | 'decoded' | 'passed' }> = [
    { name: 'zstd (not decoded here)', method: 'GET', status: 200, encoding: 'zstd', outcome: 'refused' },
    { name: 'compress', method: 'POST', status: 201, encoding: 'compress', outcome: 'refused' },
    { name: 'two layers', method: 'GET', status: 200, encoding: 'gzip, br', outcome: 'refused' },
    { name: 'a prototype key is no decoder', method: 'GET', status: 200, encoding: 'constructor', outcome: 'refused' },
    { name: 'gzip', method: 'GET', status: 200, encoding: 'gzip', outcome: 'decoded' },
    { name: 'br', method: 'GET', status: 200, encoding: 'br', outcome: 'decoded' },
    { name: 'deflate', method: 'GET', status: 200, encoding: 'Deflate', outcome: 'decoded' },
    { name: 'identity', method: 'GET', status: 200, encoding: 'identity', outcome: 'passed' },
    { name: 'none', method: 'GET', status: 200, encoding: '', outcome: 'passed' },
    { name: 'zstd on HEAD has no body', method: 'HEAD', status: 200, encoding: 'zstd', outcome: 'passed' },
    { name: 'gzip on 304 has no body', method: 'GET', status: 304, encoding: 'gzip', outcome: 'passed' },
  ];
  for (const c of encodings) {
    test(`content-encoding: ${c.name} → ${c.outcome}`, () => {
      const { response } = hookFor(c.method);
      const headers: OutgoingHttpHeaders = { 'content-length': '10', ...(c.encoding ? { 'content-encoding': c.encoding } : {}) };
      const r = response!({ status: c.status, headers });
      assert.equal(r.deny?.reason, c.outcome === 'refused' ? UNSCANNABLE_REASON : undefined);
      if (c.outcome === 'decoded') {
        assert.deepEqual(headers, {}, 'sent on as identity, re-framed: no content-encoding, no content-length');
      } else if (c.outcome === 'passed') {
        assert.equal(headers['content-length'], '10', 'framing untouched');
      }
    });
  }

  const codecs = [
    { name: 'gzip', encode: (b: Buffer) => gzipSync(b) },
    { name: 'br', encode: (b: Buffer) => brotliCompressSync(b) },
    { name: 'deflate', encode: (b: Buffer) => deflateSync(b) },
  ];
  for (const c of codecs) {
    test(`a ${c.name} body the upstream sent anyway is decoded, scrubbed and sent as identity`, async () => {
      const { response, seen } = hookFor();
      const headers: OutgoingHttpHeaders = { 'content-encoding': c.name };
      const r = response!({ status: 200, headers });
      const packed = c.encode(Buffer.from(`{"echo":"Bearer ${GH_VALUE}"}`));
      const out = (await drain(r.body!(Readable.from([packed.subarray(0, 9), packed.subarray(9)])))).toString();
      assert.equal(out, `{"echo":"Bearer ${mask}"}`);
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(seen, [{ secret: 'gh', form: 'raw', count: 1, where: 'body' }]);
    });
  }

  test('a body that does not decode fails the stream (the guest gets a cut response, never raw bytes)', async () => {
    const { response } = hookFor();
    const r = response!({ status: 200, headers: { 'content-encoding': 'gzip' } });
    await assert.rejects(drain(r.body!(Readable.from([Buffer.from(`not gzip ${GH_VALUE}`)]))));
  });

  test('header names and values are masked and reported once per kind', () => {
    const { response, seen } = hookFor();
    const headers: OutgoingHttpHeaders = {
      'x-echo': `Bearer ${GH_VALUE}`, [`x-${GH_VALUE}`]: '1', 'set-cookie': [`a=${GH_VALUE}`, 'b=2'], 'content-length': 10, other: 'fine',
    };
    const r = response!({ status: 200, headers });
    assert.equal(r.deny, undefined);
    assert.deepEqual(headers, { 'x-echo': `Bearer ${mask}`, [`x-${mask}`]: '1', 'set-cookie': [`a=${mask}`, 'b=2'], 'content-length': 10, other: 'fine' });
    assert.deepEqual(seen, [{ secret: 'gh', form: 'raw', count: 3, where: 'headers' }]);
  });

  test('the body is streamed through the scrubber and reported when it ends', async () => {
    const { response, seen } = hookFor();
    const r = response!({ status: 200, headers: {} });
    const text = `{"echo":"${GH_VALUE}","key":"${Buffer.from(PROVIDER_VALUE).toString('base64')}"}`;
    const chunks = [text.slice(0, 15), text.slice(15, 16), text.slice(16, 40), text.slice(40)].map((c) => Buffer.from(c));
    const out = (await drain(r.body!(Readable.from(chunks)))).toString();
    assert.equal(out.length, text.length);
    assert.ok(!out.includes(GH_VALUE) && out.includes(`"echo":"${mask}"`));
    assert.ok(!out.includes(Buffer.from(PROVIDER_VALUE).toString('base64')));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(seen.map((x) => `${x.where}:${x.secret}:${x.form}:${x.count}`).sort(), ['body:gh:raw:1', 'body:openai_key:base64:1']);
    assert.deepEqual(r.note!()!.reflected, seen.map((x) => ({ secret: x.secret, form: x.form, count: x.count, where: x.where })));
  });

  test('a report callback that throws does not stop the masking', async () => {
    const headers: OutgoingHttpHeaders = {};
    const r = createSecretsRequestHook(s, { onReflected: () => { throw new Error('audit down'); } })({ host: 'api.github.com', port: 443, path: '/', headers });
    const h: OutgoingHttpHeaders = { 'x-echo': GH_VALUE };
    const res = r.response!({ status: 200, headers: h });
    assert.equal(h['x-echo'], mask);
    assert.equal((await drain(res.body!(Readable.from([Buffer.from(GH_VALUE)])))).toString(), mask);
  });
});

test('a response scrubber that throws fails the response body, with no uncaught exception and nothing unscrubbed delivered', async () => {
  const s = reviewerSecrets();
  const reflection = s.reflection!;
  const broken = Object.create(s, {
    reflection: { value: Object.create(reflection, { body: { value: () => ({ push: () => { throw new Error('no memory'); }, end: () => Buffer.alloc(0), counts: () => [] }) } }) },
  }) as typeof s;
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => { uncaught.push(err); };
  process.on('uncaughtException', onUncaught);
  try {
    const r = createSecretsRequestHook(broken)({ host: 'api.github.com', port: 443, path: '/user', method: 'GET', headers: {} });
    const resp = r.response!({ status: 200, headers: {} });
    const parts: Buffer[] = [];
    let error: Error | undefined;
    try {
      for await (const chunk of resp.body!(Readable.from([Buffer.from(`echo ${GH_VALUE}`)]))) parts.push(chunk as Buffer);
    } catch (err) {
      error = err as Error;
    }
    assert.match(error?.message ?? '', /could not be scrubbed of secrets: no memory/);
    assert.equal(Buffer.concat(parts).length, 0, 'nothing unscrubbed is delivered');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(uncaught, []);
  } finally {
    process.off('uncaughtException', onUncaught);
  }
});
