/** failClosed: a decider that throws or returns nonsense denies. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { failClosed, type Decision } from './index.js';

const cases: Array<{ name: string; decide: () => Decision; want: Decision }> = [
  { name: 'passes an allow through', decide: () => ({ result: 'allow', reason: 'rule', ruleId: 'r1' }), want: { result: 'allow', reason: 'rule', ruleId: 'r1' } },
  { name: 'passes a deny through', decide: () => ({ result: 'deny', reason: 'private-address' }), want: { result: 'deny', reason: 'private-address' } },
  { name: 'throw means deny', decide: () => { throw new Error('boom'); }, want: { result: 'deny', reason: 'policy-error' } },
  { name: 'undefined means deny', decide: () => undefined as unknown as Decision, want: { result: 'deny', reason: 'policy-error' } },
  { name: 'unknown result means deny', decide: () => ({ result: 'maybe' as 'allow', reason: 'x' }), want: { result: 'deny', reason: 'policy-error' } },
];
for (const c of cases) {
  test(`failClosed ${c.name}`, () => {
    assert.deepEqual(failClosed(c.decide)(), c.want);
  });
}
