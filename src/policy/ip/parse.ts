/**
 * IP literal parsing in every notation a URL parser, curl or getaddrinfo (via
 * inet_aton) might accept, so that a destination such as `0x7f.1` or
 * `017700000001` is recognised as 127.0.0.1 rather than taken for a host name.
 *
 * IPv4 follows inet_aton and the WHATWG URL "IPv4 parser": one to four parts
 * separated by dots, each decimal, hex (`0x…`) or octal (leading `0`), the last
 * part filling the remaining bytes (`127.1` = 127.0.0.1), one trailing dot
 * allowed. IPv6 follows RFC 4291 §2.2 text forms, with or without brackets,
 * with an optional trailing dotted IPv4 and an optional zone id (RFC 4007 §11,
 * `%25` inside brackets per RFC 6874), which is reported, never dropped.
 * Pure: no DNS, no I/O, never throws.
 */

/** How an address was written; anything but `dotted` and `ipv6` is an evasion smell worth logging. */
export type IpNotation = 'dotted' | 'decimal' | 'hex' | 'octal' | 'mixed' | 'short' | 'ipv6';

export interface ParsedIp {
  family: 4 | 6;
  /** 4 bytes for IPv4, 16 for IPv6, network order. */
  bytes: Uint8Array;
  notation: IpNotation;
  /** IPv6 zone id (`eth0` in `fe80::1%eth0`); a destination with a zone must be refused. */
  zone?: string;
  /** The literal was written in brackets (`[::1]`). */
  bracketed?: boolean;
  /** The IPv4 literal ended with a dot (`127.0.0.1.`). */
  trailingDot?: boolean;
}

/** Longest text considered; anything longer is not an IP literal. */
const MAX_LITERAL_CHARS = 128;
/** Longest single IPv4 part considered (long runs of leading zeros are legal but bounded here). */
const MAX_PART_CHARS = 40;

type Radix = 'decimal' | 'hex' | 'octal';

/**
 * Parse an IP literal in any notation, or return undefined if `host` is not one.
 *
 * @param host a host as written in a URL, a CONNECT line or a Host header, without the port.
 * @example
 * parseIpLiteral('0x7f.1')          // { family: 4, bytes: [127,0,0,1], notation: 'hex' }
 * parseIpLiteral('[::ffff:7f00:1]') // { family: 6, bytes: [0,…,0xff,0xff,127,0,0,1], notation: 'ipv6', bracketed: true }
 * parseIpLiteral('fe80::1%eth0')    // { family: 6, …, zone: 'eth0' }
 * parseIpLiteral('example.com')     // undefined
 */
export function parseIpLiteral(host: string): ParsedIp | undefined {
  if (typeof host !== 'string' || host.length === 0 || host.length > MAX_LITERAL_CHARS) return undefined;
  if (host.startsWith('[')) {
    if (!host.endsWith(']') || host.length < 3) return undefined;
    const parsed = parseIpv6(host.slice(1, -1), true);
    return parsed && { ...parsed, bracketed: true };
  }
  if (host.includes(':')) return parseIpv6(host, false);
  return parseIpv4(host);
}

function parseIpv4(text: string): ParsedIp | undefined {
  let body = text;
  let trailingDot = false;
  if (body.endsWith('.') && body.length > 1) {
    body = body.slice(0, -1);
    trailingDot = true;
  }
  const parts = body.split('.');
  if (parts.length > 4) return undefined;
  const values: bigint[] = [];
  const radixes = new Set<Radix>();
  for (const part of parts) {
    const n = parseIpv4Part(part);
    if (!n) return undefined;
    values.push(n.value);
    radixes.add(n.radix);
  }
  const last = values.length - 1;
  for (let i = 0; i < last; i++) if (values[i]! > 255n) return undefined;
  const lastBits = BigInt(8 * (4 - last));
  if (values[last]! >= 1n << lastBits) return undefined;
  let value = values[last]!;
  for (let i = 0; i < last; i++) value |= values[i]! << BigInt(8 * (3 - i));
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) bytes[i] = Number((value >> BigInt(8 * (3 - i))) & 0xffn);
  const result: ParsedIp = { family: 4, bytes, notation: ipv4Notation(radixes, parts.length) };
  if (trailingDot) result.trailingDot = true;
  return result;
}

