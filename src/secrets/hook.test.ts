/**
 * The request hook the egress proxy calls: refuses a request whose head leaks,
 * swaps placeholders in bound headers in place, and streams the body through
 * the scanner, failing it on a finding before the value's first byte leaves.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import type { OutgoingHttpHeaders } from 'node:http';
import { createSecretsRequestHook, EXFILTRATION_REASON, type ExfiltrationFinding } from './index.js';
import { GH_VALUE, reviewerSecrets } from './testing.js';

async function drain(stream: Readable): Promise<{ out: Buffer; error?: Error }> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of stream) parts.push(chunk as Buffer);
    return { out: Buffer.concat(parts) };
  } catch (err) {
    return { out: Buffer.concat(parts), error: err as Error };
  }
}

describe('secrets request hook', () => {
  const s = reviewerSecrets();
  const gh = s.placeholderOf('gh')!;

  test('a placeholder to an unbound host is refused, named, and reported', () => {
    const seen: ExfiltrationFinding[] = [];
    const hook = createSecretsRequestHook(s, { onExfiltration: (f) => seen.push(f) });
    const r = hook({ host: 'evil.example.net', port: 443, path: '/x', headers: { authorization: `Bearer ${gh}` } });
    assert.deepEqual(r.deny, { reason: EXFILTRATION_REASON, problem: 'the request carries the placeholder of the secret gh in header:authorization, to a host it is not bound to' });
    assert.deepEqual(seen, [{ found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'header:authorization', encoding: 'raw' }]);
  });

  test('a real value in the query is refused without showing it', () => {
    const r = createSecretsRequestHook(s)({ host: 'api.github.com', port: 443, path: `/search?q=${Buffer.from(GH_VALUE).toString('base64')}`, headers: {} });
    assert.equal(r.deny?.reason, EXFILTRATION_REASON);
    assert.match(r.deny!.problem, /the value of the secret gh \(base64\) in query/);
    assert.ok(!r.deny!.problem.includes(GH_VALUE));
  });

  test('bound headers are changed in place and the note names what went where', () => {
    const headers: OutgoingHttpHeaders = { host: 'api.github.com', Authorization: `token ${gh}`, accept: '*/*' };
    const r = createSecretsRequestHook(s)({ host: 'api.github.com', port: 443, path: '/user', headers });
    assert.equal(r.deny, undefined);
    // identity encoding: the response must be scannable for a reflected value (response-hook.ts)
    assert.deepEqual(headers, { host: 'api.github.com', Authorization: `token ${GH_VALUE}`, accept: '*/*', 'accept-encoding': 'identity' });
    assert.deepEqual(r.note, { secrets: [{ secret: 'gh', header: 'authorization' }], ruleId: 'agents.reviewer.egress[0]' });
    assert.ok(!JSON.stringify(r.note).includes(GH_VALUE));
  });

  test('a request elsewhere is forwarded unchanged but for identity encoding, with no note', () => {
    const headers: OutgoingHttpHeaders = { host: 'pypi.org', accept: '*/*' };
    const r = createSecretsRequestHook(s)({ host: 'pypi.org', port: 443, path: '/simple/', headers });
    assert.deepEqual(headers, { host: 'pypi.org', accept: '*/*', 'accept-encoding': 'identity' });
    assert.equal(r.note, undefined);
  });

  test('a clean body streams through byte for byte', async () => {
    const r = createSecretsRequestHook(s)({ host: 'pypi.org', port: 443, path: '/upload', headers: {} });
    const chunks = Array.from({ length: 50 }, (_, i) => Buffer.from(`chunk ${i} ${'z'.repeat(i * 37)}\n`));
    const { out, error } = await drain(r.body!(Readable.from(chunks)));
    assert.equal(error, undefined);
    assert.ok(out.equals(Buffer.concat(chunks)));
  });

  test('a value split across body chunks fails the body before its first byte is passed on', async () => {
    const seen: ExfiltrationFinding[] = [];
    const r = createSecretsRequestHook(s, { onExfiltration: (f) => seen.push(f) })({ host: 'pypi.org', port: 443, path: '/upload', headers: {} });
    const hex = Buffer.from(GH_VALUE).toString('hex');
    const prefix = `{"pad":"${'p'.repeat(2000)}","data":"`;
    const chunks = [Buffer.from(prefix + hex.slice(0, 10)), Buffer.from(hex.slice(10, 40)), Buffer.from(hex.slice(40) + '"}')];
    const { out, error } = await drain(r.body!(Readable.from(chunks)));
    assert.match(error?.message ?? '', /the request body carries the value of the secret gh \(hex\) in body/);
    assert.ok(out.length <= prefix.length, `passed on ${out.length} bytes, the value starts at ${prefix.length}`);
    assert.deepEqual(seen, [{ found: true, kind: 'secret-value', secret: 'gh', where: 'body', encoding: 'hex' }]);
  });
});

test('a body scanner that throws fails the body (the request), with no uncaught exception and no unscanned byte forwarded', async () => {
  const s = reviewerSecrets();
  for (const where of ['push', 'end'] as const) {
    // The real sandbox secrets, with a body scanner that breaks (as a failed allocation would).
    const broken = Object.create(s, {
      scanner: {
        value: Object.create(s.scanner, {
          body: {
            value: () => {
              const real = s.scanner.body({ host: 'pypi.org', port: 443 });
              return {
                push: (c: Uint8Array) => (where === 'push' ? (() => { throw new Error('no memory'); })() : real.push(c)),
                end: () => (where === 'end' ? (() => { throw new Error('no memory'); })() : real.end()),
              };
            },
          },
        }),
      },
    }) as typeof s;
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown): void => { uncaught.push(err); };
    process.on('uncaughtException', onUncaught);
    try {
      const r = createSecretsRequestHook(broken)({ host: 'pypi.org', port: 443, path: '/upload', headers: {} });
      const { out, error } = await drain(r.body!(Readable.from([Buffer.from('a'.repeat(5000))])));
      assert.match(error?.message ?? '', /could not be scanned for secrets: no memory/, where);
      if (where === 'push') assert.equal(out.length, 0, 'nothing unscanned is forwarded');
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(uncaught, [], where);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  }
});
