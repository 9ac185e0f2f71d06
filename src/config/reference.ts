/**
 * The configuration reference (`docs/configuration.md`), generated from the
 * zod schema so it cannot drift: every field with its path, type, default and
 * the text of its `.describe()`. `scripts/gen-config-doc.mjs` writes the file;
 * `reference.test.ts` fails when the committed file differs from what the
 * schema gives.
 */
import { z } from 'zod';
import { ConfigSchema } from './schema.js';

/** One documented field. */
export interface FieldDoc {
  /** Dotted path; `<name>` for map keys, `[]` for list items, e.g. `agents.<name>.egress[].host`. */
  path: string;
  type: string;
  /** The default as YAML-ish text; undefined when there is none. */
  defaultText?: string;
  required: boolean;
  description: string;
}

interface Unwrapped {
  schema: z.ZodTypeAny;
  description: string;
  defaultValue?: unknown;
  optional: boolean;
}

/** Strip wrappers (default, optional, effects, nullable), keeping the first description and the default. */
function unwrap(schema: z.ZodTypeAny): Unwrapped {
  let s = schema;
  let description = '';
  let defaultValue: unknown;
  let hasDefault = false;
  let optional = false;
  for (;;) {
    if (!description && s.description) description = s.description;
    if (s instanceof z.ZodDefault) {
      if (!hasDefault) {
        defaultValue = s._def.defaultValue();
        hasDefault = true;
      }
      s = s._def.innerType;
    } else if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) {
      optional = true;
      s = s._def.innerType;
    } else if (s instanceof z.ZodEffects) {
      s = s._def.schema;
    } else if (s instanceof z.ZodLazy) {
      s = s._def.getter();
    } else break;
  }
  return { schema: s, description, ...(hasDefault ? { defaultValue } : {}), optional };
}

function literal(v: unknown): string {
  return typeof v === 'string' ? `"${v}"` : JSON.stringify(v);
}

/** A short type name. */
function typeName(s: z.ZodTypeAny): string {
  if (s instanceof z.ZodString) return 'string';
  if (s instanceof z.ZodNumber) {
    const checks = s._def.checks as Array<{ kind: string; value?: number; inclusive?: boolean }>;
    const int = checks.some((c) => c.kind === 'int');
    const min = checks.find((c) => c.kind === 'min');
    const max = checks.find((c) => c.kind === 'max');
    const lo = min ? `${min.inclusive === false ? '>' : '≥'} ${min.value}` : '';
    const hi = max ? `${max.inclusive === false ? '<' : '≤'} ${max.value}` : '';
    const range = min?.inclusive !== false && max?.inclusive !== false && min && max ? ` ${min.value}–${max.value}` : lo && hi ? ` ${lo} and ${hi}` : lo || hi ? ` ${lo || hi}` : '';
    return `${int ? 'integer' : 'number'}${range}`;
  }
  if (s instanceof z.ZodBoolean) return 'boolean';
  if (s instanceof z.ZodEnum) return (s._def.values as string[]).map(literal).join(' | ');
  if (s instanceof z.ZodLiteral) return literal(s._def.value);
  if (s instanceof z.ZodArray) return `list of ${typeName(unwrap(s._def.type).schema)}`;
  if (s instanceof z.ZodRecord) return `map of ${typeName(unwrap(s._def.valueType).schema)}`;
  if (s instanceof z.ZodObject) return 'object';
  if (s instanceof z.ZodDiscriminatedUnion || s instanceof z.ZodUnion) return 'one of (see below)';
  // A field checked by a transform on an unknown value: the config uses this for durations.
  if (s instanceof z.ZodUnknown) return 'duration ("30s", "10m", "2h")';
  return s.constructor.name.replace(/^Zod/, '').toLowerCase();
}

function defaultText(v: unknown, s: z.ZodTypeAny): string | undefined {
  if (v === undefined) return undefined;
  if (v !== null && typeof v === 'object' && Object.keys(v).length === 0) return Array.isArray(v) ? '[]' : s instanceof z.ZodObject ? '{} (every field at its default)' : '{}';
  return typeof v === 'string' ? `"${v}"` : JSON.stringify(v);
}

