/**
 * `cordon bench secrets`: what the secrets layer's request hook (the one the
 * egress proxy runs on every allowed request of a sandbox) costs per request,
 * in process, for sandboxes holding 1, 10 and 50 bound secrets. Rows:
 *
 * - `clean`: a GET with ordinary headers and no secret material;
 * - `substitute`: a GET carrying a placeholder in `authorization` to the host
 *   its secret is bound to (the real value is put in);
 * - `refuseUnboundHost`: the same header to an allowed host the secret is not
 *   bound to (refused as exfiltration);
 * - `body1KiB`, `body64KiB`: a POST whose JSON body streams through the
 *   scanner (one chunk; four of 16 KiB);
 * - `bodyLeak64KiB`: the same 64 KiB body with a real value, base64-encoded,
 *   near its end (the body is failed).
 *
 * Then the memory of one sandbox's secret state (its placeholders, values and
 * compiled matchers) at 1, 10, 50 and 500 secrets: heap used + array buffers
 * after two full garbage collections, grown over a baseline while a few
 * sandboxes' states are built and kept alive, divided by their number. The
 * collector is called in process (see {@link fullGc}); the user passes no flag.
 *
 * Each call is checked after it ran (the real value really in the header, the
 * refusal really a refusal, a clean body passed on byte for byte); a call that
 * did otherwise stops the run. Inputs are fixed (names, values, headers and
 * bodies are derived from indexes) except the placeholders, which are random
 * per sandbox by design. No file, no network.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { OutgoingHttpHeaders } from 'node:http';
import { parseConfig } from '../config/index.js';
import {
  createSandboxSecrets, createSecretsRequestHook, EXFILTRATION_REASON, SecretValue, valuePatterns,
  type ExfiltrationFinding, type SandboxSecrets, type SecretsHookResult,
} from '../secrets/index.js';
import { formatOpTable, machineSetup, timeAsync, timeSync, type MachineSetup, type OpFigures } from './op-timing.js';

export const SECRETS_ROWS = ['clean', 'substitute', 'refuseUnboundHost', 'body1KiB', 'body64KiB', 'bodyLeak64KiB'] as const;
export type SecretsRow = (typeof SECRETS_ROWS)[number];

/** The allowed host that binds no secret: clean requests and bodies go there, and placeholders sent there are refused. */
export const UNBOUND_HOST = 'pkg.bench.example';
const BODY_CHUNK_BYTES = 16 * 1024;

/** What one timed call did, for tests. */
export interface SecretsCall {
  host: string;
  /** The secret whose placeholder or value the request carried, if any. */
  secret?: string;
  /** The headers after the hook (it changes them in place). */
  headers: OutgoingHttpHeaders;
  result: SecretsHookResult;
  findings: Array<Extract<ExfiltrationFinding, { found: true }>>;
  /** Body rows: bytes sent, bytes passed on, and the stream's error. */
  body?: { sentBytes: number; forwarded: Buffer; error?: Error & { reason?: string } };
}

export interface SecretsBenchOptions {
  /** Timed calls per row and secret count. @default 1000 */
  iterations?: number;
  /** Secrets bound to the sandbox, one run each. @default [1, 10, 50] */
  secretCounts?: readonly number[];
  /** Untimed calls before each row. @default 100 */
  warmup?: number;
  /** Told of every timed call (for tests; slows the run). */
  observe?: (secretCount: number, row: SecretsRow, call: SecretsCall) => void;
  /** Secret counts at which one sandbox's secret state is weighed. @default [1, 10, 50, 500] */
  memorySecretCounts?: readonly number[];
  /** Sandboxes' states built and kept alive for each weighing. @default 3 */
  memorySandboxes?: number;
}

export type SecretsRunFigures = Record<SecretsRow, OpFigures> & {
  /** Byte patterns the scanner searches for the sandbox's real values (raw, hex, base64 … forms; 6 to 11 per secret). */
  valuePatterns: number;
  /** Bytes a body scanner holds back between chunks. */
  holdBackBytes: number;
};

