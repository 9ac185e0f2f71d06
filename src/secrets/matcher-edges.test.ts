/**
 * Adversarial edges of the multi-pattern matcher (matcher.ts), each compared
 * with one native `indexOf` per pattern: patterns over one- and two-letter
 * alphabets (periodic, with repeated bytes, each a suffix or prefix of
 * another), lengths around the filter's and the automaton's limits (1–9,
 * 63–66, 127–129), an occurrence at every offset relative to the filter's
 * probe grid (start and end of the input included), long patterns whose
 * 64-byte prefix occurs several times before (or without) the whole, and
 * every strategy and dense-row budget. Seeded; bounded to a few seconds.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AUTOMATON_PREFIX_BYTES, createMultiPatternMatcher, type MultiPatternMatcherOptions } from './matcher.js';
import { valuePatterns } from './encodings.js';
import { MIN_SECRET_BYTES } from './value.js';
import { seededRandom } from '../util/random.js';

/** The reference: one native search per pattern. */
function naive(patterns: readonly Buffer[], input: Buffer): number[] {
  return patterns.flatMap((p, id) => (input.indexOf(p) >= 0 ? [id] : []));
}

const CONFIGS: Array<{ name: string; opts: MultiPatternMatcherOptions }> = [
  { name: 'auto', opts: {} },
  { name: 'automaton', opts: { strategy: 'automaton' } },
  { name: 'automaton, one dense row', opts: { strategy: 'automaton', denseEntries: 1 } },
  { name: 'automaton, 40 dense entries', opts: { strategy: 'automaton', denseEntries: 40 } },
  { name: 'indexOf', opts: { strategy: 'indexOf' } },
  { name: 'automaton, budget NaN (the default)', opts: { strategy: 'automaton', denseEntries: Number.NaN } },
  { name: 'automaton, budget infinite (every state dense)', opts: { strategy: 'automaton', denseEntries: Number.POSITIVE_INFINITY } },
];

/** Compare every configuration with the reference on every input; returns how many inputs held a pattern. */
function compareAll(label: string, patterns: Buffer[], inputs: Buffer[]): number {
  let hits = 0;
  const matchers = CONFIGS.map((c) => ({ name: c.name, m: createMultiPatternMatcher(patterns, c.opts) }));
  for (const input of inputs) {
    const expect = naive(patterns, input);
    if (expect.length > 0) hits++;
    for (const { name, m } of matchers) {
      assert.deepEqual(m.occurring(input), expect, `${label} (${name}): patterns ${patterns.map((p) => p.toString('latin1')).join(' | ')}; input ${input.toString('latin1')}`);
    }
  }
  return hits;
}

const fill = (n: number, byte = 0x2e): Buffer => Buffer.alloc(n, byte);
const s = (text: string): Buffer => Buffer.from(text, 'latin1');

describe('periodic patterns over tiny alphabets', () => {
  const cases: Array<{ name: string; patterns: string[] }> = [
    { name: 'aaab and its suffixes', patterns: ['aaab', 'aab', 'ab', 'b'] },
    { name: 'a run and a longer run', patterns: ['aaaaaaaa', 'aaaaaaaaa'] },
    { name: 'abab... of lengths 8 and 9', patterns: ['abababab', 'bababab'.padEnd(9, 'a')] },
    { name: 'a pattern that is a suffix of another (output link)', patterns: ['xaaaaaaab', 'aaaaaab'] },
    { name: 'a pattern that is an infix of another', patterns: ['aabaabaab', 'baabaa'] },
    { name: 'failure chain through repeats', patterns: ['aabaabaac', 'abaabaab', 'aabaabaab'] },
    { name: '64 a then b, and 63 a then b', patterns: [`${'a'.repeat(64)}b`, `${'a'.repeat(63)}b`] },
    { name: 'exactly 64 and 65 of one byte', patterns: ['a'.repeat(64), 'a'.repeat(65)] },
    { name: '128 and 129 of a period 2', patterns: ['ab'.repeat(64), `${'ab'.repeat(64)}a`] },
    { name: 'same 64-byte prefix, three tails', patterns: [`${'ab'.repeat(32)}x`, `${'ab'.repeat(32)}y`, `${'ab'.repeat(32)}ab`] },
    { name: '8 bytes, all equal but the last', patterns: ['aaaaaaab'] },
    { name: 'one byte', patterns: ['a'] },
    { name: 'two and three bytes', patterns: ['ab', 'aba'] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const patterns = c.patterns.map(s);
      const r = seededRandom(c.name.length * 7919);
      const letters = 'abxy.';
      const inputs: Buffer[] = [];
      // every pattern at every offset of inputs long enough for the filter, alone and beside its near misses
      const longest = Math.max(...patterns.map((p) => p.length));
      for (const p of patterns) {
        for (const size of [p.length, p.length + 3, 4 * Math.min(longest, AUTOMATON_PREFIX_BYTES) + 2 * p.length + 5]) {
          for (let at = 0; at + p.length <= size; at++) {
            const input = fill(size);
            if (p.length > 1) p.subarray(0, p.length - 1).copy(input, (at + p.length + 1) % Math.max(1, size - p.length));
            p.copy(input, at);
            inputs.push(input);
            const broken = Buffer.from(input);
            broken[at + p.length - 1] = 0x7a; // its last byte changed
            inputs.push(broken);
          }
        }
      }
      for (let k = 0; k < 200; k++) {
        inputs.push(Buffer.from(Array.from({ length: Math.floor(r() * 400) }, () => letters.charCodeAt(Math.floor(r() * (r() < 0.8 ? 2 : 5))))));
      }
      compareAll(c.name, patterns, inputs);
    });
  }
});

