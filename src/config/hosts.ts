/**
 * Host patterns for egress rules, and CIDR ranges for IP rules.
 *
 * A host pattern is either an exact DNS name (`api.github.com`) or a wildcard
 * over a registrable domain (`*.pythonhosted.org`). `*.example.com` matches
 * every name *below* `example.com` (`a.example.com`, `a.b.example.com`) but not
 * `example.com` itself. Patterns that would open more than their author can
 * mean are rejected with the reason and a fix: `*`, wildcards over public
 * suffixes (`*.com`, `*.co.uk`), single labels, schemes, paths, ports, IP
 * literals and wildcards anywhere but the whole leftmost label.
 */
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { publicSuffixKind } from './suffixes.js';

export type HostPatternResult =
  | { ok: true; normalized: string }
  | { ok: false; problem: string; fix: string };

/** Names under this domain are cordon's own services, reached without egress rules. */
export const RESERVED_DOMAIN = 'cordon.internal';

const LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;

function fail(problem: string, fix: string): HostPatternResult {
  return { ok: false, problem, fix };
}

/**
 * Check an egress host pattern and return it in canonical form (lowercase, no
 * trailing dot), or the problem and how to fix it. Pure: no DNS, no I/O.
 *
 * @param pattern the `host:` value from an egress rule.
 * @example
 * validateHostPattern('API.GitHub.com') // { ok: true, normalized: 'api.github.com' }
 * validateHostPattern('*.com')          // { ok: false, problem: '"*.com" matches every …', fix: … }
 */
