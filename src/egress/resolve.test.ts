/**
 * resolveChecked tests: every resolved address is checked, one refused address
 * refuses the name, the checked address is the one returned for dialling, and
 * resolver failures and timeouts fail closed with their own reasons.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAddressDecider } from '../policy/index.js';
import { resolveChecked, type ResolvedAddress } from './resolve.js';

const checkAddress = createAddressDecider({ agent: 'a', egress: [{ host: 'example.com' }, { cidr: '10.9.0.0/16', ports: [443] }] });
const answers = (...list: string[]): ResolvedAddress[] => list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));

const cases: Array<{ name: string; host: string; port?: number; answer: ResolvedAddress[]; ok: boolean; reason?: string; address?: string }> = [
  { name: 'one public address', host: 'example.com', answer: answers('93.184.216.34'), ok: true, address: '93.184.216.34' },
  { name: 'public IPv6 first', host: 'example.com', answer: answers('2606:2800:220:1::1', '93.184.216.34'), ok: true, address: '2606:2800:220:1::1' },
  { name: 'public then private', host: 'example.com', answer: answers('93.184.216.34', '10.0.0.1'), ok: false, reason: 'private-address', address: '10.0.0.1' },
  { name: 'metadata address', host: 'example.com', answer: answers('169.254.169.254'), ok: false, reason: 'metadata-address' },
  { name: 'IPv4-mapped loopback', host: 'example.com', answer: answers('::ffff:127.0.0.1'), ok: false, reason: 'ipv4-mapped-address' },
  { name: 'private but covered by a cidr rule', host: 'example.com', answer: answers('10.9.1.2'), ok: true, address: '10.9.1.2' },
  { name: 'covered by a cidr rule on another port', host: 'example.com', port: 80, answer: answers('10.9.1.2'), ok: false, reason: 'private-address' },
  { name: 'no address at all', host: 'example.com', answer: [], ok: false, reason: 'no-address' },
  { name: 'an unreadable address', host: 'example.com', answer: answers('not-an-ip'), ok: false, reason: 'invalid-address' },
];
for (const c of cases) {
  test(`resolveChecked: ${c.name}`, async () => {
    let calls = 0;
    const r = await resolveChecked(c.host, c.port ?? 443, {
      lookup: async () => { calls += 1; return c.answer; }, checkAddress, timeoutMs: 1000,
    });
    assert.equal(r.ok, c.ok);
    assert.equal(calls, 1, 'exactly one lookup');
    if (!r.ok) assert.equal(r.reason, c.reason);
    if (c.address) assert.equal(r.address, c.address);
  });
}

test('an IP literal is checked without any lookup', async () => {
  const r = await resolveChecked('10.9.0.5', 443, { lookup: async () => assert.fail('no lookup for a literal'), checkAddress, timeoutMs: 1000 });
  assert.deepEqual({ ok: r.ok, address: r.ok ? r.address : undefined }, { ok: true, address: '10.9.0.5' });
});

test('a failing resolver is dns-failed and a slow one dns-timeout', async () => {
  const failed = await resolveChecked('example.com', 443, {
    lookup: async () => { throw Object.assign(new Error('getaddrinfo ENOTFOUND example.com'), { code: 'ENOTFOUND' }); }, checkAddress, timeoutMs: 1000,
  });
  assert.equal(failed.ok ? 'ok' : failed.reason, 'dns-failed');
  assert.match(failed.ok ? '' : failed.problem, /ENOTFOUND/);
  const slow = await resolveChecked('example.com', 443, { lookup: () => new Promise(() => undefined), checkAddress, timeoutMs: 50 });
  assert.equal(slow.ok ? 'ok' : slow.reason, 'dns-timeout');
});

test('a throwing address check is a deny (fail closed)', async () => {
  const r = await resolveChecked('example.com', 443, {
    lookup: async () => answers('93.184.216.34'), checkAddress: () => { throw new Error('boom'); }, timeoutMs: 1000,
  });
  assert.equal(r.ok ? 'ok' : r.reason, 'policy-error');
});
