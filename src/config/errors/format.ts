/**
 * Turning zod issues into {@link ConfigIssue}s a person can act on: the path as
 * written in the file (`agents.reviewer.egress[0].host`), a plain-English
 * problem ("expected a number, got string \"abc\""), a concrete fix (allowed
 * keys, a did-you-mean, the valid range, the field's description) and a line.
 */
import { z } from 'zod';
import type { ConfigIssue } from '../../errors/index.js';
import type { PathSegment } from '../source.js';
import { closest } from './suggest.js';

export interface FormatContext {
  /** The schema the data was checked against (used for allowed keys, ranges and descriptions). */
  schema: z.ZodTypeAny;
  /** The data that was checked, to quote the offending values. */
  data: unknown;
  /** Line of a path in the file, when known. */
  lineOf(path: readonly PathSegment[]): number | undefined;
}

/** `['agents', 'a', 'egress', 0, 'host']` → `agents.a.egress[0].host`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(segment)) out += out ? `.${segment}` : segment;
    else out += `[${JSON.stringify(segment)}]`;
  }
  return out;
}

/** Build one issue with its line. */
export function makeIssue(ctx: Pick<FormatContext, 'lineOf'>, path: readonly PathSegment[], problem: string, fix: string): ConfigIssue {
  const line = ctx.lineOf(path);
  return { path: formatPath(path), problem, fix, ...(line !== undefined ? { line } : {}) };
}

/** Every zod issue as a friendly config issue (unknown keys give one issue each). */
export function formatZodIssues(issues: readonly z.ZodIssue[], ctx: FormatContext): ConfigIssue[] {
  return issues.flatMap((issue) => formatZodIssue(issue, ctx));
}

function formatZodIssue(issue: z.ZodIssue, ctx: FormatContext): ConfigIssue[] {
  const path = issue.path;
  const last = path[path.length - 1];
  const value = valueAt(ctx.data, path);
  const schema = schemaAt(ctx.schema, path, ctx.data);
  const description = schema ? describeOf(schema) : undefined;
  const about = description ? ` (${description})` : '';
  const one = (problem: string, fix: string, at: readonly PathSegment[] = path) => [makeIssue(ctx, at, problem, fix)];

  switch (issue.code) {
    case z.ZodIssueCode.unrecognized_keys: {
      const objectSchema = schemaAt(ctx.schema, path, ctx.data);
      const allowed = objectSchema ? allowedKeys(objectSchema) : [];
      return issue.keys.map((key) => {
        const suggestion = closest(key, allowed);
        const hint = suggestion ? ` (did you mean "${suggestion}"?)` : '';
        const fix = `${suggestion ? `did you mean "${suggestion}"? Otherwise ` : ''}remove it or check the spelling; allowed keys here: ${allowed.join(', ')}`;
        return makeIssue(ctx, [...path, key], `unknown key "${key}"${hint}`, fix);
      });
    }
    case z.ZodIssueCode.invalid_type: {
      if (issue.received === 'undefined') {
        return one(`"${String(last)}" is required`, `add ${String(last)}:${about}`);
      }
      const expected = noun(issue.expected);
      const problem = `expected ${expected}, got ${show(value)}`;
      if (issue.expected === 'string' && (typeof value === 'number' || typeof value === 'boolean')) {
        return one(problem, `put the value in quotes: "${String(value)}"${about}`);
      }
      if (value === null && issue.expected === 'object') return one(problem, `write {} to take the defaults, or fill in its keys${about}`);
      if (value === null) return one(problem, `fill in a value, or remove the key${about}`);
      if (issue.expected === 'array' && typeof value !== 'object') {
        return one(problem, `write it as a list: [${JSON.stringify(value)}]${about}`);
      }
      return one(problem, `change it to ${expected}${about}`);
    }
    case z.ZodIssueCode.invalid_literal:
      return one(`expected ${JSON.stringify(issue.expected)}, got ${show(value)}`, `set it to ${JSON.stringify(issue.expected)}`);
    case z.ZodIssueCode.invalid_enum_value: {
      const options = issue.options.map(String);
      const suggestion = closest(String(issue.received), options);
      return one(
        `"${String(issue.received)}" is not one of ${options.join(', ')}`,
        suggestion ? `did you mean "${suggestion}"? Use one of ${options.join(', ')}` : `use one of ${options.join(', ')}${about}`,
      );
    }
    case z.ZodIssueCode.invalid_union_discriminator: {
      const options = issue.options.map(String);
      const suggestion = typeof value === 'string' ? closest(value, options) : undefined;
      const parentDescription = describeOf(schemaAt(ctx.schema, path.slice(0, -1), ctx.data));
      return one(
        value === undefined ? `"${String(last)}" is required` : `${show(value)} is not one of ${options.join(', ')}`,
        `${suggestion ? `did you mean "${suggestion}"? ` : ''}set ${String(last)} to one of ${options.join(', ')}${parentDescription ? ` (${parentDescription})` : ''}`,
      );
    }
    case z.ZodIssueCode.too_small:
      return one(tooSmallProblem(issue, value), rangeFix(issue.type, schema, about));
    case z.ZodIssueCode.too_big:
      return one(tooBigProblem(issue, value), rangeFix(issue.type, schema, about));
    case z.ZodIssueCode.custom: {
      const fix = typeof issue.params?.fix === 'string' ? issue.params.fix : `check the value${about}`;
      return one(issue.message, fix);
    }
    default:
      return one(issue.message, `check the value${about}`);
  }
}

