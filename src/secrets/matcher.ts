/**
 * A multi-pattern byte matcher: which of a fixed set of byte strings occur
 * in an input, found in one pass whose cost does not grow with the number of
 * patterns. The secrets layer builds one per sandbox when its secrets are
 * set and asks it, for each request field and body window, which patterns
 * occur (scan.ts, reflect.ts); what an occurrence means is the caller's.
 *
 * Two strategies give the same answer:
 *
 * - `automaton`: an Aho–Corasick automaton over the first
 *   {@link AUTOMATON_PREFIX_BYTES} bytes of each pattern. States are numbered
 *   breadth first, so a state's failure link (its longest proper suffix that
 *   is also a trie node) has a lower number. The first states (root and the
 *   shallow ones, where a scan of ordinary text spends nearly all its time)
 *   get a full transition row over byte classes (each byte of some pattern
 *   is a class of its own; all other bytes share class 0, which leads back to
 *   the root); deeper states keep their trie edges only and fall back along
 *   failure links to a row. Each state knows the nearest state on its suffix
 *   chain that ends a pattern, and each such state is visited once per call,
 *   so a call costs one pass plus the patterns found. A pattern longer than
 *   the prefix is confirmed by one native search from the first place its
 *   prefix ends (every occurrence starts at an occurrence of its prefix), so
 *   memory stays bounded by the prefix length for long secrets (keys,
 *   certificates) and a call still costs at most one search per long pattern.
 *   When every pattern has at least 8 bytes, a long input is not read byte
 *   by byte: a gram filter probes one 4-byte gram every `shortest − 3` bytes
 *   against a hashed bitmap of the grams of all prefixes (every occurrence
 *   contains a probed gram), and the automaton runs only around the probes
 *   that hit. Clean text then costs a fraction of a byte-by-byte pass; text
 *   full of the patterns' grams costs about one pass.
 * - `indexOf`: one native `Buffer.indexOf` per pattern. Faster than reading
 *   every byte for a few patterns on a long input; `auto` picks it then
 *   (no filter, {@link INDEXOF_MAX_PATTERNS}, {@link INDEXOF_MIN_INPUT_BYTES}).
 *
 * An empty pattern occurs in every input, the empty one included, as with
 * `Buffer.indexOf`.
 */

/** Which strategy answers `occurring`. */
export type MatcherStrategy = 'automaton' | 'indexOf';

export interface MultiPatternMatcherOptions {
  /**
   * `auto`: native search per pattern for a few patterns on a long input,
   * the automaton otherwise. The answer is the same whichever runs.
   * @default 'auto'
   */
  strategy?: MatcherStrategy | 'auto';
  /**
   * Most transition-table entries (4 bytes each; the build holds twice that
   * for a moment) for the dense rows; states beyond them follow trie edges
   * and failure links. Speed and memory only.
   * @default 65536
   */
  denseEntries?: number;
}

export interface MultiPatternMatcher {
  readonly patternCount: number;
  /** Length of the longest pattern, in bytes. */
  readonly longestBytes: number;
  /** Automaton states (1 with no patterns: the root). */
  readonly states: number;
  /** Whether the automaton probes long inputs through its gram filter (every pattern at least 8 bytes). */
  readonly filtered: boolean;
  /** The ids (indexes into the patterns given) of every pattern that occurs in `input`, each once, ascending. */
  occurring(input: Uint8Array): number[];
}

/** `auto` searches natively per pattern up to this many patterns … */
export const INDEXOF_MAX_PATTERNS = 16;
/** … on inputs of at least this many bytes (below it, one pass beats the calls). */
export const INDEXOF_MIN_INPUT_BYTES = 512;
/** Pattern bytes the automaton holds; the rest of a longer pattern is confirmed by native search. */
export const AUTOMATON_PREFIX_BYTES = 64;

/** The skip filter's grams: 4 bytes, hashed to one bit of 2^19 (64 KiB per matcher). */
const GRAM_BYTES = 4;
const GRAM_HASH_BITS = 19;
/** Below this probe stride (shortest pattern − 3) the filter saves too little; the automaton reads every byte. */
const MIN_FILTER_STRIDE = 5;
const NONE = -1;

/** The hash of the 4 bytes that end at `j`. */
function gramHash(bytes: Uint8Array, j: number): number {
  const g = bytes[j - 3]! | (bytes[j - 2]! << 8) | (bytes[j - 1]! << 16) | (bytes[j]! << 24);
  return Math.imul(g, 0x9e3779b1) >>> (32 - GRAM_HASH_BITS);
}
const EMPTY: readonly number[] = Object.freeze([]);

/**
 * Build the matcher for `patterns` (copied; ids are their indexes).
 * @param patterns byte strings; duplicates allowed, each id is reported
 * @example
 * const m = createMultiPatternMatcher([Buffer.from('tok_123'), Buffer.from('cordon-ph-x')]);
 * m.occurring(Buffer.from('Bearer tok_123')); // [0]
 */
