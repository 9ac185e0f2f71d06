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

// Values the native fast path must hand to the general one (or that must come out the same either way).
const tricky: Array<[string, unknown, string]> = [
  ['integer-like keys sort as text, not as numbers', { '9': 1, '10': 2, a: 3 }, '{"10":2,"9":1,"a":3}'],
  ['keys already in order', { a: 1, b: { c: [1, 'x'], d: null } }, '{"a":1,"b":{"c":[1,"x"],"d":null}}'],
  ['undefined member in an ordered object', { a: 1, b: undefined, c: 2 }, '{"a":1,"c":2}'],
  ['a member named toJSON is data, not a hook', { toJSON: 'x', a: 1 }, '{"a":1,"toJSON":"x"}'],
  ['a function member is dropped', { a: 1, b: () => 1 }, '{"a":1}'],
  ['a Date is an object without keys', { a: new Date(0) }, '{"a":{}}'],
  ['a class instance keeps its own keys, sorted', { a: new (class { y = 1; x = 2; })() }, '{"a":{"x":2,"y":1}}'],
  ['a null-prototype object', Object.assign(Object.create(null) as object, { b: 1, a: 2 }), '{"a":2,"b":1}'],
  ['negative zero', { a: -0 }, '{"a":0}'],
  ['lone surrogate escaped as JSON.stringify does', { a: '\ud800' }, '{"a":"\\ud800"}'],
];
for (const [name, v, want] of tricky) test(`canonicalJson: ${name}`, () => assert.equal(canonicalJson(v), want));

/** An object whose getter `a` answers `first`, then `later` on every read after. */
function twoFaced(first: unknown, later: unknown): object {
  let reads = 0;
  return { get a() { return reads++ === 0 ? first : later; }, b: 1 };
}
// A getter is read once, as the definition reads it: the native writer would read it again, and could write what was not checked.
const getters: Array<[string, () => object, string]> = [
  ['a getter whose second value has keys out of order', () => ({ x: twoFaced(1, { z: 1, b: 2 }) }), '{"x":{"a":1,"b":1}}'],
  ['a getter whose second value is NaN', () => ({ x: twoFaced(1, NaN) }), '{"x":{"a":1,"b":1}}'],
];
for (const [name, make, want] of getters) test(`canonicalJson: ${name}`, () => assert.equal(canonicalJson(make()), want));

/** The definition, written the slow obvious way, to hold the fast path to it. */
function reference(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : reference(x))).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => `${JSON.stringify(k)}:${reference(o[k])}`).join(',')}}`;
}

test('canonicalJson equals the sorted-keys definition on 2,000 random values, ordered and not', () => {
  let seed = 7;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
  const keys = ['a', 'b', 'B', '_', 'é', '1', '10', '9', 'z', 'requestId', 'model', 'hits'];
  const gen = (depth: number): unknown => {
    switch (rnd(depth > 3 ? 5 : 8)) {
      case 0: return rnd(1000) - 500;
      case 1: return ['x', 'é\n', '"q"', '\u0001', ''][rnd(5)];
      case 2: return rnd(2) === 0;
      case 3: return null;
      case 4: return rnd(10) / 3;
      case 5: return Array.from({ length: rnd(4) }, () => (rnd(6) === 0 ? undefined : gen(depth + 1)));
      default: {
        const picked = [...new Set(Array.from({ length: rnd(6) }, () => keys[rnd(keys.length)]!))];
        if (rnd(2) === 0) picked.sort(); // half the objects are built in canonical order, as the doors build theirs
        const o: Record<string, unknown> = {};
        for (const k of picked) o[k] = rnd(8) === 0 ? undefined : gen(depth + 1);
        return o;
      }
    }
  };
  for (let i = 0; i < 2000; i++) {
    const v = gen(0);
    assert.equal(canonicalJson(v), reference(v), JSON.stringify(v));
  }
});

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
