/**
 * validateEventInput tests: the hand-written check on the append path takes
 * and refuses exactly what the zod schema does, names the same field, and
 * does not copy the caller's data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuditError } from '../errors/index.js';
import { auditEventInputSchema } from './event.js';
import { validateEventInput } from './validate.js';

class Payload {
  host = 'example.com';
}

const ok = { type: 'tool.call', actor: 'agent:a' };
const cases: { name: string; input: unknown }[] = [
  { name: 'only the required fields', input: ok },
  { name: 'every field', input: { ...ok, sandbox: 's', agent: 'a', decision: 'deny', reason: 'r', data: { a: [1, { b: null }] } } },
  { name: 'optional fields given as undefined', input: { ...ok, sandbox: undefined, agent: undefined, reason: undefined, data: undefined } },
  { name: 'type of 128 characters', input: { ...ok, type: 'a'.repeat(128) } },
  { name: 'type of 129 characters', input: { ...ok, type: 'a'.repeat(129) } },
  { name: 'type with every allowed character', input: { ...ok, type: 'a0_.-z' } },
  { name: 'empty type', input: { ...ok, type: '' } },
  { name: 'type with upper case', input: { ...ok, type: 'Tool.call' } },
  { name: 'type starting with a dot', input: { ...ok, type: '.call' } },
  { name: 'type is a number', input: { ...ok, type: 5 } },
  { name: 'missing type', input: { actor: 'a' } },
  { name: 'missing actor', input: { type: 'x' } },
  { name: 'empty actor', input: { ...ok, actor: '' } },
  { name: 'actor of 256 characters', input: { ...ok, actor: 'é'.repeat(256) } },
  { name: 'actor of 257 characters', input: { ...ok, actor: 'a'.repeat(257) } },
  { name: 'actor with DEL', input: { ...ok, actor: 'a\u007f' } },
  { name: 'actor with NUL', input: { ...ok, actor: '\u0000' } },
  { name: 'actor is null', input: { ...ok, actor: null } },
  { name: 'empty sandbox', input: { ...ok, sandbox: '' } },
  { name: 'sandbox with a newline', input: { ...ok, sandbox: 'a\nb' } },
  { name: 'agent is a number', input: { ...ok, agent: 1 } },
  { name: 'decision of 64 characters', input: { ...ok, decision: 'd'.repeat(64) } },
  { name: 'decision of 65 characters', input: { ...ok, decision: 'd'.repeat(65) } },
  { name: 'decision with a tab', input: { ...ok, decision: 'al\tlow' } },
  { name: 'empty reason (allowed)', input: { ...ok, reason: '' } },
  { name: 'reason with control characters (allowed: it is free text)', input: { ...ok, reason: 'a\nb\u0001' } },
  { name: 'reason of 4096 characters', input: { ...ok, reason: 'r'.repeat(4096) } },
  { name: 'reason of 4097 characters', input: { ...ok, reason: 'r'.repeat(4097) } },
  { name: 'reason is a number', input: { ...ok, reason: 3 } },
  { name: 'data is null', input: { ...ok, data: null } },
  { name: 'data is an array', input: { ...ok, data: [1] } },
  { name: 'data is a string', input: { ...ok, data: 'x' } },
  { name: 'data is a Map', input: { ...ok, data: new Map() } },
  { name: 'data is a Set', input: { ...ok, data: new Set() } },
  { name: 'data is a Date', input: { ...ok, data: new Date(0) } },
  { name: 'data is a promise', input: { ...ok, data: Promise.resolve({}) } },
  { name: 'data is a plain object with then and catch functions', input: { ...ok, data: { then: () => 1, catch: () => 1 } } },
  { name: 'data is a class instance', input: { ...ok, data: new Payload() } },
  { name: 'data has no prototype', input: { ...ok, data: Object.assign(Object.create(null) as object, { a: 1 }) } },
  { name: 'an unknown field', input: { ...ok, seq: 5 } },
  { name: 'an unknown field set to undefined', input: { ...ok, hash: undefined } },
  { name: 'an unknown field after a bad one (the bad field is named first)', input: { ...ok, actor: '', seq: 5 } },
  { name: 'the event is null', input: null },
  { name: 'the event is an array', input: [ok] },
  { name: 'the event is a string', input: 'tool.call' },
];

for (const c of cases) {
  test(`validateEventInput agrees with the zod schema: ${c.name}`, () => {
    const parsed = auditEventInputSchema.safeParse(c.input);
    let thrown: unknown;
    try {
      validateEventInput(c.input);
    } catch (err) {
      thrown = err;
    }
    if (parsed.success) {
      assert.equal(thrown, undefined, `zod accepts it; validateEventInput said ${String(thrown)}`);
      return;
    }
    assert.ok(thrown instanceof AuditError, 'zod refuses it; so must validateEventInput');
    assert.equal(thrown.code, 'audit-invalid-event');
    const zodPath = parsed.error.issues[0]?.path.join('.') || '(event)';
    assert.equal(thrown.details?.path, zodPath, 'the same field is named');
    assert.match(thrown.message, new RegExp(`^invalid audit event: ${zodPath.replace(/[().]/g, '\\$&')}: `));
  });
}

test('validateEventInput keeps the caller\'s data object and drops absent optional fields', () => {
  const data = { host: 'example.com', nested: { port: 443 } };
  const v = validateEventInput({ type: 'egress.request', actor: 'agent:a', sandbox: undefined, data });
  assert.equal(v.data, data, 'no copy');
  assert.deepEqual(Object.keys(v), ['type', 'actor', 'data']);
  assert.deepEqual(validateEventInput({ type: 'x', actor: 'a' }).data, {});
});
