/** parseIpLiteral: every notation, the rejects, and agreement with Node's WHATWG URL parser on random input. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIpLiteral, formatIp, looksLikeIpv4, type IpNotation } from './parse.js';
import { seededRandom } from '../../util/random.js';

type Want = { text: string; notation: IpNotation; zone?: string; trailingDot?: boolean };
const accepted: Array<{ name: string; input: string; want: Want }> = [
  { name: 'dotted decimal', input: '127.0.0.1', want: { text: '127.0.0.1', notation: 'dotted' } },
  { name: 'one 32-bit decimal', input: '2130706433', want: { text: '127.0.0.1', notation: 'decimal' } },
  { name: 'one 32-bit hex', input: '0x7f000001', want: { text: '127.0.0.1', notation: 'hex' } },
  { name: 'upper-case hex prefix', input: '0X7F000001', want: { text: '127.0.0.1', notation: 'hex' } },
  { name: 'hex first part', input: '0x7f.0.0.1', want: { text: '127.0.0.1', notation: 'hex' } },
  { name: 'hex every part', input: '0x7f.0x0.0x0.0x1', want: { text: '127.0.0.1', notation: 'hex' } },
  { name: 'bare 0x is zero', input: '0x', want: { text: '0.0.0.0', notation: 'hex' } },
  { name: 'octal first part', input: '0177.0.0.1', want: { text: '127.0.0.1', notation: 'octal' } },
  { name: 'one 32-bit octal', input: '017700000001', want: { text: '127.0.0.1', notation: 'octal' } },
  { name: 'octal with many leading zeros', input: '00000177.0.0.1', want: { text: '127.0.0.1', notation: 'octal' } },
  { name: 'hex and octal mixed', input: '0x7f.00.0.01', want: { text: '127.0.0.1', notation: 'mixed' } },
  { name: 'short form a.b', input: '127.1', want: { text: '127.0.0.1', notation: 'short' } },
  { name: 'short form a.b.c', input: '127.0.1', want: { text: '127.0.0.1', notation: 'short' } },
  { name: 'short form last part 16 bits', input: '169.254.43518', want: { text: '169.254.169.254', notation: 'short' } },
  { name: 'short form last part 24 bits', input: '169.16689662', want: { text: '169.254.169.254', notation: 'short' } },
  { name: 'short form hex', input: '0xa9.0xfea9fe', want: { text: '169.254.169.254', notation: 'hex' } },
  { name: 'largest decimal', input: '4294967295', want: { text: '255.255.255.255', notation: 'decimal' } },
  { name: 'zero', input: '0', want: { text: '0.0.0.0', notation: 'decimal' } },
  { name: 'trailing dot', input: '127.0.0.1.', want: { text: '127.0.0.1', notation: 'dotted', trailingDot: true } },
  { name: 'trailing dot on hex', input: '0x7f000001.', want: { text: '127.0.0.1', notation: 'hex', trailingDot: true } },
  { name: 'IPv6 loopback', input: '::1', want: { text: '::1', notation: 'ipv6' } },
  { name: 'IPv6 unspecified', input: '::', want: { text: '::', notation: 'ipv6' } },
  { name: 'IPv6 in brackets', input: '[2001:4860:4860::8888]', want: { text: '2001:4860:4860::8888', notation: 'ipv6' } },
  { name: 'IPv6 full form, upper case', input: 'FE80:0000:0000:0000:0000:0000:0000:0001', want: { text: 'fe80::1', notation: 'ipv6' } },
  { name: 'IPv6 trailing ::', input: '1:2:3:4:5:6:7::', want: { text: '1:2:3:4:5:6:7:0', notation: 'ipv6' } },
  { name: 'IPv4-mapped dotted', input: '::ffff:127.0.0.1', want: { text: '::ffff:127.0.0.1', notation: 'ipv6' } },
  { name: 'IPv4-mapped hex', input: '::ffff:7f00:1', want: { text: '::ffff:127.0.0.1', notation: 'ipv6' } },
  { name: 'IPv4-mapped in brackets', input: '[::ffff:169.254.169.254]', want: { text: '::ffff:169.254.169.254', notation: 'ipv6' } },
  { name: 'IPv4-compatible', input: '::127.0.0.1', want: { text: '::7f00:1', notation: 'ipv6' } },
  { name: 'eight groups ending in IPv4', input: '0:0:0:0:0:ffff:10.0.0.1', want: { text: '::ffff:10.0.0.1', notation: 'ipv6' } },
  { name: 'zone id flagged', input: 'fe80::1%eth0', want: { text: 'fe80::1', notation: 'ipv6', zone: 'eth0' } },
  { name: 'URL-encoded zone id in brackets', input: '[fe80::1%25eth0]', want: { text: 'fe80::1', notation: 'ipv6', zone: 'eth0' } },
];

for (const c of accepted) {
  test(`parseIpLiteral accepts ${c.name}: ${c.input}`, () => {
    const got = parseIpLiteral(c.input);
    assert.ok(got, `${c.input} should parse`);
    assert.equal(formatIp(got.bytes), c.want.text);
    assert.equal(got.notation, c.want.notation);
    assert.equal(got.zone, c.want.zone);
    assert.equal(got.trailingDot, c.want.trailingDot);
    assert.equal(got.family, c.want.notation === 'ipv6' ? 6 : 4);
  });
}

const rejected: Array<{ name: string; input: string }> = [
  { name: 'empty', input: '' },
  { name: 'a host name', input: 'example.com' },
  { name: 'a name ending in a number', input: 'a.1' },
  { name: 'five parts', input: '1.2.3.4.5' },
  { name: 'part over 255', input: '256.0.0.1' },
  { name: 'decimal over 32 bits', input: '4294967296' },
  { name: 'short form overflow', input: '127.16777216' },
  { name: 'octal with 8', input: '08.0.0.1' },
  { name: 'empty part', input: '127..0.1' },
  { name: 'two trailing dots', input: '127.0.0.1..' },
  { name: 'lone dot', input: '.' },
  { name: 'sign', input: '+127.0.0.1' },
  { name: 'hex with bad digit', input: '0x7g.0.0.1' },
  { name: 'whitespace', input: ' 127.0.0.1' },
  { name: 'percent-encoded digits', input: '%31%32%37.0.0.1' },
  { name: 'full-width digits', input: '\uff11\uff12\uff17.0.0.1' },
  { name: 'IPv4 in brackets', input: '[127.0.0.1]' },
  { name: 'unclosed bracket', input: '[::1' },
  { name: 'two ::', input: '1::2::3' },
  { name: ':::', input: ':::1' },
  { name: 'nine groups', input: '1:2:3:4:5:6:7:8:9' },
  { name: ':: with eight groups', input: '1::2:3:4:5:6:7:8' },
  { name: 'seven groups without ::', input: '1:2:3:4:5:6:7' },
  { name: 'five hex digits', input: '::12345' },
  { name: 'leading single colon', input: ':1::' },
  { name: 'IPv4 not last', input: '::1.2.3.4:1' },
  { name: 'octal IPv4 inside IPv6', input: '::ffff:0177.0.0.1' },
  { name: 'short IPv4 inside IPv6', input: '::ffff:127.1' },
  { name: 'empty zone', input: 'fe80::1%' },
  { name: 'zone with a slash', input: 'fe80::1%eth0/1' },
  { name: 'host and port', input: '127.0.0.1:80' },
  { name: 'very long input', input: '0'.repeat(500) },
];

for (const c of rejected) {
  test(`parseIpLiteral rejects ${c.name}: ${JSON.stringify(c.input.slice(0, 40))}`, () => {
    assert.equal(parseIpLiteral(c.input), undefined);
  });
}

test('looksLikeIpv4 flags names whose last label is numeric', () => {
  assert.equal(looksLikeIpv4('1.2.3.999'), true);
  assert.equal(looksLikeIpv4('a.0x1f.'), true);
  assert.equal(looksLikeIpv4('example.com'), false);
  assert.equal(looksLikeIpv4('1.2.3.a'), false);
});


/** Random IPv4 in a random notation, the way an attacker would write it. */
function randomIpv4(rand: () => number): string {
  const value = Math.floor(rand() * 2 ** 32);
  const parts = 1 + Math.floor(rand() * 4);
  const pieces: number[] = [];
  let rest = value;
  for (let i = 0; i < parts - 1; i++) pieces.push((value >>> (24 - 8 * i)) & 0xff);
  rest = parts === 1 ? value : value % 2 ** (8 * (5 - parts));
  pieces.push(rest);
  return pieces
    .map((n) => {
      const r = rand();
      if (r < 0.3) return `0x${n.toString(16)}`;
      if (r < 0.6 && n > 0) return `0${n.toString(8)}`;
      return String(n);
    })
    .join('.') + (rand() < 0.1 ? '.' : '');
}

