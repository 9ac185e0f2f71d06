/** canonicalJson and writeFileAtomic. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { canonicalJson, writeFileAtomic, cordonHome } from './index.js';
import { tempDir } from '../testkit/index.js';

const canon: Array<[string, unknown, string]> = [
  ['sorted keys', { b: 1, a: 2 }, '{"a":2,"b":1}'],
  ['nested sorted', { z: { y: 1, x: [3, { d: 1, c: 2 }] } }, '{"z":{"x":[3,{"c":2,"d":1}],"y":1}}'],
  ['undefined dropped', { a: undefined, b: null }, '{"b":null}'],
  ['undefined in array is null', [undefined, 1], '[null,1]'],
  ['unicode escaped like JSON', { s: 'é\n"' }, '{"s":"é\\n\\""}'],
  ['key order by code unit', { 'B': 1, 'a': 1, '_': 1 }, '{"B":1,"_":1,"a":1}'],
];
for (const [name, v, want] of canon) test(`canonicalJson: ${name}`, () => assert.equal(canonicalJson(v), want));

for (const [name, v] of [['NaN', NaN], ['Infinity', Infinity], ['bigint', 1n]] as const) {
  test(`canonicalJson rejects ${name}`, () => assert.throws(() => canonicalJson({ v }), TypeError));
}

test('writeFileAtomic writes with mode 0600 and leaves no temp file', () => {
  const d = tempDir();
  try {
    const p = join(d.path, 'sub', 'key');
    writeFileAtomic(p, 'secret');
    writeFileAtomic(p, 'secret2');
    assert.equal(readFileSync(p, 'utf8'), 'secret2');
    assert.equal(statSync(p).mode & 0o777, 0o600);
    assert.equal(statSync(join(d.path, 'sub')).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(join(d.path, 'sub')), ['key']);
  } finally {
    d.cleanup();
  }
});

test('cordonHome honours CORDON_HOME and falls back to ~/.cordon', () => {
  assert.equal(cordonHome({ CORDON_HOME: '/srv/cordon' }), '/srv/cordon');
  assert.match(cordonHome({ HOME: '/home/x' }), /\.cordon$/);
});
