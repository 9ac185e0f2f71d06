/**
 * Classifies a resolved destination address: public (dialable) or a deny
 * reason. The egress proxy asks this after DNS resolution, for the exact
 * address it is about to dial, so a name that resolves to 127.0.0.1 or to the
 * cloud metadata service is refused whatever the allowlist says.
 *
 * IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4,
 * Teredo, NAT64) are judged by the IPv4 address inside them; the result names
 * both the form and the embedded address's reason. Anything outside the IPv6
 * global unicast block 2000::/3 is denied. Pure: no I/O.
 */
import { InvalidInputError } from '../../errors/index.js';
import { parseIpLiteral, formatIp } from './parse.js';
import { prefix, prefixContains, formatPrefix, type IpPrefix } from './prefix.js';

/** Why an address may not be dialled. Stable strings: they end up in audit events and headers. */
export const DENY_REASONS = [
  'invalid', 'self', 'unspecified', 'loopback', 'private', 'link-local', 'metadata', 'cgnat', 'multicast',
  'reserved', 'unique-local', 'site-local', 'discard-only', 'ipv4-mapped', 'ipv4-compatible', '6to4', 'teredo', 'nat64',
] as const;
export type DenyReason = (typeof DENY_REASONS)[number];

export type AddressClass =
  | { ok: true }
  | {
    ok: false;
    reason: DenyReason;
    /** The special range that matched, e.g. `10.0.0.0/8`. */
    range?: string;
    /** For IPv6 forms that embed IPv4: the embedded address and why it is refused. */
    embedded?: { ipv4: string; reason: DenyReason; range?: string };
  };

export interface ClassifyOptions {
  /** The proxy's own addresses (any notation parseIpLiteral accepts); dialling them is refused as `self`. @default [] */
  selfAddresses?: readonly string[];
}

type Entry = { range: IpPrefix; reason: DenyReason };
const entry = (text: string, reason: DenyReason): Entry => ({ range: prefix(text), reason });

/** Special-purpose IPv4 ranges, most specific first (IANA IPv4 Special-Purpose Address Registry, RFC 6890). */
const IPV4_TABLE: readonly Entry[] = [
  entry('0.0.0.0/8', 'unspecified'), // RFC 791, RFC 1122 §3.2.1.3 "this network"; 0.0.0.0 reaches the local host on Linux
  entry('10.0.0.0/8', 'private'), // RFC 1918
  entry('100.100.100.200/32', 'metadata'), // Alibaba Cloud instance metadata (inside CGNAT space)
  entry('100.64.0.0/10', 'cgnat'), // RFC 6598 shared address space (carrier-grade NAT)
  entry('127.0.0.0/8', 'loopback'), // RFC 1122 §3.2.1.3
  entry('168.63.129.16/32', 'metadata'), // Azure platform endpoint (WireServer); public-looking but host-local
  entry('169.254.169.254/32', 'metadata'), // instance metadata of AWS, GCP, Azure, OpenStack, Oracle (inside RFC 3927)
  entry('169.254.170.2/32', 'metadata'), // AWS ECS task metadata and credentials
  entry('169.254.170.23/32', 'metadata'), // AWS EKS pod identity agent
  entry('169.254.0.0/16', 'link-local'), // RFC 3927
  entry('172.16.0.0/12', 'private'), // RFC 1918
  entry('192.0.0.0/24', 'reserved'), // RFC 6890 §2.2.2 IETF protocol assignments (incl. RFC 7050 NAT64 discovery)
  entry('192.0.2.0/24', 'reserved'), // RFC 5737 TEST-NET-1 (documentation)
  entry('192.88.99.0/24', 'reserved'), // RFC 7526 deprecated 6to4 relay anycast
  entry('192.168.0.0/16', 'private'), // RFC 1918
  entry('198.18.0.0/15', 'reserved'), // RFC 2544 benchmarking
  entry('198.51.100.0/24', 'reserved'), // RFC 5737 TEST-NET-2 (documentation)
  entry('203.0.113.0/24', 'reserved'), // RFC 5737 TEST-NET-3 (documentation)
  entry('224.0.0.0/4', 'multicast'), // RFC 5771
  entry('240.0.0.0/4', 'reserved'), // RFC 1112 §4 future use; includes 255.255.255.255 limited broadcast (RFC 919, RFC 8190)
];

