/**
 * The response side of secret substitution: an upstream that echoes what it
 * was sent (a debugging endpoint, an error page quoting the request, a
 * `Location` built from a header) would hand the guest the real value the
 * proxy put into the request. This scrubber finds every real value of the
 * sandbox in a response, in each form of encodings.ts (raw, JSON string,
 * hex, base64 and base64url at every alignment, and any of these with bytes
 * percent-encoded), and overwrites the bytes of each occurrence in place with
 * a mask of the same length (`*`).
 *
 * Why a same-length mask and not the placeholder: a body keeps its
 * `Content-Length` and every byte offset (`Content-Range`, JSON positions),
 * so the proxy never re-frames a response, and what the guest learns is at
 * most the length of a value, which the placeholder does not hide either.
 *
 * Bodies are scrubbed as a stream: each chunk is searched together with the
 * last `holdBackBytes` bytes before it (3 × the longest pattern − 1, since a
 * fully percent-encoded pattern is three times as long), so an occurrence
 * split over chunks is found whole; only bytes that can no longer be part of
 * an occurrence are released. Memory per response is that tail plus one
 * chunk.
 *
 * Masking runs pattern by pattern, longest first, each pattern's
 * occurrences left to right, each mask seen by the patterns after it. A
 * multi-pattern matcher (matcher.ts) built once per sandbox first says
 * which patterns occur at all, in one pass; only those are searched and
 * masked (and, once something is, the patterns that contain the mask byte
 * itself, which a mask could complete). In a sandbox that matcher is the
 * one its `valueIn` uses (patterns.ts); placeholders, in a pattern set that
 * has them, are ignored here. A pattern that occurs nowhere and
 * holds no mask byte cannot occur after any masking, so the result is the
 * same as searching for every pattern, at a cost that does not grow with
 * the number of secrets when nothing is reflected.
 *
 * Not covered (stated in SPEC.md): application-level compression (a gzip or
 * zip file served as data), encodings outside encodings.ts (mixed-case hex,
 * line-wrapped base64, reversed text), and a value returned in pieces over
 * separate responses (Range requests, an upstream that echoes substrings):
 * each piece is shorter than any pattern. The proxy asks upstreams for
 * identity encoding and decodes or refuses a compressed response
 * (response-hook.ts).
 */
import type { SecretEncoding } from './encodings.js';
import { compileSecretPatterns, type CompiledSecretPatterns } from './patterns.js';
import type { SecretValue } from './value.js';

/** One kind of occurrence in one response: secret name, form, how many. Never the value. */
export interface ReflectedCount {
  secret: string;
  form: SecretEncoding;
  count: number;
}

/** A streaming scrubber for one response body. */
export interface ReflectionBodyScrubber {
  /** Scrub a chunk; returns the bytes that may be sent now (maybe empty). */
  push(chunk: Uint8Array): Buffer;
  /** The body is complete: returns the held-back tail, scrubbed. */
  end(): Buffer;
  /** Bytes held back now (at most `holdBackBytes`). */
  readonly heldBytes: number;
  /** What was masked so far. */
  counts(): ReflectedCount[];
}

export interface ReflectionScrubber {
  /** Mask every occurrence in `text` (a header name or value, latin1 as Node carries them). */
  scrubText(text: string, found?: Map<string, ReflectedCount>): string;
  /** A scrubber for one response body. */
  body(): ReflectionBodyScrubber;
  /** Most bytes a body scrubber holds back. */
  readonly holdBackBytes: number;
}

/** The byte every masked byte becomes. */
export const REFLECTION_MASK_BYTE = 0x2a; // '*'
const PERCENT = 0x25;

const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX[0x30 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX[0x41 + i] = 10 + i;
  HEX[0x61 + i] = 10 + i;
}

/**
 * Percent-decode `input` (one level, as encodings.ts) and keep, for each
 * decoded byte, the offset in `input` where it starts; `origin[decoded.length]`
 * is `input.length`.
 */
function percentDecodeMapped(input: Buffer): { decoded: Buffer; origin: Uint32Array } {
  const decoded = Buffer.allocUnsafe(input.length);
  const origin = new Uint32Array(input.length + 1);
  let o = 0;
  for (let i = 0; i < input.length; i++) {
    origin[o] = i;
    const b = input[i]!;
    if (b === PERCENT && i + 2 < input.length) {
      const hi = HEX[input[i + 1]!]!;
      const lo = HEX[input[i + 2]!]!;
      if (hi >= 0 && lo >= 0) {
        decoded[o++] = (hi << 4) | lo;
        i += 2;
        continue;
      }
    }
    decoded[o++] = b;
  }
  origin[o] = input.length;
  return { decoded: decoded.subarray(0, o), origin };
}

