/**
 * `cordon alerts ls|ack` and `cordon baseline show` against a store prepared
 * in a temporary CORDON_HOME (through the detect service, as the control
 * plane writes it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storePath } from '../../controlplane/index.js';
import { createDetectService, type Alert } from '../../detect/index.js';
import { openStore } from '../../store/index.js';
import { cordon, oneJson } from './testing.js';

const ts = (m: number) => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString();

test('alerts ls / ack and baseline show read the store of CORDON_HOME', async () => {
  const home = mkdtempSync(join(tmpdir(), 'cordon-alerts-'));
  try {
    const store = await openStore({ kind: 'sqlite', path: storePath(home) });
    const svc = await createDetectService({ store, options: { learnEvents: 120 } });
    for (let m = 0; m < 60; m++) {
      await svc.observe({ ts: ts(m), type: 'egress.request', agent: 'coder', sandbox: `s${m}`, data: { host: 'github.com', port: 443 } });
      await svc.observe({ ts: ts(m), type: 'sandbox.exec', agent: 'coder', sandbox: `s${m}`, data: { argv: ['git', 'status'] } });
    }
    const [alert] = await svc.observe({ ts: ts(70), type: 'egress.request', agent: 'coder', sandbox: 'x', data: { host: 'drop.example', port: 443 } });
    assert.ok(alert);
    await svc.save();
    await store.close();

    const ls = await cordon(['alerts', 'ls', '--json'], { home });
    assert.equal(ls.code, 0, ls.stderr);
    const listed = oneJson<{ alerts: Alert[] }>(ls).alerts;
    assert.deepEqual(listed.map((a) => [a.id, a.kind, a.feature, a.value]), [[alert.id, 'novelty', 'domain', 'drop.example']]);

    const ack = await cordon(['alerts', 'ack', alert.id], { home });
    assert.equal(ack.code, 0, ack.stderr);
    assert.match(ack.stdout, /acknowledged/);
    const after = oneJson<{ alerts: Alert[] }>(await cordon(['alerts', 'ls', '--json'], { home })).alerts;
    assert.equal(after.length, 0, 'the acknowledged alert is no longer listed');
    const all = oneJson<{ alerts: (Alert & { ackedBy?: string })[] }>(await cordon(['alerts', 'ls', '--all', '--json'], { home })).alerts;
    assert.match(all[0]?.ackedBy ?? '', /^operator:local:/);
    const unknown = await cordon(['alerts', 'ack', 'no-such-id'], { home });
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no alert with id/);

    const show = await cordon(['baseline', 'show', 'coder', '--json'], { home });
    assert.equal(show.code, 0, show.stderr);
    const b = oneJson<{ baseline: { state: string; categories: { domain: { top: Record<string, number> } } } }>(show).baseline;
    assert.equal(b.state, 'learned');
    assert.ok((b.categories.domain.top['github.com'] ?? 0) > 0);
    const text = await cordon(['baseline', 'show', 'coder'], { home });
    assert.match(text.stdout, /agent coder: learned/);
    const none = await cordon(['baseline', 'show', 'nobody'], { home });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /has no baseline yet/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
