/**
 * The approvals core on a real SQLite store and the real audit log: the
 * life of an approval, time-of-check/time-of-use, replay, expiry, a hold
 * that times out, a restart, the flood bound, two approvers, who may decide,
 * and a webhook that is down.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApprovalError } from './errors.js';
import { approvalsHarness, deployAction } from './testing.js';

const rejectsWith = (code: string) => (err: unknown) => err instanceof ApprovalError && err.code === code;

test('approve, use once: the waiting request learns the decision, consume succeeds exactly once', async () => {
  const h = await approvalsHarness();
  try {
    const built = deployAction('{"env":"prod"}');
    const t = await h.approvals.request(built);
    assert.equal(t.reused, false);
    const pending = await h.approvals.get(t.id);
    assert.equal(pending?.state, 'pending');
    assert.equal(pending?.action.method, 'POST');
    assert.equal(pending?.action.url, 'https://api.example.com/deploy');
    assert.equal(pending?.action.bodyExcerpt, '{"env":"prod"}');
    const waiting = t.wait(5000);
    const decided = await h.approvals.decide(t.id, 'operator', 'approve', 'looks right');
    assert.equal(decided.state, 'approved');
    assert.equal(decided.decidedBy, 'operator');
    assert.equal(await waiting, 'approved');
    assert.deepEqual(await h.approvals.consume(t.id, t.hash), { ok: true });
    assert.deepEqual(await h.approvals.consume(t.id, t.hash), { ok: false, reason: 'approval-used' }, 'replay of a used approval');
    const types = (await h.events('approval.requested')).length + (await h.events('approval.decided')).length + (await h.events('approval.consumed')).length;
    assert.equal(types, 3, 'requested, decided, consumed: one event each');
    await assert.rejects(h.approvals.decide(t.id, 'operator', 'deny'), rejectsWith('approval-not-pending'), 'a decided approval cannot be decided again');
  } finally {
    await h.close();
  }
});

test('time of check / time of use: an approval for one body does not permit another', async () => {
  const h = await approvalsHarness();
  try {
    const approved = deployAction('{"env":"staging"}');
    const changed = deployAction('{"env":"prod"}');
    const t = await h.approvals.request(approved);
    await h.approvals.decide(t.id, 'operator', 'approve');
    assert.deepEqual(await h.approvals.consume(t.id, changed.hash), { ok: false, reason: 'approval-mismatch' });
    const t2 = await h.approvals.request(changed);
    assert.notEqual(t2.id, t.id, 'the changed action needs a new approval');
    assert.equal(t2.reused, false);
    assert.equal((await h.approvals.get(t2.id))?.state, 'pending');
    // The approved one is still usable for exactly its own action.
    assert.deepEqual(await h.approvals.consume(t.id, approved.hash), { ok: true });
  } finally {
    await h.close();
  }
});

test('replay: the same action after its approval was used needs a new approval', async () => {
  const h = await approvalsHarness();
  try {
    const built = deployAction('{"n":1}');
    const t = await h.approvals.request(built);
    await h.approvals.decide(t.id, 'operator', 'approve');
    const again = await h.approvals.request(built);
    assert.equal(again.id, t.id, 'before use, an identical request finds the approved one');
    assert.equal(again.reused, true);
    assert.deepEqual(await h.approvals.consume(t.id, built.hash), { ok: true });
    const third = await h.approvals.request(built);
    assert.notEqual(third.id, t.id);
    assert.equal(third.reused, false);
    assert.equal(await third.wait(30), 'timeout', 'nobody approved the new one');
  } finally {
    await h.close();
  }
});

test('expiry: undecided past the TTL, and approved but unused past the TTL', async () => {
  const h = await approvalsHarness({ ttlMs: 60_000 });
  try {
    const t = await h.approvals.request(deployAction('a'));
    h.advance(60_001);
    assert.equal((await h.approvals.get(t.id))?.state, 'expired');
    assert.equal((await h.approvals.get(t.id))?.reason, 'ttl');
    await assert.rejects(h.approvals.decide(t.id, 'operator', 'approve'), rejectsWith('approval-not-pending'), 'an expired approval cannot be approved');

    const u = await h.approvals.request(deployAction('b'));
    await h.approvals.decide(u.id, 'operator', 'approve');
    h.advance(60_001);
    assert.deepEqual(await h.approvals.consume(u.id, u.hash), { ok: false, reason: 'approval-expired' });
    const expired = await h.events('approval.expired');
    assert.deepEqual(expired.map((e) => [e.data.id, e.reason]), [[t.id, 'ttl'], [u.id, 'ttl']]);
  } finally {
    await h.close();
  }
});

test('a hold that times out denies: the approval expires and a late decision is refused', async () => {
  const h = await approvalsHarness();
  try {
    const t = await h.approvals.request(deployAction('late'));
    assert.equal(await t.wait(50), 'timeout');
    const a = await h.approvals.get(t.id);
    assert.deepEqual([a?.state, a?.reason], ['expired', 'hold-timeout']);
    await assert.rejects(h.approvals.decide(t.id, 'operator', 'approve'), rejectsWith('approval-not-pending'));
    assert.deepEqual(await h.approvals.consume(t.id, t.hash), { ok: false, reason: 'approval-expired' });
    const abandoned = await h.approvals.request(deployAction('gone'));
    const ac = new AbortController();
    const w = abandoned.wait(5000, ac.signal);
    ac.abort();
    assert.equal(await w, 'timeout');
    assert.equal((await h.approvals.get(abandoned.id))?.reason, 'abandoned', 'a client that went away abandons its approval');
  } finally {
    await h.close();
  }
});

test('restart: pending survives and can be decided, decided stays decided, used stays used', async () => {
  const h = await approvalsHarness();
  try {
    const pending = await h.approvals.request(deployAction('p'));
    const denied = await h.approvals.request(deployAction('d'));
    const used = await h.approvals.request(deployAction('u'));
    await h.approvals.decide(denied.id, 'operator', 'deny', 'no');
    await h.approvals.decide(used.id, 'operator', 'approve');
    assert.deepEqual(await h.approvals.consume(used.id, used.hash), { ok: true });
    const waiting = pending.wait(10_000);
    await h.reopen();
    assert.equal(await waiting, 'timeout', 'a request waiting when the daemon stops ends with a timeout');
    const states = Object.fromEntries((await h.approvals.list()).map((a) => [a.id, [a.state, a.consumedAt !== undefined]]));
    assert.deepEqual(states, { [pending.id]: ['pending', false], [denied.id]: ['denied', false], [used.id]: ['approved', true] });
    assert.deepEqual(await h.approvals.consume(used.id, used.hash), { ok: false, reason: 'approval-used' }, 'no replay across a restart');
    await h.approvals.decide(pending.id, 'operator', 'approve');
    const retried = await h.approvals.request(deployAction('p'));
    assert.equal(retried.id, pending.id, 'the agent retrying the same action after the restart finds the approval');
    assert.equal(await retried.wait(1000), 'approved');
    assert.deepEqual(await h.approvals.consume(retried.id, retried.hash), { ok: true });
  } finally {
    await h.close();
  }
});

test('flood: pending approvals are bounded per agent; nothing is approved by the refusal', async () => {
  const h = await approvalsHarness({ maxPendingPerAgent: 3 });
  try {
    for (let i = 0; i < 3; i++) await h.approvals.request(deployAction(`n${i}`));
    await assert.rejects(h.approvals.request(deployAction('n3')), rejectsWith('approval-flood'));
    const other = await h.approvals.request(deployAction('x', { agent: 'other' }));
    assert.equal((await h.approvals.get(other.id))?.state, 'pending', 'another agent is not affected');
    const all = await h.approvals.list();
    assert.equal(all.length, 4);
    assert.ok(all.every((a) => a.state === 'pending'), 'nothing approved by accident');
    const refused = await h.events('approval.refused');
    assert.deepEqual(refused.map((e) => [e.agent, e.reason]), [['reviewer', 'approval-flood']]);
    await h.approvals.decide(all.find((a) => a.action.agent === 'reviewer')!.id, 'operator', 'deny');
    await h.approvals.request(deployAction('n3'));
  } finally {
    await h.close();
  }
});

test('who decides: only operator identities; two approvers must differ; one denial is final', async () => {
  const h = await approvalsHarness({ twoApprovers: true });
  try {
    const t = await h.approvals.request(deployAction('two'));
    for (const who of ['agent:reviewer', 'sb-test', 'operatorX', '']) {
      await assert.rejects(h.approvals.decide(t.id, who, 'approve'), rejectsWith('approval-forbidden'), who);
    }
    const first = await h.approvals.decide(t.id, 'operator:alice', 'approve');
    assert.deepEqual([first.state, first.approvers], ['pending', ['operator:alice']]);
    await assert.rejects(h.approvals.decide(t.id, 'operator:alice', 'approve'), rejectsWith('approval-same-approver'));
    const second = await h.approvals.decide(t.id, 'operator:bob', 'approve');
    assert.deepEqual([second.state, second.approvers], ['approved', ['operator:alice', 'operator:bob']]);

    const d = await h.approvals.request(deployAction('deny'));
    await h.approvals.decide(d.id, 'operator:alice', 'approve');
    const denied = await h.approvals.decide(d.id, 'operator:bob', 'deny');
    assert.equal(denied.state, 'denied');
    assert.equal(await d.wait(1000), 'denied');
    await assert.rejects(h.approvals.decide('ap-' + '0'.repeat(24), 'operator', 'approve'), rejectsWith('approval-not-found'));
  } finally {
    await h.close();
  }
});

test('webhook: a JSON POST with a text field; when it is down, approvals still work and the failure is logged', async () => {
  const got: { body: Record<string, unknown>; type: string | undefined }[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let text = '';
    req.setEncoding('utf8').on('data', (d: string) => (text += d)).on('end', () => {
      got.push({ body: JSON.parse(text) as Record<string, unknown>, type: req.headers['content-type'] });
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const up = await approvalsHarness({ webhook: { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook` } });
  try {
    const t = await up.approvals.request(deployAction('{"env":"prod"}', { headers: { authorization: 'Bearer real' } }));
    for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(got.length, 1);
    assert.equal(got[0]!.type, 'application/json');
    assert.match(String(got[0]!.body.text), new RegExp(`approval ${t.id} pending: POST https://api\\.example\\.com/deploy \\(agent reviewer, sandbox sb-test\\)`));
    const approval = got[0]!.body.approval as { action: { headers: Record<string, string> } };
    assert.equal(approval.action.headers.authorization, '[masked]', 'the webhook never sees a credential');
  } finally {
    await up.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
  // The same port, now closed: the webhook is down.
  const down = await approvalsHarness({ webhook: { url: `http://127.0.0.1:${(server.address() as AddressInfo | null)?.port ?? 9}/hook` } });
  try {
    const t = await down.approvals.request(deployAction('x'));
    let failed: Awaited<ReturnType<typeof down.events>> = [];
    for (let i = 0; i < 100 && failed.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      failed = await down.events('approval.notify-failed');
    }
    assert.equal(failed.length, 1, 'the failure is logged');
    assert.equal(failed[0]!.data.id, t.id);
    assert.equal((await down.approvals.decide(t.id, 'operator', 'approve')).state, 'approved', 'deciding still works');
  } finally {
    await down.close();
  }
});