describe('the filter\'s probe grid', () => {
  test('every shortest length 8..20 and 64..66, an occurrence at every offset modulo the stride, at the start and the end', () => {
    let compared = 0;
    for (const shortest of [8, 9, 10, 11, 13, 20, 63, 64, 65, 66]) {
      const r = seededRandom(shortest);
      const letter = (): number => 0x61 + Math.floor(r() * 2);
      const word = (n: number): Buffer => Buffer.from(Array.from({ length: n }, letter));
      const patterns = [word(shortest), word(shortest + 1), word(2 * shortest), word(AUTOMATON_PREFIX_BYTES + 1 + Math.floor(r() * 70))];
      const m = createMultiPatternMatcher(patterns);
      assert.equal(m.filtered, true, `shortest ${shortest}`);
      const inputs: Buffer[] = [];
      const size = 4 * Math.min(m.longestBytes, AUTOMATON_PREFIX_BYTES) + 3 * shortest + 7;
      for (const p of patterns) {
        for (let at = 0; at + p.length <= Math.max(size, p.length + 2 * shortest); at++) {
          const total = Math.max(size, at + p.length);
          const input = fill(total, 0x7a);
          p.copy(input, at);
          inputs.push(input);
          const end = fill(total, 0x7a);
          p.copy(end, total - p.length); // flush with the end of inputs of every length
          inputs.push(end.subarray(0, total - (at % 3 === 0 ? 0 : 0)));
        }
      }
      compared += inputs.length;
      const hits = compareAll(`shortest ${shortest}`, patterns, inputs);
      assert.equal(hits, inputs.length, 'every input holds a planted pattern');
    }
    assert.ok(compared > 1000, `${compared} inputs`);
  });

  test('inputs shorter than the stride, and just at the filter threshold', () => {
    const patterns = [s('abcdefghijklmnop'), s('ijklmnopqrstuvwx')];
    const inputs: Buffer[] = [];
    for (let n = 0; n <= 4 * 16 + 20; n++) {
      const base = s('abcdefghijklmnopqrstuvwx'.repeat(8)).subarray(0, n);
      inputs.push(base, Buffer.concat([fill(n), base.subarray(0, Math.min(n, 16))]));
    }
    assert.ok(compareAll('short inputs', patterns, inputs) > 50);
  });
});

describe('long patterns: the 64-byte prefix occurs, the whole later or not at all', () => {
  test('prefix several times, only the last one completes; or none does', () => {
    const r = seededRandom(4242);
    let compared = 0;
    for (let trial = 0; trial < 300; trial++) {
      const letter = (): number => 0x61 + Math.floor(r() * 2);
      const word = (n: number): Buffer => Buffer.from(Array.from({ length: n }, letter));
      const head = word(AUTOMATON_PREFIX_BYTES);
      const patterns: Buffer[] = [Buffer.concat([head, word(1 + Math.floor(r() * 70))]), Buffer.concat([head, word(1 + Math.floor(r() * 70))])];
      if (r() < 0.5) patterns.push(Buffer.concat([word(1 + Math.floor(r() * 4)), head.subarray(0, 60 + Math.floor(r() * 4))])); // ends inside another's prefix
      if (r() < 0.5) patterns.push(word(8 + Math.floor(r() * 60)));
      const parts: Buffer[] = [];
      for (let k = 1 + Math.floor(r() * 5); k > 0; k--) {
        const p = patterns[Math.floor(r() * patterns.length)]!;
        parts.push(fill(Math.floor(r() * 50), 0x7a), p.subarray(0, AUTOMATON_PREFIX_BYTES + Math.floor(r() * (p.length - AUTOMATON_PREFIX_BYTES + 1))));
      }
      if (r() < 0.5) parts.push(patterns[Math.floor(r() * patterns.length)]!);
      parts.push(fill(Math.floor(r() * 300), 0x7a));
      compareAll(`trial ${trial}`, patterns, [Buffer.concat(parts)]);
      compared++;
    }
    assert.equal(compared, 300);
  });
});

