/** decideEgress: named cases asserting {result, reason, ruleId}, report mode, and a junk-input property test. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentSchema } from '../config/index.js';
import { decideEgress, createEgressDecider, EGRESS_REASONS, type EgressRequest, type EgressDecision } from './egress.js';
import type { EgressPolicy } from './egress-rules.js';
import { failClosed } from './index.js';
import { seededRandom } from '../util/random.js';

const config = AgentSchema.parse({
  egress: [
    {
      host: 'api.github.com', // 0
      ports: [443],
      secrets: { authorization: 'Bearer {{secret.github_token}}' },
      rules: [
        { method: 'POST', path: '/repos/*/*/pulls/*/merge', action: 'approve' },
        { method: 'DELETE', path: '/repos/**', action: 'deny' },
        { method: 'GET', path: '/repos/**', action: 'allow' },
        { path: '/user', action: 'allow' },
      ],
    },
    { host: '*.pythonhosted.org' }, // 1: default ports
    { host: 'example.com' }, // 2
    { host: '*.github.com', ports: [22] }, // 3
    { cidr: '10.1.2.0/24', ports: [8080] }, // 4
    { cidr: '2001:db8:1::/48' }, // 5
    { host: 'uploads.example.org', secrets: { 'x-api-key': '{{secret.upload_key}}' } }, // 6: intercepted for secrets only
    { host: 'files.example.net', rules: [{ path: '/public/*.txt', action: 'allow' }, { method: 'get', path: '/v*/items/*', action: 'allow' }] }, // 7
    { host: 'docs.kernel.org' }, // 8
  ],
});
const policy: EgressPolicy = { agent: 'reviewer', ...config };
const reportPolicy: EgressPolicy = { ...policy, egressMode: 'report' };
const rid = (i: number, j?: number) => `agents.reviewer.egress[${i}]${j === undefined ? '' : `.rules[${j}]`}`;

type Want = Pick<EgressDecision, 'result' | 'reason' | 'ruleId'> & Partial<Pick<EgressDecision, 'intercept' | 'internal' | 'host'>>;
const connect = (host: string, port = 443): EgressRequest => ({ host, port, scheme: 'connect' });
const http = (host: string, method: string, path: string, port = 443): EgressRequest => ({ host, port, method, path, scheme: 'https' });

const cases: Array<{ name: string; req: EgressRequest; want: Want }> = [
  // host globs and ports
  { name: 'exact host, CONNECT, intercepted', req: connect('api.github.com'), want: { result: 'allow', reason: 'host-allowed', ruleId: rid(0), intercept: true, host: 'api.github.com' } },
  { name: 'upper case and trailing dot are normalised', req: connect('API.GitHub.COM.'), want: { result: 'allow', reason: 'host-allowed', ruleId: rid(0), intercept: true, host: 'api.github.com' } },
  { name: 'port outside the exact rule names that rule', req: connect('api.github.com', 80), want: { result: 'deny', reason: 'port-not-allowed', ruleId: rid(0) } },
  { name: 'a later wildcard rule allows another port', req: connect('api.github.com', 22), want: { result: 'allow', reason: 'host-allowed', ruleId: rid(3) } },
  { name: '*.github.com does not match github.com', req: connect('github.com', 22), want: { result: 'deny', reason: 'host-not-allowed', ruleId: undefined } },
  { name: 'wildcard, default port 443', req: connect('files.pythonhosted.org'), want: { result: 'allow', reason: 'host-allowed', ruleId: rid(1) } },
  { name: 'wildcard, two levels deep, default port 80', req: connect('a.b.pythonhosted.org', 80), want: { result: 'allow', reason: 'host-allowed', ruleId: rid(1) } },
  { name: 'wildcard does not match the bare domain', req: connect('pythonhosted.org'), want: { result: 'deny', reason: 'host-not-allowed', ruleId: undefined } },
  { name: 'wildcard, port outside the defaults', req: connect('files.pythonhosted.org', 8443), want: { result: 'deny', reason: 'port-not-allowed', ruleId: rid(1) } },
  { name: 'suffix without a dot boundary', req: connect('evilpythonhosted.org'), want: { result: 'deny', reason: 'host-not-allowed', ruleId: undefined } },
  { name: 'allowed name as a prefix of another domain', req: connect('example.com.evil.net'), want: { result: 'deny', reason: 'host-not-allowed', ruleId: undefined } },
  { name: 'exact rule does not match subdomains', req: connect('www.example.com'), want: { result: 'deny', reason: 'host-not-allowed', ruleId: undefined } },
  { name: 'exact rule, plain HTTP on port 80', req: { host: 'example.com', port: 80, method: 'GET', path: '/', scheme: 'http' }, want: { result: 'allow', reason: 'host-allowed', ruleId: rid(2) } },
  // method and path rules
  { name: 'POST merge needs approval', req: http('api.github.com', 'POST', '/repos/o/r/pulls/7/merge'), want: { result: 'approve', reason: 'path-rule', ruleId: rid(0, 0), intercept: true } },
  { name: 'lower-case method, trailing slash, upper-case path still need approval', req: http('api.github.com', 'post', '/Repos/o/r/PULLS/7/merge/'), want: { result: 'approve', reason: 'path-rule', ruleId: rid(0, 0) } },
  { name: 'percent-encoded letters still need approval', req: http('api.github.com', 'POST', '/repos/o/r/pulls/7/%6Derge'), want: { result: 'approve', reason: 'path-rule', ruleId: rid(0, 0) } },
  { name: 'a query string does not dodge the rule', req: http('api.github.com', 'POST', '/repos/o/r/pulls/7/merge?x=/y'), want: { result: 'approve', reason: 'path-rule', ruleId: rid(0, 0) } },
  { name: 'DELETE under /repos/** is denied', req: http('api.github.com', 'DELETE', '/repos/o/r'), want: { result: 'deny', reason: 'path-rule', ruleId: rid(0, 1) } },
  { name: 'GET deep under /repos/** is allowed', req: http('api.github.com', 'GET', '/repos/o/r/issues/1/comments?page=2'), want: { result: 'allow', reason: 'path-rule', ruleId: rid(0, 2) } },
  { name: '** matches zero segments', req: http('api.github.com', 'GET', '/repos'), want: { result: 'allow', reason: 'path-rule', ruleId: rid(0, 2) } },
  { name: 'a rule without method matches every method', req: http('api.github.com', 'PUT', '/user'), want: { result: 'allow', reason: 'path-rule', ruleId: rid(0, 3) } },
  { name: 'no rule matches: deny', req: http('api.github.com', 'PATCH', '/orgs/acme'), want: { result: 'deny', reason: 'no-path-rule', ruleId: rid(0) } },
  { name: 'HEAD is not GET', req: http('api.github.com', 'HEAD', '/repos/o/r'), want: { result: 'deny', reason: 'no-path-rule', ruleId: rid(0) } },
  { name: '* matches inside one segment', req: http('files.example.net', 'GET', '/public/readme.txt'), want: { result: 'allow', reason: 'path-rule', ruleId: rid(7, 0), intercept: true } },
  { name: '* does not cross a slash', req: http('files.example.net', 'GET', '/public/a/readme.txt'), want: { result: 'deny', reason: 'no-path-rule', ruleId: rid(7) } },
  { name: 'prefix glob in a segment, method from config in lower case', req: http('files.example.net', 'GET', '/v2/items/9'), want: { result: 'allow', reason: 'path-rule', ruleId: rid(7, 1) } },
  { name: 'method mismatch falls through to deny', req: http('files.example.net', 'POST', '/v2/items/9'), want: { result: 'deny', reason: 'no-path-rule', ruleId: rid(7) } },
  { name: 'dot segments are refused', req: http('api.github.com', 'GET', '/repos/../user'), want: { result: 'deny', reason: 'bad-path', ruleId: rid(0) } },
  { name: 'encoded dot segments are refused', req: http('api.github.com', 'GET', '/repos/%2e%2e/user'), want: { result: 'deny', reason: 'bad-path', ruleId: rid(0) } },
  { name: 'an encoded slash is refused', req: http('api.github.com', 'GET', '/repos/o%2Fr'), want: { result: 'deny', reason: 'bad-path', ruleId: rid(0) } },
  { name: 'a double slash is refused', req: http('api.github.com', 'GET', '/repos//o'), want: { result: 'deny', reason: 'bad-path', ruleId: rid(0) } },
  { name: 'an absolute URI as path is refused', req: http('api.github.com', 'GET', 'https://api.github.com/user'), want: { result: 'deny', reason: 'bad-path', ruleId: rid(0) } },
  { name: 'a method with a space is refused', req: http('api.github.com', 'G ET', '/user'), want: { result: 'deny', reason: 'bad-method', ruleId: rid(0) } },
  { name: 'method without path on an intercepted host', req: { host: 'api.github.com', port: 443, method: 'GET' }, want: { result: 'deny', reason: 'bad-request', ruleId: rid(0) } },
  { name: 'an https request inside the tunnel must carry method and path', req: { host: 'api.github.com', port: 443, scheme: 'https' }, want: { result: 'deny', reason: 'bad-request', ruleId: rid(0) } },
  { name: 'bound secrets alone mean interception', req: http('uploads.example.org', 'PUT', '/anything/at/all'), want: { result: 'allow', reason: 'host-allowed', ruleId: rid(6), intercept: true } },
  // IP literals and cidr rules
  { name: 'IP literal inside a cidr rule', req: connect('10.1.2.3', 8080), want: { result: 'allow', reason: 'cidr-allowed', ruleId: rid(4), host: '10.1.2.3' } },
  { name: 'hex IP literal inside a cidr rule', req: connect('0x0a010203', 8080), want: { result: 'allow', reason: 'cidr-allowed', ruleId: rid(4), host: '10.1.2.3' } },
  { name: 'IPv4-mapped literal counts as its IPv4', req: connect('[::ffff:10.1.2.3]', 8080), want: { result: 'allow', reason: 'cidr-allowed', ruleId: rid(4) } },
  { name: 'cidr rule, port not listed', req: connect('10.1.2.3', 443), want: { result: 'deny', reason: 'port-not-allowed', ruleId: rid(4) } },
  { name: 'IP literal outside every cidr', req: connect('10.1.3.1', 8080), want: { result: 'deny', reason: 'ip-literal', ruleId: undefined } },
  { name: 'decimal loopback literal', req: connect('2130706433'), want: { result: 'deny', reason: 'ip-literal', ruleId: undefined, host: '127.0.0.1' } },
  { name: 'short octal metadata literal', req: connect('0251.0376.0251.0376', 80), want: { result: 'deny', reason: 'ip-literal', ruleId: undefined, host: '169.254.169.254' } },
  { name: 'IPv6 literal in brackets inside a cidr', req: connect('[2001:DB8:1::5]'), want: { result: 'allow', reason: 'cidr-allowed', ruleId: rid(5), host: '2001:db8:1::5' } },
  { name: 'IPv6 loopback literal', req: connect('[::1]'), want: { result: 'deny', reason: 'ip-literal', ruleId: undefined } },
  { name: 'IPv6 zone id is refused', req: connect('fe80::1%eth0'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  // internal names
  { name: 'LLM gateway', req: connect('llm.cordon.internal'), want: { result: 'allow', reason: 'internal', ruleId: undefined, internal: 'llm' } },
  { name: 'tools gateway, mixed case, trailing dot, plain HTTP', req: { host: 'MCP.Cordon.Internal.', port: 80, method: 'POST', path: '/mcp', scheme: 'http' }, want: { result: 'allow', reason: 'internal', ruleId: undefined, internal: 'mcp' } },
  { name: 'approvals service', req: connect('approvals.cordon.internal'), want: { result: 'allow', reason: 'internal', ruleId: undefined, internal: 'approvals' } },
  { name: 'unknown internal name', req: connect('metadata.cordon.internal'), want: { result: 'deny', reason: 'internal-unknown', ruleId: undefined } },
  { name: 'a name under an internal service name', req: connect('x.llm.cordon.internal'), want: { result: 'deny', reason: 'internal-unknown', ruleId: undefined } },
  { name: 'the internal domain itself', req: connect('cordon.internal'), want: { result: 'deny', reason: 'internal-unknown', ruleId: undefined } },
  { name: 'internal service on another port', req: connect('llm.cordon.internal', 8080), want: { result: 'deny', reason: 'port-not-allowed', ruleId: undefined } },
  // malformed hosts and ports
  { name: 'non-ASCII host (IDN not in punycode)', req: connect('exämple.com'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'Kelvin sign that lower-cases to k', req: connect('docs.\u212Aernel.org'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'full-width letters', req: connect('\uff45xample.com'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'punycode name is an ordinary name', req: connect('xn--exmple-cua.com'), want: { result: 'deny', reason: 'host-not-allowed', ruleId: undefined } },
  { name: 'empty label', req: connect('api..github.com'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'leading dot', req: connect('.example.com'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'empty host', req: connect(''), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'host with port', req: connect('example.com:443'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'percent-encoded host', req: connect('%65xample.com'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'numeric last label that is not an address', req: connect('1.2.3.999'), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'label longer than 63', req: connect(`${'a'.repeat(64)}.example.com`), want: { result: 'deny', reason: 'bad-host', ruleId: undefined } },
  { name: 'port 0', req: connect('example.com', 0), want: { result: 'deny', reason: 'bad-port', ruleId: undefined } },
  { name: 'port 65536', req: connect('example.com', 65536), want: { result: 'deny', reason: 'bad-port', ruleId: undefined } },
  { name: 'port as a string', req: { host: 'example.com', port: '443' as unknown as number }, want: { result: 'deny', reason: 'bad-port', ruleId: undefined } },
  { name: 'unknown scheme', req: { host: 'example.com', port: 443, scheme: 'ftp' as 'http' }, want: { result: 'deny', reason: 'bad-request', ruleId: undefined } },
];

for (const c of cases) {
  test(`decideEgress: ${c.name}`, () => {
    const got = decideEgress(policy, c.req);
    assert.deepEqual({ result: got.result, reason: got.reason, ruleId: got.ruleId }, { result: c.want.result, reason: c.want.reason, ruleId: c.want.ruleId });
    if (c.want.intercept !== undefined) assert.equal(got.intercept, c.want.intercept);
    if (c.want.internal !== undefined) assert.equal(got.internal, c.want.internal);
    if (c.want.host !== undefined) assert.equal(got.host, c.want.host);
    assert.equal(got.mode, undefined, 'enforce mode carries no mode marker');
    assert.ok((EGRESS_REASONS as readonly string[]).includes(got.reason), got.reason);
  });
}

test('at least 30 named decision cases', () => assert.ok(cases.length >= 30, `${cases.length}`));

const reportCases: Array<{ name: string; req: EgressRequest; want: EgressDecision }> = [
  {
    name: 'host not allowed becomes an allow with wouldDeny',
    req: connect('evil.example'),
    want: { result: 'allow', reason: 'report-only', mode: 'report', host: 'evil.example', wouldDeny: { result: 'deny', reason: 'host-not-allowed' } },
  },
  {
    name: 'port not allowed keeps the rule in wouldDeny',
    req: connect('example.com', 8443),
    want: { result: 'allow', reason: 'report-only', mode: 'report', ruleIndex: 2, host: 'example.com', wouldDeny: { result: 'deny', reason: 'port-not-allowed', ruleId: rid(2) } },
  },
  {
    name: 'a deny path rule is reported, not enforced',
    req: http('api.github.com', 'DELETE', '/repos/o/r'),
    want: { result: 'allow', reason: 'report-only', mode: 'report', ruleIndex: 0, intercept: true, host: 'api.github.com', wouldDeny: { result: 'deny', reason: 'path-rule', ruleId: rid(0, 1) } },
  },
  {
    name: 'an IP literal is reported (the address check after it still applies)',
    req: connect('127.0.0.1'),
    want: { result: 'allow', reason: 'report-only', mode: 'report', host: '127.0.0.1', wouldDeny: { result: 'deny', reason: 'ip-literal' } },
  },
  {
    name: 'approve stays approve',
    req: http('api.github.com', 'POST', '/repos/o/r/pulls/7/merge'),
    want: { result: 'approve', reason: 'path-rule', ruleId: rid(0, 0), ruleIndex: 0, intercept: true, host: 'api.github.com', mode: 'report' },
  },
  {
    name: 'a malformed host is still denied',
    req: connect('exämple.com'),
    want: { result: 'deny', reason: 'bad-host', mode: 'report' },
  },
  {
    name: 'an unknown internal name is still denied',
    req: connect('vault.cordon.internal'),
    want: { result: 'deny', reason: 'internal-unknown', host: 'vault.cordon.internal', mode: 'report' },
  },
  {
    name: 'an allowed host is simply allowed (intercepted: this agent holds secrets)',
    req: connect('example.com'),
    want: { result: 'allow', reason: 'host-allowed', ruleId: rid(2), ruleIndex: 2, intercept: true, host: 'example.com', mode: 'report' },
  },
];

for (const c of reportCases) {
  test(`decideEgress report mode: ${c.name}`, () => {
    assert.deepEqual(decideEgress(reportPolicy, c.req), c.want);
  });
}

test('exact host rules win over an earlier wildcard', () => {
  const p: EgressPolicy = { agent: 'a', egress: [{ host: '*.github.com' }, { host: 'api.github.com', rules: [{ path: '/meta', action: 'allow' }] }] };
  const d = decideEgress(p, http('api.github.com', 'GET', '/user'));
  assert.deepEqual([d.result, d.reason, d.ruleId], ['deny', 'no-path-rule', 'agents.a.egress[1]']);
  const other = decideEgress(p, connect('raw.github.com'));
  assert.deepEqual([other.result, other.reason, other.ruleId], ['allow', 'host-allowed', 'agents.a.egress[0]']);
});

test('a path glob that cannot be read denies the requests that reach it', () => {
  const p: EgressPolicy = { agent: 'a', egress: [{ host: 'api.example.com', rules: [{ method: 'POST', path: 'no-slash', action: 'deny' }, { action: 'allow' }] }] };
  const d = decideEgress(p, http('api.example.com', 'POST', '/x'));
  assert.deepEqual([d.result, d.reason, d.ruleId], ['deny', 'bad-rule', 'agents.a.egress[0].rules[0]']);
  const get = decideEgress(p, http('api.example.com', 'GET', '/x'));
  assert.deepEqual([get.result, get.reason, get.ruleId], ['allow', 'path-rule', 'agents.a.egress[0].rules[1]']);
});

test('rules the config loader would refuse match nothing', () => {
  const p = { agent: 'a', egress: [{ host: '*' }, { host: '*.com' }, { cidr: '0.0.0.0/0' }, { host: 'x.example.com', cidr: '10.0.0.0/8' }, {}] } as EgressPolicy;
  for (const req of [connect('example.com'), connect('10.0.0.1'), connect('x.example.com')]) {
    const d = decideEgress(p, req);
    assert.equal(d.result, 'deny', req.host);
  }
});

test('the built-in default agent (no egress) reaches only the internal services', () => {
  const p: EgressPolicy = { agent: 'default', ...AgentSchema.parse({}) };
  assert.equal(decideEgress(p, connect('example.com')).reason, 'host-not-allowed');
  assert.equal(decideEgress(p, connect('llm.cordon.internal')).reason, 'internal');
});

test('EGRESS_REASONS are unique kebab-case strings', () => {
  assert.equal(new Set(EGRESS_REASONS).size, EGRESS_REASONS.length);
  for (const r of EGRESS_REASONS) assert.match(r, /^[a-z0-9]+(-[a-z0-9]+)*$/);
});


test('property: random junk never throws and never allows an unknown host', () => {
  const rand = seededRandom(1234);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const chars = 'aAz09.-_:[]%/*?#@ \u0000\u212a\u00e4\uff45xX';
  const junkString = () => Array.from({ length: Math.floor(rand() * 30) }, () => pick([...chars])).join('');
  const junkValue = (): unknown => pick([() => junkString(), () => rand() * 70000 - 100, () => null, () => undefined, () => ({}), () => [1], () => NaN, () => 443])();
  const decideRaw = createEgressDecider(policy);
  const decideSafe = failClosed(decideRaw);
  const allowed = new Set(['host-allowed', 'cidr-allowed', 'internal', 'path-rule']);
  for (let i = 0; i < 5000; i++) {
    const req = {
      host: pick([junkString, junkValue, () => `${junkString()}.pythonhosted.org`, () => `10.1.2.${junkString()}`])(),
      port: junkValue(),
      method: pick([undefined, 'GET', junkString(), junkValue()]),
      path: pick([undefined, '/', `/${junkString()}`, junkValue()]),
      scheme: pick([undefined, 'connect', 'https', junkValue()]),
    } as unknown as EgressRequest;
    let d: EgressDecision | undefined;
    assert.doesNotThrow(() => { d = decideRaw(req); }, JSON.stringify(req));
    const safe = decideSafe(req);
    assert.ok(['allow', 'deny', 'approve'].includes(safe.result));
    assert.ok((EGRESS_REASONS as readonly string[]).includes(d!.reason), d!.reason);
    if (d!.result !== 'deny') assert.ok(allowed.has(d!.reason), `${JSON.stringify(req)} → ${d!.reason}`);
  }
  // Junk policies and requests of the wrong type.
  for (const p of [undefined, null, {}, { agent: 5, egress: 'x' }, { agent: 'a', egress: [null, 1, 'x', { ports: 'all', host: 'a.example.com' }] }]) {
    for (const req of [undefined, null, 'x', connect('a.example.com')]) {
      const d = failClosed(decideEgress)(p as unknown as EgressPolicy, req as unknown as EgressRequest);
      assert.equal(d.result, 'deny');
    }
  }
});

describe('an agent holding secrets gets every TLS host intercepted (so every request is scanned)', () => {
  const plain = [{ host: 'example.com' }, { cidr: '203.0.113.0/24' }];
  const cases: Array<{ name: string; policy: EgressPolicy; req: EgressRequest; intercept: boolean | undefined }> = [
    { name: 'no secrets anywhere: a plain host is tunnelled blind', policy: { agent: 'a', egress: plain }, req: connect('example.com'), intercept: undefined },
    { name: 'no secrets: a plain CIDR is tunnelled blind', policy: { agent: 'a', egress: plain }, req: connect('203.0.113.9'), intercept: undefined },
    { name: 'interceptAll (secrets in env): plain host intercepted', policy: { agent: 'a', egress: plain, interceptAll: true }, req: connect('example.com'), intercept: true },
    { name: 'interceptAll: CIDR rule intercepted too', policy: { agent: 'a', egress: plain, interceptAll: true }, req: connect('203.0.113.9'), intercept: true },
    {
      name: 'a secret bound to one host: the other hosts are intercepted too',
      policy: { agent: 'a', egress: [...plain, { host: 'api.example.org', secrets: { authorization: 'Bearer {{secret.t}}' } }] },
      req: connect('example.com'), intercept: true,
    },
    { name: 'interceptAll: false stays off without secrets', policy: { agent: 'a', egress: plain, interceptAll: false }, req: connect('example.com'), intercept: undefined },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const got = decideEgress(c.policy, c.req);
      assert.equal(got.result, 'allow', got.reason);
      assert.equal(got.intercept, c.intercept);
    });
  }
});
