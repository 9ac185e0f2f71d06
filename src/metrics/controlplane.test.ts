/**
 * The metrics as `cordon up` wires them, over real HTTP on loopback: the
 * scrape needs the operator token; events written after start (the daemon's
 * own start, the API requests) are counted, audit appends are timed, and
 * sandboxes by state are read from the manager.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startControlPlane } from '../controlplane/index.js';
import { defaultConfig } from '../config/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { valueOf } from './testing.js';

test('cordon up serves /v1/metrics with the token, fed by its own audit log', async () => {
  const d = tempDir();
  try {
    const cp = await startControlPlane({ home: d.path, config: defaultConfig(), port: 0 });
    try {
      assert.equal((await fetch(cp.url + '/v1/metrics')).status, 401);
      const auth = { authorization: `Bearer ${cp.operatorToken.token}` };
      let text = '';
      const end = Date.now() + 5000;
      // The feed polls the log; wait for it to count the refused scrape above.
      while (Date.now() < end) {
        const res = await fetch(cp.url + '/v1/metrics', { headers: auth });
        assert.equal(res.status, 200);
        text = await res.text();
        if (valueOf(text, 'cordon_audit_events_total', { type: 'api.auth' }) === 1) break;
        await sleep(100);
      }
      assert.equal(valueOf(text, 'cordon_audit_events_total', { type: 'daemon.start' }), 1);
      assert.equal(valueOf(text, 'cordon_audit_events_total', { type: 'api.auth' }), 1);
      assert.ok((valueOf(text, 'cordon_audit_append_duration_seconds_count', { result: 'ok' }) ?? 0) >= 2, 'appends are timed');
      assert.equal(valueOf(text, 'cordon_sandboxes', { state: 'running' }), 0);
      assert.equal(valueOf(text, 'cordon_approvals_pending'), 0);
      assert.ok(valueOf(text, 'cordon_process_resident_memory_bytes') ?? valueOf(text, 'cordon_nodejs_heap_size_total_bytes'));
    } finally {
      await cp.stop();
    }
  } finally {
    d.cleanup();
  }
});

test('cordon up reports audit events it could not record: a stderr line, the counter by code, and the health field', async () => {
  const d = tempDir();
  try {
    const cp = await startControlPlane({ home: d.path, config: defaultConfig(), port: 0 });
    try {
      const auth = { authorization: `Bearer ${cp.operatorToken.token}` };
      const lines: string[] = [];
      const write = process.stderr.write;
      process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
        if (String(chunk).includes('NOT recorded')) lines.push(String(chunk));
        return (write as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
      }) as typeof process.stderr.write;
      try {
        // An event the log refuses (its type is not a valid name), as a door that ignores the rejection would lose it.
        await assert.rejects(cp.audit.append({ type: 'Not A Type', actor: 'system' }), { code: 'audit-invalid-event' });
      } finally {
        process.stderr.write = write;
      }
      assert.equal(lines.length, 1, 'one line on stderr');
      // The refused type is not echoed (it may be anything a caller passed by mistake); it shows as (invalid).
      assert.match(lines[0]!, /^cordon: 1 audit event\(s\) NOT recorded \(audit-invalid-event\): \(invalid\); invalid audit event: type: .* \| fix: .+\n$/);
      const text = await (await fetch(cp.url + '/v1/metrics', { headers: auth })).text();
      assert.equal(valueOf(text, 'cordon_audit_dropped_events_total', { code: 'audit-invalid-event' }), 1);
      const health = (await (await fetch(cp.url + '/v1/health', { headers: auth })).json()) as { auditDroppedEvents?: number };
      assert.equal(health.auditDroppedEvents, 1);
    } finally {
      await cp.stop();
    }
  } finally {
    d.cleanup();
  }
});
