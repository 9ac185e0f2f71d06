/** Prefix parsing and containment at byte and bit boundaries. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePrefix, prefixContains, formatPrefix } from './prefix.js';
import { parseIpLiteral } from './parse.js';

const cases: Array<{ range: string; ip: string; inside: boolean }> = [
  { range: '100.64.0.0/10', ip: '100.64.0.0', inside: true },
  { range: '100.64.0.0/10', ip: '100.127.255.255', inside: true },
  { range: '100.64.0.0/10', ip: '100.128.0.0', inside: false },
  { range: '100.64.0.0/10', ip: '100.63.255.255', inside: false },
  { range: '10.1.2.0/24', ip: '10.1.2.255', inside: true },
  { range: '10.1.2.0/24', ip: '10.1.3.0', inside: false },
  { range: '1.2.3.4/32', ip: '1.2.3.4', inside: true },
  { range: '1.2.3.4/32', ip: '1.2.3.5', inside: false },
  { range: 'fe80::/10', ip: 'febf::1', inside: true },
  { range: 'fe80::/10', ip: 'fec0::1', inside: false },
  { range: 'fc00::/7', ip: 'fdff::1', inside: true },
  { range: '10.0.0.0/8', ip: '::ffff:10.0.0.1', inside: false },
];
for (const c of cases) {
  test(`${c.ip} ${c.inside ? 'is' : 'is not'} in ${c.range}`, () => {
    assert.equal(prefixContains(parsePrefix(c.range)!, parseIpLiteral(c.ip)!.bytes), c.inside);
  });
}

test('parsePrefix refuses non-standard notations and bad lengths', () => {
  for (const t of ['0x0a.0.0.0/8', '10.1/16', '10.0.0.0/33', '::/129', '10.0.0.0/8/8', 'fe80::%eth0/64', '10.0.0.0/x']) {
    assert.equal(parsePrefix(t), undefined, t);
  }
  assert.equal(formatPrefix(parsePrefix('2001:DB8::/32')!), '2001:db8::/32');
  assert.equal(formatPrefix(parsePrefix('8.8.8.8')!), '8.8.8.8/32');
});