describe('many overlapping patterns, the automaton (more than 16) and its sparse states', () => {
  test('200 sets of 17-60 patterns from a two-letter alphabet, some of 1-3 bytes', () => {
    let hits = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const r = seededRandom(77_000 + seed);
      const word = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => 0x61 + Math.floor(r() * 2)));
      const lengths = [1, 2, 3, 7, 8, 9, 63, 64, 65, 128];
      const allLong = r() < 0.5;
      const patterns = Array.from({ length: 17 + Math.floor(r() * 44) }, () => word(allLong ? 8 + Math.floor(r() * 130) : lengths[Math.floor(r() * lengths.length)]!));
      const inputs = Array.from({ length: 3 }, () => {
        const parts: Buffer[] = [];
        for (let k = Math.floor(r() * 6); k > 0; k--) parts.push(r() < 0.5 ? patterns[Math.floor(r() * patterns.length)]! : word(Math.floor(r() * 200)), fill(Math.floor(r() * 3) * 150, 0x7a));
        return Buffer.concat(parts);
      });
      hits += compareAll(`seed ${seed}`, patterns, inputs);
    }
    assert.ok(hits > 300, `${hits} inputs held a pattern`);
  });
});

describe('hostile secret sets and bodies', () => {
  test('500 PEM-sized secrets: build bounded; a body made of their bytes costs about one pass', (t) => {
    const r = seededRandom(500);
    const b64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const pem = (): Buffer => s(`-----BEGIN PRIVATE KEY-----\n${Array.from({ length: 1600 }, () => b64[Math.floor(r() * 64)]).join('')}\n-----END PRIVATE KEY-----\n`);
    const secrets = Array.from({ length: 500 }, pem);
    const patterns = secrets.flatMap((v) => valuePatterns(v).map((p) => p.bytes));
    const heapBefore = process.memoryUsage().heapUsed;
    let started = process.hrtime.bigint();
    const m = createMultiPatternMatcher(patterns);
    const buildMs = Number(process.hrtime.bigint() - started) / 1e6;
    const heapMiB = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
    t.diagnostic(`${patterns.length} patterns, ${m.states} states, built in ${buildMs.toFixed(0)} ms, heap +${heapMiB.toFixed(0)} MiB`);
    assert.ok(m.states <= 1 + patterns.length * AUTOMATON_PREFIX_BYTES);
    assert.ok(buildMs < 8000, `build took ${buildMs} ms`);
    // Every PEM shares its first 28 bytes: a body of PEM headers and near-complete keys keeps the automaton busy.
    const parts: Buffer[] = [];
    for (let k = 0; k < 400; k++) parts.push(secrets[k]!.subarray(0, 28 + Math.floor(r() * 1500)));
    const hostile = Buffer.concat(parts);
    started = process.hrtime.bigint();
    const got = m.occurring(hostile);
    const scanMs = Number(process.hrtime.bigint() - started) / 1e6;
    t.diagnostic(`hostile body of ${(hostile.length / 1024).toFixed(0)} KiB scanned in ${scanMs.toFixed(1)} ms`);
    assert.deepEqual(got, naive(patterns, hostile));
    assert.ok(scanMs < 3000, `scan took ${scanMs} ms`);
    const whole = Buffer.concat([hostile, secrets[123]!]);
    assert.ok(m.occurring(whole).includes(patterns.findIndex((p) => p.equals(secrets[123]!))));
  });
});

describe('many long secrets that share a known 64-byte prefix (service-account files)', () => {
  test('each is confirmed on its own; a body of that prefix costs one native search per pattern at most', (t) => {
    const r = seededRandom(64);
    const known = '{\n  "type": "service_account",\n  "project_id": "acme-prod",\n  "private_key_id": "';
    const secrets = Array.from({ length: 300 }, () => s(`${known}${Array.from({ length: 40 }, () => 'abcdef0123456789'[Math.floor(r() * 16)]).join('')}"\n}`));
    const patterns = secrets.flatMap((v) => valuePatterns(v).map((p) => p.bytes));
    const m = createMultiPatternMatcher(patterns);
    const body = Buffer.concat([s(known.repeat(800)), secrets[17]!, s(known.repeat(10))]);
    const started = process.hrtime.bigint();
    const got = m.occurring(body);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    t.diagnostic(`${patterns.length} patterns, body of ${(body.length / 1024).toFixed(0)} KiB of the shared prefix: ${ms.toFixed(1)} ms`);
    assert.deepEqual(got, naive(patterns, body));
    assert.deepEqual(got.map((id) => patterns[id]!.toString('latin1')), [secrets[17]!.toString('latin1')]);
    assert.ok(ms < 3000, `took ${ms} ms`);
  });
});

describe('what a sandbox actually compiles', () => {
  test('the shortest secret cordon accepts still gives patterns of 8 bytes or more: the filter is always on, `auto` never picks indexOf', () => {
    const value = Buffer.from('\u00ff!"\\ %*+'.padEnd(MIN_SECRET_BYTES, 'x'), 'latin1').subarray(0, MIN_SECRET_BYTES);
    const patterns = [...valuePatterns(value).map((p) => p.bytes), s(`cordon-ph-${'a'.repeat(32)}`)];
    assert.ok(Math.min(...patterns.map((p) => p.length)) >= 8, patterns.map((p) => p.length).join(','));
    assert.equal(createMultiPatternMatcher(patterns).filtered, true);
  });
});
