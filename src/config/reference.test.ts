/**
 * The configuration reference is generated from the schema and never
 * drifts: `docs/configuration.md` must equal what the schema gives today,
 * every field of the schema appears in it with a description, and the walker
 * reports types and defaults correctly.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { configFields, renderConfigReference } from './reference.js';

/** The repository root, from src/config/ or dist/config/. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above this test');
    dir = up;
  }
  return dir;
}

describe('configuration reference', () => {
  test('docs/configuration.md is what the schema generates (else: node --import tsx scripts/gen-config-doc.mjs)', () => {
    const path = join(repoRoot(), 'docs', 'configuration.md');
    const current = existsSync(path) ? readFileSync(path, 'utf8') : '';
    assert.ok(current === renderConfigReference(), 'docs/configuration.md is stale: run `node --import tsx scripts/gen-config-doc.mjs` and commit the result');
  });

  test('every field has a description, and the well-known ones read right', () => {
    const fields = configFields();
    const missing = fields.filter((f) => f.description.endsWith('(no description)')).map((f) => f.path);
    assert.deepEqual(missing, [], 'fields without .describe()');
    const by = new Map(fields.map((f) => [f.path, f]));
    const cases: Array<{ path: string; type: RegExp; defaultText?: string }> = [
      { path: 'version', type: /^1$/ },
      { path: 'agents.<name>.isolation', type: /"microvm" \| "gvisor" \| "bubblewrap"/, defaultText: '"microvm"' },
      { path: 'agents.<name>.resources.vcpus', type: /^integer 1–16$/, defaultText: '1' },
      { path: 'agents.<name>.resources.timeout', type: /^duration/, defaultText: '"30m"' },
      { path: 'agents.<name>.egress[].ports', type: /^list of integer/, defaultText: '[443,80]' },
      { path: 'agents.<name>.egress[].rules[].action', type: /"approve"/ },
      { path: 'secrets.<name>.command', type: /^list of string$/ },
      { path: 'providers.<name>.type', type: /"scripted"/ },
      { path: 'approvals.holdTimeout', type: /^duration/, defaultText: '"60s"' },
    ];
    for (const c of cases) {
      const f = by.get(c.path);
      assert.ok(f, `${c.path} is not in the reference`);
      assert.match(f.type, c.type, c.path);
      if (c.defaultText !== undefined) assert.equal(f.defaultText, c.defaultText, c.path);
    }
  });

  test('the walker: wrappers, maps, lists, unions and bounds', () => {
    const schema = z.object({
      a: z.number().int().min(1).max(5).default(2).describe('bounded'),
      b: z.number().gt(0).lt(1).optional().describe('open interval'),
      m: z.record(z.string(), z.object({ x: z.string().describe('inner') }).describe('entry')).default({}).describe('a map'),
      u: z.discriminatedUnion('k', [z.object({ k: z.literal('p').describe('kind p'), y: z.boolean().describe('why') })]).describe('union'),
      t: z.string().transform((s) => s.length).describe('transformed'),
    });
    const f = new Map(configFields(schema).map((x) => [x.path, x]));
    assert.equal(f.get('a')?.type, 'integer 1–5');
    assert.equal(f.get('a')?.defaultText, '2');
    assert.equal(f.get('b')?.type, 'number > 0 and < 1');
    assert.equal(f.get('b')?.required, false);
    assert.equal(f.get('m')?.defaultText, '{}');
    assert.equal(f.get('m.<name>.x')?.description, 'inner');
    assert.equal(f.get('u.y')?.description, 'With k: p. why');
    assert.equal(f.get('t')?.type, 'string');
    assert.equal(f.get('t')?.required, true);
  });
});
