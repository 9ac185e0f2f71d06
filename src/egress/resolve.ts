/**
 * Resolving a destination for the egress proxy: the proxy (never the guest)
 * looks the name up, every resolved address is checked by the post-DNS
 * address decider, and the caller dials exactly the address returned here:
 * there is no second lookup, so DNS rebinding has no window. If any address
 * of a name is refused, the whole name is refused (a name that mixes public
 * and private addresses is treated as hostile).
 */
import { lookup as dnsLookup } from 'node:dns';
import { parseIpLiteral, formatIp } from '../policy/ip/index.js';
import type { AddressDecision, AddressRequest } from '../policy/index.js';

/** One resolved address, as `dns.lookup` with `all: true` gives it. */
export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name to all its addresses. */
export type EgressLookup = (host: string) => Promise<ResolvedAddress[]>;

/** The system resolver (`getaddrinfo` through `dns.lookup`), every address, in resolver order. */
export const systemLookup: EgressLookup = function systemLookup(host: string): Promise<ResolvedAddress[]> {
  return new Promise((resolve, reject) => {
    dnsLookup(host, { all: true, verbatim: true }, (err, addresses) => {
      if (err) reject(err);
      else resolve(addresses.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 })));
    });
  });
};

export type ResolveResult =
  | { ok: true; address: string; family: 4 | 6; decision: AddressDecision; all: string[] }
  | { ok: false; reason: string; problem: string; address?: string; decision?: AddressDecision; all: string[] };

export interface ResolveOptions {
  lookup: EgressLookup;
  checkAddress: (req: AddressRequest) => AddressDecision;
  timeoutMs: number;
}

/**
 * Resolve `host` (a normalised name or canonical IP text) and check every address for `port`.
 * @example await resolveChecked('api.example.com', 443, opts) // { ok: true, address: '93.184.216.34', … }
 */
export async function resolveChecked(host: string, port: number, opts: ResolveOptions): Promise<ResolveResult> {
  const literal = parseIpLiteral(host);
  let addresses: ResolvedAddress[];
  if (literal) {
    addresses = [{ address: formatIp(literal.bytes), family: literal.bytes.length === 4 ? 4 : 6 }];
  } else {
    try {
      addresses = await withTimeout(opts.lookup(host), opts.timeoutMs);
    } catch (err) {
      const timedOut = err instanceof TimeoutError;
      return {
        ok: false, reason: timedOut ? 'dns-timeout' : 'dns-failed', all: [],
        problem: timedOut ? `resolving ${host} took longer than ${opts.timeoutMs} ms` : `resolving ${host} failed: ${(err as Error)?.message ?? err}`,
      };
    }
  }
  if (!Array.isArray(addresses) || addresses.length === 0) return { ok: false, reason: 'no-address', problem: `${host} has no address`, all: [] };
  const all = addresses.map((a) => String(a?.address));
  let first: { address: string; family: 4 | 6; decision: AddressDecision } | undefined;
  for (const a of addresses) {
    let decision: AddressDecision;
    try {
      decision = opts.checkAddress({ address: String(a?.address), port });
    } catch {
      decision = { result: 'deny', reason: 'policy-error' };
    }
    const address = decision.address ?? String(a?.address);
    if (decision.result !== 'allow') {
      return { ok: false, reason: decision.reason, problem: `${host} resolves to ${address}, which is refused (${decision.reason})`, address, decision, all };
    }
    const ip = parseIpLiteral(address);
    if (!ip) return { ok: false, reason: 'invalid-address', problem: `${host} resolved to an unreadable address`, all };
    first ??= { address: formatIp(ip.bytes), family: ip.bytes.length === 4 ? 4 : 6, decision };
  }
  return { ok: true, ...first!, all };
}

class TimeoutError extends Error {}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError('timeout')), ms);
    p.then(
      (v) => { clearTimeout(timer); resolve(v); },
      (e) => { clearTimeout(timer); reject(e); },
    );
  });
}
