/**
 * Live detection as the control plane runs it: events appended to a real
 * audit log are followed, a new destination after the learning window raises
 * an alert that is recorded as `detect.alert` and pauses the sandbox; the
 * same destination during learning raises nothing; a pause that fails is
 * recorded as `detect.action-failed`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { AuditLog } from '../audit/index.js';
import { openStore } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { startDetection } from './detect.js';

const sid = (n: number) => `sb-${n.toString(32).padStart(20, 'a')}`;

async function session(audit: AuditLog, n: number, hosts: string[], end = true): Promise<void> {
  const sandbox = sid(n);
  const at = { agent: 'coder', sandbox };
  await audit.append({ type: 'sandbox.create', actor: 'operator', ...at, data: {} });
  for (const host of hosts) await audit.append({ type: 'egress.request', actor: 'agent:coder', ...at, decision: 'allow', reason: 'host-allowed', data: { host, port: 443 } });
  if (end) await audit.append({ type: 'sandbox.destroy', actor: 'operator', ...at, data: {} });
}

async function until<T>(f: () => Promise<T | undefined>, ms = 5000): Promise<T | undefined> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await f();
    if (v !== undefined) return v;
    await sleep(25);
  }
  return undefined;
}

for (const c of [
  { name: 'a pause that works', pauseFails: false, expect: 'paused' },
  { name: 'a pause that fails (the sandbox is gone)', pauseFails: true, expect: 'detect.action-failed' },
]) {
  test(`a new domain after learning: detect.alert recorded, then ${c.name}`, async () => {
    const dir = tempDir('cordon-detect-cp-');
    const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
    const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys'), checkpointIntervalMs: 60_000 });
    const paused: string[] = [];
    const watch = await startDetection({
      store, audit, pollIntervalMs: 20,
      options: { learnEvents: 150, actions: { novelty: 'pause' } },
      pause: async (id) => {
        if (c.pauseFails) throw new Error(`sandbox ${id} is not running`);
        paused.push(id);
      },
    });
    try {
      for (let n = 1; n <= 60; n++) await session(audit, n, ['pypi.org', 'files.pythonhosted.org', 'github.com']);
      await until(async () => ((await audit.query({ limit: 10_000 })).length >= 300 ? true : undefined));
      await sleep(200);
      assert.equal((await audit.query({ limit: 10_000 })).filter((e) => e.type === 'detect.alert').length, 0, 'known destinations raise nothing');
      await session(audit, 61, ['pypi.org', 'exfil.example.net'], false);
      const alert = await until(async () => (await audit.query({ limit: 10_000 })).find((e) => e.type === 'detect.alert'));
      assert.ok(alert, 'the new domain raised an alert');
      assert.equal(alert.sandbox, sid(61));
      assert.equal(alert.reason, 'novelty:domain');
      assert.equal(alert.decision, 'pause');
      if (c.pauseFails) {
        const failed = await until(async () => (await audit.query({ limit: 10_000 })).find((e) => e.type === 'detect.action-failed'));
        assert.match(String(failed?.data.problem), /not running/);
      } else {
        assert.deepEqual(await until(async () => (paused.length ? paused : undefined)), [sid(61)]);
      }
    } finally {
      await watch.stop();
      await audit.close();
      await store.close();
      dir.cleanup();
    }
  });
}