/**
 * Make the scrubber for a sandbox's real values (its own secrets and the
 * values it must never see, e.g. provider keys).
 * @param values secret name → value
 */
export function createReflectionScrubber(values: ReadonlyMap<string, SecretValue>): ReflectionScrubber {
  return createReflectionScrubberOver(compileSecretPatterns(values));
}

/**
 * The scrubber over patterns already compiled for the sandbox (patterns.ts):
 * it asks their matcher and builds none of its own. Their value patterns are
 * masked, longest first; placeholders, if the set has any, are ignored.
 */
export function createReflectionScrubberOver(compiled: CompiledSecretPatterns): ReflectionScrubber {
  const { matcher, valueCount } = compiled;
  // Longest first (a stable sort): a longer form (the raw value) is masked before a shorter one inside it could be counted.
  const order = Array.from({ length: valueCount }, (_, id) => id).sort((a, b) => compiled.patterns[b]!.bytes.length - compiled.patterns[a]!.bytes.length);
  const patterns = order.map((id) => compiled.patterns[id]!);
  /** A matcher id (value pattern) → its place in `patterns`. */
  const rankOf = new Int32Array(valueCount);
  order.forEach((id, rank) => { rankOf[id] = rank; });
  const holdBackBytes = Math.max(0, 3 * compiled.longestValueBytes - 1);
  const withMaskByte = patterns.flatMap((p, rank) => (p.bytes.includes(REFLECTION_MASK_BYTE) ? [rank] : []));

  /** The patterns to search in `text`, in pattern order: those that occur, and once any does, those a mask could complete. */
  const toSearch = (text: Buffer): number[] => {
    const occurring: number[] = [];
    for (const id of matcher.occurring(text)) if (id < valueCount) occurring.push(rankOf[id]!);
    occurring.sort((a, b) => a - b);
    if (occurring.length === 0 || withMaskByte.length === 0) return occurring;
    return [...new Set([...occurring, ...withMaskByte])].sort((a, b) => a - b);
  };

  const tally = (found: Map<string, ReflectedCount>, secret: string, form: SecretEncoding): void => {
    const key = `${secret}\0${form}`;
    const c = found.get(key);
    if (c) c.count += 1;
    else found.set(key, { secret, form, count: 1 });
  };

  /** Mask every occurrence in `buf`, in place. */
  function maskInPlace(buf: Buffer, found: Map<string, ReflectedCount>): void {
    for (const id of toSearch(buf)) {
      const p = patterns[id]!;
      for (let at = buf.indexOf(p.bytes); at >= 0; at = buf.indexOf(p.bytes, at + p.bytes.length)) {
        buf.fill(REFLECTION_MASK_BYTE, at, at + p.bytes.length);
        tally(found, p.secret, p.encoding);
      }
    }
    if (buf.indexOf(PERCENT) < 0) return;
    const { decoded, origin } = percentDecodeMapped(buf);
    if (decoded.length === buf.length) return; // nothing was percent-encoded
    for (const id of toSearch(decoded)) {
      const p = patterns[id]!;
      for (let at = decoded.indexOf(p.bytes); at >= 0; at = decoded.indexOf(p.bytes, at + p.bytes.length)) {
        decoded.fill(REFLECTION_MASK_BYTE, at, at + p.bytes.length);
        buf.fill(REFLECTION_MASK_BYTE, origin[at]!, origin[at + p.bytes.length]!);
        tally(found, p.secret, p.encoding === 'raw' || p.encoding === 'json' ? 'url' : p.encoding);
      }
    }
  }

  function scrubText(text: string, found: Map<string, ReflectedCount> = new Map()): string {
    if (patterns.length === 0) return text;
    const buf = Buffer.from(text, 'latin1');
    const before = found.size === 0 ? 0 : [...found.values()].reduce((n, c) => n + c.count, 0);
    maskInPlace(buf, found);
    const after = [...found.values()].reduce((n, c) => n + c.count, 0);
    return after === before ? text : buf.toString('latin1');
  }

  function body(): ReflectionBodyScrubber {
    const found = new Map<string, ReflectedCount>();
    let held: Buffer = Buffer.alloc(0);
    return {
      push(chunk) {
        if (patterns.length === 0) return Buffer.from(chunk);
        // Always a fresh buffer: the chunk belongs to the stream that gave it.
        const window = Buffer.concat([held, chunk]);
        maskInPlace(window, found);
        const cut = Math.max(0, window.length - holdBackBytes);
        held = Buffer.from(window.subarray(cut));
        return window.subarray(0, cut);
      },
      end() {
        const tail = held;
        held = Buffer.alloc(0);
        return tail;
      },
      get heldBytes() {
        return held.length;
      },
      counts: () => [...found.values()].map((c) => ({ ...c })),
    };
  }

  return { scrubText, body, holdBackBytes };
}