test('parseIpLiteral agrees with the WHATWG URL parser on 3000 random IPv4 notations', () => {
  const rand = seededRandom(42);
  for (let i = 0; i < 3000; i++) {
    const text = randomIpv4(rand);
    const ours = parseIpLiteral(text);
    assert.ok(ours, `${text} should parse`);
    assert.equal(formatIp(ours.bytes), new URL(`http://${text}/`).hostname, text);
  }
});

test('parseIpLiteral never disagrees with the WHATWG URL parser on random junk', () => {
  const rand = seededRandom(7);
  const alphabet = '0123456789abcdefx.:';
  let bothParsed = 0;
  for (let i = 0; i < 20000; i++) {
    let text = '';
    const len = 1 + Math.floor(rand() * 18);
    for (let j = 0; j < len; j++) text += alphabet[Math.floor(rand() * alphabet.length)];
    const ours = parseIpLiteral(text);
    let theirs: string | undefined;
    try {
      const host = new URL(`http://${text.includes(':') ? `[${text}]` : text}/`).hostname;
      theirs = host.startsWith('[') ? host.slice(1, -1) : /^\d+\.\d+\.\d+\.\d+$/.test(host) ? host : undefined;
    } catch {
      theirs = undefined;
    }
    if (theirs === undefined) {
      assert.equal(ours, undefined, `we parsed ${JSON.stringify(text)}, the URL parser did not`);
      continue;
    }
    assert.ok(ours, `the URL parser read ${JSON.stringify(text)} as ${theirs}, we did not`);
    assert.equal(formatIp(ours.bytes), formatIp(parseIpLiteral(theirs)!.bytes), text);
    bothParsed++;
  }
  assert.ok(bothParsed > 500, `only ${bothParsed} random inputs were addresses; the generator is too weak`);
});

test('parseIpLiteral never throws on arbitrary strings', () => {
  const rand = seededRandom(99);
  for (let i = 0; i < 5000; i++) {
    const len = Math.floor(rand() * 40);
    let text = '';
    for (let j = 0; j < len; j++) text += String.fromCharCode(Math.floor(rand() * 0x3000));
    assert.doesNotThrow(() => parseIpLiteral(text));
  }
  assert.equal(parseIpLiteral(undefined as unknown as string), undefined);
  assert.equal(parseIpLiteral(42 as unknown as string), undefined);
});
