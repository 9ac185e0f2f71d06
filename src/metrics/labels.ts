/**
 * Bounded label values. A Prometheus series exists per distinct label set, so
 * every label value that comes from an audit event passes through a guard:
 *
 * - a closed set (`known`): a value outside it becomes `other`;
 * - an open set: short kebab-like values are kept until `maxValues` distinct
 *   ones have been seen, every later new value becomes `other`.
 *
 * A missing value is `none`. Hosts, sandbox ids and paths are never labels.
 *
 * @example
 * const reason = boundedLabel({ known: ['host-allowed', 'host-not-allowed'] });
 * reason('host-allowed'); // 'host-allowed'
 * reason('made-up');      // 'other'
 */

/** The value that stands for everything outside the bound. */
export const OTHER = 'other';
/** The value of a label the event did not carry. */
export const NONE = 'none';

/** What an open-set value may look like (no spaces, quotes or control characters). */
const LABEL_VALUE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

export interface BoundedLabelOptions {
  /** The closed set of values; anything else is `other`. */
  known?: Iterable<string>;
  /** With no `known` set: how many distinct values are kept before the rest become `other`. @default 64 */
  maxValues?: number;
}

/** A function from any event field to a label value within the bound. */
export type LabelGuard = (value: unknown) => string;

/** Build a guard for one label. */
export function boundedLabel(opts: BoundedLabelOptions = {}): LabelGuard {
  if (opts.known !== undefined) {
    const known: ReadonlySet<string> = new Set(opts.known);
    return function closedLabel(value: unknown): string {
      if (value === undefined || value === null || value === '') return NONE;
      return typeof value === 'string' && known.has(value) ? value : OTHER;
    };
  }
  const maxValues = opts.maxValues ?? 64;
  const seen = new Set<string>();
  return function openLabel(value: unknown): string {
    if (value === undefined || value === null || value === '') return NONE;
    if (typeof value !== 'string' || !LABEL_VALUE.test(value)) return OTHER;
    if (seen.has(value)) return value;
    if (seen.size >= maxValues) return OTHER;
    seen.add(value);
    return value;
  };
}