/** Checked before the IPv4-compatible block ::/96, which contains them. */
const IPV6_UNSPECIFIED_AND_LOOPBACK: readonly Entry[] = [
  entry('::/128', 'unspecified'), // RFC 4291 §2.5.2
  entry('::1/128', 'loopback'), // RFC 4291 §2.5.3
];

/** Special-purpose IPv6 ranges without an embedded IPv4 address (IANA IPv6 Special-Purpose Address Registry). */
const IPV6_TABLE: readonly Entry[] = [
  entry('64:ff9b:1::/48', 'nat64'), // RFC 8215 local-use NAT64: where the IPv4 sits depends on the site, so never dialled
  entry('100::/64', 'discard-only'), // RFC 6666 discard prefix
  entry('2001:db8::/32', 'reserved'), // RFC 3849 documentation
  entry('2001::/23', 'reserved'), // RFC 2928 IETF protocol assignments (benchmarking RFC 5180, ORCHIDv2 RFC 7343); Teredo is handled before
  entry('3fff::/20', 'reserved'), // RFC 9637 documentation
  entry('fd00:ec2::254/128', 'metadata'), // AWS instance metadata over IPv6 (inside unique-local)
  entry('fd00:ec2::23/128', 'metadata'), // AWS EKS pod identity agent over IPv6
  entry('fc00::/7', 'unique-local'), // RFC 4193
  entry('fe80::/10', 'link-local'), // RFC 4291 §2.5.6
  entry('fec0::/10', 'site-local'), // RFC 3879 deprecated site-local
  entry('ff00::/8', 'multicast'), // RFC 4291 §2.7
];

/** RFC 4291 §2.4: IANA allocates global unicast only from 2000::/3; everything else is not dialable. */
const GLOBAL_UNICAST = prefix('2000::/3');
const IPV4_MAPPED = prefix('::ffff:0:0/96'); // RFC 4291 §2.5.5.2
const IPV4_COMPATIBLE = prefix('::/96'); // RFC 4291 §2.5.5.1, deprecated
const NAT64_WELL_KNOWN = prefix('64:ff9b::/96'); // RFC 6052 §2.1
const SIX_TO_FOUR = prefix('2002::/16'); // RFC 3056 §2: 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD
const TEREDO = prefix('2001::/32'); // RFC 4380 §4: server IPv4 in bytes 4-7, client IPv4 inverted in bytes 12-15

/**
 * Create a classifier bound to the proxy's own addresses.
 * @throws InvalidInputError when a self address is not an IP address.
 * @example
 * const classify = createAddressClassifier({ selfAddresses: ['203.0.113.7'] });
 * classify('10.1.2.3') // { ok: false, reason: 'private', range: '10.0.0.0/8' }
 */
export function createAddressClassifier(options: ClassifyOptions = {}): (ip: Uint8Array | string) => AddressClass {
  const self = (options.selfAddresses ?? []).map((text) => {
    const parsed = parseIpLiteral(text);
    if (!parsed) {
      throw new InvalidInputError(`self address "${text}" is not an IP address; pass the proxy's own addresses, e.g. from os.networkInterfaces()`);
    }
    return parsed.bytes;
  });
  return function classifyAddressBound(ip: Uint8Array | string): AddressClass {
    const bytes = typeof ip === 'string' ? parseIpLiteral(ip)?.bytes : ip;
    if (!(bytes instanceof Uint8Array) || (bytes.length !== 4 && bytes.length !== 16)) return { ok: false, reason: 'invalid' };
    return bytes.length === 4 ? classifyV4(bytes, self) : classifyV6(bytes, self);
  };
}

