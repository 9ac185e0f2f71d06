/**
 * CPU per audit event when appends come one at a time (each awaited before
 * the next, as a door records one action and waits for it): what a single
 * `egress.request` costs the process that records it. Measured with
 * `process.cpuUsage`, user and system time, beside the store's own write of
 * the same already-chained rows one per transaction (the floor under
 * `append`). `cordon bench audit` measures throughput under concurrency.
 *
 * Run directly:
 *   node --import tsx src/audit/appendbench.ts [--events 20000]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openStore, type AuditRow } from '../store/index.js';
import { composeBody, GENESIS_HASH, prepareEvent, sha256Hex, type AuditEventInput } from './event.js';
import { AuditLog } from './log.js';

export interface AppendCpuOptions {
  /** Appends measured (after 2,000 not measured, to warm up). @default 20000 */
  events?: number;
  /** Where the throw-away stores are created. @default the system temp directory */
  dir?: string;
}

export interface AppendCpuFigures {
  events: number;
  /** CPU (user + system) per event, µs. */
  cpuUsPerEvent: number;
  userUsPerEvent: number;
  systemUsPerEvent: number;
  wallUsPerEvent: number;
}

export interface AppendCpuResult {
  /** `AuditLog.append`, each awaited. */
  append: AppendCpuFigures;
  /** `store.audit.insertEvents` of one pre-chained row per call, each awaited. */
  storeInsert: AppendCpuFigures;
}

const WARMUP = 2000;

/** One egress event, shaped like the proxy's. */
function egressEvent(i: number): AuditEventInput {
  return {
    type: 'egress.request', actor: 'agent:bench', agent: 'bench', sandbox: 'sb-bench', decision: 'allow', reason: 'rule egress[0]',
    data: { conn: i, scheme: 'connect', host: `api${i % 7}.example.com`, port: 443, address: '192.0.2.7', sni: `api${i % 7}.example.com`, ruleId: 'egress[0]' },
  };
}

async function timed(events: number, step: (i: number) => Promise<unknown>): Promise<AppendCpuFigures> {
  for (let i = 0; i < WARMUP; i++) await step(i);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = WARMUP; i < WARMUP + events; i++) await step(i);
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - t0;
  const per = (us: number) => Math.round((us / events) * 10) / 10;
  return {
    events,
    cpuUsPerEvent: per(cpu.user + cpu.system),
    userUsPerEvent: per(cpu.user),
    systemUsPerEvent: per(cpu.system),
    wallUsPerEvent: per(wallMs * 1000),
  };
}

/** Measure sequential appends, then the store's write of the same rows, each on a fresh SQLite store. */
export async function measureAppendCpu(opts: AppendCpuOptions = {}): Promise<AppendCpuResult> {
  const events = opts.events ?? 20_000;
  const work = mkdtempSync(join(opts.dir ?? tmpdir(), 'cordon-appendbench-'));
  try {
    const logStore = await openStore({ kind: 'sqlite', path: join(work, 'append.db') });
    let append: AppendCpuFigures;
    try {
      const log = await AuditLog.open({ store: logStore, keyDir: join(work, 'keys') });
      append = await timed(events, (i) => log.append(egressEvent(i)));
      await log.close();
    } finally {
      await logStore.close();
    }

    const rawStore = await openStore({ kind: 'sqlite', path: join(work, 'insert.db') });
    try {
      const ts = new Date().toISOString();
      let prevHash = GENESIS_HASH;
      const rows: AuditRow[] = [];
      for (let i = 0; i < WARMUP + events; i++) {
        const p = prepareEvent(egressEvent(i), ts);
        const body = composeBody(p, i + 1, prevHash);
        const hash = sha256Hex(body);
        rows.push({ seq: i + 1, ts, type: p.input.type, sandbox: 'sb-bench', agent: 'bench', actor: 'agent:bench', decision: 'allow', prevHash, hash, body });
        prevHash = hash;
      }
      const storeInsert = await timed(events, (i) => rawStore.audit.insertEvents([rows[i]!]));
      return { append, storeInsert };
    } finally {
      await rawStore.close();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<void> {
  const i = argv.indexOf('--events');
  const events = i >= 0 ? Number(argv[i + 1]) : undefined;
  if (events !== undefined && !(Number.isInteger(events) && events > 0)) throw new Error('--events must be a positive integer');
  process.stdout.write(JSON.stringify(await measureAppendCpu({ events }), null, 2) + '\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`appendbench: ${(err as Error).message}\n`);
    process.exitCode = 1;
  });
}
