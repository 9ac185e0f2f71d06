/**
 * Smoke test of the audit benchmark on a small run (the full run is `cordon bench audit`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchAudit } from './audit.js';

test('benchAudit appends, verifies and reports rates, leaving nothing behind', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-'));
  try {
    const { cordon } = await benchAudit({ dir, events: 3000, inFlight: 100 });
    assert.equal(cordon.events, 3000);
    assert.ok(cordon.appendPerSec > 0 && Number.isFinite(cordon.appendPerSec), `appendPerSec ${cordon.appendPerSec}`);
    assert.ok(cordon.verifyPerSec > 0 && Number.isFinite(cordon.verifyPerSec), `verifyPerSec ${cordon.verifyPerSec}`);
    assert.ok(cordon.checkpoints >= 1, 'the run was sealed');
    assert.ok((cordon.appendP50Us ?? 0) <= (cordon.appendP99Us ?? 0));
    assert.deepEqual(readdirSync(dir), [], 'the throw-away store is removed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
