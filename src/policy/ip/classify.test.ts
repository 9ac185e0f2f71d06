/** classifyAddress: boundary addresses of every special range, each with its exact reason, in every notation. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyAddress, createAddressClassifier, unmapIpv4, DENY_REASONS, type DenyReason } from './classify.js';
import { parseIpLiteral, formatIp } from './parse.js';

type Want = 'public' | DenyReason | { reason: DenyReason; embedded: DenyReason };
const boundaries: Array<{ ip: string; want: Want }> = [
  // IPv4 private (RFC 1918) and its neighbours
  { ip: '9.255.255.255', want: 'public' },
  { ip: '10.0.0.0', want: 'private' },
  { ip: '10.255.255.255', want: 'private' },
  { ip: '11.0.0.0', want: 'public' },
  { ip: '172.15.255.255', want: 'public' },
  { ip: '172.16.0.0', want: 'private' },
  { ip: '172.31.255.255', want: 'private' },
  { ip: '172.32.0.0', want: 'public' },
  { ip: '192.167.255.255', want: 'public' },
  { ip: '192.168.0.0', want: 'private' },
  { ip: '192.168.255.255', want: 'private' },
  { ip: '192.169.0.0', want: 'public' },
  // CGNAT (RFC 6598)
  { ip: '100.63.255.255', want: 'public' },
  { ip: '100.64.0.0', want: 'cgnat' },
  { ip: '100.127.255.255', want: 'cgnat' },
  { ip: '100.128.0.0', want: 'public' },
  { ip: '100.100.100.200', want: 'metadata' },
  // loopback, this-network, link-local, metadata
  { ip: '126.255.255.255', want: 'public' },
  { ip: '127.0.0.0', want: 'loopback' },
  { ip: '127.0.0.1', want: 'loopback' },
  { ip: '127.255.255.255', want: 'loopback' },
  { ip: '128.0.0.0', want: 'public' },
  { ip: '0.0.0.0', want: 'unspecified' },
  { ip: '0.255.255.255', want: 'unspecified' },
  { ip: '1.0.0.0', want: 'public' },
  { ip: '169.253.255.255', want: 'public' },
  { ip: '169.254.0.0', want: 'link-local' },
  { ip: '169.254.169.253', want: 'link-local' },
  { ip: '169.254.169.254', want: 'metadata' },
  { ip: '169.254.170.2', want: 'metadata' },
  { ip: '169.254.255.255', want: 'link-local' },
  { ip: '169.255.0.0', want: 'public' },
  { ip: '168.63.129.16', want: 'metadata' },
  // multicast, reserved, broadcast, documentation, benchmarking
  { ip: '223.255.255.255', want: 'public' },
  { ip: '224.0.0.0', want: 'multicast' },
  { ip: '224.0.0.1', want: 'multicast' },
  { ip: '239.255.255.255', want: 'multicast' },
  { ip: '240.0.0.0', want: 'reserved' },
  { ip: '240.0.0.1', want: 'reserved' },
  { ip: '255.255.255.255', want: 'reserved' },
  { ip: '192.0.0.8', want: 'reserved' },
  { ip: '192.0.2.1', want: 'reserved' },
  { ip: '192.0.3.0', want: 'public' },
  { ip: '192.88.99.1', want: 'reserved' },
  { ip: '198.17.255.255', want: 'public' },
  { ip: '198.18.0.0', want: 'reserved' },
  { ip: '198.19.255.255', want: 'reserved' },
  { ip: '198.20.0.0', want: 'public' },
  { ip: '198.51.100.7', want: 'reserved' },
  { ip: '203.0.113.9', want: 'reserved' },
  // public IPv4
  { ip: '8.8.8.8', want: 'public' },
  { ip: '1.1.1.1', want: 'public' },
  // IPv6 without an embedded IPv4
  { ip: '::', want: 'unspecified' },
  { ip: '::1', want: 'loopback' },
  { ip: 'fe80::1', want: 'link-local' },
  { ip: 'febf:ffff::1', want: 'link-local' },
  { ip: 'fec0::1', want: 'site-local' },
  { ip: 'fbff:ffff::1', want: 'reserved' },
  { ip: 'fc00::1', want: 'unique-local' },
  { ip: 'fdff::1', want: 'unique-local' },
  { ip: 'fd00:ec2::254', want: 'metadata' },
  { ip: 'ff02::1', want: 'multicast' },
  { ip: 'ff00::', want: 'multicast' },
  { ip: '100::1', want: 'discard-only' },
  { ip: '100:0:0:1::1', want: 'reserved' },
  { ip: '2001:db8::1', want: 'reserved' },
  { ip: '2001:2::1', want: 'reserved' },
  { ip: '3fff::1', want: 'reserved' },
  { ip: '4000::1', want: 'reserved' },
  { ip: '1fff:ffff::1', want: 'reserved' },
  { ip: '2001:4860:4860::8888', want: 'public' },
  { ip: '2606:4700:4700::1111', want: 'public' },
  { ip: '64:ff9b:1::a00:1', want: 'nat64' },
  // IPv6 forms that embed IPv4
  { ip: '::ffff:169.254.169.254', want: { reason: 'ipv4-mapped', embedded: 'metadata' } },
  { ip: '::ffff:a9fe:a9fe', want: { reason: 'ipv4-mapped', embedded: 'metadata' } },
  { ip: '::ffff:127.0.0.1', want: { reason: 'ipv4-mapped', embedded: 'loopback' } },
  { ip: '::ffff:7f00:1', want: { reason: 'ipv4-mapped', embedded: 'loopback' } },
  { ip: '::ffff:10.0.0.1', want: { reason: 'ipv4-mapped', embedded: 'private' } },
  { ip: '::ffff:8.8.8.8', want: 'public' },
  { ip: '::127.0.0.1', want: { reason: 'ipv4-compatible', embedded: 'loopback' } },
  { ip: '::8.8.8.8', want: 'ipv4-compatible' },
  { ip: '64:ff9b::a9fe:a9fe', want: { reason: 'nat64', embedded: 'metadata' } },
  { ip: '64:ff9b::192.168.1.1', want: { reason: 'nat64', embedded: 'private' } },
  { ip: '64:ff9b::8.8.8.8', want: 'public' },
  { ip: '2002:a9fe:a9fe::1', want: { reason: '6to4', embedded: 'metadata' } },
  { ip: '2002:7f00:1::', want: { reason: '6to4', embedded: 'loopback' } },
  { ip: '2002:808:808::1', want: 'public' },
  // Teredo: server 10.0.0.1; client 8.8.8.8 stored inverted (f7f7:f7f7)
  { ip: '2001:0:a00:1::f7f7:f7f7', want: { reason: 'teredo', embedded: 'private' } },
  // Teredo: public server 8.8.8.8; client 127.0.0.1 stored inverted (80ff:fffe)
  { ip: '2001:0:808:808::80ff:fffe', want: { reason: 'teredo', embedded: 'loopback' } },
  { ip: '2001:0:808:808::f7f7:f7f7', want: 'public' },
];

for (const c of boundaries) {
  test(`classifyAddress ${c.ip} → ${typeof c.want === 'string' ? c.want : `${c.want.reason}(${c.want.embedded})`}`, () => {
    const got = classifyAddress(c.ip);
    if (c.want === 'public') {
      assert.deepEqual(got, { ok: true });
    } else if (typeof c.want === 'string') {
      assert.equal(got.ok, false);
      assert.equal(!got.ok && got.reason, c.want);
    } else {
      assert.equal(got.ok, false);
      assert.equal(!got.ok && got.reason, c.want.reason);
      assert.equal(!got.ok && got.embedded?.reason, c.want.embedded);
    }
  });
}

test('there are at least 40 boundary addresses', () => {
  assert.ok(boundaries.length >= 40, `${boundaries.length}`);
});

/** 127.0.0.1 and 169.254.169.254 in every notation: each must be classified like the dotted form. */
const notations: Array<{ text: string; want: DenyReason }> = [
  ...['127.0.0.1', '2130706433', '0x7f000001', '0x7f.0.0.1', '0x7f.0x0.0x0.0x1', '0177.0.0.1', '017700000001', '0177.0.0.01',
    '127.1', '127.0.1', '0x7f.1', '0177.1', '127.0.0.1.', '127.000.000.001', '[::ffff:127.0.0.1]', '::ffff:7f00:1', '[::127.0.0.1]']
    .map((text) => ({ text, want: text.includes(':') ? (text.includes('ffff') ? 'ipv4-mapped' : 'ipv4-compatible') : 'loopback' } as const)),
  ...['169.254.169.254', '2852039166', '0xa9fea9fe', '0xa9.0xfe.0xa9.0xfe', '0251.0376.0251.0376', '025177524776', '169.254.43518',
    '169.16689662', '0xa9.254.0251.0xfe', '169.254.169.254.', '[::ffff:a9fe:a9fe]', '64:ff9b::169.254.169.254']
    .map((text) => ({ text, want: text.includes(':') ? (text.includes('ffff') ? 'ipv4-mapped' : 'nat64') : 'metadata' } as const)),
];

