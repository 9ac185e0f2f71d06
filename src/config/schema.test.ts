/**
 * Structural tests of the schema: every object is strict and every field is
 * described, so that unknown keys are errors and every fix can quote its field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { ConfigError } from '../errors/index.js';
import { ConfigSchema, parseConfig } from './index.js';
import { configFields } from './reference.js';
import { egressLimitsSchema, mergeLimits, resolveLimits } from '../egress/index.js';

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

test('agents.<name>.egressLimits: only the fields given are kept (no defaults at the agent level), laid field by field over egress.limits', () => {
  const config = parseConfig([
    'version: 1',
    'agents:',
    '  crawler: { egressLimits: { maxRequestsPerSecond: 500, requestBurst: 5000 } }',
    '  untrusted: { egressLimits: { maxBytesOutPerMinute: 10485760 } }',
    '  plain: {}',
    'egress:',
    '  limits: { maxRequestsPerSecond: 50, maxConnections: 8 }',
  ].join('\n'));
  assert.deepEqual(config.agents.crawler!.egressLimits, { maxRequestsPerSecond: 500, requestBurst: 5000 }, 'nothing filled in');
  assert.deepEqual(config.agents.untrusted!.egressLimits, { maxBytesOutPerMinute: 10485760 });
  assert.equal(config.agents.plain!.egressLimits, undefined);
  const base = config.egress.limits;
  assert.deepEqual(mergeLimits(base, config.agents.crawler!.egressLimits), resolveLimits({ maxRequestsPerSecond: 500, requestBurst: 5000, maxConnections: 8 }),
    'the crawler\'s rate and burst, egress.limits\' connection cap, the defaults for the rest');
  assert.deepEqual(mergeLimits(base, config.agents.untrusted!.egressLimits), resolveLimits({ maxRequestsPerSecond: 50, maxConnections: 8, maxBytesOutPerMinute: 10485760 }));
  assert.equal(mergeLimits(base, config.agents.plain!.egressLimits), base, 'no override: the deployment\'s limits');
  assert.deepEqual(mergeLimits(base, { maxConnections: undefined, requestBurst: 7 }), { ...base, requestBurst: 7 }, 'a field given as undefined falls through too');
});

test('agents.<name>.egressLimits is derived from the egress limits schema: the same fields, types and ranges, every one optional', () => {
  const fields = new Map(configFields().map((f) => [f.path, f]));
  const keys = Object.keys(egressLimitsSchema.shape);
  const derived = [...fields.keys()].filter((p) => p.startsWith('agents.<name>.egressLimits.')).map((p) => p.slice('agents.<name>.egressLimits.'.length));
  assert.deepEqual(derived, keys);
  for (const key of keys) {
    const own = fields.get(`agents.<name>.egressLimits.${key}`)!;
    const deployment = fields.get(`egress.limits.${key}`)!;
    assert.equal(own.type, deployment.type, `${key}: the same range`);
    assert.equal(own.defaultText, undefined, `${key}: no default at the agent level`);
    assert.equal(own.required, false, key);
    assert.ok(own.description.startsWith(deployment.description) && own.description.endsWith(`left out: egress.limits.${key}`), own.description);
  }
});

test('agents.<name>.egressLimits: a bad value or an unknown key is refused with the path of the field', () => {
  const cases: Array<[name: string, yaml: string, path: string, problem: RegExp]> = [
    ['a rate of 0', 'maxRequestsPerSecond: 0', 'agents.crawler.egressLimits.maxRequestsPerSecond', /below the minimum of 0\.001/],
    ['a fractional connection cap', 'maxConnections: 2.5', 'agents.crawler.egressLimits.maxConnections', /not a whole number|integer/],
    ['a negative byte budget', 'maxBytesOutPerMinute: -1', 'agents.crawler.egressLimits.maxBytesOutPerMinute', /not greater than 0/],
    ['a burst above its maximum', 'requestBurst: 2000000', 'agents.crawler.egressLimits.requestBurst', /above the maximum of 1000000/],
    ['a string', 'maxConnections: "8"', 'agents.crawler.egressLimits.maxConnections', /expected a number/],
    ['a misspelt key', 'maxRequestsPerSecnd: 500', 'agents.crawler.egressLimits.maxRequestsPerSecnd', /unknown key "maxRequestsPerSecnd" \(did you mean "maxRequestsPerSecond"\?\)/],
    ['a key that is not a limit', 'allowAll: true', 'agents.crawler.egressLimits.allowAll', /unknown key "allowAll"/],
  ];
  for (const [name, yaml, path, problem] of cases) {
    assert.throws(() => parseConfig(`version: 1\nagents:\n  crawler:\n    egressLimits: { ${yaml} }\n`), (err: unknown) => {
      assert.ok(err instanceof ConfigError, name);
      assert.deepEqual(err.issues.map((i) => i.path), [path], `${name}: ${err.describe()}`);
      assert.match(err.issues[0]!.problem, problem, name);
      assert.equal(err.issues[0]!.line, 4, name);
      return true;
    }, name);
  }
});
