/**
 * A sandbox's secret patterns, compiled once when its secrets are set and
 * shared: the multi-pattern matcher (matcher.ts) is the large part of a
 * sandbox's secret state (several MB at hundreds of secrets), so a sandbox
 * builds one per distinct pattern set, not one per user. There are two
 * (placeholders.ts): the values and placeholders, for the exfiltration
 * scanner (scan.ts); the values alone, shared by `valueIn` and the
 * reflection scrubber (reflect.ts), which orders the same patterns longest
 * first through a table of ids instead of a matcher of its own.
 *
 * Value patterns come first, then placeholders. A user that looks for values
 * only could take a set with placeholders and drop the ids from `valueCount`
 * up (the matcher reports each id that occurs whatever else is in its set,
 * and the scrubber does so); a sandbox does not, because the placeholders'
 * grams widen the matcher's sampled filter and every response scan would
 * pay for the memory saved.
 */
import { valuePatterns, type SecretEncoding } from './encodings.js';
import { createMultiPatternMatcher, type MultiPatternMatcher } from './matcher.js';
import type { SecretValue } from './value.js';

/** One byte pattern and the secret it stands for. */
export interface SecretPattern {
  bytes: Buffer;
  /** The secret's name. */
  secret: string;
  /** The form of the value (`raw` for a placeholder). */
  encoding: SecretEncoding;
}

/** Builds a matcher over patterns (ids are their indexes). */
export type MatcherFactory = (patterns: readonly Uint8Array[]) => MultiPatternMatcher;

export interface CompiledSecretPatterns {
  /** Each value's patterns (encodings.ts), values in map order, then one raw pattern per placeholder; an id is an index. */
  readonly patterns: readonly SecretPattern[];
  /** Ids below this are value patterns, the rest placeholders. */
  readonly valueCount: number;
  /** The longest value pattern in bytes (placeholders left out). */
  readonly longestValueBytes: number;
  /** The one matcher over every pattern. */
  readonly matcher: MultiPatternMatcher;
}

/**
 * Compile a sandbox's patterns and build their matcher, once.
 * @param values secret name → value: values that must never leave, and that are masked in responses
 * @param placeholders placeholder → secret name @default none
 * @param createMatcher @default createMultiPatternMatcher
 */
export function compileSecretPatterns(
  values: ReadonlyMap<string, SecretValue>,
  placeholders: ReadonlyMap<string, string> = new Map(),
  createMatcher: MatcherFactory = createMultiPatternMatcher,
): CompiledSecretPatterns {
  const patterns: SecretPattern[] = [];
  for (const [secret, value] of values) {
    for (const p of valuePatterns(value.revealBytes())) patterns.push({ ...p, secret });
  }
  const valueCount = patterns.length;
  const longestValueBytes = patterns.reduce((n, p) => Math.max(n, p.bytes.length), 0);
  for (const [ph, secret] of placeholders) patterns.push({ bytes: Buffer.from(ph, 'latin1'), secret, encoding: 'raw' });
  const matcher = createMatcher(patterns.map((p) => p.bytes));
  return { patterns, valueCount, longestValueBytes, matcher };
}
