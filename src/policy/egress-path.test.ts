/** Path normalisation and segment globs for method/path rules. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeRequestPath, compilePathGlob, MAX_PATH_CHARS } from './egress-path.js';

const normalized: Array<{ name: string; path: string; want: string | undefined }> = [
  { name: 'root', path: '/', want: '/' },
  { name: 'query and fragment dropped', path: '/a/b?c=/d#e', want: '/a/b' },
  { name: 'lower-cased', path: '/Repos/OWNER', want: '/repos/owner' },
  { name: 'trailing slash ignored', path: '/a/b/', want: '/a/b' },
  { name: 'unreserved escapes decoded', path: '/%61%7E%2D%5f', want: '/a~-_' },
  { name: 'reserved escapes kept, hex upper-cased then lower-cased', path: '/a%3fb%20c', want: '/a%3fb%20c' },
  { name: 'servlet path parameters dropped', path: '/a;jsessionid=1/b;x', want: '/a/b' },
  { name: 'dot segment', path: '/a/./b', want: undefined },
  { name: 'dot-dot segment', path: '/a/../b', want: undefined },
  { name: 'encoded dot-dot', path: '/a/%2E%2e/b', want: undefined },
  { name: 'dot-dot hidden behind a parameter', path: '/a/..;x/b', want: undefined },
  { name: 'encoded slash', path: '/a%2fb', want: undefined },
  { name: 'encoded backslash', path: '/a%5Cb', want: undefined },
  { name: 'backslash', path: '/a\\b', want: undefined },
  { name: 'NUL', path: '/a%00b', want: undefined },
  { name: 'bad escape', path: '/a%zz', want: undefined },
  { name: 'truncated escape', path: '/a%2', want: undefined },
  { name: 'double slash', path: '//a', want: undefined },
  { name: 'empty segment from a parameter', path: '/;x/a', want: undefined },
  { name: 'space', path: '/a b', want: undefined },
  { name: 'non-ASCII', path: '/caf\u00e9', want: undefined },
  { name: 'no leading slash', path: 'a/b', want: undefined },
  { name: 'asterisk form', path: '*', want: undefined },
  { name: 'too long', path: `/${'a'.repeat(MAX_PATH_CHARS)}`, want: undefined },
];
for (const c of normalized) {
  test(`normalizeRequestPath ${c.name}`, () => assert.equal(normalizeRequestPath(c.path), c.want));
}

const globs: Array<{ glob: string; path: string; match: boolean }> = [
  { glob: '/repos/*/*/pulls/*/merge', path: '/repos/o/r/pulls/1/merge', match: true },
  { glob: '/repos/*/*/pulls/*/merge', path: '/repos/o/r/pulls/merge', match: false },
  { glob: '/repos/*/*/pulls/*/merge', path: '/repos/o/r/pulls/1/2/merge', match: false },
  { glob: '/repos/*', path: '/repos', match: false },
  { glob: '/repos/**', path: '/repos', match: true },
  { glob: '/repos/**', path: '/repos/a/b/c', match: true },
  { glob: '/repos/**', path: '/reposx', match: false },
  { glob: '/**', path: '/', match: true },
  { glob: '/**/merge', path: '/merge', match: true },
  { glob: '/**/merge', path: '/a/b/merge', match: true },
  { glob: '/**/merge', path: '/a/b/merge/x', match: false },
  { glob: '/a/**/b/**/c', path: '/a/x/b/y/z/c', match: true },
  { glob: '/a/**/b/**/c', path: '/a/c', match: false },
  { glob: '/files/*.txt', path: '/files/notes.txt', match: true },
  { glob: '/files/*.txt', path: '/files/notes.txt.exe', match: false },
  { glob: '/files/*.txt', path: '/files/secret.key;.txt', match: false },
  { glob: '/v*/items', path: '/v2/items', match: true },
  { glob: '/', path: '/', match: true },
  { glob: '/', path: '/a', match: false },
  { glob: '/Users/%61', path: '/users/a', match: true },
  { glob: '/a.b', path: '/aXb', match: false },
  { glob: '/(a|b)', path: '/a', match: false },
];
for (const c of globs) {
  test(`glob ${c.glob} ${c.match ? 'matches' : 'does not match'} ${c.path}`, () => {
    const m = compilePathGlob(c.glob);
    assert.ok(m);
    assert.equal(m(normalizeRequestPath(c.path)!), c.match);
  });
}

test('malformed globs do not compile', () => {
  for (const g of ['', 'repos/*', '/a/../b', '/a//b', '/a%2fb']) assert.equal(compilePathGlob(g), undefined, g);
});

test('many ** segments stay fast (no exponential backtracking)', () => {
  const m = compilePathGlob(`/${Array(30).fill('**').join('/')}/x`)!;
  const path = `/${Array(2000).fill('a').join('/')}`;
  const start = performance.now();
  assert.equal(m(path), false);
  assert.ok(performance.now() - start < 500, 'matching took too long');
});
