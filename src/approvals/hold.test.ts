/**
 * The shared hold flow, one outcome per way a hold ends: used only when an
 * operator approved and the approval was used; each step that throws keeps
 * its error; a supervised sandbox's action carries the alert. Real approvals
 * (SQLite, audit log); a step is made to throw by wrapping one method.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Approvals } from './approvals.js';
import { holdAction, type HoldOutcome } from './hold.js';
import { approvalsHarness, deployAction } from './testing.js';

/** Wait until `approvals` has a pending approval, then decide it. */
async function decideWhenPending(approvals: Approvals, verdict: 'approve' | 'deny'): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const [pending] = await approvals.list({ state: 'pending' });
    if (pending) {
      await approvals.decide(pending.id, 'operator', verdict);
      return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('no approval became pending');
}

const boom = new Error('store is gone');

test('holdAction: each way a hold ends is its own outcome', async () => {
  const cases: Array<{ why: string; kind: HoldOutcome['kind']; run: (a: Approvals) => Promise<HoldOutcome> }> = [
    {
      why: 'approved and used: the only way through', kind: 'used',
      run: async (a) => (await Promise.all([holdAction(a, () => deployAction('used'), { holdTimeoutMs: 5000 }), decideWhenPending(a, 'approve')]))[0],
    },
    {
      why: 'an operator denied', kind: 'denied',
      run: async (a) => (await Promise.all([holdAction(a, () => deployAction('denied'), { holdTimeoutMs: 5000 }), decideWhenPending(a, 'deny')]))[0],
    },
    { why: 'nobody decided in time: a timeout denies', kind: 'timeout', run: (a) => holdAction(a, () => deployAction('late'), { holdTimeoutMs: 50 }) },
    {
      why: 'building the action threw', kind: 'request-failed',
      run: (a) => holdAction(a, () => { throw boom; }, { holdTimeoutMs: 5000 }),
    },
    {
      why: 'asking for the approval threw', kind: 'request-failed',
      run: (a) => holdAction({ ...a, request: () => Promise.reject(boom) }, () => deployAction('req'), { holdTimeoutMs: 5000 }),
    },
    {
      why: 'waiting threw', kind: 'wait-failed',
      run: (a) => holdAction({ ...a, request: async (b) => ({ ...(await a.request(b)), wait: () => Promise.reject(boom) }) }, () => deployAction('wait'), { holdTimeoutMs: 5000 }),
    },
    {
      why: 'using the granted approval threw', kind: 'use-failed',
      run: async (a) => (await Promise.all([
        holdAction({ ...a, consume: () => Promise.reject(boom) }, () => deployAction('use'), { holdTimeoutMs: 5000 }),
        decideWhenPending(a, 'approve'),
      ]))[0],
    },
  ];
  for (const c of cases) {
    const h = await approvalsHarness();
    try {
      const out = await c.run(h.approvals);
      assert.equal(out.kind, c.kind, c.why);
      if ('error' in out && out.kind !== 'flood') assert.equal(out.error, boom, `${c.why}: the thrown error is kept`);
      if (out.kind !== 'request-failed' && out.kind !== 'flood') assert.match(out.approvalId, /^ap-/, `${c.why}: names the approval`);
      if (c.kind === 'used') assert.equal((await h.events('approval.consumed')).length, 1, `${c.why}: used exactly once`);
      else assert.equal((await h.events('approval.consumed')).length, 0, `${c.why}: nothing was used`);
    } finally {
      await h.close();
    }
  }
});

test('holdAction: a granted approval that cannot be used is unusable, with consume\'s reason', async () => {
  const h = await approvalsHarness();
  try {
    // Use the approval behind the hold's back, as a replay would: the hold's own use is then refused.
    const replayed: Approvals = {
      ...h.approvals,
      consume: async (id, hash) => {
        assert.deepEqual(await h.approvals.consume(id, hash), { ok: true });
        return h.approvals.consume(id, hash);
      },
    };
    const [out] = await Promise.all([holdAction(replayed, () => deployAction('replay'), { holdTimeoutMs: 5000 }), decideWhenPending(h.approvals, 'approve')]);
    assert.equal(out.kind, 'unusable');
    assert.equal(out.kind === 'unusable' ? out.reason : undefined, 'approval-used');
  } finally {
    await h.close();
  }
});

test('holdAction: too many pending approvals is a flood, not a failure', async () => {
  const h = await approvalsHarness({ maxPendingPerAgent: 1 });
  try {
    await h.approvals.request(deployAction('first'));
    const out = await holdAction(h.approvals, () => deployAction('second'), { holdTimeoutMs: 5000 });
    assert.equal(out.kind, 'flood');
    assert.equal(out.kind === 'flood' ? out.error.code : undefined, 'approval-flood');
  } finally {
    await h.close();
  }
});

test('holdAction: the action of a supervised sandbox carries the alert that marked it', async () => {
  const h = await approvalsHarness();
  try {
    await h.approvals.supervise({ sandboxId: 'sb-test', agent: 'reviewer', alertId: 'al-1', reason: 'anomaly' });
    const held = holdAction(h.approvals, () => deployAction('watched'), { holdTimeoutMs: 5000 });
    let pending;
    for (let i = 0; i < 200 && !pending; i++) {
      [pending] = await h.approvals.list({ state: 'pending' });
      if (!pending) await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(pending?.action.supervised, { alertId: 'al-1', reason: 'anomaly' });
    await h.approvals.decide(pending!.id, 'operator', 'deny');
    assert.equal((await held).kind, 'denied');
  } finally {
    await h.close();
  }
});