export function createMultiPatternMatcher(patterns: readonly Uint8Array[], opts: MultiPatternMatcherOptions = {}): MultiPatternMatcher {
  const pats = patterns.map((p) => Buffer.from(p));
  const strategy = opts.strategy ?? 'auto';
  const budget = opts.denseEntries === undefined || Number.isNaN(opts.denseEntries) ? 65536 : opts.denseEntries;
  const automaton = buildAutomaton(pats, Math.max(1, Math.floor(budget)));

  function occurringByIndexOf(input: Uint8Array): number[] {
    const buf = asBuffer(input);
    const out: number[] = [];
    for (let id = 0; id < pats.length; id++) if (buf.indexOf(pats[id]!) >= 0) out.push(id);
    return out;
  }

  return {
    patternCount: pats.length,
    longestBytes: pats.reduce((n, p) => Math.max(n, p.length), 0),
    states: automaton.states,
    filtered: automaton.filtered,
    occurring: function occurring(input: Uint8Array): number[] {
      if (pats.length === 0) return [];
      const native = strategy === 'auto'
        ? !automaton.filtered && pats.length <= INDEXOF_MAX_PATTERNS && input.length >= INDEXOF_MIN_INPUT_BYTES
        : strategy === 'indexOf';
      return native ? occurringByIndexOf(input) : automaton.occurring(input);
    },
  };
}

function asBuffer(input: Uint8Array): Buffer {
  return Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
}

interface Automaton {
  states: number;
  /** Whether long inputs are probed through the gram filter (all patterns long enough). */
  filtered: boolean;
  occurring(input: Uint8Array): number[];
}

