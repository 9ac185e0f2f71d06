/**
 * Name globs, the one pattern language of cordon's lists of names (tool names
 * in `tools:`, model names in `llm.models` and `providers.NAME.models`, attack
 * ids of `redteam --only`). `*` matches any run of characters, possibly empty,
 * except a line terminator (`\n`, `\r`, U+2028, U+2029: none of those names may
 * hold one, so a name that does matches only a pattern that spells it out).
 * Every other character is literal, `?`, `.`, `[` and `\` included; case
 * counts; the whole name must match.
 *
 * Matching takes no regular expression: a name is checked part by part with
 * `indexOf`, so a pattern with many `*` cannot backtrack for long on a hostile
 * name (model names come from the agent). A pattern that itself holds line
 * terminators is matched line by line: `*` cannot reach across one, so the
 * name must hold the same terminators in the same order, and each of its
 * lines must match the pattern's line.
 */

/** Whether a name matches one compiled glob. */
export type GlobMatcher = (name: string) => boolean;

/** What `*` does not match (the characters a regular expression's `.` skips). */
const LINE_TERMINATOR = /[\n\r\u2028\u2029]/;
/** Splits a string at line terminators, keeping each terminator as its own element (at the odd indexes). */
const AT_LINE_TERMINATORS = /([\n\r\u2028\u2029])/;

/**
 * Compile `pattern` once, to test many names. A pattern without `*` is an
 * exact name; runs of `*` (`**`) mean the same as one `*`.
 * @example
 * const isMerge = compileGlob('merge_*');
 * isMerge('merge_pull_request'); // true
 * isMerge('automerge_x'); // false: anchored
 */
export function compileGlob(pattern: string): GlobMatcher {
  if (!pattern.includes('*')) {
    return function matchesExactly(name: string): boolean {
      return name === pattern;
    };
  }
  if (!LINE_TERMINATOR.test(pattern)) return compileLine(pattern);
  const pieces = pattern.split(AT_LINE_TERMINATORS);
  const lines = pieces.map((piece, i) => (i % 2 === 0 ? compileLine(piece) : undefined));
  return function matchesGlobByLine(name: string): boolean {
    const got = name.split(AT_LINE_TERMINATORS);
    if (got.length !== pieces.length) return false;
    for (let i = 0; i < got.length; i++) {
      if (i % 2 === 1 ? got[i] !== pieces[i] : !lines[i]!(got[i]!)) return false;
    }
    return true;
  };
}

/** A matcher for a pattern that holds no line terminator. */
function compileLine(pattern: string): GlobMatcher {
  if (!pattern.includes('*')) {
    return function matchesLineExactly(name: string): boolean {
      return name === pattern;
    };
  }
  const parts = pattern.split(/\*+/);
  const head = parts[0]!;
  const tail = parts[parts.length - 1]!;
  const middle = parts.slice(1, -1);
  return function matchesGlob(name: string): boolean {
    if (name.length < head.length + tail.length || !name.startsWith(head) || !name.endsWith(tail)) return false;
    // No part holds a line terminator, so one in the name would have to lie inside a `*`.
    if (LINE_TERMINATOR.test(name)) return false;
    const end = name.length - tail.length;
    let at = head.length;
    for (const part of middle) {
      const found = name.indexOf(part, at);
      if (found < 0 || found + part.length > end) return false;
      at = found + part.length;
    }
    return true;
  };
}
