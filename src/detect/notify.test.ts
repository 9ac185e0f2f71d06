/**
 * The alert webhook on its own, against a loopback receiver: the body a chat
 * channel gets, the bounded queue (an alert beyond it is reported, not
 * sent), and a closed notifier refusing new alerts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { alertText, createAlertWebhook, type Alert } from './index.js';

const alert = (n: number): Alert => ({
  id: `al-${n}`, ts: '2026-01-01T00:00:00.000Z', agent: 'coder', sandbox: 'sb-1', kind: 'novelty', feature: 'domain', value: 'drop.xyz', score: 1.9,
  evidence: { threshold: 1.6 }, action: 'pause',
});

test('alertText: agent, sandbox, what is new, score against threshold, action, how to acknowledge', () => {
  assert.equal(alertText(alert(1)),
    'cordon: novelty alert for agent coder in sandbox sb-1: new domain "drop.xyz", score 1.9 (threshold 1.6); sandbox paused until an operator resumes it. Acknowledge with `cordon alerts ack al-1`.');
  assert.match(alertText({ ...alert(2), kind: 'rate', feature: 'requests', value: 90, action: 'none' }), /requests 90 per minute.*recorded only/);
});

test('a full queue reports the alerts it cannot take; a closed notifier refuses; nothing waits on the receiver', async () => {
  const hung: ServerResponse[] = [];
  let received = 0;
  const server = createServer((req, res) => { received++; req.resume(); hung.push(res); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const failures: { id: string; problem: string; attempts: number }[] = [];
  const hook = createAlertWebhook({
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, timeoutMs: 300, retries: 0, maxQueued: 2,
    onFailure: (a, err, attempts) => failures.push({ id: a.id, problem: err.message, attempts }),
  });
  try {
    const started = Date.now();
    for (let n = 1; n <= 5; n++) hook.notify(alert(n));
    assert.ok(Date.now() - started < 50, 'notify returns at once');
    assert.deepEqual(failures.map((f) => [f.id, f.attempts]), [['al-4', 0], ['al-5', 0]], 'the two beyond the queue (one in flight, two waiting) are reported at once');
    assert.match(failures[0]!.problem, /queue is full \(2 alerts waiting\)/);
    await hook.close();
    assert.deepEqual(failures.slice(2).map((f) => [f.id, f.attempts]), [['al-1', 1], ['al-2', 1], ['al-3', 1]], 'each sent alert timed out once');
    assert.equal(received, 3);
    hook.notify(alert(6));
    assert.match(failures.at(-1)!.problem, /closed/);
    assert.equal(hook.pending(), 0);
  } finally {
    for (const res of hung) res.destroy();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
