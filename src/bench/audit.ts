/**
 * `cordon bench audit`: append throughput of the hash-chained audit log on a
 * fresh SQLite store (many concurrent appenders, group commit), then the speed
 * of `verifyAudit` over the result.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { AuditLog, verifyAudit } from '../audit/index.js';
import { openStore } from '../store/index.js';
import { ensurePrivateDir } from '../util/index.js';

export interface AuditBenchOptions {
  /** Events to append. @default 200000 */
  events?: number;
  /** Where the throw-away store is created (in a fresh subdirectory, removed afterwards). */
  dir: string;
  /** Appends kept in flight at once, like many concurrent actors. @default 2000 */
  inFlight?: number;
}

export interface AuditBenchResult {
  cordon: {
    appendPerSec: number;
    verifyPerSec: number;
    events: number;
    appendP50Us?: number;
    appendP99Us?: number;
    checkpoints: number;
  };
}

/**
 * Append `events` events, then verify them all.
 * @throws when verification does not pass (a benchmark of a broken log is meaningless)
 */
export async function benchAudit(opts: AuditBenchOptions): Promise<AuditBenchResult> {
  const total = opts.events ?? 200_000;
  const inFlight = Math.max(1, Math.min(opts.inFlight ?? 2000, total));
  const work = mkdtempSync(join(ensurePrivateDir(opts.dir), 'audit-bench-'));
  const store = await openStore({ kind: 'sqlite', path: join(work, 'audit.db') });
  try {
    const keyDir = join(work, 'keys');
    const log = await AuditLog.open({ store, keyDir });
    const latencyUs = new Float64Array(total);
    let next = 0;
    const started = performance.now();
    const actor = async function actor(): Promise<void> {
      while (next < total) {
        const i = next++;
        const t0 = performance.now();
        await log.append({
          type: 'egress.request',
          actor: `agent:bench-${i % 50}`,
          agent: `bench-${i % 50}`,
          sandbox: `sb-${i % 200}`,
          decision: i % 10 === 0 ? 'deny' : 'allow',
          reason: i % 10 === 0 ? 'host not in allowlist' : 'rule egress[0]',
          data: { host: `api${i % 7}.example.com`, port: 443, method: 'GET', path: `/v1/items/${i}`, bytesOut: i % 4096 },
        });
        latencyUs[i] = (performance.now() - t0) * 1000;
      }
    };
    await Promise.all(Array.from({ length: inFlight }, actor));
    await log.close();
    const appendSec = (performance.now() - started) / 1000;

    const v0 = performance.now();
    const report = await verifyAudit(store, { keyDir });
    const verifySec = (performance.now() - v0) / 1000;
    if (!report.ok || report.events !== total) {
      throw new Error(`audit bench: verification failed after ${report.events} events: ${report.message}`);
    }
    latencyUs.sort();
    return {
      cordon: {
        appendPerSec: Math.round(total / appendSec),
        verifyPerSec: Math.round(total / verifySec),
        events: total,
        appendP50Us: Math.round(latencyUs[Math.floor(total * 0.5)] ?? 0),
        appendP99Us: Math.round(latencyUs[Math.min(total - 1, Math.floor(total * 0.99))] ?? 0),
        checkpoints: report.checkpoints,
      },
    };
  } finally {
    await store.close();
    rmSync(work, { recursive: true, force: true });
  }
}
