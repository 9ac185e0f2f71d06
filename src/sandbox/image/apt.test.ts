import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EnvironmentError } from '../../errors/index.js';
import { findDebianMirror, parseAptShow, parseDeb822Sources, parseOneLineSources, parsePinnedDepends } from './apt.js';

const deb822 = `Types: deb deb-src
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main

Types: deb-src
URIs: http://src-only.example/debian
Suites: bookworm
Components: main
`;

test('parseDeb822Sources keeps enabled deb stanzas', () => {
  assert.deepEqual(parseDeb822Sources(deb822), [
    { uri: 'http://mirror.example/debian', suites: ['bookworm', 'bookworm-updates'], components: ['main', 'contrib'] },
    { uri: 'http://mirror.example/debian-security', suites: ['bookworm-security'], components: ['main'] },
  ]);
});

const oneLine: [string, string, { uri: string; suites: string[]; components: string[] }[]][] = [
  ['plain', 'deb http://m.example/debian bookworm main', [{ uri: 'http://m.example/debian', suites: ['bookworm'], components: ['main'] }]],
  ['with options', 'deb [arch=amd64 signed-by=/k.gpg] https://m.example/debian/ bookworm main non-free', [{ uri: 'https://m.example/debian/', suites: ['bookworm'], components: ['main', 'non-free'] }]],
  ['commented out', '# deb http://m.example/debian bookworm main', []],
  ['source only', 'deb-src http://m.example/debian bookworm main', []],
];
for (const [name, text, want] of oneLine) {
  test(`parseOneLineSources: ${name}`, () => assert.deepEqual(parseOneLineSources(text), want));
}

function aptDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-apt-test-'));
  mkdirSync(join(dir, 'sources.list.d'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

test('findDebianMirror picks the source serving the suite from main, without a trailing slash', () => {
  const dir = aptDir({
    'sources.list': 'deb http://other.example/ubuntu jammy main\n',
    'sources.list.d/debian.sources': deb822,
    'sources.list.d/extra.list.disabled': 'deb http://ignored.example/debian bookworm main\n',
  });
  try {
    assert.equal(findDebianMirror('bookworm', dir), 'http://mirror.example/debian');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('findDebianMirror says how to fix a missing mirror', () => {
  const dir = aptDir({ 'sources.list': 'deb http://m.example/debian bullseye main\n' });
  try {
    assert.throws(() => findDebianMirror('bookworm', dir), (err: unknown) => {
      assert.ok(err instanceof EnvironmentError);
      assert.equal(err.code, 'env-no-mirror');
      assert.match(err.message, /no apt source serves Debian "bookworm" main/);
      assert.match(err.fix ?? '', /apt-get update/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('parseAptShow splits stanzas', () => {
  const text = 'Package: linux-image-amd64\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n\nPackage: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\n\n';
  assert.deepEqual(parseAptShow(text).map((s) => [s['Package'], s['Version']]), [
    ['linux-image-amd64', '6.1.192-2'],
    ['busybox-static', '1:1.35.0-4+deb12u1+b1'],
  ]);
});

const pinned: [string, string, { name: string; version: string } | undefined][] = [
  ['exact pin', 'linux-image-6.1.0-56-amd64 (= 6.1.192-2)', { name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2' }],
  ['pin after other deps', 'kmod, linux-image-6.1.0-56-amd64 (= 6.1.192-2)', { name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2' }],
  ['unpinned', 'linux-image-6.1.0-56-amd64', undefined],
  ['range, not a pin', 'linux-image-6.1.0-56-amd64 (>= 6.1)', undefined],
  ['pin on another package', 'linux-base (= 4.9)', undefined],
];
for (const [name, depends, want] of pinned) {
  test(`parsePinnedDepends: ${name}`, () => assert.deepEqual(parsePinnedDepends(depends, /^linux-image-\d/), want));
}
