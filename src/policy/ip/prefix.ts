/**
 * Address prefixes (CIDR ranges) as bytes, and the containment test shared by
 * the address classifier and by `cidr:` egress rules. Validation of the text
 * of a config `cidr:` is done by the config layer (`validateCidr`); this file
 * only turns well-formed text into bytes and compares.
 */
import { parseIpLiteral, formatIp } from './parse.js';

export interface IpPrefix {
  family: 4 | 6;
  /** Network address, 4 or 16 bytes. */
  bytes: Uint8Array;
  /** Prefix length in bits. */
  bits: number;
}

/**
 * Parse `address/bits` written in standard notation (dotted IPv4 or IPv6),
 * or undefined if it is not one. A bare address is a single host.
 * @example parsePrefix('100.64.0.0/10') // { family: 4, bytes: [100,64,0,0], bits: 10 }
 */
export function parsePrefix(text: string): IpPrefix | undefined {
  if (typeof text !== 'string') return undefined;
  const [addr = '', bitsText, extra] = text.split('/');
  if (extra !== undefined) return undefined;
  const ip = parseIpLiteral(addr);
  if (!ip || ip.zone !== undefined || (ip.family === 4 && ip.notation !== 'dotted')) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  if (bitsText !== undefined && !/^\d{1,3}$/.test(bitsText)) return undefined;
  const bits = bitsText === undefined ? max : Number(bitsText);
  if (bits > max) return undefined;
  return { family: ip.family, bytes: ip.bytes, bits };
}

/**
 * Parse a prefix that is known to be valid (a table entry in this code); throws otherwise,
 * so a typo in a built-in table fails at load time, not silently at dial time.
 */
export function prefix(text: string): IpPrefix {
  const p = parsePrefix(text);
  if (!p) throw new Error(`invalid built-in prefix ${text}`);
  return p;
}

/** Is `bytes` (4 or 16 bytes) inside `range`? Different families never match. */
export function prefixContains(range: IpPrefix, bytes: Uint8Array): boolean {
  if (bytes.length !== range.bytes.length) return false;
  const whole = range.bits >> 3;
  for (let i = 0; i < whole; i++) if (bytes[i] !== range.bytes[i]) return false;
  const rest = range.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((bytes[whole]! ^ range.bytes[whole]!) & mask) === 0;
}

/** `10.0.0.0/8`-style text of a prefix. */
export function formatPrefix(range: IpPrefix): string {
  return `${formatIp(range.bytes)}/${range.bits}`;
}
