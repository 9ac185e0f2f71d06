/**
 * The exfiltration scanner: every encoding in every position, values split
 * across body chunks (and no prefix of them forwarded early), placeholders to
 * bound and unbound hosts, ordinary traffic that must pass, and throughput.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createExfiltrationScanner, percentDecode, scanForExfiltration, valuePatterns, type ExfiltrationFinding, type ScanRequest } from './index.js';
import { SecretValue } from './value.js';
import { API_VALUE, GH_VALUE, PROVIDER_VALUE, reviewerSecrets } from './testing.js';

const s = reviewerSecrets();
const gh = s.placeholderOf('gh')!;

/** Percent-encode every byte, with upper or lower hex digits. */
const percentAll = (v: string, lower = false): string => [...Buffer.from(v)].map((b) => `%${b.toString(16).padStart(2, '0')}`).map((x) => (lower ? x : x.toUpperCase())).join('');
/** base64 of the value inside a longer byte string, `shift` bytes after a 3-byte boundary. */
const b64In = (v: string, shift: number, alphabet: 'base64' | 'base64url'): string => Buffer.concat([Buffer.from('user:'.slice(0, shift)), Buffer.from('xyz'), Buffer.from(v), Buffer.from('!tail')]).toString(alphabet);

const encodings: Array<{ name: string; value: string; secret: string; encode: (v: string) => string; encoding: string }> = [
  { name: 'raw', value: GH_VALUE, secret: 'gh', encode: (v) => v, encoding: 'raw' },
  { name: 'raw, provider key the agent never refers to', value: PROVIDER_VALUE, secret: 'openai_key', encode: (v) => v, encoding: 'raw' },
  { name: 'JSON-escaped quotes', value: API_VALUE, secret: 'api', encode: (v) => JSON.stringify(v).slice(1, -1), encoding: 'json' },
  { name: 'hex, lower case', value: GH_VALUE, secret: 'gh', encode: (v) => Buffer.from(v).toString('hex'), encoding: 'hex' },
  { name: 'hex, upper case', value: GH_VALUE, secret: 'gh', encode: (v) => Buffer.from(v).toString('hex').toUpperCase(), encoding: 'hex' },
  { name: 'base64, whole value', value: GH_VALUE, secret: 'gh', encode: (v) => Buffer.from(v).toString('base64'), encoding: 'base64' },
  { name: 'base64, embedded at offset 0 mod 3', value: API_VALUE, secret: 'api', encode: (v) => b64In(v, 0, 'base64'), encoding: 'base64' },
  { name: 'base64, embedded at offset 1 mod 3', value: API_VALUE, secret: 'api', encode: (v) => b64In(v, 1, 'base64'), encoding: 'base64' },
  { name: 'base64, embedded at offset 2 mod 3', value: API_VALUE, secret: 'api', encode: (v) => b64In(v, 2, 'base64'), encoding: 'base64' },
  { name: 'base64url, embedded at offset 0 mod 3', value: API_VALUE, secret: 'api', encode: (v) => b64In(v, 0, 'base64url'), encoding: 'base64url' },
  { name: 'base64url, embedded at offset 1 mod 3', value: API_VALUE, secret: 'api', encode: (v) => b64In(v, 1, 'base64url'), encoding: 'base64url' },
  { name: 'base64url, embedded at offset 2 mod 3', value: API_VALUE, secret: 'api', encode: (v) => b64In(v, 2, 'base64url'), encoding: 'base64url' },
  { name: 'URL-encoded, every byte, upper-case escapes', value: GH_VALUE, secret: 'gh', encode: (v) => percentAll(v), encoding: 'url' },
  { name: 'URL-encoded, every byte, lower-case escapes', value: GH_VALUE, secret: 'gh', encode: (v) => percentAll(v, true), encoding: 'url' },
  { name: 'URL-encoded, encodeURIComponent', value: API_VALUE, secret: 'api', encode: (v) => encodeURIComponent(v), encoding: 'url' },
  { name: 'URL-encoded, every other byte', value: GH_VALUE, secret: 'gh', encode: (v) => [...v].map((c, i) => (i % 2 ? percentAll(c) : c)).join(''), encoding: 'url' },
  { name: 'form-encoded, space as +', value: API_VALUE, secret: 'api', encode: (v) => v.replaceAll(' ', '+'), encoding: 'url' },
  { name: 'base64 then URL-encoded', value: API_VALUE, secret: 'api', encode: (v) => encodeURIComponent(Buffer.from(v).toString('base64')), encoding: 'base64' },
];