function parseIpv4Part(part: string): { value: bigint; radix: Radix } | undefined {
  if (part.length === 0 || part.length > MAX_PART_CHARS) return undefined;
  if (/^0x[0-9a-f]*$/i.test(part)) {
    const digits = part.slice(2);
    return { value: digits.length === 0 ? 0n : BigInt(`0x${digits}`), radix: 'hex' };
  }
  if (/^0[0-7]+$/.test(part)) return { value: BigInt(`0o${part.slice(1)}`), radix: 'octal' };
  if (/^(?:0|[1-9][0-9]*)$/.test(part)) return { value: BigInt(part), radix: 'decimal' };
  return undefined;
}

function ipv4Notation(radixes: Set<Radix>, parts: number): IpNotation {
  if (radixes.has('hex') && radixes.has('octal')) return 'mixed';
  if (radixes.has('hex')) return 'hex';
  if (radixes.has('octal')) return 'octal';
  if (parts === 4) return 'dotted';
  return parts === 1 ? 'decimal' : 'short';
}

const ZONE = /^[A-Za-z0-9_.~-]{1,64}$/;

function parseIpv6(text: string, bracketed: boolean): ParsedIp | undefined {
  let address = text;
  let zone: string | undefined;
  const percent = text.indexOf('%');
  if (percent >= 0) {
    address = text.slice(0, percent);
    zone = text.slice(percent + 1);
    // Inside a URL the "%" itself is percent-encoded (RFC 6874): "[fe80::1%25eth0]".
    if (bracketed && zone.startsWith('25') && zone.length > 2) zone = zone.slice(2);
    if (!ZONE.test(zone)) return undefined;
  }
  const bytes = parseIpv6Address(address);
  if (!bytes) return undefined;
  const result: ParsedIp = { family: 6, bytes, notation: 'ipv6' };
  if (zone !== undefined) result.zone = zone;
  return result;
}

/** RFC 4291 §2.2: eight groups of 1-4 hex digits, one optional "::", an optional trailing dotted IPv4. */
function parseIpv6Address(text: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const doubleColon = text.indexOf('::');
  if (doubleColon !== text.lastIndexOf('::') || text.includes(':::')) return undefined;
  const groups: number[] = [];
  let tailStart = -1;
  const halves = doubleColon >= 0 ? [text.slice(0, doubleColon), text.slice(doubleColon + 2)] : [text];
  for (let h = 0; h < halves.length; h++) {
    if (h === 1) tailStart = groups.length;
    const half = halves[h]!;
    if (half.length === 0) continue;
    const fields = half.split(':');
    for (let i = 0; i < fields.length; i++) {
      const field = fields[i]!;
      const isLastOfAddress = i === fields.length - 1 && h === halves.length - 1;
      if (field.includes('.')) {
        if (!isLastOfAddress) return undefined;
        const v4 = parseStrictDotted(field);
        if (!v4) return undefined;
        groups.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(field)) return undefined;
        groups.push(parseInt(field, 16));
      }
    }
  }
  if (doubleColon >= 0 ? groups.length > 7 : groups.length !== 8) return undefined;
  const full = doubleColon >= 0
    ? [...groups.slice(0, tailStart), ...new Array<number>(8 - groups.length).fill(0), ...groups.slice(tailStart)]
    : groups;
  const bytes = new Uint8Array(16);
  full.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** Four decimal parts 0-255 without leading zeros: the only IPv4 form allowed inside IPv6. */
function parseStrictDotted(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

/**
 * Canonical text of an address: dotted decimal for IPv4; RFC 5952 for IPv6
 * (lowercase, longest zero run compressed, `::ffff:a.b.c.d` for IPv4-mapped).
 * @example formatIp(parseIpLiteral('0x7f.1')!.bytes) // '127.0.0.1'
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length !== 16) return '';
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (mapped) return `::ffff:${Array.from(bytes.subarray(12)).join('.')}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/**
 * Does the last dot-separated label look numeric (`1`, `0x1f`)? A name like
 * that is not a valid host name (WHATWG URL treats it as IPv4 or fails), so a
 * host that looks numeric but does not parse as an address must be refused.
 */
export function looksLikeIpv4(host: string): boolean {
  const labels = host.replace(/\.$/, '').split('.');
  const last = labels[labels.length - 1] ?? '';
  return /^(?:[0-9]+|0x[0-9a-f]*)$/i.test(last);
}
