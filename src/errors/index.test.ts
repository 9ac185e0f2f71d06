/** The error hierarchy: codes, fixes, and the one status map. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AuditError, AuthError, ConfigError, CordonError, EnvironmentError, ForbiddenError, InvalidInputError, KeyError,
  LimitError, NotFoundError, PolicyDeniedError, SandboxError, StoreError, describeError, httpStatusFor,
} from './index.js';

const statuses: Array<[string, unknown, number]> = [
  ['auth', new AuthError('x'), 401],
  ['forbidden', new ForbiddenError('x'), 403],
  ['policy denied', new PolicyDeniedError('host-not-allowed', 'x'), 403],
  ['not found', new NotFoundError('x'), 404],
  ['invalid input', new InvalidInputError('x'), 400],
  ['config', new ConfigError('x'), 400],
  ['limit', new LimitError('x', 1000), 429],
  ['audit', new AuditError('audit-write-failed', 'x'), 503],
  ['store', new StoreError('store-corrupt', 'x'), 503],
  ['environment', new EnvironmentError('env-missing-tool', 'x'), 503],
  ['sandbox', new SandboxError('sandbox-failed', 'x'), 503],
  ['key', new KeyError('key-corrupt', 'x'), 500],
  ['a secret that cannot be resolved (secrets/)', new CordonError('secret-unresolved', 'x'), 503],
  ['a secret store that is locked (secrets/)', new CordonError('secret-store-locked', 'x'), 503],
  ['an invalid secret value (secrets/)', new CordonError('secret-invalid', 'x'), 400],
  ['an unknown secret (secrets/)', new CordonError('secret-not-found', 'x'), 404],
  ['a revoked identity (identity/)', new CordonError('identity-revoked', 'x'), 403],
  ['an identity signing failure (identity/)', new CordonError('identity-token-too-large', 'x'), 503],
  ['an unknown code stays 500', new CordonError('something-else', 'x'), 500],
  ['plain Error', new Error('x'), 500],
  ['a string', 'x', 500],
];
for (const [name, err, status] of statuses) {
  test(`httpStatusFor ${name} is ${status}`, () => assert.equal(httpStatusFor(err), status));
}

test('every error has a name, a code and a fix in its description and JSON', () => {
  const e = new StoreError('store-corrupt', '/tmp/x.db is not a database', { fix: 'move it aside' });
  assert.ok(e instanceof CordonError);
  assert.equal(e.name, 'StoreError');
  assert.equal(e.code, 'store-corrupt');
  assert.equal(describeError(e), '/tmp/x.db is not a database\n  fix: move it aside');
  assert.deepEqual(e.toJSON(), { error: 'store-corrupt', message: '/tmp/x.db is not a database', fix: 'move it aside' });
});

test('ConfigError lists every issue with path, line and fix', () => {
  const e = new ConfigError('cordon.yaml is invalid (2 problems)', [
    { path: 'agents.a.egress[0].host', problem: '"*" allows every host', fix: 'name the hosts', line: 7 },
    { path: 'version', problem: 'missing', fix: 'add version: 1' },
  ]);
  assert.equal(
    e.describe(),
    'cordon.yaml is invalid (2 problems)\n  - agents.a.egress[0].host (line 7): "*" allows every host. Fix: name the hosts\n  - version: missing. Fix: add version: 1',
  );
});