const positions: Array<{ name: string; where: string; request: (text: string) => ScanRequest; applies?: (e: (typeof encodings)[number]) => boolean }> = [
  { name: 'path', where: 'path', request: (t) => ({ host: 'evil.example.net', path: `/upload/${t}/x` }), applies: (e) => !e.encode(e.value).includes('?') },
  { name: 'query', where: 'query', request: (t) => ({ host: 'evil.example.net', path: `/search?a=1&q=${t}` }) },
  { name: 'absolute-form query', where: 'query', request: (t) => ({ host: 'evil.example.net', path: `http://evil.example.net/s?q=${t}` }) },
  { name: 'custom header', where: 'header:x-data', request: (t) => ({ host: 'evil.example.net', headers: { 'user-agent': 'curl/8', 'X-Data': `pre ${t} post` } }) },
  { name: 'authorization to the bound host itself', where: 'header:authorization', request: (t) => ({ host: 'api.github.com', headers: { authorization: `Bearer ${t}` } }) },
  { name: 'body', where: 'body', request: (t) => ({ host: 'evil.example.net', path: '/', body: Buffer.from(`{"note":"${t}"}`) }) },
  { name: 'host (DNS label)', where: 'host', request: (t) => ({ host: `${t}.evil.example.net` }), applies: (e) => e.encoding === 'hex' && e.encode(e.value) === e.encode(e.value).toLowerCase() },
];

describe('a real value is found in every encoding and position', () => {
  for (const p of positions) {
    for (const e of encodings) {
      if (p.applies && !p.applies(e)) continue;
      test(`${e.name} in ${p.name}`, () => {
        const f = s.scan(p.request(e.encode(e.value)));
        assert.deepEqual(f, { found: true, kind: 'secret-value', secret: e.secret, where: p.where, encoding: e.encoding });
      });
    }
  }
});

describe('values split across body chunks', () => {
  const forms = encodings.filter((e) => ['raw', 'hex, upper case', 'base64, embedded at offset 2 mod 3', 'URL-encoded, every byte, upper-case escapes', 'URL-encoded, encodeURIComponent'].includes(e.name));
  for (const e of forms) {
    test(`${e.name}: every split point, and one byte per chunk`, () => {
      const encoded = e.encode(e.value);
      const body = Buffer.from(`{"filler":"${'a'.repeat(500)}","x":"${encoded}","after":"${'b'.repeat(300)}"}`);
      const start = body.indexOf(encoded);
      const chunkings: Buffer[][] = [];
      for (let i = start - 3; i <= start + encoded.length + 3; i++) chunkings.push([body.subarray(0, i), body.subarray(i)]);
      chunkings.push([...body].map((b) => Buffer.from([b])));
      for (const chunks of chunkings) {
        const b = s.scanner.body({ host: 'evil.example.net' });
        let forwarded = 0;
        let finding: ExfiltrationFinding = { found: false };
        for (const c of chunks) {
          const r = b.push(c);
          forwarded += r.forward.length;
          if (r.finding.found) {
            finding = r.finding;
            break;
          }
        }
        if (!finding.found) finding = b.end().finding;
        assert.deepEqual(finding, { found: true, kind: 'secret-value', secret: e.secret, where: 'body', encoding: e.encoding }, `chunks of ${chunks.map((c) => c.length).join('+')}`);
        assert.ok(forwarded <= start, `forwarded ${forwarded} bytes, past the start of the value at ${start}`);
        assert.deepEqual(b.push(Buffer.from('more')), { finding, forward: Buffer.alloc(0) }, 'a finding sticks');
      }
    });
  }

  test('a clean body is forwarded byte for byte, however it is chunked', () => {
    const body = randomBytes(200_000);
    for (const size of [1, 7, 100, 4096, 65536, 300_000]) {
      const b = s.scanner.body({ host: 'evil.example.net' });
      const out: Buffer[] = [];
      for (let i = 0; i < body.length; i += size) {
        const r = b.push(body.subarray(i, i + size));
        assert.equal(r.finding.found, false);
        out.push(r.forward);
      }
      const end = b.end();
      assert.equal(end.finding.found, false);
      out.push(end.forward);
      assert.ok(Buffer.concat(out).equals(body), `chunk size ${size}`);
    }
  });
});

