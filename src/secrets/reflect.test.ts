/**
 * The response scrubber (reflect.ts): every encoding of a real value is
 * masked with the same number of `*`, in text and in streamed bodies split at
 * every possible point, similar strings are left alone, and a body scrubber
 * never holds more than `holdBackBytes`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReflectionScrubber, REFLECTION_MASK_BYTE } from './reflect.js';
import { SecretValue } from './value.js';
import { API_VALUE, GH_VALUE, PROVIDER_VALUE } from './testing.js';

const values = new Map([
  ['gh', new SecretValue('gh', Buffer.from(GH_VALUE))],
  ['api', new SecretValue('api', Buffer.from(API_VALUE))],
  ['openai_key', new SecretValue('openai_key', Buffer.from(PROVIDER_VALUE))],
]);
const scrubber = createReflectionScrubber(values);

const pct = (s: string): string => [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** Each case: text as an upstream might send it, the secret and form expected in the report. */
const FORMS: Array<{ name: string; text: string; secret: string; form: string }> = [
  { name: 'raw in a JSON echo of headers', text: `{"authorization":"Bearer ${GH_VALUE}"}`, secret: 'gh', form: 'raw' },
  { name: 'JSON-escaped (quotes and backslashes)', text: JSON.stringify({ k: API_VALUE }), secret: 'api', form: 'json' },
  { name: 'hex, lower case', text: `id=${Buffer.from(GH_VALUE).toString('hex')};`, secret: 'gh', form: 'hex' },
  { name: 'hex, upper case', text: `ID ${Buffer.from(GH_VALUE).toString('hex').toUpperCase()} end`, secret: 'gh', form: 'hex' },
  { name: 'base64 of the value alone', text: `x ${b64(GH_VALUE)} y`, secret: 'gh', form: 'base64' },
  { name: 'base64 inside Basic credentials (offset 1)', text: `Basic ${b64(`u:${GH_VALUE}`)}`, secret: 'gh', form: 'base64' },
  { name: 'base64 inside a longer text (offset 2)', text: b64(`ab${GH_VALUE}zz`), secret: 'gh', form: 'base64' },
  { name: 'base64url', text: `t=${Buffer.from(API_VALUE).toString('base64url')}`, secret: 'api', form: 'base64url' },
  { name: 'every byte percent-encoded', text: `?v=${pct(GH_VALUE)}&x=1`, secret: 'gh', form: 'url' },
  { name: 'percent-encoded base64', text: `?v=${encodeURIComponent(b64(`!${API_VALUE}`))}`, secret: 'api', form: 'base64' },
  { name: 'form encoding (spaces as +)', text: `q=${API_VALUE.replaceAll(' ', '+')}`, secret: 'api', form: 'url' },
  { name: 'a value the sandbox must never see (provider key)', text: `key: ${PROVIDER_VALUE}`, secret: 'openai_key', form: 'raw' },
];

test('scrubText masks every form with a mask of the same length and reports name and form', () => {
  for (const c of FORMS) {
    const found = new Map();
    const out = scrubber.scrubText(c.text, found);
    assert.equal(out.length, c.text.length, `${c.name}: length kept`);
    assert.notEqual(out, c.text, `${c.name}: something masked`);
    const counts = [...found.values()];
    assert.ok(counts.some((k) => k.secret === c.secret && k.form === c.form && k.count >= 1), `${c.name}: reported ${JSON.stringify(counts)}`);
    // What is left decodes to no value in any form.
    const again = new Map();
    assert.equal(scrubber.scrubText(out, again), out, `${c.name}: nothing left to mask`);
    assert.equal(again.size, 0);
    for (const v of [GH_VALUE, API_VALUE, PROVIDER_VALUE]) {
      assert.ok(!out.includes(v) && !out.includes(b64(v)) && !decodeURIComponent(out.replaceAll('+', ' ')).includes(v), `${c.name}: no value left`);
    }
  }
});