/** The memory of one sandbox's secret state at one secret count. */
export interface SecretStateMemory {
  /** Heap used + array buffers, after two full collections, grown per sandbox whose state was kept alive (MiB). */
  stateMiB: number;
  /** Byte patterns of the sandbox's real values (the matchers also hold one per placeholder). */
  valuePatterns: number;
}

export interface SecretsBenchResult {
  /** Keyed `secrets1`, `secrets10`, … by the number of secrets bound. */
  cordon: Record<string, SecretsRunFigures>;
  /** One sandbox's secret state in memory, keyed `secrets1`, … `secrets500` by the number of secrets bound. */
  stateMemory: Record<string, SecretStateMemory>;
  setup: MachineSetup & {
    iterations: number; warmup: number; secretCounts: number[]; bodyChunkBytes: number;
    memorySecretCounts: number[]; memorySandboxes: number; memoryMethod: string;
    peers: string; notMeasured: string;
  };
}

/** Secret `j`'s name. */
export const benchSecretName = (j: number): string => `token_${j}`;
/** Secret `j`'s bound host. */
export const benchBoundHost = (j: number): string => `api-${j}.bench.example`;
/** Secret `j`'s fixed real value (48 characters, like an API token). */
export function benchSecretValue(j: number): string {
  return `bt_${createHash('sha256').update(`cordon bench secret ${j}`).digest('hex').slice(0, 45)}`;
}

/** A sandbox of an agent with `count` secrets, each bound to `authorization` on its own host, and one host that binds nothing. */
export function benchSandboxSecrets(count: number): SandboxSecrets {
  const js = Array.from({ length: count }, (_, j) => j);
  const config = parseConfig(JSON.stringify({
    version: 1,
    agents: {
      bench: {
        egress: [
          ...js.map((j) => ({ host: benchBoundHost(j), ports: [443], secrets: { authorization: `Bearer {{secret.${benchSecretName(j)}}}` } })),
          { host: UNBOUND_HOST, ports: [443] },
        ],
      },
    },
    secrets: Object.fromEntries(js.map((j) => [benchSecretName(j), { from: 'env', name: `BENCH_TOKEN_${j}` }])),
  }), 'bench.yaml');
  const values = new Map(js.map((j) => [benchSecretName(j), new SecretValue(benchSecretName(j), Buffer.from(benchSecretValue(j)))]));
  return createSandboxSecrets({ agentName: 'bench', agent: config.agents.bench!, values });
}

/** `bytes` of JSON text (records of fixed words; no `%`, so one search pass). */
export function benchBody(bytes: number, leak?: string): Buffer {
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel'];
  const records: string[] = [];
  let size = '{"items":[]}'.length;
  for (let i = 0; size < bytes; i++) {
    const r = JSON.stringify({ id: i, name: `item-${i}`, tags: [words[i % 8], words[(i * 3) % 8]], note: words[(i * 5) % 8]!.repeat(3) });
    records.push(r);
    size += r.length + 1;
  }
  const text = Buffer.from(`{"items":[${records.join(',')}]}`);
  const out = Buffer.alloc(bytes, 0x20);
  text.copy(out, 0, 0, bytes);
  if (leak !== undefined) Buffer.from(`"token":"${leak}"`).copy(out, bytes - 200);
  return out;
}

function chunksOf(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < body.length; at += BODY_CHUNK_BYTES) out.push(body.subarray(at, at + BODY_CHUNK_BYTES));
  return out;
}

function baseHeaders(i: number, host: string): OutgoingHttpHeaders {
  return { host, 'user-agent': 'bench-agent/1.0', accept: 'application/json', 'accept-language': 'en', 'x-request-id': `req-${i.toString(16).padStart(8, '0')}` };
}