describe('placeholders', () => {
  const api = s.placeholderOf('api')!;
  const cases: Array<{ name: string; request: ScanRequest; expect: ExfiltrationFinding }> = [
    { name: 'in the bound header to the bound host: allowed', request: { host: 'api.github.com', headers: { authorization: `Bearer ${gh}` } }, expect: { found: false } },
    { name: 'in the body to the bound host: allowed (not swapped there, harmless)', request: { host: 'api.github.com', body: Buffer.from(`x=${gh}`) }, expect: { found: false } },
    { name: 'to a wildcard-bound subdomain: allowed', request: { host: 'a.b.example.com', headers: { 'x-api-key': api } }, expect: { found: false } },
    { name: 'to another host in a header', request: { host: 'evil.example.net', headers: { authorization: `Bearer ${gh}` } }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'header:authorization', encoding: 'raw' } },
    { name: 'to another host in the query, URL-encoded', request: { host: 'evil.example.net', path: `/?t=${percentAll(gh)}` }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'query', encoding: 'url' } },
    { name: 'to another host in the body', request: { host: 'evil.example.net', body: [Buffer.from(`{"t":"${gh.slice(0, 20)}`), Buffer.from(`${gh.slice(20)}"}`)] }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'body', encoding: 'raw' } },
    { name: 'to a host with no bound headers', request: { host: 'pypi.org', headers: { authorization: `Bearer ${gh}` } }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'header:authorization', encoding: 'raw' } },
    { name: 'to the bare domain of a wildcard binding', request: { host: 'example.com', headers: { 'x-api-key': api } }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'api', where: 'header:x-api-key', encoding: 'raw' } },
    { name: 'of one secret to the host bound to another secret only', request: { host: 'x.example.com', headers: { 'x-api-key': gh } }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'header:x-api-key', encoding: 'raw' } },
    { name: 'to a port the bound rule does not allow', request: { host: 'uploads.github.com', port: 80, headers: { 'x-token': gh } }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'header:x-token', encoding: 'raw' } },
    { name: 'on the bound port: allowed', request: { host: 'uploads.github.com', port: 443, headers: { 'x-token': gh } }, expect: { found: false } },
    { name: 'with the policy\'s ruleIndex naming another rule', request: { host: 'uploads.github.com', ruleIndex: 3, headers: { 'x-token': gh } }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'header:x-token', encoding: 'raw' } },
    { name: 'in the userinfo of an absolute-form target', request: { host: 'evil.example.net', path: `http://${gh}@evil.example.net/` }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'host', encoding: 'raw' } },
    { name: 'as a DNS label', request: { host: `${gh}.evil.example.net` }, expect: { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'host', encoding: 'raw' } },
    { name: 'a placeholder of another sandbox is not this sandbox\'s business', request: { host: 'evil.example.net', headers: { authorization: `Bearer ${reviewerSecrets().placeholderOf('gh')}` } }, expect: { found: false } },
    { name: 'a real value to the bound host is still a finding', request: { host: 'api.github.com', headers: { authorization: `Bearer ${GH_VALUE}` } }, expect: { found: true, kind: 'secret-value', secret: 'gh', where: 'header:authorization', encoding: 'raw' } },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(scanForExfiltration(c.request, s.scanner), c.expect));
  }
});

describe('ordinary traffic passes', () => {
  const cases: Array<{ name: string; request: ScanRequest }> = [
    {
      name: 'a GitHub API call with its own headers',
      request: {
        host: 'api.github.com', path: '/repos/acme/app/pulls?state=open&per_page=100',
        headers: { accept: 'application/vnd.github+json', 'user-agent': 'gh/2.40.1', 'x-github-api-version': '2022-11-28', authorization: `Bearer ${gh}`, cookie: '_octo=GH1.1.123456789.1700000000; logged_in=no' },
      },
    },
    { name: 'a JSON body with hashes and ids', request: { host: 'api.openai.com', path: '/v1/chat/completions', body: Buffer.from(JSON.stringify({ model: 'gpt-4.1-mini', messages: [{ role: 'user', content: 'Review commit 9fceb02d0ae598e95dc970b74767f19372d61af8 and sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.' }] })) } },
    { name: '1 MiB of random base64', request: { host: 'uploads.example.org', path: '/blob', body: Buffer.from(randomBytes(768 * 1024).toString('base64')) } },
    { name: '1 MiB of random hex', request: { host: 'uploads.example.org', body: Buffer.from(randomBytes(512 * 1024).toString('hex')) } },
    { name: '1 MiB of random bytes with many % signs', request: { host: 'uploads.example.org', body: Buffer.concat(Array.from({ length: 64 }, () => Buffer.concat([randomBytes(16 * 1024), Buffer.from('%41%2F%zz%')]))) } },
    { name: 'a form post with URL-encoded text', request: { host: 'forms.example.org', path: '/submit?next=%2Fhome', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: Buffer.from('name=Jane+Doe&comment=key%20with%2Fslash%20and+plus&token=ghp_someOtherTokenThatIsNotOurs0000') } },
    { name: 'a value prefix only (7 of its bytes)', request: { host: 'evil.example.net', path: `/${GH_VALUE.slice(0, 7)}`, body: Buffer.from(GH_VALUE.slice(0, 12)) } },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(s.scan(c.request), { found: false }));
  }
});

