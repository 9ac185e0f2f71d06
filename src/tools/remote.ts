/**
 * The way to a remote MCP server: the `fetch` its streamable HTTP client
 * transport uses. Every request is checked the way the egress proxy checks a
 * sandbox's own traffic, with that sandbox's agent's rules: the URL's host
 * and port (and method and path, where the rule has path rules) must be
 * allowed by `policy/`, the name is resolved here, every address is checked
 * after DNS (private, loopback, metadata, …; only a `cidr:` rule opens a
 * non-public range), and the socket dials exactly the address that was
 * checked (no second lookup, no rebinding window). Redirects are not
 * followed. Anything else (an `approve` path rule, an internal name, report
 * mode's would-deny) is refused: a tool call has its own approval.
 */
import type { LookupFunction } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';
import { resolveChecked, systemLookup, type EgressLookup } from '../egress/index.js';
import { createAddressDecider, createEgressDecider, failClosed, type EgressDecision, type EgressPolicy } from '../policy/index.js';
import { ToolsError } from './errors.js';

export interface RemoteEgressOptions {
  /** The calling agent's egress policy: `{ agent, egress, egressMode }`. */
  policy: EgressPolicy;
  /** @default the system resolver */
  lookup?: EgressLookup;
  /** Addresses of this host that are never dialled. @default [] */
  selfAddresses?: readonly string[];
  /** @default 5000 */
  dnsTimeoutMs?: number;
  /** Roots trusted for the server's certificate (PEM). @default the system roots */
  ca?: string | string[];
}

export type FetchLike = (url: string | URL, init?: RequestInit) => Promise<Response>;

export interface CheckedFetch {
  fetch: FetchLike;
  close(): Promise<void>;
}

/**
 * A fetch that reaches only what the agent's egress policy allows.
 * @throws (from the returned fetch) ToolsError `tools-egress-refused` with the policy's reason
 */
export function createCheckedFetch(o: RemoteEgressOptions): CheckedFetch {
  const decide = failClosed(createEgressDecider(o.policy));
  const checkAddress = failClosed(createAddressDecider(o.policy, { selfAddresses: o.selfAddresses ?? [] }));
  /** The checked address of each host name, as last resolved; the socket dials only these. */
  const pinned = new Map<string, { address: string; family: 4 | 6 }>();
  const pinnedLookup: LookupFunction = function pinnedLookup(hostname, options, callback) {
    const p = pinned.get(hostname.toLowerCase());
    const cb = callback as (err: NodeJS.ErrnoException | null, address: unknown, family?: number) => void;
    if (!p) return cb(Object.assign(new Error(`${hostname} was not checked by the egress policy`), { code: 'ENOTFOUND' }), undefined);
    if ((options as { all?: boolean }).all) cb(null, [{ address: p.address, family: p.family }]);
    else cb(null, p.address, p.family);
  };
  const agent = new Agent({ connect: { lookup: pinnedLookup, ...(o.ca ? { ca: o.ca } : {}) } });

  async function checkedFetch(input: string | URL, init: RequestInit = {}): Promise<Response> {
    const url = new URL(String(input));
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw refused('bad-scheme', `${url.protocol} is not http or https`);
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const method = (init.method ?? 'GET').toUpperCase();
    const d: EgressDecision = decide({ host, port, scheme: url.protocol === 'https:' ? 'https' : 'http', method, path: `${url.pathname}${url.search}` });
    if (d.result !== 'allow' || d.internal || d.wouldDeny) {
      const reason = d.result === 'approve' ? 'egress-approve' : d.wouldDeny ? d.wouldDeny.reason : d.internal ? 'internal' : d.reason;
      throw refused(reason, `the agent's egress rules do not let it reach ${host}:${port} (${reason})`, d.ruleId);
    }
    const r = await resolveChecked(d.host ?? host, port, { lookup: o.lookup ?? systemLookup, checkAddress, timeoutMs: o.dnsTimeoutMs ?? 5000 });
    if (!r.ok) throw refused(r.reason, r.problem);
    pinned.set(host.toLowerCase(), { address: r.address, family: r.family });
    const res = await undiciFetch(url, { ...(init as object), redirect: 'manual', dispatcher: agent } as Parameters<typeof undiciFetch>[1]);
    return res as unknown as Response;
  }
  return {
    fetch: checkedFetch,
    close: () => agent.close(),
  };
}

function refused(reason: string, message: string, ruleId?: string): ToolsError {
  return new ToolsError('tools-egress-refused', reason, message, {
    fix: "allow the server's host (and, for a private address, its range with a cidr: rule) in the agent's egress: rules",
    ...(ruleId ? { details: { ruleId } } : {}),
  });
}
