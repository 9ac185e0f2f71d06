/**
 * The multi-pattern matcher (matcher.ts): named cases (overlaps, patterns
 * that are prefixes, suffixes or infixes of others, duplicates, 1-byte and
 * empty patterns, empty input, bytes outside every pattern), an occurrence
 * at every position of an input, and a seeded property test against one
 * native `indexOf` per pattern over thousands of random pattern sets and
 * inputs, for both strategies and for tiny dense-row budgets (so that the
 * sparse fallback along failure links is exercised), and patterns longer
 * than the automaton's prefix, which native search confirms.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { AUTOMATON_PREFIX_BYTES, createMultiPatternMatcher, type MatcherStrategy } from './matcher.js';
import { valuePatterns } from './encodings.js';
import { seededRandom } from '../util/random.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const STRATEGIES: MatcherStrategy[] = ['automaton', 'indexOf'];

/** The reference: one native search per pattern. */
function naive(patterns: readonly Uint8Array[], input: Uint8Array): number[] {
  const buf = Buffer.from(input);
  return patterns.flatMap((p, id) => (buf.indexOf(Buffer.from(p)) >= 0 ? [id] : []));
}


describe('named cases', () => {
  const cases: Array<{ name: string; patterns: string[]; input: string; expect: number[] }> = [
    { name: 'no patterns', patterns: [], input: 'anything', expect: [] },
    { name: 'empty input', patterns: ['abc', 'x'], input: '', expect: [] },
    { name: 'an empty pattern occurs everywhere, even in empty input', patterns: ['abc', ''], input: '', expect: [1] },
    { name: 'an empty pattern beside a real match', patterns: ['', 'bc'], input: 'abcd', expect: [0, 1] },
    { name: 'overlapping occurrences of two patterns', patterns: ['abcd', 'cdef'], input: 'xxabcdefyy', expect: [0, 1] },
    { name: 'a pattern that is a prefix of another; only the prefix present', patterns: ['abcdef', 'abc'], input: 'zabcdez', expect: [1] },
    { name: 'a pattern that is a prefix of another; both present', patterns: ['abc', 'abcdef'], input: 'abcdef', expect: [0, 1] },
    { name: 'a pattern that is a suffix of another (found through the dictionary link)', patterns: ['xabcd', 'bcd'], input: 'qxabcdq', expect: [0, 1] },
    { name: 'a suffix found alone after a failed longer path', patterns: ['xabcd', 'bcd'], input: 'xabcbcd', expect: [1] },
    { name: 'an infix of another', patterns: ['abcdefg', 'cde'], input: 'abcdefg', expect: [0, 1] },
    { name: 'failure after a long partial match', patterns: ['aaaab', 'aab'], input: 'aaaaaaab', expect: [0, 1] },
    { name: 'the same bytes under two ids', patterns: ['secret', 'other', 'secret'], input: '..secret..', expect: [0, 2] },
    { name: '1-byte patterns', patterns: ['a', '%', 'zz'], input: 'b%c', expect: [1] },
    { name: 'a 1-byte pattern inside a longer one', patterns: ['hello', 'l'], input: 'hello', expect: [0, 1] },
    { name: 'bytes outside every pattern reset the match', patterns: ['abc'], input: 'ab\u0000c abc', expect: [0] },
    { name: 'high bytes and NUL', patterns: ['\u00ff\u0000\u0080', '\u0000'], input: 'x\u00ff\u0000\u0080y', expect: [0, 1] },
    { name: 'a prefix of the input that nearly matches', patterns: ['abcabd'], input: 'abcabcabd', expect: [0] },
    { name: 'a pattern at the very end', patterns: ['end'], input: 'the end', expect: [0] },
    { name: 'a pattern at the very start', patterns: ['the'], input: 'the end', expect: [0] },
    { name: 'a pattern one byte longer than the input', patterns: ['abcd'], input: 'abc', expect: [] },
    { name: 'case matters', patterns: ['ABCDEF'], input: 'abcdef', expect: [] },
  ];
  for (const c of cases) {
    for (const strategy of STRATEGIES) {
      test(`${c.name} (${strategy})`, () => {
        const m = createMultiPatternMatcher(c.patterns.map(b), { strategy });
        assert.deepEqual(m.occurring(b(c.input)), c.expect);
        assert.deepEqual(naive(c.patterns.map(b), b(c.input)), c.expect, 'the reference agrees with the case');
      });
    }
  }

  test('a pattern at every position of a longer input', () => {
    const patterns = ['needle', 'eedl', 'dlex', 'n'].map(b);
    const m = createMultiPatternMatcher(patterns, { strategy: 'automaton' });
    for (let at = 0; at <= 40; at++) {
      const input = Buffer.concat([Buffer.alloc(at, 0x2e), b('needle'), Buffer.alloc(40 - at, 0x2e)]);
      assert.deepEqual(m.occurring(input), [0, 1, 3], `at ${at}`);
    }
  });

  test('patterns longer than the automaton\'s prefix: confirmed, refuted, and found after a false start', () => {
    const L = AUTOMATON_PREFIX_BYTES;
    const long = b(`${'p'.repeat(L)}-the-rest`);
    const twin = b(`${'p'.repeat(L)}-other`); // the same prefix, a different tail
    const periodic = b('ab'.repeat(L)); // its prefix occurs at every other byte of an `abab…` run
    const patterns = [long, twin, periodic, b('short')];
    const cases: Array<{ name: string; input: Buffer; expect: number[] }> = [
      { name: 'the prefix alone', input: b(`x${'p'.repeat(L)}-the-res`), expect: [] },
      { name: 'the whole long pattern', input: b(`x${'p'.repeat(L)}-the-rest!`), expect: [0] },
      { name: 'a false start, then the pattern later', input: b(`${'p'.repeat(L)}-nope ${'p'.repeat(L + 3)}-the-rest short`), expect: [0, 3] },
      { name: 'the twin only', input: b(`${'p'.repeat(L + 1)}-other`), expect: [1] },
      { name: 'a periodic run one byte short', input: b(`${'ab'.repeat(L)}`.slice(0, 2 * L - 1)), expect: [] },
      { name: 'a periodic run long enough, late in the input', input: b(`${'ab'.repeat(L - 1)}a|${'ab'.repeat(L + 5)}`), expect: [2] },
    ];
    for (const strategy of STRATEGIES) {
      const m = createMultiPatternMatcher(patterns, { strategy });
      for (const c of cases) {
        assert.deepEqual(naive(patterns, c.input), c.expect, `${c.name}: the reference agrees`);
        assert.deepEqual(m.occurring(c.input), c.expect, `${c.name} (${strategy})`);
      }
    }
  });

  test('answers do not leak between calls', () => {
    const m = createMultiPatternMatcher([b('abc'), b('bc')], { strategy: 'automaton' });
    assert.deepEqual(m.occurring(b('abc')), [0, 1]);
    assert.deepEqual(m.occurring(b('xbc')), [1]);
    assert.deepEqual(m.occurring(b('xyz')), []);
    assert.deepEqual(m.occurring(b('abc')), [0, 1]);
  });

  test('a subarray input is read at its own offset', () => {
    const m = createMultiPatternMatcher([b('abc')], { strategy: 'indexOf' });
    const big = b('abcXXXXXX');
    assert.deepEqual(m.occurring(new Uint8Array(big.buffer, big.byteOffset + 3, 6)), []);
    assert.deepEqual(m.occurring(new Uint8Array(big.buffer, big.byteOffset, 3)), [0]);
  });

  test('patterns are copied: changing the caller\'s bytes later changes nothing', () => {
    const p = b('abc');
    const m = createMultiPatternMatcher([p]);
    p.fill(0x7a);
    assert.deepEqual(m.occurring(b('abc')), [0]);
    assert.equal(m.longestBytes, 3);
  });
});

