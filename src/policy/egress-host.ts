/**
 * Normalises the destination host of an egress request and says what kind it
 * is: a DNS name, an IP literal (any notation), one of cordon's own internal
 * services under `cordon.internal`, or something that must be refused.
 *
 * Names are lower-cased and lose one trailing dot. Anything that is not plain
 * ASCII letters, digits, `-` and `_` in dot-separated labels is refused:
 * non-ASCII (IDN must arrive as punycode, `xn--…`; refusing before lower-casing
 * also stops tricks such as the Kelvin sign U+212A lower-casing to `k`),
 * percent-encoding, empty labels, over-long names, and names whose last label
 * is numeric but that are not a valid address (`1.2.3.999`).
 */
import { RESERVED_DOMAIN } from '../config/index.js';
import { parseIpLiteral, formatIp, looksLikeIpv4, type ParsedIp } from './ip/index.js';

/** cordon's own services reachable from every sandbox, by name. */
export const INTERNAL_SERVICES = {
  [`llm.${RESERVED_DOMAIN}`]: 'llm',
  [`mcp.${RESERVED_DOMAIN}`]: 'mcp',
  [`approvals.${RESERVED_DOMAIN}`]: 'approvals',
} as const satisfies Record<string, string>;
/** The short name of an internal service (`llm`, `mcp`, `approvals`). */
export type InternalServiceName = (typeof INTERNAL_SERVICES)[keyof typeof INTERNAL_SERVICES];

export type Destination =
  | { kind: 'name'; host: string }
  | { kind: 'ip'; host: string; ip: ParsedIp }
  | { kind: 'internal'; host: string; service?: InternalServiceName }
  | { kind: 'bad'; problem: string };

/** DNS: at most 253 characters in a name (RFC 1035 §2.3.4, without the trailing dot), 63 in a label. */
const MAX_NAME_CHARS = 253;
const MAX_LABEL_CHARS = 63;
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

/**
 * Classify and normalise a request's host (without port).
 * @example
 * normalizeDestination('API.GitHub.com.')  // { kind: 'name', host: 'api.github.com' }
 * normalizeDestination('0x7f.1')           // { kind: 'ip', host: '127.0.0.1', ip: { … notation: 'hex' } }
 * normalizeDestination('llm.cordon.internal') // { kind: 'internal', host: 'llm.cordon.internal', service: 'llm' }
 */
export function normalizeDestination(raw: unknown): Destination {
  if (typeof raw !== 'string' || raw.length === 0) return bad('the host is empty');
  if (raw.length > MAX_NAME_CHARS + 2) return bad('the host is longer than 253 characters');
  if (/[^\x21-\x7e]/.test(raw)) return bad('the host contains whitespace, control or non-ASCII characters; send IDN names as punycode (xn--…)');
  if (raw.startsWith('[') || raw.includes(':')) {
    const ip = parseIpLiteral(raw);
    if (!ip) return bad('the host is neither a host name nor an IP address (a port must not be part of the host)');
    if (ip.zone !== undefined) return bad('the IPv6 address carries a zone id (%…), which names a local interface');
    return { kind: 'ip', host: formatIp(ip.bytes), ip };
  }
  const ip = parseIpLiteral(raw);
  if (ip) return { kind: 'ip', host: formatIp(ip.bytes), ip };
  let name = raw.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.length === 0 || name.length > MAX_NAME_CHARS) return bad('the host name is empty or longer than 253 characters');
  const labels = name.split('.');
  for (const label of labels) {
    if (label.length === 0) return bad('the host name has an empty label (two dots in a row or a leading dot)');
    if (label.length > MAX_LABEL_CHARS) return bad('the host name has a label longer than 63 characters');
    if (!LABEL.test(label)) return bad(`the host name has an invalid label "${label.slice(0, 63)}"`);
  }
  if (looksLikeIpv4(name)) return bad('the host ends in a number but is not a valid IPv4 address');
  if (name === RESERVED_DOMAIN || name.endsWith(`.${RESERVED_DOMAIN}`)) {
    const service = (INTERNAL_SERVICES as Record<string, InternalServiceName>)[name];
    return service ? { kind: 'internal', host: name, service } : { kind: 'internal', host: name };
  }
  return { kind: 'name', host: name };
}

function bad(problem: string): Destination {
  return { kind: 'bad', problem };
}
