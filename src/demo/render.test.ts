/**
 * What the demo prints: one line per audit event with type, decision, reason
 * and the fields that matter; guest-made text (escape sequences above all)
 * shown, never obeyed by the terminal; colour only when asked for.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditEvent } from '../audit/index.js';
import { eventLine, printable, terminalReporter } from './render.js';

function ev(over: Partial<AuditEvent>): AuditEvent {
  return { seq: 7, ts: '', type: 'egress.request', actor: 'agent:demo', data: {}, prevHash: '', hash: '', ...over };
}

describe('demo output', () => {
  const lines: Array<{ name: string; event: AuditEvent; expected: string }> = [
    {
      name: 'a refusal: decision, reason, host',
      event: ev({ decision: 'deny', reason: 'host-not-allowed', data: { scheme: 'connect', host: 'rates.unlisted-demo.net', port: 443 } }),
      expected: '#7 egress.request deny (host-not-allowed)  scheme=connect host=rates.unlisted-demo.net port=443',
    },
    {
      name: 'a swapped secret and an approval are named',
      event: ev({ decision: 'allow', reason: 'path-rule', data: { method: 'POST', hook: { secrets: [{ secret: 'demo_api_token', header: 'authorization' }] }, approval: 'ap-1' } }),
      expected: '#7 egress.request allow (path-rule)  method=POST secret-swapped-in=demo_api_token approval=ap-1',
    },
    {
      name: 'filter hits of a model call',
      event: ev({ type: 'llm.request', decision: 'allow', reason: 'forwarded', data: { provider: 'scripted', hits: [{ filter: 'injection', action: 'redact', rule: 'ignore-instructions' }] } }),
      expected: '#7 llm.request allow (forwarded)  provider=scripted hits=injection:redact(ignore-instructions)',
    },
    { name: 'no decision, no data', event: ev({ type: 'sandbox.ready' }), expected: '#7 sandbox.ready' },
  ];
  for (const c of lines) test(`eventLine: ${c.name}`, () => assert.equal(eventLine(c.event), c.expected));

  test('guest text cannot drive the terminal', () => {
    assert.equal(printable('ok\u001b[2J\u0007\u009b'), 'ok\\x1b[2J\\x07\\x9b');
    const out: string[] = [];
    const r = terminalReporter((t) => void out.push(t));
    r.section('agent → fetch_url: http://x/\u001b]0;owned\u0007');
    r.line('model said \u001b[31mred');
    r.events([ev({ decision: 'deny', reason: 'ip-literal', data: { path: '/\u001b[1m' } })]);
    assert.ok(!out.join('').includes('\u001b'), JSON.stringify(out));
  });

  test('colour only when asked for', () => {
    const plain: string[] = [];
    const colored: string[] = [];
    terminalReporter((t) => void plain.push(t)).events([ev({ decision: 'deny', reason: 'x' })]);
    terminalReporter((t) => void colored.push(t), { color: true }).events([ev({ decision: 'deny', reason: 'x' })]);
    assert.ok(!plain.join('').includes('\u001b['));
    assert.ok(colored.join('').includes('\u001b[31mdeny\u001b[0m'));
  });
});