for (const c of notations) {
  test(`classifyAddress of ${c.text} is ${c.want}`, () => {
    const parsed = parseIpLiteral(c.text);
    assert.ok(parsed, `${c.text} should parse`);
    const got = classifyAddress(parsed.bytes);
    assert.equal(!got.ok && got.reason, c.want);
    assert.equal(classifyAddress(c.text).ok, false, 'text input gives the same answer');
  });
}

test('self addresses are refused as self, also inside an IPv4-mapped address', () => {
  const classify = createAddressClassifier({ selfAddresses: ['203.0.114.7', '2001:4860::5'] });
  assert.deepEqual(classify('203.0.114.7'), { ok: false, reason: 'self' });
  assert.deepEqual(classify('2001:4860::5'), { ok: false, reason: 'self' });
  const mapped = classify('::ffff:203.0.114.7');
  assert.equal(!mapped.ok && mapped.reason, 'ipv4-mapped');
  assert.equal(!mapped.ok && mapped.embedded?.reason, 'self');
  assert.deepEqual(classify('203.0.114.8'), { ok: true });
});

test('a self address that is not an IP address is a clear error', () => {
  assert.throws(() => createAddressClassifier({ selfAddresses: ['proxy.local'] }), /self address "proxy.local" is not an IP address/);
});