test('counts every occurrence, and leaves similar strings alone', () => {
  const found = new Map();
  const text = `${GH_VALUE} and again ${GH_VALUE}`;
  scrubber.scrubText(text, found);
  assert.deepEqual([...found.values()], [{ secret: 'gh', form: 'raw', count: 2 }]);
  const similar: Array<{ name: string; text: string }> = [
    { name: 'one character changed', text: GH_VALUE.slice(0, -1) + 'Q' },
    { name: 'a prefix', text: GH_VALUE.slice(0, -2) },
    { name: 'the value with a byte in between', text: `${GH_VALUE.slice(0, 10)}-${GH_VALUE.slice(10)}` },
    { name: 'mixed-case hex (not a known form)', text: Buffer.from(GH_VALUE).toString('hex').replace(/[a-f]/, (m) => m.toUpperCase()) },
    { name: 'ordinary JSON', text: '{"authorization":"Bearer cordon-ph-abcdefghijklmnopqrstuvwxyz234567"}' },
    { name: 'a lone percent and bad escapes', text: '100% %zz %4' },
  ];
  for (const s of similar) {
    const f = new Map();
    assert.equal(scrubber.scrubText(s.text, f), s.text, `${s.name}: unchanged`);
    assert.equal(f.size, 0, `${s.name}: nothing reported`);
  }
});

/** Push `chunks` through a fresh body scrubber; returns the output and the most bytes it held. */
function stream(chunks: Buffer[]): { out: Buffer; maxHeld: number; counts: ReturnType<ReturnType<typeof scrubber.body>['counts']> } {
  const b = scrubber.body();
  const parts: Buffer[] = [];
  let maxHeld = 0;
  for (const c of chunks) {
    parts.push(b.push(c));
    maxHeld = Math.max(maxHeld, b.heldBytes);
  }
  parts.push(b.end());
  return { out: Buffer.concat(parts), maxHeld, counts: b.counts() };
}

test('a body split at every point, in every form, is masked whole and keeps its length', () => {
  for (const c of FORMS) {
    const body = Buffer.from(`prefix ${c.text} suffix`, 'latin1');
    const whole = Buffer.from(scrubber.scrubText(body.toString('latin1')), 'latin1');
    for (let cut = 1; cut < body.length; cut++) {
      const r = stream([body.subarray(0, cut), body.subarray(cut)]);
      assert.deepEqual(r.out, whole, `${c.name}: split at ${cut}`);
    }
    const bytewise = stream([...body].map((b) => Buffer.from([b])));
    assert.deepEqual(bytewise.out, whole, `${c.name}: one byte per chunk`);
    assert.ok(bytewise.counts.some((k) => k.secret === c.secret && k.form === c.form), `${c.name}: reported by the stream`);
  }
});

test('a body without values passes unchanged, and the scrubber holds at most holdBackBytes', () => {
  const chunks = Array.from({ length: 200 }, (_, i) => Buffer.from(`chunk ${i} ${'z'.repeat(i % 97)} 50% done; `));
  const r = stream(chunks);
  assert.deepEqual(r.out, Buffer.concat(chunks));
  assert.equal(r.counts.length, 0);
  assert.ok(r.maxHeld <= scrubber.holdBackBytes, `held ${r.maxHeld} > ${scrubber.holdBackBytes}`);
  assert.ok(scrubber.holdBackBytes < 1024, 'the hold-back is bounded by the longest pattern, not the body');
  const big = stream([Buffer.alloc(1 << 20, 0x61), Buffer.from(GH_VALUE), Buffer.alloc(1 << 20, 0x62)]);
  assert.ok(big.maxHeld <= scrubber.holdBackBytes);
  assert.equal(big.out.length, 2 * (1 << 20) + GH_VALUE.length);
  assert.equal(big.out.indexOf(GH_VALUE), -1);
  assert.equal(big.out.indexOf(Buffer.alloc(GH_VALUE.length, REFLECTION_MASK_BYTE)), 1 << 20);
});

test('a sandbox without values has nothing to mask', () => {
  const none = createReflectionScrubber(new Map());
  assert.equal(none.holdBackBytes, 0);
  assert.equal(none.scrubText('anything'), 'anything');
  const b = none.body();
  assert.deepEqual(b.push(Buffer.from('abc')), Buffer.from('abc'));
  assert.equal(b.end().length, 0);
});
