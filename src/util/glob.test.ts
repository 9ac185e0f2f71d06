/**
 * Name globs: `*` is the only special character, patterns are anchored, and
 * regular-expression syntax in a pattern is literal text.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileGlob } from './glob.js';

test('compileGlob: * is any run, everything else literal, anchored', () => {
  const cases: Array<{ why: string; pattern: string; yes: string[]; no: string[] }> = [
    { why: 'literal', pattern: 'read_file', yes: ['read_file'], no: ['read_fil', 'read_filex', 'xread_file', 'READ_FILE', ''] },
    { why: 'trailing *', pattern: 'merge_*', yes: ['merge_', 'merge_pull_request'], no: ['merge', 'automerge_x', 'Merge_x'] },
    { why: 'leading *', pattern: '*-mini', yes: ['-mini', 'gpt-4.1-mini'], no: ['gpt-4.1-mini2', 'mini'] },
    { why: 'middle *', pattern: 'gpt-*-mini', yes: ['gpt--mini', 'gpt-4o-mini', 'gpt-a-b-mini'], no: ['gpt-mini', 'gpt-4o-mini-x'] },
    { why: 'several *', pattern: '*a*b*', yes: ['ab', 'xaybz', 'ba-ab'], no: ['ba', 'a', ''] },
    { why: 'lone * matches everything, the empty name too', pattern: '*', yes: ['', 'x', 'any thing/at.all'], no: [] },
    { why: '** is the same as *', pattern: 'egress.**', yes: ['egress.', 'egress.ip-hex'], no: ['egressx', 'audit.egress.x'] },
    { why: '* crosses "/", "." and "_"', pattern: 'a*z', yes: ['a/b.c_d-z', 'az'], no: ['a/b.c_d-z/'] },
    { why: '"." is literal', pattern: 'gpt-4.1', yes: ['gpt-4.1'], no: ['gpt-401', 'gpt-4x1'] },
    { why: '"." next to * is literal', pattern: 'egress.*', yes: ['egress.ip-hex'], no: ['egressXip-hex'] },
    { why: '"?" is literal, not one character', pattern: 'a?c', yes: ['a?c'], no: ['abc', 'ac'] },
    { why: '"+" is literal', pattern: 'a+*', yes: ['a+', 'a+b'], no: ['aa', 'aaa+'] },
    { why: 'parentheses and "|" are literal', pattern: '(a|b)*', yes: ['(a|b)', '(a|b)x'], no: ['a', 'b', 'ax'] },
    { why: 'brackets are literal', pattern: '[ab]*', yes: ['[ab]', '[ab]c'], no: ['a', 'b', 'ac'] },
    { why: 'braces are literal', pattern: 'a{2}', yes: ['a{2}'], no: ['aa'] },
    { why: '"$" and "^" are literal', pattern: '^a$*', yes: ['^a$', '^a$b'], no: ['a', 'ab'] },
    { why: 'backslash is literal, not an escape', pattern: 'a\\*', yes: ['a\\', 'a\\b'], no: ['a*', 'a'] },
    { why: 'backslash before a letter is literal', pattern: '\\d*', yes: ['\\d', '\\d1'], no: ['1', '12'] },
    { why: 'empty pattern matches only the empty name', pattern: '', yes: [''], no: ['x', ' '] },
    { why: 'unicode literal', pattern: 'modèle-ü*', yes: ['modèle-ü', 'modèle-ü-7'], no: ['modele-u-7', 'MODÈLE-Ü'] },
    { why: '* spans characters outside the BMP', pattern: 'a*b', yes: ['a😀b', 'a😀😀b'], no: ['a😀'] },
    { why: 'case counts', pattern: 'GPT-*', yes: ['GPT-4'], no: ['gpt-4'] },
    { why: '* stops at a line terminator', pattern: 'a*', yes: ['a', 'ab'], no: ['a\nb', 'a\rb', 'a\u2028b', 'a\u2029b'] },
    { why: 'a literal line terminator matches itself', pattern: 'a\n*', yes: ['a\n', 'a\nb'], no: ['a', 'a\n\n'] },
  ];
  for (const c of cases) {
    const m = compileGlob(c.pattern);
    for (const name of c.yes) assert.equal(m(name), true, `${c.why}: ${JSON.stringify(c.pattern)} should match ${JSON.stringify(name)}`);
    for (const name of c.no) assert.equal(m(name), false, `${c.why}: ${JSON.stringify(c.pattern)} should not match ${JSON.stringify(name)}`);
  }
});

test('compileGlob: a matcher keeps no state between calls', () => {
  const m = compileGlob('x*');
  for (let i = 0; i < 3; i++) {
    assert.equal(m('xy'), true, `call ${i}`);
    assert.equal(m('yx'), false, `call ${i}`);
  }
});

test('compileGlob: many stars against a long near-miss stay fast', () => {
  // The regular expression this used to be backtracks for minutes on this pair.
  const m = compileGlob('*a*a*a*a*a*b');
  const name = 'a'.repeat(200);
  const started = performance.now();
  assert.equal(m(name), false);
  assert.equal(m(`${name}b`), true);
  // A bound far above the microseconds this takes, and far below a runaway backtrack.
  assert.ok(performance.now() - started < 500, 'a pattern from config must not stall on a hostile name');
});

test('compileGlob: a pattern that holds line breaks and many stars stays fast on a hostile name', () => {
  // As a regular expression (`.` stops at a line break) this backtracks for seconds and more as the name grows.
  const m = compileGlob('*a*a*a*a*a*b\n*');
  const name = `${'a'.repeat(200)}\n`;
  const started = performance.now();
  assert.equal(m(name), false);
  assert.equal(m(`${'a'.repeat(200)}b\nx`), true);
  assert.ok(performance.now() - started < 500, 'no backtracking on a line-break pattern either');
});

test('compileGlob: agrees with the anchored regular expression it replaces', () => {
  // The form the three callers used before: escaped literal parts joined by `.*`, no flags.
  const oracle = (pattern: string): RegExp => new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  const alphabet = ['a', 'b', '.', '*', '\n', '\r', '\u2028', '\\', 'é'];
  let seed = 7;
  const next = (n: number): number => { seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648; return seed % n; };
  const word = (max: number): string => Array.from({ length: next(max + 1) }, () => alphabet[next(alphabet.length)]).join('');
  for (let i = 0; i < 40_000; i++) {
    const pattern = word(6);
    const name = word(8);
    assert.equal(compileGlob(pattern)(name), oracle(pattern).test(name), `${JSON.stringify(pattern)} vs ${JSON.stringify(name)}`);
  }
});