export function validateHostPattern(pattern: string): HostPatternResult {
  if (typeof pattern !== 'string' || pattern.trim().length === 0) {
    return fail('the host is empty', 'write a host name such as "api.example.com"');
  }
  const p = pattern.trim();
  if (/\s/.test(p)) return fail(`"${p}" contains whitespace`, 'write one host name per rule, without spaces');
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(p);
  if (scheme) {
    const rest = p.slice(scheme[0].length).split(/[/:?#]/)[0] ?? '';
    return fail(`"${p}" includes a URL scheme ("${scheme[1]}://")`, `write only the host name: host: "${rest.toLowerCase()}"`);
  }
  if (/[/?#]/.test(p)) {
    const host = p.split(/[/?#]/)[0] ?? '';
    return fail(
      `"${p}" includes a path; a host pattern is only a name`,
      `use host: "${host.toLowerCase()}" and put the path in a rule: rules: [{ path: "/…", action: allow }]`,
    );
  }
  if (p.includes('@')) return fail(`"${p}" includes user information ("…@")`, 'write only the host name; put credentials in secrets:');
  const unbracketed = p.startsWith('[') && p.endsWith(']') ? p.slice(1, -1) : p;
  const ipVersion = isIP(unbracketed);
  if (ipVersion !== 0) {
    const bits = ipVersion === 4 ? 32 : 128;
    return fail(`"${p}" is an IP address, not a host name`, `use cidr: "${unbracketed.toLowerCase()}/${bits}" instead of host:`);
  }
  if (p.includes(':')) {
    const m = /^(.*):(\d+)$/.exec(p);
    if (m) {
      return fail(`"${p}" includes a port`, `use host: "${m[1]!.toLowerCase()}" with ports: [${m[2]}]`);
    }
    return fail(`"${p}" contains ":", which cannot appear in a host name`, 'write a plain host name such as "api.example.com"');
  }
  let name = p.toLowerCase();
  if (name.endsWith('.') && name.length > 1) name = name.slice(0, -1);
  if (name === '*' || name === '*.*' || /^\*+$/.test(name)) {
    return fail(`"${p}" matches every host on the internet`, 'list the hosts the agent needs, e.g. host: "api.github.com"');
  }
  if (/[^\x21-\x7e]/.test(name)) {
    const ascii = domainToASCII(name.replace(/^\*\./, 'x.'));
    const fixed = ascii ? (name.startsWith('*.') ? `*.${ascii.slice(2)}` : ascii) : '';
    return fail(
      `"${p}" contains non-ASCII characters`,
      fixed ? `write the punycode form: host: "${fixed}"` : 'write the punycode (xn--…) form of the name',
    );
  }
  if (name.length > 253) return fail(`"${p}" is longer than 253 characters`, 'use a shorter host name');
  const labels = name.split('.');
  if (labels.some((l) => l.length === 0)) {
    return fail(`"${p}" has an empty label (a leading dot or two dots in a row)`, 'remove the extra dot');
  }
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (!label.includes('*')) continue;
    if (label === '*' && i === 0) continue;
    return fail(
      `"${p}" has a wildcard inside or after the first label; "*" may only be the whole leftmost label`,
      'use "*.example.com" to match every name below example.com, or list exact hosts',
    );
  }
  const wildcard = labels[0] === '*';
  const rest = wildcard ? labels.slice(1) : labels;
  for (const label of rest) {
    if (label.length > 63) return fail(`"${p}" has a label longer than 63 characters ("${label.slice(0, 20)}…")`, 'check the host name; DNS labels are at most 63 characters');
    if (!LABEL.test(label)) {
      return fail(
        `"${p}" has an invalid label "${label}": only letters, digits and "-" are allowed, not at the start or end`,
        'check the spelling of the host name',
      );
    }
  }
  const suffix = rest.join('.');
  if (/^\d+$/.test(rest[rest.length - 1]!)) {
    return fail(`"${p}" ends in a numeric label, so it looks like an IP address`, 'use cidr: for IP addresses, or write the full host name');
  }
  if (rest.length === 1) {
    return wildcard
      ? fail(`"${p}" puts a wildcard over the top-level domain ".${suffix}", which matches every host under it`, `list exact hosts or a wildcard over one domain, e.g. "*.example.${suffix}"`)
      : fail(`"${p}" is a single label (a bare top-level domain or local name), not a host`, `write a fully qualified host name, e.g. "api.example.${suffix}"`);
  }
  if (suffix === RESERVED_DOMAIN || suffix.endsWith(`.${RESERVED_DOMAIN}`)) {
    return fail(`"${p}" is under ${RESERVED_DOMAIN}, which is reserved for cordon's own services`, 'remove this rule; the gateway, tools and approvals are always reachable');
  }
  if (wildcard) {
    const kind = publicSuffixKind(suffix);
    if (kind === 'tld' || kind === 'registry') {
      return fail(
        `"${p}" puts a wildcard over the public suffix ".${suffix}", so it matches every domain anyone can register there`,
        `name the domain, e.g. "*.example.${suffix}" or an exact host`,
      );
    }
    if (kind === 'hosting') {
      return fail(
        `"${p}" puts a wildcard over "${suffix}", where anyone can create a subdomain, so it would reach hosts an attacker controls`,
        `list the exact hosts, e.g. "myproject.${suffix}"`,
      );
    }
  }
  return { ok: true, normalized: name };
}

/**
 * Does `host` match `pattern`? Both are compared case-insensitively, and a
 * trailing dot on the host is ignored. `*.example.com` matches names below
 * example.com, never example.com itself. Invalid patterns, and hosts that are
 * not plain dotted names, match nothing (fail closed).
 *
 * @example
 * hostMatches('*.example.com', 'a.b.example.com') // true
 * hostMatches('*.example.com', 'example.com')     // false
 */
export function hostMatches(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase().replace(/\.$/, '');
  const h = host.toLowerCase().replace(/\.$/, '');
  if (p.length === 0 || !/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(h)) return false;
  if (p.startsWith('*.')) {
    const suffix = p.slice(1);
    if (suffix.includes('*')) return false;
    return h.length > suffix.length && h.endsWith(suffix);
  }
  if (p.includes('*')) return false;
  return p === h;
}

export type CidrResult =
  | { ok: true; normalized: string; version: 4 | 6; prefix: number }
  | { ok: false; problem: string; fix: string };

/**
 * Check a CIDR range such as `10.0.0.0/8` or `2001:db8::/32`. A bare address
 * is taken as a single host (`/32` or `/128`). Host bits set after the prefix
 * are rejected, and so are `/0` ranges (every address).
 */
export function validateCidr(text: string): CidrResult {
  const t = typeof text === 'string' ? text.trim().toLowerCase() : '';
  const fix = 'write an address and prefix length, e.g. "10.0.0.0/8" or "2001:db8::/32"';
  if (t.length === 0) return { ok: false, problem: 'the cidr is empty', fix };
  const [addr = '', prefixText, extra] = t.split('/');
  if (extra !== undefined) return { ok: false, problem: `"${text}" has more than one "/"`, fix };
  const version = isIP(addr) as 0 | 4 | 6;
  if (version === 0) return { ok: false, problem: `"${addr}" is not an IP address`, fix };
  const bits = version === 4 ? 32 : 128;
  let prefix = bits;
  if (prefixText !== undefined) {
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) {
      return { ok: false, problem: `"/${prefixText}" is not a prefix length for IPv${version}`, fix: `use a prefix from /1 to /${bits}` };
    }
    prefix = Number(prefixText);
  }
  if (prefix === 0) {
    return { ok: false, problem: `"${text}" matches every IPv${version} address`, fix: 'list the networks the agent needs, with a prefix of at least /1' };
  }
  const value = ipToBigInt(addr, version);
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  if ((value & hostMask) !== 0n) {
    const network = bigIntToIp(value & ~hostMask, version);
    return { ok: false, problem: `"${text}" has bits set after the /${prefix} prefix`, fix: `use the network address: "${network}/${prefix}"` };
  }
  return { ok: true, normalized: `${bigIntToIp(value, version)}/${prefix}`, version, prefix };
}

/** Parse an IP address (already checked with `isIP`) into a number. */
export function ipToBigInt(addr: string, version: 4 | 6): bigint {
  if (version === 4) {
    return addr.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
  }
  let text = addr;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const n = ipToBigInt(v4[1]!, 4);
    text = text.slice(0, -v4[1]!.length) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = tail ? tail.split(':') : [];
  const missing = 8 - headParts.length - tailParts.length;
  const parts = [...headParts, ...Array<string>(tail === undefined ? 0 : missing).fill('0'), ...tailParts];
  return parts.reduce((acc, part) => (acc << 16n) | BigInt(parseInt(part, 16)), 0n);
}

function bigIntToIp(value: bigint, version: 4 | 6): string {
  if (version === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
  }
  const parts: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) parts.push(((value >> s) & 0xffffn).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (parts[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && parts[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return parts.join(':');
  return `${parts.slice(0, best).join(':')}::${parts.slice(best + bestLen).join(':')}`;
}