describe('equivalence with one indexOf per pattern (seeded)', () => {
  /** Random patterns over a small alphabet (so they overlap and nest), inputs built partly from them. */
  function trial(seed: number): { patterns: Buffer[]; inputs: Buffer[] } {
    const r = seededRandom(seed);
    const alphabet = r() < 0.5 ? [0x61, 0x62, 0x63] : [0x61, 0x62, 0x63, 0x64, 0x25, 0x00, 0xff, 0x30 + Math.floor(r() * 10)];
    const pick = (): number => alphabet[Math.floor(r() * alphabet.length)]!;
    const word = (n: number): Buffer => Buffer.from(Array.from({ length: n }, pick));
    const patterns: Buffer[] = [];
    const count = 1 + Math.floor(r() * 12);
    for (let i = 0; i < count; i++) {
      const roll = r();
      if (patterns.length > 0 && roll < 0.25) {
        const other = patterns[Math.floor(r() * patterns.length)]!; // a prefix, suffix or infix of another pattern
        const from = Math.floor(r() * other.length);
        patterns.push(other.subarray(from, from + 1 + Math.floor(r() * (other.length - from))));
      } else if (patterns.length > 0 && roll < 0.3) {
        patterns.push(patterns[Math.floor(r() * patterns.length)]!); // a duplicate
      } else {
        patterns.push(word(r() < 0.1 ? AUTOMATON_PREFIX_BYTES - 2 + Math.floor(r() * 6) : 1 + Math.floor(r() * 8)));
      }
    }
    const inputs: Buffer[] = [];
    for (let i = 0; i < 4; i++) {
      const parts: Buffer[] = [];
      const n = Math.floor(r() * 6);
      for (let k = 0; k < n; k++) parts.push(r() < 0.4 ? patterns[Math.floor(r() * patterns.length)]! : word(Math.floor(r() * 10)));
      inputs.push(Buffer.concat(parts));
    }
    return { patterns, inputs };
  }

  test('3000 random pattern sets, 4 inputs each, every strategy and dense budget', () => {
    let compared = 0;
    let nonEmpty = 0;
    for (let seed = 1; seed <= 3000; seed++) {
      const { patterns, inputs } = trial(seed);
      const matchers = [
        createMultiPatternMatcher(patterns, { strategy: 'automaton' }),
        createMultiPatternMatcher(patterns, { strategy: 'automaton', denseEntries: 1 }),
        createMultiPatternMatcher(patterns, { strategy: 'automaton', denseEntries: 40 }),
        createMultiPatternMatcher(patterns, { strategy: 'indexOf' }),
        createMultiPatternMatcher(patterns),
      ];
      for (const input of inputs) {
        const expect = naive(patterns, input);
        if (expect.length > 0) nonEmpty++;
        for (const [k, m] of matchers.entries()) {
          assert.deepEqual(m.occurring(input), expect, `seed ${seed}, matcher ${k}, patterns ${patterns.map((p) => p.toString('hex')).join(',')}, input ${input.toString('hex')}`);
          compared++;
        }
      }
    }
    assert.equal(compared, 3000 * 4 * 5);
    assert.ok(nonEmpty > 3000, `the inputs hit patterns often enough to mean something (${nonEmpty} of 12000)`);
  });

  test('long inputs: random text with patterns planted at random places', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const r = seededRandom(10_000 + seed);
      const patterns = Array.from({ length: 1 + Math.floor(r() * 60) }, () => Buffer.from(Array.from({ length: 4 + Math.floor(r() * 40) }, () => 0x61 + Math.floor(r() * 6))));
      const input = Buffer.from(Array.from({ length: 2000 + Math.floor(r() * 4000) }, () => 0x61 + Math.floor(r() * 7)));
      for (let k = 0; k < 3; k++) {
        const p = patterns[Math.floor(r() * patterns.length)]!;
        p.copy(input, Math.floor(r() * (input.length - p.length)));
      }
      const expect = naive(patterns, input);
      assert.ok(expect.length > 0);
      for (const strategy of STRATEGIES) {
        assert.deepEqual(createMultiPatternMatcher(patterns, { strategy }).occurring(input), expect, `seed ${seed} ${strategy}`);
      }
      assert.deepEqual(createMultiPatternMatcher(patterns, { strategy: 'automaton', denseEntries: 20 }).occurring(input), expect, `seed ${seed}, sparse`);
    }
  });
});

