/**
 * Feature extraction: which events carry which behaviour, and how paths,
 * commands and hosts are reduced to comparable values.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { commandKey, features, pathKey, sensitiveClassOf, siteOf, suffixOf } from './index.js';

test('pathKey: home directories, system files, hidden directories', async (t) => {
  const cases: [string, string, string][] = [
    ['root home ssh key', '/root/.ssh/id_rsa', '~/.ssh'],
    ['user home aws credentials', '/home/agent/.aws/credentials', '~/.aws'],
    ['tilde path', '~/.netrc', '~/.netrc'],
    ['workspace source file', '/workspace/app/src/main.py', '/workspace'],
    ['git metadata inside a repo', '/workspace/app/.git/config', '/workspace/…/.git'],
    ['system file keeps two parts', '/etc/shadow', '/etc/shadow'],
    ['proc of another process', '/proc/1/environ', '/proc/1'],
    ['dot segments are not hidden dirs', '/workspace/./app/../x', '/workspace'],
    ['root itself', '/', '/'],
  ];
  for (const [name, path, key] of cases) await t.test(name, () => assert.equal(pathKey(path), key));
});

test('commandKey: program basename and first argument, file-like arguments by extension', async (t) => {
  const cases: [string, string[], string | undefined, string | undefined][] = [
    ['subcommand kept', ['git', 'status'], 'git', 'git status'],
    ['absolute program path', ['/usr/bin/python3', 'run.py'], 'python3', 'python3 *.py'],
    ['path argument', ['cat', '/etc/passwd'], 'cat', 'cat <path>'],
    ['flag kept', ['ls', '-la'], 'ls', 'ls -la'],
    ['no argument', ['make'], 'make', 'make'],
    ['empty argv', [], undefined, undefined],
  ];
  for (const [name, argv, program, withArg] of cases) {
    await t.test(name, () => {
      const k = commandKey(argv);
      assert.equal(k?.program, program);
      assert.equal(k?.withArg, withArg);
    });
  }
});

test('siteOf: registrable domain without a public suffix list', () => {
  assert.equal(siteOf('files.pythonhosted.org'), 'pythonhosted.org');
  assert.equal(siteOf('www.bbc.co.uk'), 'bbc.co.uk');
  assert.equal(siteOf('localhost'), 'localhost');
  assert.equal(siteOf('10.0.0.1'), '10.0.0.1');
});

test('suffixOf: the public suffix, approximately; IP literals as (ip)', async (t) => {
  for (const [name, host, suffix] of [
    ['generic TLD', 'files.pythonhosted.org', 'org'],
    ['country code with a generic second level', 'www.bbc.co.uk', 'co.uk'],
    ['new TLD', 'x7k2-drop.xyz', 'xyz'],
    ['single label', 'localhost', 'localhost'],
    ['IPv4 literal', '203.0.113.9', '(ip)'],
    ['IPv6 literal', '2001:db8::1', '(ip)'],
  ] as const) await t.test(name, () => assert.equal(suffixOf(host), suffix));
});

test('sensitiveClassOf: credential paths by class, ordinary paths none', async (t) => {
  for (const [name, path, cls] of [
    ['root ssh key', '/root/.ssh/id_rsa', 'ssh'],
    ['user ssh key', '/home/agent/.ssh/id_ed25519', 'ssh'],
    ['tilde ssh config', '~/.ssh/config', 'ssh'],
    ['aws credentials', '/root/.aws/credentials', 'cloud'],
    ['gcloud', '/home/u/.config/gcloud/application_default_credentials.json', 'cloud'],
    ['shadow', '/etc/shadow', 'shadow'],
    ['netrc', '/home/agent/.netrc', 'netrc'],
    ['docker auth', '/root/.docker/config.json', 'registry-token'],
    ['kube config', '/root/.kube/config', 'kube'],
    ['process environment', '/proc/1/environ', 'process-env'],
    ['dotenv in a repo', '/workspace/app/.env', 'dotenv'],
    ['pem file', '/workspace/certs/server.key', 'private-key'],
    ['dot-dot walk into home', '/workspace/../root/.ssh/id_rsa', 'ssh'],
    ['ordinary source file', '/workspace/app/src/main.py', undefined],
    ['hosts file is not a secret', '/etc/hosts', undefined],
    ['kube cache is not the config', '/root/.kube/cache/discovery.json', undefined],
    ['shadow-like name elsewhere', '/workspace/etc/shadow', undefined],
  ] as const) await t.test(name, () => assert.equal(sensitiveClassOf(path), cls));
});

test('features: each event type yields its behaviour; unknown types yield undefined', async (t) => {
  const ts = '2026-01-01T00:00:00.000Z';
  await t.test('egress.request: domain (in the context of its suffix), suffix, host, port, one request', () => {
    const f = features({ ts, type: 'egress.request', data: { host: 'Files.PythonHosted.org.', port: 443 } });
    assert.deepEqual(f?.categories.map((c) => [c.feature, c.value]), [['domain', 'pythonhosted.org'], ['suffix', 'org'], ['host', 'files.pythonhosted.org'], ['port', '443']]);
    assert.equal(f?.categories[0]?.context, 'org');
    assert.deepEqual(f?.amounts, { requests: 1 });
  });
  await t.test('egress.refusals: the refusals a door only counted are requests; the hosts they named are seen, with their suffixes as one by one', () => {
    const f = features({ ts, type: 'egress.refusals', data: { count: 250, hosts: ['A.evil.example', 42, 'b.evil.xyz'], byDecision: { deny: { 'host-not-allowed': 250 } } } });
    assert.deepEqual(f?.amounts, { requests: 250 });
    assert.deepEqual(f?.categories.map((c) => [c.feature, c.value]), [
      ['domain', 'evil.example'], ['suffix', 'example'], ['host', 'a.evil.example'],
      ['domain', 'evil.xyz'], ['suffix', 'xyz'], ['host', 'b.evil.xyz'],
    ]);
  });
  await t.test('egress.close: bytes out', () => assert.deepEqual(features({ ts, type: 'egress.close', data: { bytesOut: 1234 } })?.amounts, { bytesOut: 1234 }));
  await t.test('llm.response: tokens in + out', () => assert.deepEqual(features({ ts, type: 'llm.response', data: { tokensIn: 10, tokensOut: 5 } })?.amounts, { tokens: 15 }));
  await t.test('tool.call: server/tool', () => assert.equal(features({ ts, type: 'tool.call', data: { server: 'github', tool: 'merge' } })?.categories[0]?.value, 'github/merge'));
  await t.test('malformed data is ignored, not thrown on', () => {
    const f = features({ ts, type: 'egress.request', data: { host: 42, port: -1 } });
    assert.deepEqual(f?.categories, []);
    assert.deepEqual(features({ ts, type: 'sandbox.exec', data: { argv: 'rm -rf /' } })?.categories, []);
    assert.deepEqual(features({ ts, type: 'egress.close', data: { bytesOut: Number.NaN } })?.amounts, {});
  });
  await t.test('known quiet type', () => assert.deepEqual(features({ ts, type: 'sandbox.ready', data: {} }), { categories: [], amounts: {} }));
  await t.test('unknown type', () => assert.equal(features({ ts, type: 'teleport.start', data: {} }), undefined));
});