function tooSmallProblem(issue: z.ZodTooSmallIssue, value: unknown): string {
  const min = Number(issue.minimum);
  if (issue.type === 'array') return min === 1 ? 'the list is empty' : `the list has ${arrayLength(value)} entries; at least ${min} are needed`;
  if (issue.type === 'string') return min === 1 ? 'the value is empty' : `the text is shorter than ${min} characters`;
  return `${show(value)} is ${issue.inclusive ? `below the minimum of ${min}` : `not greater than ${min}`}`;
}

function tooBigProblem(issue: z.ZodTooBigIssue, value: unknown): string {
  const max = Number(issue.maximum);
  if (issue.type === 'array') return `the list has ${arrayLength(value)} entries; at most ${max} are allowed`;
  if (issue.type === 'string') return `the text is longer than ${max} characters`;
  return `${show(value)} is ${issue.inclusive ? `above the maximum of ${max}` : `not less than ${max}`}`;
}

function rangeFix(type: string, schema: z.ZodTypeAny | undefined, about: string): string {
  const inner = schema ? unwrap(schema) : undefined;
  if (type === 'number' && inner instanceof z.ZodNumber) {
    const kind = inner.isInt ? 'a whole number' : 'a number';
    if (inner.minValue !== null && inner.maxValue !== null) return `use ${kind} from ${inner.minValue} to ${inner.maxValue}${about}`;
    if (inner.minValue !== null) return `use ${kind} of at least ${inner.minValue}${about}`;
    if (inner.maxValue !== null) return `use ${kind} of at most ${inner.maxValue}${about}`;
  }
  if (type === 'array') return `add at least one entry${about}`;
  return `change the value${about}`;
}

function arrayLength(value: unknown): number {
  return Array.isArray(value) ? value.length : 0;
}

function noun(type: string): string {
  switch (type) {
    case 'string': return 'a string';
    case 'number': return 'a number';
    case 'integer': return 'a whole number';
    case 'boolean': return 'true or false';
    case 'object': return 'a mapping (key: value pairs)';
    case 'array': return 'a list';
    default: return type;
  }
}

/** Describe a value the way a person would: `string "abc"`, `number 5`, `a list`. */
export function show(value: unknown): string {
  if (value === null || value === undefined) return 'nothing (an empty value)';
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'number') return Number.isInteger(value) ? `number ${value}` : `number ${value} (not a whole number)`;
  if (typeof value === 'boolean') return `boolean ${value}`;
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return typeof value;
}

function valueAt(data: unknown, path: readonly PathSegment[]): unknown {
  let node = data;
  for (const segment of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string | number, unknown>)[segment];
  }
  return node;
}

/** Strip wrappers (default, optional, effects) down to the schema that does the work. */
function unwrap(schema: z.ZodTypeAny): z.ZodTypeAny {
  let s = schema;
  for (;;) {
    if (s instanceof z.ZodDefault) s = s._def.innerType;
    else if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap();
    else if (s instanceof z.ZodEffects) s = s.innerType();
    else return s;
  }
}

/** The first description found on the schema or any wrapped schema. */
function describeOf(schema: z.ZodTypeAny | undefined): string | undefined {
  let s = schema;
  while (s) {
    if (s.description) return s.description;
    if (s instanceof z.ZodDefault) s = s._def.innerType;
    else if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap();
    else if (s instanceof z.ZodEffects) s = s.innerType();
    else return undefined;
  }
  return undefined;
}

/** The schema that checks the value at `path` (records, arrays and unions included). */
function schemaAt(root: z.ZodTypeAny, path: readonly PathSegment[], data: unknown): z.ZodTypeAny | undefined {
  let schema: z.ZodTypeAny | undefined = root;
  for (let i = 0; i < path.length && schema; i++) {
    let s = unwrap(schema);
    if (s instanceof z.ZodDiscriminatedUnion) {
      const tag = valueAt(data, [...path.slice(0, i), s.discriminator]);
      s = s.optionsMap.get(tag as z.Primitive) ?? s.options[0];
    }
    const segment = path[i]!;
    if (s instanceof z.ZodObject) schema = (s.shape as Record<string, z.ZodTypeAny>)[String(segment)];
    else if (s instanceof z.ZodRecord) schema = s.valueSchema as z.ZodTypeAny;
    else if (s instanceof z.ZodArray) schema = s.element as z.ZodTypeAny;
    else schema = undefined;
  }
  return schema;
}

function allowedKeys(schema: z.ZodTypeAny): string[] {
  const s = unwrap(schema);
  if (s instanceof z.ZodObject) return Object.keys(s.shape as Record<string, unknown>);
  return [];
}
