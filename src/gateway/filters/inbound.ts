/**
 * The inbound text pass over a request body: one walk over every string that
 * redacts secret values and placeholders, refuses text that matches a deny
 * pattern, and counts the characters of prompt text for the token estimate.
 * Opaque payloads (data: URLs, long base64 runs) are skipped: they cannot be
 * read as text and would only cost time. The walk is iterative, so a deeply
 * nested body cannot overflow the stack.
 */
import type { CompiledPattern } from '../settings.js';

/** Values and patterns to take out of everything sent to a model. */
export interface RedactList {
  /** Secret values and placeholders, verbatim. Values shorter than 4 characters are ignored (they would match everywhere). */
  values: readonly string[];
  /** Shapes to redact, e.g. the placeholder format. Compiled with the `g` flag added. */
  patterns?: readonly RegExp[];
}

/** Text that replaces a redacted value. */
export const REDACTED = '[REDACTED by cordon]';
const MIN_VALUE_CHARS = 4;

export interface Redactor {
  /** Replace every match; `count` is how many were replaced. */
  redact(text: string): { text: string; count: number };
  /** The same matches as patterns, for scanning model output. */
  readonly outputPatterns: readonly CompiledPattern[];
}

const cache = new WeakMap<RedactList, Redactor | undefined>();

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Compile a redaction list (cached per list object: return the same object while it is unchanged).
 * @returns undefined when the list redacts nothing
 */
export function compileRedactor(list: RedactList): Redactor | undefined {
  if (cache.has(list)) return cache.get(list);
  const values = [...new Set(list.values.filter((v) => typeof v === 'string' && v.length >= MIN_VALUE_CHARS))]
    .sort((a, b) => b.length - a.length);
  const regexes: RegExp[] = [];
  const outputPatterns: CompiledPattern[] = [];
  if (values.length > 0) {
    const source = values.map(escapeRegex).join('|');
    regexes.push(new RegExp(source, 'g'));
    outputPatterns.push({ id: 'secret-value', re: new RegExp(source) });
  }
  for (const p of list.patterns ?? []) {
    regexes.push(new RegExp(p.source, p.flags.includes('g') ? p.flags : `${p.flags}g`));
    outputPatterns.push({ id: 'secret-pattern', re: new RegExp(p.source, p.flags.replace('g', '').replace('y', '')) });
  }
  const redactor: Redactor | undefined = regexes.length === 0 ? undefined : {
    redact(text: string) {
      let count = 0;
      let out = text;
      for (const re of regexes) {
        re.lastIndex = 0;
        if (!re.test(out)) continue;
        re.lastIndex = 0;
        out = out.replace(re, () => {
          count += 1;
          return REDACTED;
        });
      }
      return { text: out, count };
    },
    outputPatterns,
  };
  cache.set(list, redactor);
  return redactor;
}

/** True for strings that are payloads rather than text (base64 images, files). */
export function isOpaque(s: string): boolean {
  if (s.length < 256) return false;
  if (s.startsWith('data:')) return true;
  return s.length > 1024 && !/\s/.test(s.slice(0, 1024));
}

export interface InboundResult {
  /** Characters of readable text in the body (for the token estimate). */
  textChars: number;
  /** Values replaced by the redactor. */
  redactions: number;
  /** Id of the first deny pattern that matched. */
  denied?: string;
}

type Holder = Record<string, unknown> | unknown[];

/**
 * Walk every string of a parsed JSON body; redacts in place.
 * @param deny patterns that refuse the request; the walk stops at the first match
 */
export function scanInbound(body: unknown, redactor: Redactor | undefined, deny: readonly CompiledPattern[]): InboundResult {
  const result: InboundResult = { textChars: 0, redactions: 0 };
  const stack: Holder[] = [];
  if (body !== null && typeof body === 'object') stack.push(body as Holder);
  while (stack.length > 0) {
    const node = stack.pop()!;
    const keys: Array<string | number> = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
    for (const key of keys) {
      const value = (node as Record<string | number, unknown>)[key];
      if (typeof value === 'string') {
        if (value.length === 0 || isOpaque(value)) continue;
        result.textChars += value.length;
        for (const p of deny) {
          if (p.re.test(value)) {
            result.denied = p.id;
            return result;
          }
        }
        if (redactor) {
          const r = redactor.redact(value);
          if (r.count > 0) {
            (node as Record<string | number, unknown>)[key] = r.text;
            result.redactions += r.count;
          }
        }
      } else if (value !== null && typeof value === 'object') {
        stack.push(value as Holder);
      }
    }
  }
  return result;
}
