/**
 * Serving the dashboard bundle, in process (`app.request`): the strict CSP
 * and other security headers on every answer, caching, content types, a
 * plain 503 when the bundle is not built, and no way out of the bundle
 * directory (dot segments, encoded dots, hidden files, symlinks).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Hono } from 'hono';
import { tempDir } from '../testkit/index.js';
import { DASHBOARD_CSP, dashboardRedirect, dashboardRoutes } from './index.js';

function appFor(dir: string): Hono {
  const app = new Hono();
  app.route('/ui', dashboardRoutes({ dir }));
  app.get('/', () => dashboardRedirect());
  return app;
}

function bundle() {
  const d = tempDir();
  const dir = join(d.path, 'web');
  mkdirSync(join(dir, 'assets'), { recursive: true });
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>cordon</title>');
  writeFileSync(join(dir, 'assets', 'index-abc.js'), 'console.log(1)');
  writeFileSync(join(dir, 'assets', 'index-abc.css'), 'body{}');
  writeFileSync(join(dir, '.env'), 'SECRET=1');
  writeFileSync(join(d.path, 'outside.txt'), 'outside the bundle');
  symlinkSync(join(d.path, 'outside.txt'), join(dir, 'assets', 'link.txt'));
  return { ...d, dir };
}

test('the index and assets are served with a strict CSP, the right types and caching', async () => {
  const b = bundle();
  try {
    const app = appFor(b.dir);
    const cases: Array<{ path: string; type: RegExp; cache: string; body: string }> = [
      { path: '/ui/', type: /^text\/html/, cache: 'no-store', body: '<!doctype html><title>cordon</title>' },
      { path: '/ui', type: /^text\/html/, cache: 'no-store', body: '<!doctype html><title>cordon</title>' },
      { path: '/ui/assets/index-abc.js', type: /^text\/javascript/, cache: 'public, max-age=31536000, immutable', body: 'console.log(1)' },
      { path: '/ui/assets/index-abc.css', type: /^text\/css/, cache: 'public, max-age=31536000, immutable', body: 'body{}' },
    ];
    for (const c of cases) {
      const res = await app.request(c.path);
      assert.equal(res.status, 200, c.path);
      assert.match(res.headers.get('content-type') ?? '', c.type, c.path);
      assert.equal(res.headers.get('cache-control'), c.cache, c.path);
      assert.equal(res.headers.get('content-security-policy'), DASHBOARD_CSP, c.path);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
      assert.equal(await res.text(), c.body, c.path);
    }
    for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"]) {
      assert.ok(DASHBOARD_CSP.split('; ').includes(directive), directive);
    }
    assert.doesNotMatch(DASHBOARD_CSP, /unsafe-(inline|eval)|https?:|\*/);
    const root = await app.request('/');
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/ui/');
  } finally {
    b.cleanup();
  }
});

test('nothing outside the bundle (or hidden in it) is served', async () => {
  const b = bundle();
  try {
    const app = appFor(b.dir);
    const cases: Array<{ name: string; path: string }> = [
      { name: 'a dot-dot segment', path: '/ui/assets/../../outside.txt' },
      { name: 'encoded dots', path: '/ui/%2e%2e/outside.txt' },
      { name: 'an encoded slash and dots', path: '/ui/assets%2f..%2f..%2foutside.txt' },
      { name: 'a hidden file', path: '/ui/.env' },
      { name: 'a symlink leading out', path: '/ui/assets/link.txt' },
      { name: 'a directory', path: '/ui/assets' },
      { name: 'a missing file', path: '/ui/assets/nope.js' },
      { name: 'a NUL byte', path: '/ui/index.html%00.js' },
    ];
    for (const c of cases) {
      const res = await app.request(c.path);
      assert.equal(res.status, 404, c.name);
      assert.doesNotMatch(await res.text(), /outside the bundle|SECRET/, c.name);
      // (A path that URL parsing already lifts out of /ui/ never reaches these routes.)
      if (new URL(c.path, 'http://127.0.0.1').pathname.startsWith('/ui/')) assert.equal(res.headers.get('content-security-policy'), DASHBOARD_CSP, c.name);
    }
  } finally {
    b.cleanup();
  }
});

test('a bundle that was not built is a 503 saying how to build it', async () => {
  const d = tempDir();
  try {
    const res = await appFor(join(d.path, 'no-such-dir')).request('/ui/');
    assert.equal(res.status, 503);
    assert.match(await res.text(), /The dashboard is not built: .*index\.html is missing\.\nBuild it with `npm run build`/);
  } finally {
    d.cleanup();
  }
});
