/**
 * The exfiltration scanner the egress proxy runs on every request of a
 * sandbox, before it substitutes anything: a real secret value anywhere (host,
 * path, query, any header, body), in any encoding of encodings.ts, or a
 * placeholder sent to a host its secret is not bound to, is a finding; the
 * proxy blocks the request and audits the secret's name, the host and where
 * it was found, never the value.
 *
 * Patterns: about ten per secret (encodings.ts) plus one per placeholder,
 * compiled once per sandbox into one multi-pattern matcher (patterns.ts,
 * matcher.ts), so a field or body window costs at most about one pass over
 * its bytes, however many secrets the sandbox holds. Each field and window is searched as bytes and, when it contains a
 * `%`, again as its percent-decoded form. What is reported is what a search
 * pattern by pattern, in the order values then placeholders, would report
 * first: of the patterns that occur, the first in that order. Whether a
 * placeholder may go to the request's host is asked only when it occurs,
 * once per request. Bodies
 * are scanned as a stream: each chunk is searched together with the last
 * `holdBackBytes` bytes before it, so a value split across chunks is found,
 * and `push` returns only the bytes that can no longer be part of a match
 * (forward those; `end` releases the rest), so not even a prefix of a split
 * value leaves before the decision.
 */
import { percentDecode, type SecretEncoding } from './encodings.js';
import { compileSecretPatterns, type CompiledSecretPatterns, type SecretPattern } from './patterns.js';
import type { RequestTarget } from './bindings.js';
import type { SecretValue } from './value.js';

export type ExfiltrationKind = 'placeholder-wrong-host' | 'secret-value';
export type ExfiltrationWhere = 'host' | 'path' | 'query' | 'body' | `header:${string}`;
export type ExfiltrationFinding =
  | { found: false }
  | { found: true; kind: ExfiltrationKind; secret: string; where: ExfiltrationWhere; encoding: SecretEncoding };

/** Request headers as Node gives and takes them (`IncomingHttpHeaders`, `OutgoingHttpHeaders`). */
export type HeaderMap = Record<string, string | readonly string[] | number | undefined>;

export interface ScanHead extends RequestTarget {
  /** The request target as sent: `/path?query`, or an absolute `http://host/path?query`. */
  path?: string;
  headers?: HeaderMap;
}

export interface ScanRequest extends ScanHead {
  /** The whole body, or its chunks in order. */
  body?: Uint8Array | readonly Uint8Array[];
}

export interface BodyScanResult {
  finding: ExfiltrationFinding;
  /** Bytes that may be forwarded now; empty once something was found. */
  forward: Buffer;
}

/** A streaming matcher for one request body. After a finding it stays found. */
export interface BodyScanner {
  push(chunk: Uint8Array): BodyScanResult;
  /** The body is complete: the held-back tail is released (when nothing was found). */
  end(): BodyScanResult;
}

export interface ExfiltrationScanner {
  /** Host, path, query and headers (names and values). */
  scanHead(head: ScanHead): ExfiltrationFinding;
  /** A matcher for the body of one request to `target`. */
  body(target: RequestTarget): BodyScanner;
  /** Head and whole body at once. */
  scan(request: ScanRequest): ExfiltrationFinding;
  /** Most bytes a body scanner holds back. */
  readonly holdBackBytes: number;
}

export interface ScannerInput {
  /** Values that must never leave the sandbox, by name. */
  values: ReadonlyMap<string, SecretValue>;
  /** Placeholder → secret name, for this sandbox. */
  placeholders: ReadonlyMap<string, string>;
  /** Whether `secret`'s placeholder may go to `target` (the proxy swaps it there). */
  isBound(secret: string, target: RequestTarget): boolean;
}

const NOT_FOUND: ExfiltrationFinding = Object.freeze({ found: false });
const PERCENT = 0x25;

/** Compile the patterns of a sandbox's secrets and placeholders once. */
export function createExfiltrationScanner(input: ScannerInput): ExfiltrationScanner {
  return createExfiltrationScannerOver(compileSecretPatterns(input.values, input.placeholders), input.isBound);
}

/**
 * A scanner over patterns already compiled for the sandbox (patterns.ts):
 * it asks their matcher and builds none of its own.
 * @param isBound whether `secret`'s placeholder may go to `target`
 */