function walk(schema: z.ZodTypeAny, path: string, out: FieldDoc[], parentRequired: boolean, extraNote = ''): void {
  const u = unwrap(schema);
  const s = u.schema;
  if (path) {
    const dt = defaultText(u.defaultValue, s);
    out.push({
      path, type: typeName(s), required: parentRequired && !u.optional && dt === undefined,
      description: `${extraNote}${u.description || '(no description)'}`,
      ...(dt !== undefined ? { defaultText: dt } : {}),
    });
  }
  if (s instanceof z.ZodObject) {
    for (const [key, child] of Object.entries(s.shape as Record<string, z.ZodTypeAny>)) walk(child, path ? `${path}.${key}` : key, out, true);
  } else if (s instanceof z.ZodArray) {
    const item = unwrap(s._def.type).schema;
    if (item instanceof z.ZodObject || item instanceof z.ZodDiscriminatedUnion) walk(s._def.type, `${path}[]`, out, true);
  } else if (s instanceof z.ZodRecord) {
    const value = unwrap(s._def.valueType).schema;
    if (value instanceof z.ZodObject || value instanceof z.ZodDiscriminatedUnion || value instanceof z.ZodUnion) walk(s._def.valueType, `${path}.<name>`, out, true);
  } else if (s instanceof z.ZodDiscriminatedUnion || s instanceof z.ZodUnion) {
    const options = (s instanceof z.ZodDiscriminatedUnion ? [...s._def.options.values()] : s._def.options) as z.ZodTypeAny[];
    for (const option of options) {
      const o = unwrap(option).schema;
      if (!(o instanceof z.ZodObject)) continue;
      const shape = o.shape as Record<string, z.ZodTypeAny>;
      const discriminator = s instanceof z.ZodDiscriminatedUnion ? (s._def.discriminator as string) : undefined;
      const tag = discriminator ? unwrap(shape[discriminator]!).schema : undefined;
      const note = discriminator && tag instanceof z.ZodLiteral ? `With ${discriminator}: ${String(tag._def.value)}. ` : '';
      for (const [key, child] of Object.entries(shape)) walk(child, `${path}.${key}`, out, true, note);
    }
  }
}

/** Every field of the schema, in schema order. */
export function configFields(schema: z.ZodTypeAny = ConfigSchema): FieldDoc[] {
  const out: FieldDoc[] = [];
  walk(schema, '', out, true);
  return out;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** The whole reference page as Markdown. */
export function renderConfigReference(schema: z.ZodTypeAny = ConfigSchema): string {
  const fields = configFields(schema);
  const sections = new Map<string, FieldDoc[]>();
  for (const f of fields) {
    const top = f.path.split(/[.[]/)[0]!;
    const list = sections.get(top) ?? [];
    list.push(f);
    sections.set(top, list);
  }
  const lines = [
    '# Configuration reference',
    '',
    '<!-- GENERATED from the zod schema in src/config/ by scripts/gen-config-doc.mjs; do not edit by hand.',
    '     src/config/reference.test.ts fails when this file is stale. -->',
    '',
    '`cordon.yaml` is one versioned file (`version: 1`), validated when cordon starts',
    'and by `cordon config check`. Every object is strict: an unknown key is an error',
    'that names the closest known key. `<name>` stands for a key you choose (an agent',
    'name, a secret name, …) and `[]` for an item of a list. A field without a default',
    'and not marked optional must be given whenever its parent is.',
    '',
    '`cordon.example.yaml` shows a complete file.',
    '',
  ];
  for (const [top, list] of sections) {
    lines.push(`## \`${top}\``, '', '| path | type | default | description |', '|---|---|---|---|');
    for (const f of list) {
      const def = f.defaultText ?? (f.required ? '*required*' : '*optional*');
      lines.push(`| \`${cell(f.path)}\` | ${cell(f.type)} | ${cell(def)} | ${cell(f.description)} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}
