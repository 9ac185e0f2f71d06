/** decideEgressAddress: the post-DNS check, cidr overrides and the addresses no rule can open. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAddressDecider, type AddressRequest } from './egress-address.js';
import { EGRESS_REASONS } from './egress.js';
import type { EgressPolicy } from './egress-rules.js';

const policy: EgressPolicy = {
  agent: 'a',
  egressMode: 'report',
  egress: [
    { host: 'api.example.com' }, // 0
    { cidr: '10.1.2.0/24', ports: [8080] }, // 1
    { cidr: '127.0.0.1/32', ports: [8443] }, // 2: a loopback test server, listed on purpose
    { cidr: '169.254.0.0/16' }, // 3: link-local listed, but metadata stays closed
    { cidr: '0.0.0.0/8' }, // 4: cannot open 0.0.0.0
    { cidr: 'fd00::/8' }, // 5
  ],
};
const decide = createAddressDecider(policy, { selfAddresses: ['198.51.99.10'] });

const cases: Array<{ name: string; req: AddressRequest; want: { result: string; reason: string; ruleId?: string; address?: string } }> = [
  { name: 'public IPv4', req: { address: '93.184.216.34', port: 443 }, want: { result: 'allow', reason: 'public-address', address: '93.184.216.34' } },
  { name: 'public IPv6', req: { address: '2606:2800:220:1::1', port: 443 }, want: { result: 'allow', reason: 'public-address', address: '2606:2800:220:1::1' } },
  { name: 'private, no rule', req: { address: '192.168.1.1', port: 443 }, want: { result: 'deny', reason: 'private-address', address: '192.168.1.1' } },
  { name: 'private, inside a cidr rule', req: { address: '10.1.2.9', port: 8080 }, want: { result: 'allow', reason: 'cidr-allowed', ruleId: 'agents.a.egress[1]', address: '10.1.2.9' } },
  { name: 'private, inside a cidr rule, wrong port', req: { address: '10.1.2.9', port: 443 }, want: { result: 'deny', reason: 'private-address', address: '10.1.2.9' } },
  { name: 'mapped private inside a cidr rule', req: { address: '::ffff:10.1.2.9', port: 8080 }, want: { result: 'allow', reason: 'cidr-allowed', ruleId: 'agents.a.egress[1]', address: '::ffff:10.1.2.9' } },
  { name: 'loopback listed on purpose', req: { address: '127.0.0.1', port: 8443 }, want: { result: 'allow', reason: 'cidr-allowed', ruleId: 'agents.a.egress[2]' } },
  { name: 'loopback, other port', req: { address: '127.0.0.1', port: 443 }, want: { result: 'deny', reason: 'loopback-address' } },
  { name: 'link-local listed', req: { address: '169.254.1.1', port: 443 }, want: { result: 'allow', reason: 'cidr-allowed', ruleId: 'agents.a.egress[3]' } },
  { name: 'metadata is never opened by a cidr', req: { address: '169.254.169.254', port: 80 }, want: { result: 'deny', reason: 'metadata-address' } },
  { name: 'mapped metadata is never opened', req: { address: '::ffff:169.254.169.254', port: 80 }, want: { result: 'deny', reason: 'ipv4-mapped-address' } },
  { name: 'unspecified is never opened', req: { address: '0.0.0.0', port: 443 }, want: { result: 'deny', reason: 'unspecified-address' } },
  { name: 'self', req: { address: '198.51.99.10', port: 443 }, want: { result: 'deny', reason: 'self-address' } },
  { name: 'CGNAT', req: { address: '100.64.0.1', port: 443 }, want: { result: 'deny', reason: 'cgnat-address' } },
  { name: 'unique-local listed', req: { address: 'fd12::1', port: 443 }, want: { result: 'allow', reason: 'cidr-allowed', ruleId: 'agents.a.egress[5]' } },
  { name: 'AWS IPv6 metadata inside a listed ULA range', req: { address: 'fd00:ec2::254', port: 80 }, want: { result: 'deny', reason: 'metadata-address' } },
  { name: '6to4 of loopback', req: { address: '2002:7f00:1::1', port: 443 }, want: { result: 'deny', reason: '6to4-address' } },
  { name: 'bytes input', req: { address: new Uint8Array([10, 0, 0, 1]), port: 443 }, want: { result: 'deny', reason: 'private-address', address: '10.0.0.1' } },
  { name: 'not an address', req: { address: 'api.example.com', port: 443 }, want: { result: 'deny', reason: 'invalid-address' } },
  { name: 'bad port', req: { address: '93.184.216.34', port: 0 }, want: { result: 'deny', reason: 'bad-port' } },
];

for (const c of cases) {
  test(`decideEgressAddress (report mode does not relax it): ${c.name}`, () => {
    const got = decide(c.req);
    assert.equal(got.result, c.want.result);
    assert.equal(got.reason, c.want.reason);
    assert.equal(got.ruleId, c.want.ruleId);
    if (c.want.address !== undefined) assert.equal(got.address, c.want.address);
    assert.equal(got.wouldDeny, undefined);
    assert.ok((EGRESS_REASONS as readonly string[]).includes(got.reason), got.reason);
  });
}

test('a denial carries the classification, with the embedded address', () => {
  const got = decide({ address: '64:ff9b::a9fe:a9fe', port: 443 });
  assert.equal(got.reason, 'nat64-address');
  assert.deepEqual(got.classification, {
    ok: false, reason: 'nat64', embedded: { ipv4: '169.254.169.254', reason: 'metadata', range: '169.254.169.254/32' },
  });
});

test('junk requests are denied, not thrown', () => {
  for (const req of [undefined, null, {}, { address: 5, port: 443 }, { address: new Uint8Array(3), port: 1 }]) {
    assert.equal(decide(req as unknown as AddressRequest).result, 'deny');
  }
});
