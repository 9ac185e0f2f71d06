/**
 * Label guards: closed sets bucket the unknown, open sets keep at most
 * `maxValues` distinct values, odd values never become labels.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { boundedLabel, NONE, OTHER } from './labels.js';

const closed = boundedLabel({ known: ['host-allowed', 'host-not-allowed'] });

for (const c of [
  { name: 'a known value is kept', value: 'host-allowed', want: 'host-allowed' },
  { name: 'an unknown value is other', value: 'host-allowed-please', want: OTHER },
  { name: 'case matters', value: 'HOST-ALLOWED', want: OTHER },
  { name: 'a missing value is none', value: undefined, want: NONE },
  { name: 'an empty value is none', value: '', want: NONE },
  { name: 'a number is other', value: 42, want: OTHER },
  { name: 'an object is other', value: { toString: () => 'host-allowed' }, want: OTHER },
]) {
  test(`closed set: ${c.name}`, () => assert.equal(closed(c.value), c.want));
}

for (const c of [
  { name: 'a kebab value is kept', value: 'limit-tokens-per-day', want: 'limit-tokens-per-day' },
  { name: 'a value with spaces is other', value: 'host not allowed', want: OTHER },
  { name: 'a value with a quote is other', value: 'a"b', want: OTHER },
  { name: 'a value with a newline is other', value: 'a\nb', want: OTHER },
  { name: 'a value over 64 characters is other', value: 'a'.repeat(65), want: OTHER },
  { name: 'a path is other', value: '/etc/passwd', want: OTHER },
]) {
  test(`open set: ${c.name}`, () => assert.equal(boundedLabel()(c.value), c.want));
}

test('open set: the first maxValues distinct values are kept, later new ones are other, kept ones stay', () => {
  const g = boundedLabel({ maxValues: 3 });
  assert.deepEqual(['a', 'b', 'a', 'c', 'd', 'e', 'b'].map(g), ['a', 'b', 'a', 'c', OTHER, OTHER, 'b']);
});
