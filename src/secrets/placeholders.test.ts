/**
 * Per-sandbox placeholders and substitution: the guest's env carries only
 * placeholders, and the real value goes only into the headers bound to the
 * request's host.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { createSandboxSecrets, SecretError, SecretValue, type HeaderMap, type SubstituteRequest } from './index.js';
import { API_VALUE, GH_VALUE, PROVIDER_VALUE, reviewerAgent, reviewerSecrets } from './testing.js';

const PH = /^cordon-ph-[a-z2-7]{32}$/;

describe('placeholders and the guest env', () => {
  test('the env holds placeholders, never values; placeholders are random per sandbox and per secret', () => {
    const one = reviewerSecrets();
    const two = reviewerSecrets();
    const gh = one.placeholderOf('gh')!;
    const api = one.placeholderOf('api')!;
    assert.match(gh, PH);
    assert.match(api, PH);
    assert.notEqual(gh, api);
    assert.notEqual(two.placeholderOf('gh'), gh, 'another sandbox gets another placeholder');
    assert.deepEqual(one.env, { GITHUB_TOKEN: gh, BOTH: `${gh}:${api}`, PLAIN: 'hello' });
    assert.equal(one.placeholderOf('openai_key'), undefined, 'no placeholder for a secret the agent does not refer to');
    const shown = [JSON.stringify(one.env), JSON.stringify([...one.placeholders.values()]), inspect(one, { depth: 8, showHidden: true })].join('\n');
    for (const v of [GH_VALUE, API_VALUE, PROVIDER_VALUE]) assert.ok(!shown.includes(v), `${v} visible`);
  });

  test('each placeholder records its secret and where it is bound', () => {
    const s = reviewerSecrets();
    assert.deepEqual(s.placeholders.get(s.placeholderOf('gh')!), {
      placeholder: s.placeholderOf('gh'),
      secret: 'gh',
      bindings: [
        { host: 'api.github.com', header: 'authorization', ruleId: 'agents.reviewer.egress[0]' },
        { host: 'uploads.github.com', header: 'x-token', ruleId: 'agents.reviewer.egress[1]' },
        { host: 'uploads.github.com', header: 'x-both', ruleId: 'agents.reviewer.egress[1]' },
      ],
    });
    assert.deepEqual(s.placeholders.get(s.placeholderOf('api')!)!.bindings.map((b) => `${b.host} ${b.header}`), ['uploads.github.com x-both', '*.example.com x-api-key']);
  });

  test('a secret the agent refers to without a value is refused, never rendered blank', () => {
    assert.throws(
      () => createSandboxSecrets({ agentName: 'reviewer', agent: reviewerAgent(), values: new Map([['gh', new SecretValue('gh', Buffer.from(GH_VALUE))]]) }),
      (err: unknown) => err instanceof SecretError && err.code === 'secret-unresolved' && /not resolved: api/.test(err.message),
    );
  });
});

describe('substitution', () => {
  const s = reviewerSecrets();
  const gh = s.placeholderOf('gh')!;
  const api = s.placeholderOf('api')!;
  const cases: Array<{ name: string; req: SubstituteRequest; headers: HeaderMap; substituted: Array<[string, string]> }> = [
    {
      name: 'placeholder in the bound header is swapped',
      req: { host: 'api.github.com', headers: { authorization: `Bearer ${gh}`, accept: 'application/json' } },
      headers: { authorization: `Bearer ${GH_VALUE}`, accept: 'application/json' },
      substituted: [['gh', 'authorization']],
    },
    {
      name: 'the agent\'s own format around the placeholder is kept',
      req: { host: 'api.github.com', headers: { Authorization: `token ${gh}` } },
      headers: { Authorization: `token ${GH_VALUE}` },
      substituted: [['gh', 'authorization']],
    },
    {
      name: 'a missing bound header is set from its template',
      req: { host: 'api.github.com', port: 443, headers: { accept: '*/*' } },
      headers: { accept: '*/*', authorization: `Bearer ${GH_VALUE}` },
      substituted: [['gh', 'authorization']],
    },
    {
      name: 'a bound header without the placeholder is replaced by the template',
      req: { host: 'API.GitHub.com.', headers: { AUTHORIZATION: 'Bearer guest-made-this-up' } },
      headers: { authorization: `Bearer ${GH_VALUE}` },
      substituted: [['gh', 'authorization']],
    },
    {
      name: 'a placeholder in an unbound header of a bound host stays a placeholder',
      req: { host: 'api.github.com', headers: { authorization: `Bearer ${gh}`, 'x-debug': gh } },
      headers: { authorization: `Bearer ${GH_VALUE}`, 'x-debug': gh },
      substituted: [['gh', 'authorization']],
    },
    {
      name: 'another host is left unchanged',
      req: { host: 'evil.example.net', headers: { authorization: `Bearer ${gh}` } },
      headers: { authorization: `Bearer ${gh}` },
      substituted: [],
    },
    {
      name: 'a host with no bound headers is left unchanged',
      req: { host: 'pypi.org', headers: { authorization: `Bearer ${gh}` } },
      headers: { authorization: `Bearer ${gh}` },
      substituted: [],
    },
    {
      name: 'a port the bound rule does not allow gets nothing',
      req: { host: 'uploads.github.com', port: 80, headers: { 'x-token': gh } },
      headers: { 'x-token': gh },
      substituted: [],
    },
    {
      name: 'wildcard rule: a subdomain gets the value',
      req: { host: 'files.example.com', headers: { 'x-api-key': api } },
      headers: { 'x-api-key': API_VALUE },
      substituted: [['api', 'x-api-key']],
    },
    {
      name: 'wildcard rule: the bare domain does not',
      req: { host: 'example.com', headers: { 'x-api-key': api } },
      headers: { 'x-api-key': api },
      substituted: [],
    },
    {
      name: 'a header binding two secrets, one placeholder given: only that one swapped in place',
      req: { host: 'uploads.github.com', headers: { 'x-both': `${gh}|mine`, 'x-token': gh } },
      headers: { 'x-both': `${GH_VALUE}|mine`, 'x-token': GH_VALUE },
      substituted: [['gh', 'x-token'], ['gh', 'x-both']],
    },
    {
      name: 'a header binding two secrets, set from the template',
      req: { host: 'uploads.github.com', headers: {} },
      headers: { 'x-token': GH_VALUE, 'x-both': `${GH_VALUE}/${API_VALUE}` },
      substituted: [['gh', 'x-token'], ['gh', 'x-both'], ['api', 'x-both']],
    },
    {
      name: 'array header values are swapped one by one',
      req: { host: 'api.github.com', headers: { authorization: [`Bearer ${gh}`, 'Basic other'] } },
      headers: { authorization: [`Bearer ${GH_VALUE}`, 'Basic other'] },
      substituted: [['gh', 'authorization']],
    },
    {
      name: 'the rule the policy chose (ruleIndex) decides, not another rule for the host',
      req: { host: 'uploads.github.com', ruleIndex: 0, headers: { 'x-token': gh } },
      headers: { 'x-token': gh },
      substituted: [],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const before = JSON.stringify(c.req);
      const r = s.substitute(c.req);
      assert.deepEqual(r.headers, c.headers);
      assert.deepEqual(r.substituted.map((x) => [x.secret, x.header]), c.substituted);
      assert.equal(JSON.stringify(c.req), before, 'the input is not changed');
      assert.ok(!JSON.stringify(r.substituted).includes(GH_VALUE), 'the audit part holds no value');
    });
  }

  test('values with $ patterns are inserted literally', () => {
    const tricky = 'tok$&$1$$`\'end';
    const t = createSandboxSecrets({
      agentName: 'reviewer',
      agent: reviewerAgent(),
      values: new Map([['gh', new SecretValue('gh', Buffer.from(tricky))], ['api', new SecretValue('api', Buffer.from(API_VALUE))]]),
    });
    assert.deepEqual(t.substitute({ host: 'api.github.com', headers: { authorization: `x ${t.placeholderOf('gh')}` } }).headers, { authorization: `x ${tricky}` });
    assert.deepEqual(t.substitute({ host: 'api.github.com', headers: {} }).headers, { authorization: `Bearer ${tricky}` });
  });
});