async function drain(stream: Readable): Promise<{ forwarded: Buffer; error?: Error & { reason?: string } }> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of stream) parts.push(chunk as Buffer);
    return { forwarded: Buffer.concat(parts) };
  } catch (err) {
    return { forwarded: Buffer.concat(parts), error: err as Error };
  }
}

/** Stop the run when a call did not do what its row says. */
function mustHold(ok: boolean, row: SecretsRow, count: number, what: string): void {
  if (!ok) throw new Error(`secrets bench (${count} secrets): ${row}: ${what}`);
}

/** Measure every row for a sandbox holding `count` secrets. */
async function runCount(count: number, iterations: number, warmup: number, observe: SecretsBenchOptions['observe']): Promise<SecretsRunFigures> {
  const secrets = benchSandboxSecrets(count);
  const findings: Array<Extract<ExfiltrationFinding, { found: true }>> = [];
  const hook = createSecretsRequestHook(secrets, { onExfiltration: (f) => void findings.push(f) });
  const secretOf = (i: number): number => i % count;
  const placeholder = (j: number): string => secrets.placeholderOf(benchSecretName(j))!;

  /** A head-only row: prebuilt headers (the hook changes them), timed hook calls, then each call checked. */
  const headRow = (row: SecretsRow, host: (i: number) => string, withPlaceholder: boolean, check: (i: number, call: SecretsCall) => void): OpFigures => {
    const build = (n: number) => Array.from({ length: n }, (_, i) => {
      const h = baseHeaders(i, host(i));
      if (withPlaceholder) h.authorization = `Bearer ${placeholder(secretOf(i))}`;
      return h;
    });
    const warm = build(Math.max(1, warmup));
    timeSync(warm.length, (i) => hook({ host: host(i), port: 443, path: '/v1/items?page=1', headers: warm[i]!, method: 'GET' }));
    const headers = build(iterations);
    const results: SecretsHookResult[] = new Array(iterations);
    const found: Array<SecretsCall['findings']> = new Array(iterations);
    const figures = timeSync(iterations, (i) => {
      findings.length = 0;
      results[i] = hook({ host: host(i), port: 443, path: '/v1/items?page=1', headers: headers[i]!, method: 'GET' });
      found[i] = findings.slice();
    });
    for (let i = 0; i < iterations; i++) {
      const call: SecretsCall = {
        host: host(i), headers: headers[i]!, result: results[i]!, findings: found[i]!,
        ...(withPlaceholder ? { secret: benchSecretName(secretOf(i)) } : {}),
      };
      check(i, call);
      observe?.(count, row, call);
    }
    return figures;
  };

  const clean = headRow('clean', () => UNBOUND_HOST, false, (i, c) => {
    mustHold(!c.result.deny && !c.result.note && c.findings.length === 0, 'clean', count, `call ${i} was refused or changed`);
    mustHold(c.headers['x-request-id'] === baseHeaders(i, UNBOUND_HOST)['x-request-id'] && !('authorization' in c.headers), 'clean', count, `call ${i}: headers changed`);
  });
  const substitute = headRow('substitute', (i) => benchBoundHost(secretOf(i)), true, (i, c) => {
    const j = secretOf(i);
    mustHold(!c.result.deny, 'substitute', count, `call ${i} was refused: ${c.result.deny?.problem ?? ''}`);
    mustHold(c.headers.authorization === `Bearer ${benchSecretValue(j)}`, 'substitute', count, `call ${i}: authorization does not carry the real value of ${benchSecretName(j)}`);
    const note = c.result.note as { secrets?: Array<{ secret: string; header: string }> } | undefined;
    mustHold(note?.secrets?.length === 1 && note.secrets[0]!.secret === benchSecretName(j), 'substitute', count, `call ${i}: the note does not name ${benchSecretName(j)}`);
  });
  const refuseUnboundHost = headRow('refuseUnboundHost', () => UNBOUND_HOST, true, (i, c) => {
    const f = c.findings[0];
    mustHold(c.result.deny?.reason === EXFILTRATION_REASON, 'refuseUnboundHost', count, `call ${i} was not refused`);
    mustHold(c.findings.length === 1 && f?.kind === 'placeholder-wrong-host' && f.secret === benchSecretName(secretOf(i)), 'refuseUnboundHost', count, `call ${i}: not reported as the placeholder of ${benchSecretName(secretOf(i))}`);
    mustHold(String(c.headers.authorization).includes(placeholder(secretOf(i))), 'refuseUnboundHost', count, `call ${i}: headers were changed`);
  });

  /** A body row: a POST to the unbound host whose body streams through the hook's scanner. */
  const bodyRow = async (row: SecretsRow, bytes: number, leakOf?: (j: number) => string): Promise<OpFigures> => {
    const bodies = leakOf ? Array.from({ length: count }, (_, j) => benchBody(bytes, leakOf(j))) : [benchBody(bytes)];
    const chunked = bodies.map(chunksOf);
    const call = async (i: number): Promise<SecretsCall> => {
      findings.length = 0;
      const headers: OutgoingHttpHeaders = { ...baseHeaders(i, UNBOUND_HOST), 'content-type': 'application/json', 'content-length': String(bytes) };
      const result = hook({ host: UNBOUND_HOST, port: 443, path: '/upload', headers, method: 'POST' });
      const body = await drain(result.body!(Readable.from(chunked[i % chunked.length]!)));
      return { host: UNBOUND_HOST, headers, result, findings: findings.slice(), body: { sentBytes: bytes, ...body }, ...(leakOf ? { secret: benchSecretName(i % count) } : {}) };
    };
    for (let i = 0; i < warmup; i++) await call(i);
    const calls: SecretsCall[] = [];
    const figures = await timeAsync(iterations, async (i) => {
      const c = await call(i);
      // Kept only as far as the checks need: the forwarded bytes are compared here and then dropped.
      if (leakOf) mustHold(c.body!.error?.reason === EXFILTRATION_REASON && c.body!.forwarded.length < bytes - 200, row, count, `call ${i}: the leaking body was not failed before the value`);
      else mustHold(!c.body!.error && c.body!.forwarded.equals(bodies[0]!), row, count, `call ${i}: the body was not passed on byte for byte (${c.body!.error?.message ?? 'changed'})`);
      calls.push(observe ? c : { ...c, body: { ...c.body!, forwarded: Buffer.alloc(0) } });
    });
    for (const [i, c] of calls.entries()) {
      mustHold(!c.result.deny, row, count, `call ${i}: the head was refused`);
      if (leakOf) {
        const f = c.findings[0];
        mustHold(c.findings.length === 1 && f?.kind === 'secret-value' && f.where === 'body' && f.secret === c.secret, row, count, `call ${i}: not reported as the value of ${c.secret ?? '?'} in the body`);
      } else mustHold(c.findings.length === 0, row, count, `call ${i}: a clean body was reported`);
      observe?.(count, row, c);
    }
    return figures;
  };

  const body1KiB = await bodyRow('body1KiB', 1024);
  const body64KiB = await bodyRow('body64KiB', 64 * 1024);
  const bodyLeak64KiB = await bodyRow('bodyLeak64KiB', 64 * 1024, (j) => Buffer.from(benchSecretValue(j)).toString('base64'));
  return { clean, substitute, refuseUnboundHost, body1KiB, body64KiB, bodyLeak64KiB, valuePatterns: valuePatternCount(count), holdBackBytes: secrets.scanner.holdBackBytes };
}

