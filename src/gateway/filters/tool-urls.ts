/**
 * URLs in tool-call arguments, checked against the agent's egress policy: a
 * model that asks a tool to fetch or post to a host the agent may not reach
 * is flagged or stopped before the tool call completes. Uses the same pure
 * decider as the egress proxy (`createEgressDecider`), at connection level,
 * and fails closed (a decider that throws means deny).
 */
import { createEgressDecider, failClosed, type EgressPolicy } from '../../policy/index.js';

/** A URL the policy refuses. */
export interface UrlDenial {
  host: string;
  reason: string;
  ruleId?: string;
  /** The agent runs in egress report mode: the proxy would only log this. */
  reportOnly?: boolean;
}

/** Returns a denial for a URL the agent may not reach, undefined otherwise (or for text that is not a URL). */
export type UrlChecker = (url: string) => UrlDenial | undefined;

/** URLs with a scheme, up to a character that cannot be part of one in JSON or prose. */
const URL_PATTERN = /\b(?:https?|wss?|ftp):\/\/[^\s"'<>\\`{}|^]+/gi;

const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443, 'ws:': 80, 'wss:': 443, 'ftp:': 21 };

/** Every URL-looking run in a text, in order (duplicates kept). */
export function findUrls(text: string): Array<{ url: string; start: number; end: number }> {
  const out: Array<{ url: string; start: number; end: number }> = [];
  URL_PATTERN.lastIndex = 0;
  for (let m = URL_PATTERN.exec(text); m !== null; m = URL_PATTERN.exec(text)) {
    const url = m[0].replace(/[.,;:!?)\]]+$/, '');
    out.push({ url, start: m.index, end: m.index + m[0].length });
  }
  return out;
}

/** A checker for one agent's egress policy (compiled once). */
export function createUrlChecker(policy: EgressPolicy): UrlChecker {
  const decide = failClosed(createEgressDecider(policy));
  return function checkUrl(candidate: string): UrlDenial | undefined {
    let url: URL;
    try {
      url = new URL(candidate);
    } catch {
      return undefined;
    }
    let host = url.hostname;
    if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
    const port = url.port ? Number(url.port) : DEFAULT_PORTS[url.protocol] ?? 443;
    const d = decide({ host, port, scheme: 'connect' });
    if (d.result === 'deny') return { host, reason: d.reason, ...(d.ruleId ? { ruleId: d.ruleId } : {}) };
    const would = (d as { wouldDeny?: { reason: string } }).wouldDeny;
    if (would) return { host, reason: would.reason, reportOnly: true };
    return undefined;
  };
}

/** Strings of a JSON text (decoded, so `https:\/\/` escapes are undone), or the text itself when it is not JSON. */
export function decodedStrings(text: string): string[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return [text.replace(/\\\//g, '/')];
  }
  const out: string[] = [];
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') out.push(v);
    else if (Array.isArray(v)) for (const inner of v) stack.push(inner);
    else if (v !== null && typeof v === 'object') {
      for (const [k, inner] of Object.entries(v)) {
        out.push(k);
        stack.push(inner);
      }
    }
  }
  return out;
}
