/** Tests of per-sandbox service keys: bound to one channel, refused after revoke, never stored in clear. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidInputError } from '../errors/index.js';
import { createSandboxKeys, SANDBOX_KEY_PATTERN } from './sandbox-keys.js';

const A = 'sb-aaaaaaaaaaaaaaaaaaaa';
const B = 'sb-bbbbbbbbbbbbbbbbbbbb';

test('a key is accepted on its own channel only, and refused after revoke', () => {
  const keys = createSandboxKeys();
  const ka = keys.issue(A);
  const kb = keys.issue(B);
  assert.match(ka, SANDBOX_KEY_PATTERN);
  assert.notEqual(ka, kb);
  const cases: Array<{ name: string; key: string | undefined; channel: string; want: unknown }> = [
    { name: 'own channel', key: ka, channel: A, want: { ok: true, sandboxId: A } },
    { name: 'replayed on another sandbox', key: ka, channel: B, want: { ok: false, reason: 'wrong-channel' } },
    { name: 'no key', key: undefined, channel: A, want: { ok: false, reason: 'malformed' } },
    { name: 'garbage', key: 'sk-123', channel: A, want: { ok: false, reason: 'malformed' } },
    { name: 'well-formed but never issued', key: 'cordon-sk-' + 'A'.repeat(43), channel: A, want: { ok: false, reason: 'unknown-key' } },
  ];
  for (const c of cases) assert.deepEqual(keys.check(c.key, c.channel), c.want, c.name);
  keys.revoke(A);
  assert.deepEqual(keys.check(ka, A), { ok: false, reason: 'unknown-key' }, 'revoked');
  assert.deepEqual(keys.check(kb, B), { ok: true, sandboxId: B }, 'the other sandbox is unaffected');
  assert.equal(keys.size, 1);
});

test('issuing again replaces the old key; bad sandbox ids are refused', () => {
  const keys = createSandboxKeys();
  const first = keys.issue(A);
  const second = keys.issue(A);
  assert.deepEqual(keys.check(first, A), { ok: false, reason: 'unknown-key' });
  assert.deepEqual(keys.check(second, A), { ok: true, sandboxId: A });
  assert.throws(() => keys.issue('../etc'), InvalidInputError);
});