export function createExfiltrationScannerOver(compiled: CompiledSecretPatterns, isBound: ScannerInput['isBound']): ExfiltrationScanner {
  const { patterns, valueCount, matcher } = compiled;
  // a pattern of L bytes spans at most 3L bytes when every byte is percent-encoded
  const holdBackBytes = Math.max(0, 3 * matcher.longestBytes - 1);

  /**
   * Which patterns count for a request to `target`: every value pattern, and
   * the placeholders whose secret is not bound there (a binding check that
   * throws counts as unbound). Asked lazily, once per secret per request.
   */
  function countsFor(target: RequestTarget): (id: number) => boolean {
    let bound: Map<string, boolean> | undefined;
    return function counts(id: number): boolean {
      if (id < valueCount) return true;
      const secret = patterns[id]!.secret;
      bound ??= new Map();
      let yes = bound.get(secret);
      if (yes === undefined) {
        try {
          yes = isBound(secret, target) === true;
        } catch {
          yes = false;
        }
        bound.set(secret, yes);
      }
      return !yes;
    };
  }

  /** The first counting pattern (in pattern order) that occurs in `window`, searched raw, then percent-decoded. */
  function search(window: Buffer, counts: (id: number) => boolean, where: ExfiltrationWhere): ExfiltrationFinding {
    const raw = firstCounting(matcher.occurring(window), counts);
    if (raw !== undefined) return finding(patterns[raw]!, raw < valueCount, where, patterns[raw]!.encoding);
    if (window.indexOf(PERCENT) < 0) return NOT_FOUND;
    const decoded = firstCounting(matcher.occurring(percentDecode(window)), counts);
    if (decoded === undefined) return NOT_FOUND;
    const p = patterns[decoded]!;
    return finding(p, decoded < valueCount, where, p.encoding === 'raw' || p.encoding === 'json' ? 'url' : p.encoding);
  }

  function scanHead(head: ScanHead): ExfiltrationFinding {
    const counts = countsFor(head);
    const check = (text: string, where: ExfiltrationWhere): ExfiltrationFinding => search(Buffer.from(text, 'latin1'), counts, where);
    let f = check(String(head.host ?? ''), 'host');
    if (f.found) return f;
    let target = String(head.path ?? '');
    const absolute = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(target);
    if (absolute) {
      f = check(absolute[1]!, 'host'); // the authority of an absolute-form target, userinfo included
      if (f.found) return f;
      target = target.slice(absolute[0].length);
    }
    const q = target.indexOf('?');
    f = check(q < 0 ? target : target.slice(0, q), 'path');
    if (f.found) return f;
    if (q >= 0) {
      f = check(target.slice(q + 1), 'query');
      if (f.found) return f;
    }
    for (const [name, raw] of Object.entries(head.headers ?? {})) {
      if (raw === undefined) continue;
      const where = `header:${name.toLowerCase()}` as const;
      f = check(name, where);
      if (f.found) return f;
      for (const value of Array.isArray(raw) ? raw : [raw]) {
        f = check(String(value), where);
        if (f.found) return f;
      }
    }
    return NOT_FOUND;
  }

  function body(target: RequestTarget): BodyScanner {
    const counts = countsFor(target);
    let held: Buffer = Buffer.alloc(0);
    let finding: ExfiltrationFinding = NOT_FOUND;
    return {
      push(chunk) {
        if (finding.found) return { finding, forward: Buffer.alloc(0) };
        const window = held.length === 0 ? Buffer.from(chunk) : Buffer.concat([held, chunk]);
        finding = search(window, counts, 'body');
        if (finding.found) {
          held = Buffer.alloc(0);
          return { finding, forward: Buffer.alloc(0) };
        }
        const cut = Math.max(0, window.length - holdBackBytes);
        held = Buffer.from(window.subarray(cut));
        return { finding, forward: window.subarray(0, cut) };
      },
      end() {
        const forward = finding.found ? Buffer.alloc(0) : held;
        held = Buffer.alloc(0);
        return { finding, forward };
      },
    };
  }

  function scan(request: ScanRequest): ExfiltrationFinding {
    const head = scanHead(request);
    if (head.found || request.body === undefined) return head;
    const chunks = request.body instanceof Uint8Array ? [request.body] : request.body;
    const b = body(request);
    for (const chunk of chunks) {
      const r = b.push(chunk);
      if (r.finding.found) return r.finding;
    }
    return b.end().finding;
  }

  return { scanHead, body, scan, holdBackBytes };
}

/** Scan one request with a sandbox's scanner (see {@link createExfiltrationScanner}). */
export function scanForExfiltration(request: ScanRequest, scanner: ExfiltrationScanner): ExfiltrationFinding {
  return scanner.scan(request);
}

/** The first id of `ids` (ascending) that counts. */
function firstCounting(ids: readonly number[], counts: (id: number) => boolean): number | undefined {
  for (const id of ids) if (counts(id)) return id;
  return undefined;
}

function finding(p: SecretPattern, isValue: boolean, where: ExfiltrationWhere, encoding: SecretEncoding): ExfiltrationFinding {
  return { found: true, kind: isValue ? 'secret-value' : 'placeholder-wrong-host', secret: p.secret, where, encoding };
}