/** Build the trie of the patterns' prefixes, number it breadth first, link it, and lay out the tables. */
function buildAutomaton(pats: readonly Buffer[], denseEntries: number): Automaton {
  // 1. The trie, its edges in one map keyed `node * 256 + byte`.
  const edges = new Map<number, number>();
  const ends: number[][] = [[]];
  let nodes = 1;
  pats.forEach((p, id) => {
    let n = 0;
    for (let i = 0; i < Math.min(p.length, AUTOMATON_PREFIX_BYTES); i++) {
      const key = n * 256 + p[i]!;
      let next = edges.get(key);
      if (next === undefined) {
        next = nodes++;
        edges.set(key, next);
        ends.push([]);
      }
      n = next;
    }
    ends[n]!.push(id);
  });
  const kids: Array<Array<[number, number]>> = Array.from({ length: nodes }, () => []);
  for (const [key, child] of edges) kids[Math.floor(key / 256)]!.push([key % 256, child]);
  edges.clear();

  // 2. Breadth-first numbering, children in compressed rows.
  const states = nodes;
  const order: number[] = [0];
  for (let i = 0; i < order.length; i++) for (const [, c] of kids[order[i]!]!) order.push(c);
  const idOf = new Int32Array(states);
  for (let s = 0; s < states; s++) idOf[order[s]!] = s; // a loop, not a callback: a closure would keep idOf alive with the matcher
  const childStart = new Int32Array(states + 1);
  const childByte = new Uint8Array(states - 1);
  const childTarget = new Int32Array(states - 1);
  for (let s = 0, k = 0; s < states; s++) {
    childStart[s] = k;
    for (const [b, c] of kids[order[s]!]!) {
      childByte[k] = b;
      childTarget[k++] = idOf[c]!;
    }
  }
  childStart[states] = states - 1;
  const childOf = (s: number, b: number): number => {
    for (let k = childStart[s]!; k < childStart[s + 1]!; k++) if (childByte[k] === b) return childTarget[k]!;
    return NONE;
  };

  // 3. Failure links; per state the nearest state on its suffix chain (itself included) that ends a pattern.
  const ownIds: Array<readonly number[]> = order.map((node) => (ends[node]!.length > 0 ? ends[node]! : EMPTY));
  // Build-only: the closures of this function share one context, which holds `ends` for the matcher's lifetime.
  ends.length = 0;
  const fail = new Int32Array(states);
  const outState = new Int32Array(states).fill(NONE);
  const dictLink = new Int32Array(states).fill(NONE);
  if (ownIds[0]!.length > 0) outState[0] = 0;
  for (let s = 0; s < states; s++) {
    for (let k = childStart[s]!; k < childStart[s + 1]!; k++) {
      const b = childByte[k]!;
      const c = childTarget[k]!;
      let f = NONE;
      for (let t = s; t !== 0 && f === NONE;) {
        t = fail[t]!;
        f = childOf(t, b);
      }
      fail[c] = f === NONE ? 0 : f;
      dictLink[c] = outState[fail[c]!]!;
      outState[c] = ownIds[c]!.length > 0 ? c : dictLink[c]!;
    }
  }

  // 4. Byte classes, and dense rows for the first states (a failure link is numbered lower: its row is filled first).
  const classOf = new Uint16Array(256);
  let width = 1;
  for (const b of childByte) if (classOf[b] === 0) classOf[b] = width++;
  const byteOfClass = new Int16Array(width).fill(NONE);
  for (let b = 0; b < 256; b++) if (classOf[b] !== 0) byteOfClass[classOf[b]!] = b;
  const dense = Math.max(1, Math.min(states, Math.floor(denseEntries / width)));
  const next = new Int32Array(dense * width);
  for (let s = 0; s < dense; s++) {
    for (let c = 1; c < width; c++) {
      const child = childOf(s, byteOfClass[c]!);
      next[s * width + c] = child !== NONE ? child : s === 0 ? 0 : next[fail[s]! * width + c]!;
    }
  }

  // 5. A table entry is the next state's row (where its transitions start) when that state is dense and ends
  // no pattern, the common case; otherwise it is `~state` (negative), and the scan leaves its tight loop to
  // collect what ends there or to walk trie edges until it is back on a dense state.
  const entryOf = (s: number): number => (s < dense && outState[s] === NONE ? s * width : ~s);
  const table = new Int32Array(dense * width);
  for (let k = 0; k < table.length; k++) table[k] = entryOf(next[k]!);

  const seen = new Uint8Array(states);
  const seenList: number[] = [];

  /** The state after byte `b` from sparse state `from`: its trie edge, or down the failure links to a row. */
  function sparseNext(from: number, b: number): number {
    let s = from;
    while (s >= dense) {
      const child = childOf(s, b);
      if (child !== NONE) return child;
      s = fail[s]!;
    }
    const entry = table[s * width + classOf[b]!]!;
    return entry >= 0 ? entry / width : ~entry;
  }

  /** Add the patterns of `s` and its suffix chain not seen in this call; a long one is confirmed by native search. */
  function collect(s: number, endAt: number, input: Uint8Array, found: number[]): void {
    for (let t = s; t !== NONE && seen[t] === 0; t = dictLink[t]!) {
      seen[t] = 1;
      seenList.push(t);
      for (const id of ownIds[t]!) {
        const p = pats[id]!;
        if (p.length <= AUTOMATON_PREFIX_BYTES || asBuffer(input).indexOf(p, endAt - AUTOMATON_PREFIX_BYTES) >= 0) found.push(id);
      }
    }
  }

  /** Run the automaton from the root over `input[from, to)`, collecting what ends there. */
  function scan(input: Uint8Array, from: number, to: number, found: number[]): void {
    const rows = table;
    const cls = classOf;
    let row = 0;
    for (let i = from; i < to; i++) {
      const entry = rows[row + cls[input[i]!]!]!;
      if (entry >= 0) {
        row = entry;
        continue;
      }
      // A state that ends a pattern, or a sparse one: byte by byte until a dense state is reached again.
      let s = ~entry;
      for (;;) {
        if (outState[s] !== NONE) collect(outState[s]!, i + 1, input, found);
        if (s < dense || i + 1 >= to) break;
        s = sparseNext(s, input[++i]!);
      }
      row = s < dense ? s * width : 0;
    }
  }

  // 6. The skip filter: every occurrence of a pattern's prefix (at least `shortest` bytes) contains a 4-byte
  // gram that ends at a multiple of `stride` (plus 3); the grams of every prefix are in a hashed bitmap. A
  // long input is probed only there, and the automaton runs only around the probes that hit, over
  // [probe − longest + 1, probe + longest − 4], which holds every occurrence through that gram.
  const lengths = pats.map((p) => Math.min(p.length, AUTOMATON_PREFIX_BYTES));
  const shortest = lengths.length === 0 ? 0 : lengths.reduce((a, b) => Math.min(a, b));
  const longest = lengths.reduce((a, b) => Math.max(a, b), 0);
  const stride = shortest - GRAM_BYTES + 1;
  const grams = stride >= MIN_FILTER_STRIDE ? new Int32Array(1 << (GRAM_HASH_BITS - 5)) : undefined;
  if (grams) {
    for (const p of pats) {
      for (let j = GRAM_BYTES - 1; j < Math.min(p.length, AUTOMATON_PREFIX_BYTES); j++) {
        const h = gramHash(p, j);
        grams[h >>> 5]! |= 1 << (h & 31);
      }
    }
  }

  function occurring(input: Uint8Array): number[] {
    const found: number[] = [];
    try {
      probeAndScan(input, found);
    } finally {
      // Always cleared: a mark left over would hide that state's patterns from every later call.
      for (const t of seenList) seen[t] = 0;
      seenList.length = 0;
    }
    return found.length > 1 ? found.sort((a, b) => a - b) : found;
  }

  function probeAndScan(input: Uint8Array, found: number[]): void {
    if (outState[0] !== NONE) collect(0, 0, input, found);
    const n = input.length;
    if (grams === undefined || n < 4 * longest) scan(input, 0, n, found);
    else {
      let from = 0;
      let to = 0;
      for (let j = GRAM_BYTES - 1; j < n; j += stride) {
        const h = gramHash(input, j);
        if ((grams[h >>> 5]! & (1 << (h & 31))) === 0) continue;
        const a = j - longest + 1;
        if (a > to) {
          if (to > from) scan(input, from, to, found);
          from = a;
        }
        to = Math.min(n, j + longest - GRAM_BYTES + 1);
      }
      if (to > from) scan(input, from, to, found);
    }
  }

  return { states, filtered: grams !== undefined, occurring };
}