/** Byte patterns of the real values of a bench sandbox with `count` secrets. */
function valuePatternCount(count: number): number {
  let patterns = 0;
  for (let j = 0; j < count; j++) patterns += valuePatterns(Buffer.from(benchSecretValue(j))).length;
  return patterns;
}

const MiB = 1024 * 1024;
/** Bytes the collector is shown to free before anything is weighed. */
const GC_PROBE_BYTES = 8 * MiB;

/** Heap used + array buffers of this process, bytes. */
function heldBytes(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * A function that runs a full garbage collection, without asking the user
 * for `--expose-gc`: the global `gc` when node was started with it, else the
 * one V8 puts in a context created while the flag is on (turned on for that
 * one context, then off again, so no later context gets a `gc`). Each call
 * collects twice: V8 releases dead array buffers on a background thread after
 * a collection, so right after one `arrayBuffers` may still count them; the
 * next collection first finishes that release.
 * @throws Error when there is none, or when it does not free a dropped 8 MiB buffer (the weights would be noise)
 */
export function fullGc(): () => void {
  let gc: unknown = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== 'function') {
    setFlagsFromString('--expose-gc');
    try {
      gc = runInNewContext('typeof gc === "function" ? gc : undefined');
    } finally {
      setFlagsFromString('--no-expose-gc');
    }
  }
  if (typeof gc !== 'function') throw new Error('secrets bench: V8 gave no garbage collector to call; run node with --expose-gc');
  const once = gc as () => void;
  const collect = function collectTwice(): void {
    once();
    once();
  };
  const held = ((): number => {
    const probe = Buffer.alloc(GC_PROBE_BYTES, 1);
    const bytes = process.memoryUsage().arrayBuffers;
    return probe.length > 0 ? bytes : 0; // the probe is read after, so it is alive while the figure is taken
  })();
  collect();
  const freed = held - process.memoryUsage().arrayBuffers;
  if (freed < GC_PROBE_BYTES / 2) throw new Error(`secrets bench: the garbage collector freed ${freed} bytes of a dropped ${GC_PROBE_BYTES}-byte buffer; memory figures would be noise`);
  return collect;
}

