/**
 * Duration strings in `cordon.yaml`: `500ms`, `30s`, `10m`, `2h`, `7d`, and
 * compounds such as `1h30m`. Units are required, so `30` never silently means
 * thirty milliseconds or thirty seconds.
 */
import { InvalidInputError } from '../errors/index.js';

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const PART = /(\d+)(ms|s|m|h|d)/y;

/** Longest duration accepted anywhere in the config: one year. */
export const MAX_DURATION_MS = 365 * UNIT_MS.d!;

export const DURATION_EXAMPLES = '"500ms", "30s", "10m", "2h", "7d" or "1h30m"';

/**
 * Parse a duration string into milliseconds.
 *
 * @param text a number followed by a unit (`ms`, `s`, `m`, `h`, `d`), possibly
 *   repeated with larger units first, e.g. `1h30m`.
 * @returns the duration in milliseconds.
 * @throws InvalidInputError when the text is not a duration or exceeds one year.
 * @example
 * parseDuration('30s')   // 30000
 * parseDuration('1h30m') // 5400000
 */
export function parseDuration(text: string): number {
  const result = tryParseDuration(text);
  if (!result.ok) {
    throw new InvalidInputError(`"${text}" is not a duration: ${result.problem}`, { fix: result.fix });
  }
  return result.ms;
}

/** Like {@link parseDuration}, but returns the problem instead of throwing. */
export function tryParseDuration(
  text: string,
): { ok: true; ms: number } | { ok: false; problem: string; fix: string } {
  const fix = `write a number with a unit, e.g. ${DURATION_EXAMPLES}`;
  const s = text.trim();
  if (s.length === 0) return { ok: false, problem: 'it is empty', fix };
  if (/^\d+(\.\d+)?$/.test(s)) {
    return { ok: false, problem: 'it has no unit', fix: `add a unit: "${s}s" for seconds or "${s}m" for minutes` };
  }
  let total = 0;
  let lastUnitMs = Infinity;
  PART.lastIndex = 0;
  while (PART.lastIndex < s.length) {
    const at = PART.lastIndex;
    const m = PART.exec(s);
    if (!m) {
      return { ok: false, problem: `cannot read "${s.slice(at)}"`, fix };
    }
    const unitMs = UNIT_MS[m[2]!]!;
    if (unitMs >= lastUnitMs) {
      return { ok: false, problem: 'units must go from largest to smallest, each at most once', fix };
    }
    lastUnitMs = unitMs;
    total += Number(m[1]) * unitMs;
  }
  if (total > MAX_DURATION_MS) {
    return { ok: false, problem: 'it is longer than one year', fix: 'use a shorter duration, at most "365d"' };
  }
  return { ok: true, ms: total };
}

/**
 * Format milliseconds as the shortest duration string, e.g. `90000` → `1m30s`.
 * @param ms a non-negative whole number of milliseconds.
 */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const [unit, size] of Object.entries(UNIT_MS).reverse()) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return out;
}