describe('the gram filter (patterns of 8 bytes or more) finds what a full pass finds', () => {
  test('filter on and off as documented', () => {
    assert.equal(createMultiPatternMatcher([b('12345678'), b('abcdefghijk')]).filtered, true);
    assert.equal(createMultiPatternMatcher([b('1234567'), b('abcdefghijk')]).filtered, false, 'a 7-byte pattern');
    assert.equal(createMultiPatternMatcher([]).filtered, false);
  });

  test('a pattern planted at every position of a long input, alone and beside near misses', () => {
    const patterns = [b('abcdefgh'), b('xyz0123456789xyz'), b(`${'q'.repeat(AUTOMATON_PREFIX_BYTES)}tail`)];
    const m = createMultiPatternMatcher(patterns);
    assert.equal(m.filtered, true);
    for (const [id, p] of patterns.entries()) {
      const size = 4 * AUTOMATON_PREFIX_BYTES + 3 * p.length;
      for (let at = 0; at + p.length <= size; at++) {
        const input = Buffer.alloc(size, 0x2e);
        b('abcdefg').copy(input, (at + 37) % (size - 7)); // a near miss somewhere else
        p.copy(input, at);
        const expect = naive(patterns, input);
        assert.ok(expect.includes(id));
        assert.deepEqual(m.occurring(input), expect, `pattern ${id} at ${at}`);
      }
    }
  });

  test('2000 random sets of long patterns over small alphabets, long inputs with planted and partial copies', () => {
    let filtered = 0;
    let hits = 0;
    for (let seed = 1; seed <= 2000; seed++) {
      const r = seededRandom(90_000 + seed);
      const alphabet = Array.from({ length: 2 + Math.floor(r() * 5) }, (_, k) => [0x61, 0x62, 0x25, 0x00, 0xff, 0x41, 0x2a][k]!);
      const word = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => alphabet[Math.floor(r() * alphabet.length)]!));
      const patterns = Array.from({ length: 1 + Math.floor(r() * 20) }, () => word(8 + Math.floor(r() * (r() < 0.2 ? 70 : 20))));
      const m = createMultiPatternMatcher(patterns);
      if (m.filtered) filtered++;
      const parts: Buffer[] = [];
      for (let k = Math.floor(r() * 12); k > 0; k--) {
        const p = patterns[Math.floor(r() * patterns.length)]!;
        const roll = r();
        parts.push(roll < 0.3 ? p : roll < 0.6 ? p.subarray(0, Math.floor(r() * p.length)) : word(Math.floor(r() * 120)));
      }
      const input = Buffer.concat([word(Math.floor(r() * 40)), ...parts, Buffer.alloc(Math.floor(r() * 300), 0x2e)]);
      const expect = naive(patterns, input);
      if (expect.length > 0) hits++;
      assert.deepEqual(m.occurring(input), expect, `seed ${seed}: patterns ${patterns.map((p) => p.toString('hex')).join(',')}, input ${input.toString('hex')}`);
    }
    assert.equal(filtered, 2000, 'every set has the filter on');
    assert.ok(hits > 500, `enough inputs hold a pattern: ${hits}`);
  });
});