/** Build `sandboxes` states of `count` secrets, keep them alive, and weigh one. */
function weighState(count: number, sandboxes: number, gc: () => void): SecretStateMemory {
  const kept: SandboxSecrets[] = [];
  gc();
  const base = heldBytes();
  for (let i = 0; i < sandboxes; i++) kept.push(benchSandboxSecrets(count));
  gc();
  const grown = heldBytes() - base;
  const distinct = new Set(kept.map((s) => s.placeholderOf(benchSecretName(count - 1))));
  if (distinct.size !== sandboxes) throw new Error(`secrets bench (${count} secrets): the ${sandboxes} states weighed are not ${sandboxes} distinct sandboxes`);
  kept.length = 0;
  return { stateMiB: Math.round((grown / sandboxes / MiB) * 1000) / 1000, valuePatterns: valuePatternCount(count) };
}

/**
 * Run every row for each secret count, then weigh one sandbox's secret state at each memory count.
 * @throws Error when any call did not do what its row says (the figure would be meaningless)
 */
export async function benchSecrets(opts: SecretsBenchOptions = {}): Promise<SecretsBenchResult> {
  const iterations = opts.iterations ?? 1000;
  const warmup = opts.warmup ?? 100;
  const secretCounts = [...(opts.secretCounts ?? [1, 10, 50])];
  const memorySecretCounts = [...(opts.memorySecretCounts ?? [1, 10, 50, 500])];
  const memorySandboxes = opts.memorySandboxes ?? 3;
  if (!Number.isInteger(iterations) || iterations < 1) throw new RangeError(`iterations ${iterations} must be a whole number ≥ 1`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new RangeError(`warmup ${warmup} must be a whole number ≥ 0`);
  for (const counts of [secretCounts, memorySecretCounts]) {
    if (counts.length === 0 || counts.some((n) => !Number.isInteger(n) || n < 1 || n > 500)) {
      throw new RangeError(`secret counts ${counts.join(',')} must be whole numbers from 1 to 500`);
    }
  }
  if (!Number.isInteger(memorySandboxes) || memorySandboxes < 1 || memorySandboxes > 10) {
    throw new RangeError(`memory sandboxes ${memorySandboxes} must be a whole number from 1 to 10`);
  }
  const gc = fullGc();
  const machine = machineSetup();
  const cordon: Record<string, SecretsRunFigures> = {};
  for (const count of secretCounts) cordon[`secrets${count}`] = await runCount(count, iterations, warmup, opts.observe);
  // One state built and dropped first, so code compiled on first use is not weighed with the first count.
  benchSandboxSecrets(Math.min(...memorySecretCounts));
  const stateMemory: Record<string, SecretStateMemory> = {};
  for (const count of memorySecretCounts) stateMemory[`secrets${count}`] = weighState(count, memorySandboxes, gc);
  return {
    cordon,
    stateMemory,
    setup: {
      ...machine.finish(), iterations, warmup, secretCounts, bodyChunkBytes: BODY_CHUNK_BYTES,
      memorySecretCounts, memorySandboxes,
      memoryMethod: 'heap used + array buffers after two full garbage collections (called in process), grown over a baseline while the states are kept alive, per sandbox',
      peers: 'none: no other system swaps per-sandbox placeholders and scans for exfiltration to compare with',
      notMeasured: 'TLS interception, the network, and the response side (masking values an upstream reflects)',
    },
  };
}

const LABELS: Record<SecretsRow, string> = {
  clean: 'GET, no secret material',
  substitute: 'GET, placeholder → bound host (swapped)',
  refuseUnboundHost: 'GET, placeholder → unbound host (refused)',
  body1KiB: 'POST, 1 KiB body scanned',
  body64KiB: 'POST, 64 KiB body scanned',
  bodyLeak64KiB: 'POST, 64 KiB body, value near its end (failed)',
};

/** One row, a column per secret count: the same layout as the timing tables. */
function formatMemoryTable(r: SecretsBenchResult): string {
  const counts = r.setup.memorySecretCounts;
  const head = ['', ...counts.map((n) => `${n} secret${n === 1 ? '' : 's'}`)];
  const row = ["memory of one sandbox's secret state, MiB", ...counts.map((n) => r.stateMemory[`secrets${n}`]!.stateMiB.toFixed(2))];
  const widths = head.map((h, c) => Math.max(h.length, row[c]!.length));
  const line = (cells: string[]): string => cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), line(row)].join('\n');
}

