/**
 * Table tests of egress host patterns, host matching and CIDR ranges: each
 * rejected input is checked for the reason it gives, not only for rejection.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { hostMatches, validateCidr, validateHostPattern } from './index.js';

describe('validateHostPattern accepts and normalises', () => {
  const cases: { name: string; input: string; normalized: string }[] = [
    { name: 'exact host', input: 'api.github.com', normalized: 'api.github.com' },
    { name: 'upper case is lowered', input: 'API.GitHub.COM', normalized: 'api.github.com' },
    { name: 'trailing dot dropped', input: 'pypi.org.', normalized: 'pypi.org' },
    { name: 'wildcard over a registrable domain', input: '*.pythonhosted.org', normalized: '*.pythonhosted.org' },
    { name: 'wildcard over a domain under a multi-label suffix', input: '*.example.co.uk', normalized: '*.example.co.uk' },
    { name: 'exact host under a shared hosting suffix', input: 'myproject.github.io', normalized: 'myproject.github.io' },
    { name: 'hyphens and digits inside labels', input: 'eu-west-1.s3.example.net', normalized: 'eu-west-1.s3.example.net' },
    { name: 'punycode name', input: 'xn--bcher-kva.example', normalized: 'xn--bcher-kva.example' },
    { name: 'surrounding spaces trimmed', input: '  pypi.org ', normalized: 'pypi.org' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(validateHostPattern(c.input), { ok: true, normalized: c.normalized });
    });
  }
});

describe('validateHostPattern rejects with a reason and a fix', () => {
  const cases: { name: string; input: string; problem: RegExp; fix: RegExp }[] = [
    { name: 'empty', input: '', problem: /empty/, fix: /api\.example\.com/ },
    { name: 'star', input: '*', problem: /matches every host/, fix: /list the hosts/ },
    { name: 'star dot star', input: '*.*', problem: /matches every host/, fix: /list the hosts/ },
    { name: 'wildcard over .com', input: '*.com', problem: /top-level domain "\.com"/, fix: /\*\.example\.com/ },
    { name: 'wildcard over an unknown TLD', input: '*.internal', problem: /top-level domain "\.internal"/, fix: /example/ },
    { name: 'wildcard over co.uk', input: '*.co.uk', problem: /public suffix "\.co\.uk"/, fix: /\*\.example\.co\.uk/ },
    { name: 'wildcard over com.au', input: '*.COM.AU', problem: /public suffix "\.com\.au"/, fix: /example/ },
    { name: 'wildcard over github.io', input: '*.github.io', problem: /anyone can create a subdomain/, fix: /myproject\.github\.io/ },
    { name: 'wildcard over amazonaws.com', input: '*.amazonaws.com', problem: /anyone can create a subdomain/, fix: /exact hosts/ },
    { name: 'bare TLD', input: 'com', problem: /single label/, fix: /fully qualified/ },
    { name: 'single local name', input: 'localhost', problem: /single label/, fix: /fully qualified/ },
    { name: 'https scheme', input: 'https://api.github.com/v3', problem: /URL scheme \("https:\/\/"\)/, fix: /host: "api\.github\.com"$/ },
    { name: 'path', input: 'github.com/org/repo', problem: /includes a path/, fix: /host: "github\.com".*rules:/ },
    { name: 'query', input: 'github.com?x=1', problem: /includes a path/, fix: /github\.com/ },
    { name: 'port', input: 'api.github.com:8443', problem: /includes a port/, fix: /ports: \[8443\]/ },
    { name: 'user info', input: 'me@github.com', problem: /user information/, fix: /secrets:/ },
    { name: 'IPv4 literal', input: '10.1.2.3', problem: /is an IP address/, fix: /cidr: "10\.1\.2\.3\/32"/ },
    { name: 'IPv6 literal', input: '::1', problem: /is an IP address/, fix: /cidr: "::1\/128"/ },
    { name: 'bracketed IPv6 literal', input: '[2001:db8::1]', problem: /is an IP address/, fix: /cidr: "2001:db8::1\/128"/ },
    { name: 'numeric last label', input: '10.1.2', problem: /numeric label/, fix: /cidr:/ },
    { name: 'wildcard in the middle', input: 'api.*.com', problem: /whole leftmost label/, fix: /\*\.example\.com/ },
    { name: 'wildcard inside a label', input: 'a*b.example.com', problem: /whole leftmost label/, fix: /\*\.example\.com/ },
    { name: 'wildcard prefix on a label', input: '*api.example.com', problem: /whole leftmost label/, fix: /exact hosts/ },
    { name: 'double wildcard', input: '*.*.example.com', problem: /whole leftmost label/, fix: /example/ },
    { name: 'leading dot', input: '.example.com', problem: /empty label/, fix: /extra dot/ },
    { name: 'two dots', input: 'a..example.com', problem: /empty label/, fix: /extra dot/ },
    { name: 'label over 63 characters', input: `${'a'.repeat(64)}.example.com`, problem: /longer than 63/, fix: /63/ },
    { name: 'name over 253 characters', input: `${'a.'.repeat(127)}com`, problem: /longer than 253/, fix: /shorter/ },
    { name: 'underscore', input: 'my_host.example.com', problem: /invalid label "my_host"/, fix: /spelling/ },
    { name: 'label starting with a hyphen', input: '-a.example.com', problem: /invalid label "-a"/, fix: /spelling/ },
    { name: 'whitespace inside', input: 'a b.example.com', problem: /whitespace/, fix: /one host name/ },
    { name: 'unicode name', input: 'bücher.example', problem: /non-ASCII/, fix: /xn--bcher-kva\.example/ },
    { name: 'cordon service name', input: 'gateway.cordon.internal', problem: /reserved for cordon/, fix: /remove this rule/ },
    { name: 'wildcard over cordon services', input: '*.cordon.internal', problem: /reserved for cordon/, fix: /remove this rule/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const r = validateHostPattern(c.input);
      assert.equal(r.ok, false, `${c.input} was accepted`);
      if (r.ok) return;
      assert.match(r.problem, c.problem);
      assert.match(r.fix, c.fix);
    });
  }
});

describe('hostMatches', () => {
  const cases: { name: string; pattern: string; host: string; want: boolean }[] = [
    { name: 'exact', pattern: 'api.github.com', host: 'api.github.com', want: true },
    { name: 'exact, case-insensitive', pattern: 'api.github.com', host: 'API.GitHub.com', want: true },
    { name: 'exact, trailing dot on host', pattern: 'api.github.com', host: 'api.github.com.', want: true },
    { name: 'exact does not match a subdomain', pattern: 'github.com', host: 'api.github.com', want: false },
    { name: 'exact does not match a longer name', pattern: 'github.com', host: 'evilgithub.com', want: false },
    { name: 'wildcard, one label below', pattern: '*.example.com', host: 'a.example.com', want: true },
    { name: 'wildcard, two labels below', pattern: '*.example.com', host: 'a.b.example.com', want: true },
    { name: 'wildcard does not match the domain itself', pattern: '*.example.com', host: 'example.com', want: false },
    { name: 'wildcard does not match a look-alike suffix', pattern: '*.example.com', host: 'evilexample.com', want: false },
    { name: 'wildcard does not match a parent', pattern: '*.a.example.com', host: 'b.example.com', want: false },
    { name: 'empty label in host fails closed', pattern: '*.example.com', host: 'a..example.com', want: false },
    { name: 'leading dot in host fails closed', pattern: '*.example.com', host: '.example.com', want: false },
    { name: 'host with a path character fails closed', pattern: '*.example.com', host: 'evil.com/.example.com', want: false },
    { name: 'host with a port fails closed', pattern: 'example.com', host: 'example.com:443', want: false },
    { name: 'mid-label wildcard pattern matches nothing', pattern: 'api.*.com', host: 'api.x.com', want: false },
    { name: 'empty host', pattern: 'example.com', host: '', want: false },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.equal(hostMatches(c.pattern, c.host), c.want, `${c.pattern} vs ${c.host}`);
    });
  }
});

describe('validateCidr', () => {
  const good: { input: string; normalized: string }[] = [
    { input: '10.0.0.0/8', normalized: '10.0.0.0/8' },
    { input: '192.168.1.7', normalized: '192.168.1.7/32' },
    { input: '192.168.1.0/24', normalized: '192.168.1.0/24' },
    { input: '2001:DB8::/32', normalized: '2001:db8::/32' },
    { input: '2001:db8:0:0:0:0:0:1/128', normalized: '2001:db8::1/128' },
    { input: '::ffff:10.0.0.0/104', normalized: '::ffff:a00:0/104' },
  ];
  for (const c of good) {
    test(`accepts ${c.input}`, () => {
      const r = validateCidr(c.input);
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(r.normalized, c.normalized);
    });
  }
  const bad: { input: string; problem: RegExp; fix: RegExp }[] = [
    { input: '', problem: /empty/, fix: /10\.0\.0\.0\/8/ },
    { input: '10.0.0.0/33', problem: /not a prefix length for IPv4/, fix: /\/1 to \/32/ },
    { input: '2001:db8::/129', problem: /not a prefix length for IPv6/, fix: /\/1 to \/128/ },
    { input: '10.0.0.0/x', problem: /not a prefix length/, fix: /\/32/ },
    { input: '10.0.0/8', problem: /not an IP address/, fix: /prefix length/ },
    { input: 'example.com/24', problem: /not an IP address/, fix: /prefix length/ },
    { input: '10.0.0.0/8/8', problem: /more than one "\/"/, fix: /prefix length/ },
    { input: '10.1.2.3/8', problem: /bits set after the \/8 prefix/, fix: /"10\.0\.0\.0\/8"/ },
    { input: '2001:db8::1/32', problem: /bits set after the \/32 prefix/, fix: /"2001:db8::\/32"/ },
    { input: '0.0.0.0/0', problem: /every IPv4 address/, fix: /at least \/1/ },
    { input: '::/0', problem: /every IPv6 address/, fix: /at least \/1/ },
  ];
  for (const c of bad) {
    test(`rejects "${c.input}"`, () => {
      const r = validateCidr(c.input);
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.match(r.problem, c.problem);
      assert.match(r.fix, c.fix);
    });
  }
});
