/**
 * Tools marked `approve`: the call waits for an operator, the approval is
 * bound to the exact arguments and permits one execution; a replay or
 * changed arguments need a new approval; a denial and a timeout are clear
 * error results that carry the approval id. The upstream's `counter` tool
 * counts its own executions, so "ran once" is observed at the server.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Approval } from '../approvals/index.js';
import { holdToolCall } from './approval.js';
import { localUpstream, resultText, SANDBOX_A, startToolsHarness, type ToolsHarness } from './testing/harness.js';

const HOLD_MS = 2500;
let t: ToolsHarness;
let client: Client;

before(async () => {
  t = await startToolsHarness({
    holdTimeoutMs: HOLD_MS,
    redact: () => ({ values: ['agent-secret-value-42'] }),
    config: {
      version: 1,
      mcpServers: { local: localUpstream() },
      agents: { coder: { isolation: 'bubblewrap', tools: { local: { allow: ['echo'], approve: ['counter'] } } } },
    },
  });
  client = await t.client(t.doors.a, t.keys.issue(SANDBOX_A.sandboxId));
});
after(async () => {
  await t?.close();
});

/** Wait for a pending approval that is not in `seen`. */
async function nextPending(seen: Set<string>): Promise<Approval> {
  for (let i = 0; i < 100; i++) {
    const p = (await t.h.approvals.list({ state: 'pending' })).find((a) => !seen.has(a.id));
    if (p) {
      seen.add(p.id);
      return p;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no pending approval appeared');
}

const refusal = (r: unknown) => ((r as { _meta?: Record<string, any> })._meta ?? {})['cordon/refusal'] as { reason: string; approvalId?: string; state?: string } | undefined;

test('approve: pending → operator approves → runs once; replay and changed arguments need new approvals; deny and timeout are clear results', async () => {
  const seen = new Set<string>();
  // 1. Held, approved by an operator, executed exactly once.
  const first = client.callTool({ name: 'local__counter', arguments: { note: 'ship agent-secret-value-42' } });
  const a1 = await nextPending(seen);
  assert.equal(a1.action.kind, 'tool');
  assert.equal(a1.action.toolName, 'local__counter');
  assert.deepEqual(a1.action.args, { note: 'ship [masked]' }, 'the approver sees the arguments, secrets masked');
  assert.equal(a1.action.sandboxId, SANDBOX_A.sandboxId);
  await t.h.approvals.decide(a1.id, 'operator:alice', 'approve');
  const r1 = await first;
  assert.equal(resultText(r1), '1', 'the upstream ran it once');
  const call = (await t.h.events('tool.call')).find((e) => e.data.approvalId === a1.id)!;
  assert.equal(call.decision, 'allow');
  assert.equal(call.reason, 'approved');
  assert.equal((await t.h.approvals.get(a1.id))!.consumedAt !== undefined, true);

  // 2. The same arguments again: the used approval does not cover a replay; a new one is asked for.
  const replay = client.callTool({ name: 'local__counter', arguments: { note: 'ship agent-secret-value-42' } });
  const a2 = await nextPending(seen);
  assert.notEqual(a2.id, a1.id);
  assert.equal(a2.actionHash, a1.actionHash, 'same action, same hash: only the approval is new');
  await t.h.approvals.decide(a2.id, 'operator:alice', 'deny', 'not twice');
  const r2 = await replay;
  assert.equal(r2.isError, true);
  assert.deepEqual({ reason: refusal(r2)?.reason, id: refusal(r2)?.approvalId, state: refusal(r2)?.state }, { reason: 'approval-denied', id: a2.id, state: 'denied' });
  assert.match(resultText(r2), new RegExp(a2.id));

  // 3. Changed arguments while an approval for other arguments is granted: each has its own approval.
  const x = client.callTool({ name: 'local__counter', arguments: { note: 'x' } });
  const ax = await nextPending(seen);
  const y = client.callTool({ name: 'local__counter', arguments: { note: 'y' } });
  const ay = await nextPending(seen);
  assert.notEqual(ax.actionHash, ay.actionHash, 'other arguments, other action');
  await t.h.approvals.decide(ax.id, 'operator:alice', 'approve');
  assert.equal(resultText(await x), '2');
  await t.h.approvals.decide(ay.id, 'operator:alice', 'deny');
  assert.equal(refusal(await y)?.reason, 'approval-denied');

  // 4. Nobody decides: at the hold timeout the call is denied and the approval expires.
  const started = Date.now();
  const slow = client.callTool({ name: 'local__counter', arguments: { note: 'nobody looks' } });
  const at = await nextPending(seen);
  const r4 = await slow;
  assert.ok(Date.now() - started >= HOLD_MS - 100, 'it waited for the hold time');
  assert.deepEqual({ reason: refusal(r4)?.reason, id: refusal(r4)?.approvalId }, { reason: 'approval-timeout', id: at.id });
  assert.match(resultText(r4), /pending after \d+ ms, so the call was denied/);
  assert.equal((await t.h.approvals.get(at.id))!.state, 'expired');
  await assert.rejects(t.h.approvals.decide(at.id, 'operator:alice', 'approve'), /already expired/, 'a late approval permits nothing');

  // The upstream ran exactly twice in all: one per granted approval.
  const check = client.callTool({ name: 'local__counter', arguments: { note: 'count' } });
  await t.h.approvals.decide((await nextPending(seen)).id, 'operator:alice', 'approve');
  assert.equal(resultText(await check), '3');
  const denies = (await t.h.events('tool.call')).filter((e) => e.decision === 'deny').map((e) => e.reason);
  assert.deepEqual(denies, ['approval-denied', 'approval-denied', 'approval-timeout']);
});

test('an agent identity cannot approve its own held call', async () => {
  const held = client.callTool({ name: 'local__counter', arguments: { note: 'self' } });
  const a = await nextPending(new Set((await t.h.approvals.list()).filter((x) => x.state !== 'pending').map((x) => x.id)));
  await assert.rejects(t.h.approvals.decide(a.id, 'agent:coder', 'approve'), /not an operator identity/);
  await t.h.approvals.decide(a.id, 'operator:bob', 'deny');
  assert.equal(refusal(await held)?.reason, 'approval-denied');
});

test('a hold whose approvals step throws is a refusal (approval-failed), never an escaped error', async () => {
  const input = { agent: 'coder', sandboxId: SANDBOX_A.sandboxId, toolName: 'local__counter', args: { note: 'throws' } };
  const real = t.h.approvals;
  const cases: { name: string; approvals: typeof real; decide?: boolean }[] = [
    { name: 'supervisedMark throws', approvals: { ...real, supervisedMark: () => { throw new Error('mark store down'); } } },
    {
      name: 'wait throws',
      approvals: { ...real, request: async (b) => ({ ...(await real.request(b)), wait: async () => { throw new Error('wait store down'); } }) },
    },
    { name: 'consume throws', decide: true, approvals: { ...real, consume: async () => { throw new Error('consume store down'); } } },
  ];
  for (const c of cases) {
    const held = holdToolCall(c.approvals, input, { holdTimeoutMs: 2000 });
    if (c.decide) await real.decide((await nextPending(new Set((await real.list()).filter((x) => x.state !== 'pending').map((x) => x.id)))).id, 'operator:alice', 'approve');
    const r = await held;
    assert.equal(r.ok, false, c.name);
    assert.equal(!r.ok && r.reason, 'approval-failed', c.name);
    assert.match(!r.ok ? r.problem : '', /store down/, c.name);
  }
});