/** One table per secret count, one of memory, and the setup, for people. */
export function formatSecretsText(r: SecretsBenchResult): string {
  const s = r.setup;
  const parts: string[] = [];
  for (const count of s.secretCounts) {
    const f = r.cordon[`secrets${count}`]!;
    parts.push(`${count} secret${count === 1 ? '' : 's'} bound (${f.valuePatterns} value patterns, ${f.holdBackBytes} bytes held back between body chunks)`);
    parts.push(formatOpTable(SECRETS_ROWS.map((row) => [LABELS[row], f[row]] as const)), '');
  }
  parts.push(
    `secret state in memory: heap used + array buffers after GC, grown while ${s.memorySandboxes} sandboxes' states were kept alive, per sandbox`,
    formatMemoryTable(r),
    '',
    'every call checked: real value in the bound header, refusals reported as exfiltration, clean bodies passed on byte for byte',
    `setup: ${s.iterations} calls per row after ${s.warmup} warm-up calls, one at a time, bodies in ${s.bodyChunkBytes / 1024} KiB chunks, ` +
      `node ${s.node}, ${s.cpus} cores, load average ${s.loadAverageStart.toFixed(1)} → ${s.loadAverageEnd.toFixed(1)}`,
    `not measured: ${s.notMeasured}`,
    `peers: ${s.peers}`,
    '',
  );
  return parts.join('\n');
}
