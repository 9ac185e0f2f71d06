/**
 * What the audit log does on PostgreSQL alone (a real server started by the
 * test, see testing/postgres.ts): a second process cannot append to the
 * chain another one writes. The audit log's own tests (audit/*.test.ts) run
 * everything else, append, chain, checkpoints, verify, query, tampering,
 * rotation, dropped events and group commit, on SQLite and on PostgreSQL
 * alike (`[postgres] …`). Skips, saying why, where no PostgreSQL binaries are
 * installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, verifyAudit, type AuditEventInput } from '../audit/index.js';
import { AuditError, StoreError } from '../errors/index.js';
import { openStore, type Store } from './index.js';
import { usePostgresServer } from './testing/postgres.js';

const { opts, freshUrl } = usePostgresServer('cordon_a');

interface Fixture {
  url: string;
  store: Store;
  keyDir: string;
}

/** A fresh database, a store on it and a key directory; everything closed and removed afterwards. */
async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const url = await freshUrl();
  const dir = mkdtempSync(join(tmpdir(), 'cordon-pg-audit-'));
  const store = await openStore({ kind: 'postgres', url });
  try {
    await fn({ url, store, keyDir: join(dir, 'keys') });
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const event = (i: number): AuditEventInput => ({
  type: i % 2 === 0 ? 'egress.request' : 'tool.call',
  actor: `agent:a${i % 3}`,
  agent: `a${i % 3}`,
  sandbox: `sb-${i % 5}`,
  decision: i % 4 === 0 ? 'deny' : 'allow',
  data: { n: i, text: 'quote " backslash \\ brace { é' },
});

test('a second cordon process cannot append to a chain another one writes (no fork): its appends are refused', opts, async () => {
  await withFixture(async ({ url, store, keyDir }) => {
    const first = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
    await first.append(event(1));
    const other = await openStore({ kind: 'postgres', url }); // as another machine would
    const otherDir = mkdtempSync(join(tmpdir(), 'cordon-pg-audit-'));
    try {
      const second = await AuditLog.open({ store: other, keyDir: join(otherDir, 'keys'), checkpointIntervalMs: 60_000, onDropped: () => undefined });
      await assert.rejects(second.append(event(2)), (err: unknown) => {
        assert.ok(err instanceof AuditError);
        assert.equal(err.code, 'audit-write-failed');
        assert.ok(err.cause instanceof StoreError && err.cause.code === 'store-locked', `cause: ${String(err.cause)}`);
        return true;
      });
      assert.equal(second.droppedEvents, 1);
      await first.append(event(3));
      await first.close();
      const report = await verifyAudit(store, { keyDir });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.events, 2, 'only the lock holder\'s events are in the log');
      await second.close().catch(() => undefined); // its final checkpoint is refused as well
      assert.deepEqual((await store.audit.listCheckpoints()).map((c) => c.seq), [2], 'no checkpoint of the second process was stored');
    } finally {
      await other.close();
      rmSync(otherDir, { recursive: true, force: true });
    }
  });
});