describe('cost', () => {
  test('build: 500 secrets and their placeholders; memory bounded by the prefix length', (t) => {
    const token = (j: number): Buffer => Buffer.from(`tk_${createHash('sha256').update(`m${j}`).digest('hex').slice(0, 45)}`);
    const patterns = Array.from({ length: 500 }, (_, j) => [...valuePatterns(token(j)).map((p) => p.bytes), Buffer.from(`cordon-ph-${createHash('sha256').update(`p${j}`).digest('hex').slice(0, 32)}`)]).flat();
    const started = process.hrtime.bigint();
    const m = createMultiPatternMatcher(patterns);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    t.diagnostic(`${patterns.length} patterns, ${m.states} states, built in ${ms.toFixed(0)} ms`);
    assert.ok(m.states <= 1 + patterns.length * AUTOMATON_PREFIX_BYTES);
    assert.ok(ms < 5000, `build took ${ms} ms`);
    const input = Buffer.from(`x ${token(321).toString('base64')} y ${token(7).toString('hex').toUpperCase()}`);
    const expect = naive(patterns, input);
    assert.equal(expect.length, 2, 'the base64 of one secret (at alignment 0) and the upper-case hex of another');
    assert.deepEqual(m.occurring(input), expect);
  });

  test('a 64 KiB secret: a bounded automaton, found whole, not found one byte short', () => {
    const value = Buffer.from(Array.from({ length: 64 * 1024 }, (_, i) => 0x41 + ((i * 7919) % 26)));
    const patterns = valuePatterns(value).map((p) => p.bytes);
    const m = createMultiPatternMatcher(patterns);
    assert.ok(m.states <= 1 + patterns.length * AUTOMATON_PREFIX_BYTES, `${m.states} states`);
    const hex = value.toString('hex');
    assert.deepEqual(m.occurring(Buffer.from(`<${hex}>`)), [patterns.findIndex((p) => p.toString() === hex)]);
    assert.deepEqual(m.occurring(Buffer.from(`<${hex.slice(0, -1)}>`)), []);
    assert.deepEqual(m.occurring(Buffer.concat([value.subarray(0, 100), value])), [0]);
  });


  test('the automaton\'s time per byte does not grow with the number of patterns', (t) => {
    const r = seededRandom(7);
    const b64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const token = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => b64[Math.floor(r() * 64)]).join(''), 'latin1');
    const input = Buffer.concat(Array.from({ length: 2048 }, () => token(512))); // 1 MiB of base64-like text
    const timeFor = (count: number): number => {
      const m = createMultiPatternMatcher(Array.from({ length: count }, () => token(48 + Math.floor(r() * 48))), { strategy: 'automaton' });
      m.occurring(input); // warm up
      let best = Infinity;
      for (let k = 0; k < 3; k++) {
        const started = process.hrtime.bigint();
        assert.deepEqual(m.occurring(input), []);
        best = Math.min(best, Number(process.hrtime.bigint() - started) / 1e6);
      }
      return best;
    };
    const few = timeFor(6);
    const many = timeFor(600);
    t.diagnostic(`automaton, 1 MiB: ${few.toFixed(1)} ms with 6 patterns, ${many.toFixed(1)} ms with 600 (${(1 / (few / 1000)).toFixed(0)} and ${(1 / (many / 1000)).toFixed(0)} MiB/s)`);
    for (const count of [4, 8, 16]) {
      const m = createMultiPatternMatcher(Array.from({ length: count }, () => token(48 + Math.floor(r() * 48))), { strategy: 'indexOf' });
      m.occurring(input);
      const started = process.hrtime.bigint();
      assert.deepEqual(m.occurring(input), []);
      t.diagnostic(`indexOf per pattern, 1 MiB, ${count} patterns: ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(1)} ms`);
    }
    // A per-pattern search would take about 100× longer with 600 patterns; allow noise from a shared machine.
    assert.ok(many < 4 * few + 20, `600 patterns took ${many.toFixed(1)} ms, 6 took ${few.toFixed(1)} ms`);
  });
});
