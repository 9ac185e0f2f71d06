/**
 * Structural tests of the schema: every object is strict and every field is
 * described, so that unknown keys are errors and every fix can quote its field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { ConfigSchema, parseConfig } from './index.js';
import { resolveLimits } from '../egress/index.js';

function describedSomewhere(schema: z.ZodTypeAny): boolean {
  let s: z.ZodTypeAny | undefined = schema;
  while (s) {
    if (s.description) return true;
    if (s instanceof z.ZodDefault) s = s._def.innerType;
    else if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap();
    else if (s instanceof z.ZodEffects) s = s.innerType();
    else return false;
  }
  return false;
}

function walk(schema: z.ZodTypeAny, path: string, visit: (s: z.ZodTypeAny, path: string) => void): void {
  visit(schema, path);
  if (schema instanceof z.ZodDefault) walk(schema._def.innerType, path, visit);
  else if (schema instanceof z.ZodOptional || schema instanceof z.ZodNullable) walk(schema.unwrap(), path, visit);
  else if (schema instanceof z.ZodEffects) walk(schema.innerType(), path, visit);
  else if (schema instanceof z.ZodArray) walk(schema.element, `${path}[]`, visit);
  else if (schema instanceof z.ZodRecord) walk(schema.valueSchema, `${path}.*`, visit);
  else if (schema instanceof z.ZodDiscriminatedUnion) {
    for (const option of schema.options as z.ZodTypeAny[]) walk(option, path, visit);
  } else if (schema instanceof z.ZodObject) {
    for (const [key, field] of Object.entries(schema.shape as Record<string, z.ZodTypeAny>)) walk(field, `${path}.${key}`, visit);
  }
}

test('every object in the schema is strict', () => {
  const loose: string[] = [];
  walk(ConfigSchema, '', (s, path) => {
    if (s instanceof z.ZodObject && s._def.unknownKeys !== 'strict') loose.push(path || '(root)');
  });
  assert.deepEqual(loose, []);
});

test('every field of every object is described', () => {
  const bare: string[] = [];
  walk(ConfigSchema, '', (s, path) => {
    if (!(s instanceof z.ZodObject)) return;
    for (const [key, field] of Object.entries(s.shape as Record<string, z.ZodTypeAny>)) {
      if (!describedSomewhere(field)) bare.push(`${path}.${key}`);
    }
  });
  assert.deepEqual(bare, []);
});

test('egress.limits is the egress proxy\'s own limits schema: values kept, every other limit at the proxy\'s default', () => {
  const config = parseConfig('version: 1\negress:\n  limits: { maxRequestsPerSecond: 0.5, requestBurst: 20, maxConnections: 8 }\n');
  assert.deepEqual(config.egress.limits, resolveLimits({ maxRequestsPerSecond: 0.5, requestBurst: 20, maxConnections: 8 }));
  assert.deepEqual(parseConfig('version: 1\n').egress.limits, resolveLimits({}), 'no egress block: the defaults');
});
