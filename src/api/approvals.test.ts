/**
 * `/v1/approvals` in process (`app.request`) on the real SQLite store, the
 * real audit log and real agent credentials (a sandbox service key and a
 * signed identity token): operators list, read and decide; an agent's own
 * credential gets 403 and an `approval.forbidden` event, and decides nothing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { approvalsHarness, deployAction, type ApprovalsHarness } from '../approvals/testing.js';
import { createIdentityService, createSandboxKeys, type IdentityService } from '../identity/index.js';
import { tempDir } from '../testkit/index.js';
import { createApi, operatorTokenChecker } from './index.js';

const TOKEN = 'cop_' + 'A'.repeat(43);
const SB = { id: 'sb-aaaaaaaaaaaaaaaaaaaa', agent: 'reviewer' };
let h: ApprovalsHarness;
let ids: IdentityService;
let idHome: { path: string; cleanup: () => void };
let app: ReturnType<typeof createApi>;

before(async () => {
  h = await approvalsHarness();
  idHome = tempDir('cordon-api-approvals-');
  ids = createIdentityService({ home: idHome.path, trustDomain: 'agents.example.org', audiences: ['llm.cordon.internal'] });
  app = createApi({ audit: h.audit, isOperatorToken: operatorTokenChecker(TOKEN), version: '0.0.0-test', approvals: h.approvals });
});

after(async () => {
  ids.close();
  idHome.cleanup();
  await h.close();
});

const op = (init: RequestInit = {}): RequestInit => ({ ...init, headers: { authorization: `Bearer ${TOKEN}`, ...(init.headers as Record<string, string> | undefined) } });

test('operators list, read and decide approvals', async () => {
  const t = await h.approvals.request(deployAction('{"env":"prod"}', { sandboxId: SB.id }));
  const list = await app.request('/v1/approvals?state=pending', op());
  assert.equal(list.status, 200);
  const { approvals } = (await list.json()) as { approvals: { id: string; state: string }[] };
  assert.ok(approvals.some((a) => a.id === t.id && a.state === 'pending'));

  const one = await app.request(`/v1/approvals/${t.id}`, op());
  assert.equal(one.status, 200);
  const body = (await one.json()) as { action: { method: string; url: string; bodyExcerpt: string; agent: string; sandboxId: string } };
  assert.deepEqual([body.action.method, body.action.url, body.action.bodyExcerpt, body.action.agent, body.action.sandboxId],
    ['POST', 'https://api.example.com/deploy', '{"env":"prod"}', 'reviewer', SB.id]);

  const yes = await app.request(`/v1/approvals/${t.id}/approve`, op({ method: 'POST', body: JSON.stringify({ reason: 'release 1.2' }) }));
  assert.equal(yes.status, 200);
  const decidedBody = (await yes.json()) as { state: string; decidedBy: string; reason: string };
  assert.deepEqual([decidedBody.state, decidedBody.decidedBy, decidedBody.reason], ['approved', 'operator', 'release 1.2']);
  assert.equal((await h.approvals.get(t.id))?.state, 'approved');
  const again = await app.request(`/v1/approvals/${t.id}/deny`, op({ method: 'POST' }));
  assert.equal(again.status, 409);
  assert.equal(((await again.json()) as { error: string }).error, 'approval-not-pending');
  const decided = await h.events('approval.decided');
  assert.deepEqual(decided.map((e) => [e.actor, e.decision, e.data.id]), [['operator', 'approve', t.id]]);
});

test('bad requests: clear 400 and 404 answers', async () => {
  const t = await h.approvals.request(deployAction('bad-input', { sandboxId: SB.id }));
  const cases: { name: string; path: string; init?: RequestInit; status: number; error: string }[] = [
    { name: 'unknown state', path: '/v1/approvals?state=maybe', status: 400, error: 'invalid-input' },
    { name: 'unknown query parameter', path: '/v1/approvals?agent=x', status: 400, error: 'invalid-input' },
    { name: 'malformed id', path: '/v1/approvals/..%2Fetc', status: 404, error: 'not-found' },
    { name: 'unknown id', path: `/v1/approvals/ap-${'0'.repeat(24)}`, status: 404, error: 'not-found' },
    { name: 'deciding an unknown id', path: `/v1/approvals/ap-${'0'.repeat(24)}/approve`, init: { method: 'POST' }, status: 404, error: 'approval-not-found' },
    { name: 'body is not JSON', path: `/v1/approvals/${t.id}/approve`, init: { method: 'POST', body: 'yes please' }, status: 400, error: 'invalid-input' },
    { name: 'unknown body field', path: `/v1/approvals/${t.id}/approve`, init: { method: 'POST', body: '{"approver":"someone-else"}' }, status: 400, error: 'invalid-input' },
  ];
  for (const c of cases) {
    const res = await app.request(c.path, op(c.init));
    assert.equal(res.status, c.status, c.name);
    assert.equal(((await res.json()) as { error: string }).error, c.error, c.name);
  }
  assert.equal((await h.approvals.get(t.id))?.state, 'pending', 'no bad request decided anything');
});

test('self-approval: an agent credential gets 403 and an audit event, and decides nothing', async () => {
  const t = await h.approvals.request(deployAction('self', { sandboxId: SB.id }));
  const key = createSandboxKeys().issue(SB.id);
  const { token } = await ids.issue(SB);
  const before = (await h.events('approval.forbidden')).length;
  const cases: { name: string; headers: Record<string, string>; path: string; method: string; credential: string }[] = [
    { name: 'service key approves', headers: { authorization: `Bearer ${key}` }, path: `/v1/approvals/${t.id}/approve`, method: 'POST', credential: 'sandbox-key' },
    { name: 'identity token approves', headers: { authorization: `Bearer ${token}` }, path: `/v1/approvals/${t.id}/approve`, method: 'POST', credential: 'sandbox-token' },
    { name: 'service key in x-api-key', headers: { 'x-api-key': key }, path: `/v1/approvals/${t.id}/approve`, method: 'POST', credential: 'sandbox-key' },
    { name: 'identity token lists', headers: { authorization: `Bearer ${token}` }, path: '/v1/approvals', method: 'GET', credential: 'sandbox-token' },
  ];
  for (const c of cases) {
    const res = await app.request(c.path, { method: c.method, headers: c.headers });
    assert.equal(res.status, 403, c.name);
    assert.equal(((await res.json()) as { error: string }).error, 'forbidden', c.name);
  }
  const events = (await h.events('approval.forbidden')).slice(before);
  assert.deepEqual(events.map((e) => [e.decision, e.reason, e.data.credential]), cases.map((c) => ['deny', 'agent-token', c.credential]));
  assert.ok(events.every((e) => !JSON.stringify(e).includes(key) && !JSON.stringify(e).includes(token)), 'the credential itself is not logged');

  const anonymous = await app.request(`/v1/approvals/${t.id}/approve`, { method: 'POST' });
  assert.equal(anonymous.status, 401, 'no token at all is 401');
  const wrong = await app.request(`/v1/approvals/${t.id}/approve`, { method: 'POST', headers: { authorization: 'Bearer cop_wrong' } });
  assert.equal(wrong.status, 401, 'a wrong operator token is 401');
  assert.equal((await h.approvals.get(t.id))?.state, 'pending', 'nothing was decided');
});