test('the result names the matching range and the embedded address', () => {
  assert.deepEqual(classifyAddress('100.64.0.1'), { ok: false, reason: 'cgnat', range: '100.64.0.0/10' });
  assert.deepEqual(classifyAddress('::ffff:a9fe:a9fe'), {
    ok: false, reason: 'ipv4-mapped', embedded: { ipv4: '169.254.169.254', reason: 'metadata', range: '169.254.169.254/32' },
  });
});

test('invalid input is refused, never thrown', () => {
  assert.deepEqual(classifyAddress('not-an-ip'), { ok: false, reason: 'invalid' });
  assert.deepEqual(classifyAddress(new Uint8Array(5)), { ok: false, reason: 'invalid' });
  assert.deepEqual(classifyAddress(undefined as unknown as string), { ok: false, reason: 'invalid' });
});

test('DENY_REASONS lists every reason the classifier returns, in kebab case', () => {
  for (const r of DENY_REASONS) assert.match(r, /^[a-z0-9]+(-[a-z0-9]+)*$/);
  for (const c of boundaries) {
    const got = classifyAddress(c.ip);
    if (!got.ok) assert.ok((DENY_REASONS as readonly string[]).includes(got.reason), got.reason);
  }
});

test('unmapIpv4 turns an IPv4-mapped address into the IPv4 address to dial', () => {
  assert.equal(formatIp(unmapIpv4(parseIpLiteral('::ffff:8.8.8.8')!.bytes)), '8.8.8.8');
  assert.equal(formatIp(unmapIpv4(parseIpLiteral('2001:4860::1')!.bytes)), '2001:4860::1');
  assert.equal(formatIp(unmapIpv4(parseIpLiteral('1.1.1.1')!.bytes)), '1.1.1.1');
});