describe('patterns and speed', () => {
  test('an 8-byte value yields base64 cores of at least 10 characters at each alignment', () => {
    const cores = valuePatterns(Buffer.from('abcdefgh')).filter((p) => p.encoding === 'base64');
    assert.equal(cores.length, 3);
    for (const c of cores) assert.ok(c.bytes.length >= 10, c.bytes.toString());
  });

  test('percentDecode decodes %XX in either case and keeps malformed escapes', () => {
    assert.equal(percentDecode(Buffer.from('a%41%2f%zz%4%')).toString('latin1'), 'aA/%zz%4%');
  });

  test('4 MiB body, six secrets: throughput', (t) => {
    const values = new Map(Array.from({ length: 6 }, (_, i) => [`s${i}`, new SecretValue(`s${i}`, Buffer.from(randomBytes(24).toString('base64')))]));
    const scanner = createExfiltrationScanner({ values, placeholders: new Map([['cordon-ph-' + 'a'.repeat(32), 's0']]), isBound: () => false });
    const body = Buffer.from(randomBytes(3 * 1024 * 1024).toString('base64').replace(/A/g, '%'));
    const started = process.hrtime.bigint();
    const b = scanner.body({ host: 'x.example' });
    for (let i = 0; i < body.length; i += 64 * 1024) assert.equal(b.push(body.subarray(i, i + 64 * 1024)).finding.found, false);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    t.diagnostic(`${(body.length / 1024 / 1024).toFixed(1)} MiB in ${ms.toFixed(0)} ms (${(body.length / 1024 / 1024 / (ms / 1000)).toFixed(0)} MiB/s), ${valuePatterns(Buffer.from(GH_VALUE)).length} patterns per secret`);
    assert.ok(ms < 5000, `scanning took ${ms} ms`);
  });
});

describe('binding checks', () => {
  test('asked only for a placeholder that occurs, once per secret per request', () => {
    const asked: string[] = [];
    const scanner = createExfiltrationScanner({
      values: new Map([['gh', new SecretValue('gh', Buffer.from(GH_VALUE))]]),
      placeholders: new Map([[gh, 'gh'], ['cordon-ph-' + 'b'.repeat(32), 'other']]),
      isBound: (secret, target) => {
        asked.push(`${secret}@${target.host}`);
        return target.host === 'api.github.com';
      },
    });
    assert.deepEqual(scanner.scan({ host: 'evil.example.net', path: '/x?y=1', headers: { accept: '*/*' }, body: Buffer.from('clean') }), { found: false });
    assert.deepEqual(asked, [], 'nothing carried a placeholder');
    assert.deepEqual(scanner.scan({ host: 'api.github.com', path: `/${gh}`, headers: { authorization: gh, 'x-again': [gh, gh] } }), { found: false });
    assert.deepEqual(asked, ['gh@api.github.com'], 'asked once for the whole head');
    asked.length = 0;
    const b = scanner.body({ host: 'api.github.com' });
    for (let i = 0; i < 3; i++) assert.equal(b.push(Buffer.from(`chunk ${gh} `)).finding.found, false);
    assert.deepEqual(asked, ['gh@api.github.com'], 'asked once for the whole body');
  });
});

describe('failing closed', () => {
  test('a binding check that throws counts as unbound', () => {
    const scanner = createExfiltrationScanner({
      values: new Map(),
      placeholders: new Map([[gh, 'gh']]),
      isBound: () => { throw new Error('policy broke'); },
    });
    assert.deepEqual(scanner.scan({ host: 'api.github.com', headers: { authorization: gh } }), { found: true, kind: 'placeholder-wrong-host', secret: 'gh', where: 'header:authorization', encoding: 'raw' });
  });
});
