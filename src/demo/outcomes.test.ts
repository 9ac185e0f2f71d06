/**
 * The demo's verdict: a complete run passes; each way a run can fall short
 * (an event missing, a refusal that was an allow, a token that was not
 * swapped, a failed verify) fails exactly the outcome it concerns, with a
 * reason that says what did not happen.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditEvent } from '../audit/index.js';
import { DEMO_API_HOST, DEMO_SECRET, type SeenRequest } from './api.js';
import { judgeOutcomes, METADATA_HOST, UNLISTED_HOST, type OutcomeId, type OutcomeInput } from './outcomes.js';

const SB = 'sb-test';
const AP = 'ap-0123456789abcdef01234567';
let seq = 0;
function ev(type: string, decision: string | undefined, reason: string | undefined, data: Record<string, unknown>, actor = 'agent:demo'): AuditEvent {
  seq++;
  return { seq, ts: new Date(0).toISOString(), type, actor, agent: 'demo', sandbox: SB, ...(decision ? { decision } : {}), ...(reason ? { reason } : {}), data, prevHash: '', hash: '' };
}
const swapped = { hook: { secrets: [{ secret: DEMO_SECRET, header: 'authorization' }] } };

function complete(): OutcomeInput {
  seq = 0;
  const events = [
    ev('llm.request', 'allow', 'forwarded', { provider: 'scripted' }),
    ev('egress.request', 'allow', 'path-rule', { scheme: 'https', host: DEMO_API_HOST, method: 'GET', path: '/v1/inbox', ...swapped }),
    ev('llm.request', 'allow', 'forwarded', { provider: 'scripted', hits: [{ filter: 'injection', action: 'redact', rule: 'ignore-instructions' }] }),
    ev('egress.request', 'deny', 'ip-literal', { scheme: 'http', host: METADATA_HOST, method: 'GET', path: '/latest/meta-data/' }),
    ev('egress.request', 'deny', 'host-not-allowed', { scheme: 'connect', host: UNLISTED_HOST, port: 443 }),
    ev('approval.requested', 'approve', 'held', { id: AP }),
    ev('approval.decided', 'approve', 'approved', { id: AP, final: true }, 'operator'),
    ev('approval.consumed', 'allow', 'approved', { id: AP }),
    ev('egress.request', 'allow', 'path-rule', { scheme: 'https', host: DEMO_API_HOST, method: 'POST', path: '/v1/payments', approval: AP, ...swapped }),
  ];
  const seen: SeenRequest[] = [
    { method: 'GET', path: '/v1/inbox', realToken: true, placeholder: false, status: 200, body: '' },
    { method: 'POST', path: '/v1/payments', realToken: true, placeholder: false, status: 201, body: '{}' },
  ];
  return { events, sandboxId: SB, seen, verify: { ok: true, events: events.length, checkpoints: 1 } };
}

describe('judgeOutcomes', () => {
  test('a complete run: every outcome ok, each with the seqs that show it', () => {
    const outcomes = judgeOutcomes(complete());
    assert.deepEqual(outcomes.filter((o) => !o.ok), []);
    assert.equal(outcomes.length, 7);
    for (const o of outcomes.filter((x) => x.id !== 'audit-verified')) assert.ok(o.seqs.length > 0, o.id);
  });

  const cases: Array<{ name: string; breaks: OutcomeId[]; change: (i: OutcomeInput) => OutcomeInput; reason: RegExp }> = [
    {
      name: 'the proxy did not note the secret', breaks: ['allowed-call-secret-swapped'],
      change: (i) => ({ ...i, events: i.events.map((e) => (e.data.path === '/v1/inbox' ? { ...e, data: { ...e.data, hook: {} } } : e)) }),
      reason: /notes the secret substituted/,
    },
    {
      name: 'the API got the placeholder', breaks: ['allowed-call-secret-swapped'],
      change: (i) => ({ ...i, seen: i.seen.map((r) => (r.path === '/v1/inbox' ? { ...r, realToken: false, placeholder: true, status: 401 } : r)) }),
      reason: /the placeholder/,
    },
    {
      name: 'the metadata request was allowed', breaks: ['metadata-refused'],
      change: (i) => ({ ...i, events: i.events.map((e) => (e.data.host === METADATA_HOST ? { ...e, decision: 'allow' } : e)) }),
      reason: /ALLOWED/,
    },
    { name: 'the agent never tried the unlisted host', breaks: ['unlisted-refused'], change: (i) => ({ ...i, events: i.events.filter((e) => e.data.host !== UNLISTED_HOST) }), reason: /never tried/ },
    { name: 'nothing was held', breaks: ['approval-held', 'approval-completed'], change: (i) => ({ ...i, events: i.events.filter((e) => e.type !== 'approval.requested') }), reason: /no approval\.requested/ },
    { name: 'nobody approved', breaks: ['approval-completed'], change: (i) => ({ ...i, events: i.events.filter((e) => e.type !== 'approval.decided') }), reason: /never approved/ },
    {
      name: 'approved but never released', breaks: ['approval-completed'],
      change: (i) => ({ ...i, events: i.events.filter((e) => e.type !== 'approval.consumed') }), reason: /not released/,
    },
    {
      name: 'the payment reached the API twice', breaks: ['approval-completed'],
      change: (i) => ({ ...i, seen: [...i.seen, { method: 'POST', path: '/v1/payments', realToken: true, placeholder: false, status: 201, body: '{}' }] }), reason: /2 payment/,
    },
    {
      name: 'the injection was not flagged', breaks: ['injection-flagged'],
      change: (i) => ({ ...i, events: i.events.map((e) => (e.type === 'llm.request' ? { ...e, data: { provider: 'scripted' } } : e)) }), reason: /no llm\.request/,
    },
    { name: 'verify failed', breaks: ['audit-verified'], change: (i) => ({ ...i, verify: { ok: false, problem: 'hash-mismatch', message: 'seq 3 edited' } }), reason: /hash-mismatch/ },
    {
      name: 'events of another sandbox do not count', breaks: ['metadata-refused'],
      change: (i) => ({ ...i, events: i.events.map((e) => (e.data.host === METADATA_HOST ? { ...e, sandbox: 'sb-other' } : e)) }), reason: /never tried/,
    },
  ];
  for (const c of cases) {
    test(`${c.name}: only ${c.breaks.join(' and ')} fails, saying why`, () => {
      const outcomes = judgeOutcomes(c.change(complete()));
      const failed = outcomes.filter((o) => !o.ok);
      assert.deepEqual(failed.map((o) => o.id), c.breaks);
      assert.match(failed[0]!.detail, c.reason);
    });
  }
});
