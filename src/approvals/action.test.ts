/**
 * What binds an approval to an action (the hash) and what the approver sees
 * (secrets masked): table-driven, one named reason per case.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { egressAction, MASKED, toolAction, type EgressActionInput } from './action.js';

const PH = 'cordon-ph-' + 'a'.repeat(32);
const base: EgressActionInput = {
  agent: 'reviewer', sandboxId: 'sb-1', method: 'POST', url: 'https://api.example.com/deploy',
  headers: { host: 'api.example.com', 'content-type': 'application/json' }, body: Buffer.from('{"env":"prod"}'),
};
const hashOf = (i: Partial<EgressActionInput>) => egressAction({ ...base, ...i }).hash;

test('the hash changes with every part that defines the action', () => {
  const cases: { name: string; change: Partial<EgressActionInput> }[] = [
    { name: 'one byte of the body', change: { body: Buffer.from('{"env":"prod "}') } },
    { name: 'a byte past the shown excerpt', change: { body: Buffer.concat([Buffer.alloc(4096, 0x61), Buffer.from('b')]) } },
    { name: 'the method', change: { method: 'PUT' } },
    { name: 'the query string', change: { url: 'https://api.example.com/deploy?force=1' } },
    { name: 'a header value', change: { headers: { ...base.headers, 'content-type': 'text/plain' } } },
    { name: 'an added header', change: { headers: { ...base.headers, 'x-http-method-override': 'DELETE' } } },
    { name: 'another sandbox', change: { sandboxId: 'sb-2' } },
    { name: 'another agent', change: { agent: 'other' } },
  ];
  const h0 = hashOf({});
  assert.match(h0, /^[0-9a-f]{64}$/);
  for (const c of cases) assert.notEqual(hashOf(c.change), h0, c.name);
  assert.equal(hashOf({ method: 'post' }), h0, 'method case does not matter (it is normalised)');
  assert.equal(hashOf({ headers: { 'Content-Type': 'application/json', Host: 'api.example.com' } }), h0, 'header name case and order do not matter');
  assert.equal(egressAction({ ...base, body: Buffer.alloc(4097, 0x61) }).action.bodyExcerpt?.length, 2048, 'only an excerpt is shown');
});

test('the approver sees the action with secrets masked', () => {
  const { action } = egressAction({
    ...base,
    url: `https://api.example.com/deploy?key=${PH}`,
    headers: {
      ...base.headers, authorization: 'Bearer real-token-value', cookie: 'sid=abc', 'x-api-key': 'k-123456', 'x-github-token': 'ghp_x',
      'x-note': `carries ${PH}`, 'x-plain': 'visible',
    },
    body: Buffer.from(`{"password":"hunter22","token":"${PH}","real":"s3cr3t-value"}`),
  }, { values: ['s3cr3t-value'] });
  const cases: { name: string; got: unknown; want: unknown }[] = [
    { name: 'authorization header', got: action.headers?.authorization, want: MASKED },
    { name: 'cookie header', got: action.headers?.cookie, want: MASKED },
    { name: 'x-api-key header', got: action.headers?.['x-api-key'], want: MASKED },
    { name: 'a header named like a token', got: action.headers?.['x-github-token'], want: MASKED },
    { name: 'a placeholder inside another header', got: action.headers?.['x-note'], want: `carries ${MASKED}` },
    { name: 'an ordinary header stays visible', got: action.headers?.['x-plain'], want: 'visible' },
    { name: 'a placeholder in the URL', got: action.url, want: `https://api.example.com/deploy?key=${MASKED}` },
  ];
  for (const c of cases) assert.equal(c.got, c.want, c.name);
  assert.ok(!action.bodyExcerpt?.includes(PH), 'placeholder masked in the body excerpt');
  assert.ok(!action.bodyExcerpt?.includes('s3cr3t-value'), 'a known secret value masked in the body excerpt');
  assert.equal(action.bodyBytes, Buffer.byteLength(`{"password":"hunter22","token":"${PH}","real":"s3cr3t-value"}`));
  assert.match(action.bodySha256 ?? '', /^[0-9a-f]{64}$/);
});

test('tool actions: arguments are hashed whole and shown masked', () => {
  const a = toolAction({ agent: 'reviewer', sandboxId: 'sb-1', toolName: 'merge_pull_request', args: { pr: 7, repo: 'o/r', apiKey: 'x', note: PH } });
  const b = toolAction({ agent: 'reviewer', sandboxId: 'sb-1', toolName: 'merge_pull_request', args: { repo: 'o/r', pr: 7, apiKey: 'x', note: PH } });
  const c = toolAction({ agent: 'reviewer', sandboxId: 'sb-1', toolName: 'merge_pull_request', args: { pr: 8, repo: 'o/r', apiKey: 'x', note: PH } });
  assert.equal(a.hash, b.hash, 'key order does not matter');
  assert.notEqual(a.hash, c.hash, 'changed arguments are another action');
  assert.deepEqual(a.action.args, { apiKey: MASKED, note: MASKED, pr: 7, repo: 'o/r' });
});
