/**
 * The fetch-only operator client (shared by the SDK and the dashboard)
 * against the real API in process: its `fetch` is the app's own
 * `app.request`, so every answer is the server's. Approvals decided twice
 * give the 409 code the page relies on; a refused token is `unauthenticated`;
 * a control plane that is gone is `env-daemon-unreachable`; the red-team
 * scorecard's absence is `undefined`, not an error; the event stream parses.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createApi, operatorTokenChecker } from '../api/index.js';
import { egressAction } from '../approvals/index.js';
import { approvalsHarness, type ApprovalsHarness } from '../approvals/testing.js';
import { openDetectStore } from '../detect/index.js';
import { tempDir } from '../testkit/index.js';
import { OperatorClient } from './operator-client.js';

const TOKEN = 'cop_' + 'C'.repeat(43);
let h: ApprovalsHarness;
let api: OperatorClient;
let dir: ReturnType<typeof tempDir>;
let viaApp: typeof fetch;

before(async () => {
  h = await approvalsHarness();
  dir = tempDir();
  const app = createApi({
    audit: h.audit, isOperatorToken: operatorTokenChecker(TOKEN), version: '0.0.0-test', approvals: h.approvals,
    alerts: await openDetectStore(h.store), redteamReportFile: join(dir.path, 'redteam', 'latest.json'),
  });
  viaApp = ((url: string, init?: RequestInit) => app.request(url, init)) as typeof fetch;
  api = new OperatorClient({ baseUrl: 'http://cordon.test', token: TOKEN, fetch: viaApp });
});
after(async () => {
  await h.close();
  dir.cleanup();
});

function held(body: string) {
  return h.approvals.request(egressAction({
    agent: 'dev', sandboxId: 'sb-aaaaaaaaaaaaaaaaaaaa', method: 'POST', url: 'https://api.example.com/deploy',
    headers: { authorization: 'Bearer cordon-ph-secret', 'content-type': 'text/plain' }, body: Buffer.from(body),
  }));
}

test('approvals: list, get, decide; a second decision is 409 approval-not-pending and the state stays the first one', async () => {
  const t = await held('release 1');
  const pending = await api.listApprovals({ state: 'pending' });
  assert.deepEqual(pending.map((a) => a.id), [t.id]);
  assert.equal(pending[0]!.action.headers?.authorization, '[masked]');
  const decided = await api.decideApproval(t.id, 'deny', 'no');
  assert.deepEqual([decided.state, decided.decidedBy, decided.reason], ['denied', 'operator', 'no']);
  await assert.rejects(api.decideApproval(t.id, 'approve'), (err: { code?: string; message?: string }) => {
    assert.equal(err.code, 'approval-not-pending');
    assert.match(err.message ?? '', /already denied/);
    return true;
  });
  assert.equal((await api.getApproval(t.id)).state, 'denied');
  await assert.rejects(api.getApproval('ap-000000000000000000000000'), { code: 'not-found' });
});

test('a refused token is unauthenticated; a control plane that is gone is env-daemon-unreachable', async () => {
  const refused = new OperatorClient({ baseUrl: api.baseUrl, token: 'cop_not-the-token', fetch: viaApp });
  await assert.rejects(refused.health(), { code: 'unauthenticated', name: 'AuthError' });
  // Port 9 (discard) on loopback: nothing listens there.
  await assert.rejects(new OperatorClient({ baseUrl: 'http://127.0.0.1:9', token: TOKEN }).health(), { code: 'env-daemon-unreachable' });
});

test('the red-team scorecard: undefined when none was written', async () => {
  assert.equal(await api.redteamLatest(), undefined);
});

test('the event stream delivers parsed audit events until aborted', async () => {
  const abort = new AbortController();
  const seen: string[] = [];
  const done = api.streamEvents({
    types: ['approval.'], signal: abort.signal,
    onEvent: (e) => {
      seen.push(e.type);
      if (seen.length === 2) abort.abort();
    },
  });
  await new Promise((r) => setTimeout(r, 50));
  const t = await held('release 2');
  await api.decideApproval(t.id, 'approve', 'ok');
  await done;
  assert.deepEqual(seen, ['approval.requested', 'approval.decided']);
});