/**
 * Classify one address. Accepts bytes or text in any notation `parseIpLiteral` accepts.
 * @param ip 4 or 16 bytes, or the address as text.
 * @param options.selfAddresses the proxy's own addresses, refused as `self`.
 * @example
 * classifyAddress('169.254.169.254')       // { ok: false, reason: 'metadata', range: '169.254.169.254/32' }
 * classifyAddress('::ffff:a9fe:a9fe')      // { ok: false, reason: 'ipv4-mapped', embedded: { ipv4: '169.254.169.254', reason: 'metadata', … } }
 * classifyAddress('8.8.8.8')               // { ok: true }
 */
export function classifyAddress(ip: Uint8Array | string, options: ClassifyOptions = {}): AddressClass {
  return createAddressClassifier(options)(ip);
}

function isSelf(bytes: Uint8Array, self: readonly Uint8Array[]): boolean {
  return self.some((s) => s.length === bytes.length && s.every((b, i) => b === bytes[i]));
}

function classifyV4(bytes: Uint8Array, self: readonly Uint8Array[]): AddressClass {
  if (isSelf(bytes, self)) return { ok: false, reason: 'self' };
  return match(IPV4_TABLE, bytes) ?? { ok: true };
}

function match(table: readonly Entry[], bytes: Uint8Array): AddressClass | undefined {
  const e = table.find((t) => prefixContains(t.range, bytes));
  return e && { ok: false, reason: e.reason, range: formatPrefix(e.range) };
}

/** Judge an IPv6 form by the IPv4 address it carries. */
function embedding(form: DenyReason, v4: Uint8Array, self: readonly Uint8Array[], alwaysDeny = false): AddressClass {
  const inner = classifyV4(v4, self);
  if (inner.ok) return alwaysDeny ? { ok: false, reason: form } : { ok: true };
  const embedded: { ipv4: string; reason: DenyReason; range?: string } = { ipv4: formatIp(v4), reason: inner.reason };
  if (inner.range !== undefined) embedded.range = inner.range;
  return { ok: false, reason: form, embedded };
}

function classifyV6(bytes: Uint8Array, self: readonly Uint8Array[]): AddressClass {
  if (isSelf(bytes, self)) return { ok: false, reason: 'self' };
  const first = match(IPV6_UNSPECIFIED_AND_LOOPBACK, bytes);
  if (first) return first;
  if (prefixContains(IPV4_MAPPED, bytes)) return embedding('ipv4-mapped', bytes.subarray(12), self);
  // Deprecated and never routed: refused even when the IPv4 inside is public.
  if (prefixContains(IPV4_COMPATIBLE, bytes)) return embedding('ipv4-compatible', bytes.subarray(12), self, true);
  if (prefixContains(NAT64_WELL_KNOWN, bytes)) return embedding('nat64', bytes.subarray(12), self);
  if (prefixContains(SIX_TO_FOUR, bytes)) return embedding('6to4', bytes.subarray(2, 6), self);
  if (prefixContains(TEREDO, bytes)) {
    const server = embedding('teredo', bytes.subarray(4, 8), self);
    if (!server.ok) return server;
    return embedding('teredo', bytes.subarray(12, 16).map((b) => b ^ 0xff), self);
  }
  const special = match(IPV6_TABLE, bytes);
  if (special) return special;
  if (!prefixContains(GLOBAL_UNICAST, bytes)) return { ok: false, reason: 'reserved', range: 'outside 2000::/3' };
  return { ok: true };
}

/**
 * The IPv4 address to dial for an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`),
 * otherwise the address itself. Dial the result: a mapped address opens an
 * IPv4 connection anyway, and dialling it as IPv4 keeps logs honest.
 */
export function unmapIpv4(bytes: Uint8Array): Uint8Array {
  return bytes.length === 16 && prefixContains(IPV4_MAPPED, bytes) ? bytes.slice(12) : bytes;
}
