/**
 * Pure parts of `cordon bench gateway`: percentiles, the figures of one system
 * (latency at each concurrency, requests/s, time to the first whole streamed event)
 * relative to calling the upstream directly, the goal check, and the text table.
 */

/** Concurrencies of the latency rows (1: what one request pays on an idle gateway). */
export const CONCURRENCIES = [1, 10, 50, 200] as const;
export type Concurrency = (typeof CONCURRENCIES)[number];

/** Raw samples of one system, gathered over all rounds. */
export interface GatewaySamples {
  /** Per-request latency, ms, by concurrency. */
  latencyMs: Record<Concurrency, number[]>;
  /** Requests/s of each round at the requests/s concurrency. */
  rps: number[];
  /** Time from sending a streamed request to its first whole server-sent event, ms, at the streaming concurrency. */
  firstChunkMs: number[];
  /** The same, one request at a time. */
  firstChunkC1Ms: number[];
  errors: number;
  lastError?: string;
}

export interface LatencyFigures { p50Ms: number; p99Ms: number }

export interface SystemFigures {
  version?: string;
  /** Latency by concurrency (`c1`, `c10`, `c50`, `c200`). */
  latency: Record<string, LatencyFigures>;
  /** Median of the rounds' requests/s. */
  rps: number;
  firstChunkP50Ms: number;
  firstChunkP99Ms: number;
  firstChunkC1P50Ms: number;
  errors: number;
  lastError?: string;
}

export interface GatewayFigures extends SystemFigures {
  /** What the gateway adds over the direct call, by concurrency: p50 and p99 differences. */
  added: Record<string, { p50Ms: number; p99Ms: number }>;
  addedFirstChunkP50Ms: number;
  addedFirstChunkC1P50Ms: number;
}

/** A peer that was not measured, with why and how to fix it. */
export type PeerEntry = GatewayFigures | { missing: string; fix: string } | { failed: string; fix: string };

export interface GatewayGoal {
  /** cordon adds ≤ 0.5 ms to the p50 at every concurrency. */
  addedP50: boolean;
  /** cordon adds ≤ 1 ms to the p50 of the first streamed event (at the streaming concurrency, 10). */
  firstChunk: boolean;
  /** cordon's requests/s ≥ 5× Portkey's; undefined when Portkey was not measured. */
  rpsVsPortkey: boolean | undefined;
  met: boolean;
  misses: string[];
  /**
   * The latency goals that the bare Node.js pass-through (the floor) misses
   * too in the same run: on this machine no Node.js gateway meets them.
   */
  floorMisses: string[];
}

export function emptySamples(): GatewaySamples {
  return { latencyMs: { 1: [], 10: [], 50: [], 200: [] }, rps: [], firstChunkMs: [], firstChunkC1Ms: [], errors: 0 };
}

/** The q-quantile (0..1) of unsorted values, nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

export function systemFigures(s: GatewaySamples, version?: string): SystemFigures {
  const latency: Record<string, LatencyFigures> = {};
  for (const c of CONCURRENCIES) latency[`c${c}`] = { p50Ms: round3(quantile(s.latencyMs[c], 0.5)), p99Ms: round3(quantile(s.latencyMs[c], 0.99)) };
  return {
    ...(version ? { version } : {}),
    latency, rps: Math.round(quantile(s.rps, 0.5)),
    firstChunkP50Ms: round3(quantile(s.firstChunkMs, 0.5)), firstChunkP99Ms: round3(quantile(s.firstChunkMs, 0.99)),
    firstChunkC1P50Ms: round3(quantile(s.firstChunkC1Ms, 0.5)),
    errors: s.errors, ...(s.lastError ? { lastError: s.lastError } : {}),
  };
}

/** A gateway's figures with what it adds over the direct figures. */
export function gatewayFigures(s: GatewaySamples, direct: SystemFigures, version?: string): GatewayFigures {
  const f = systemFigures(s, version);
  const added: Record<string, { p50Ms: number; p99Ms: number }> = {};
  for (const [k, v] of Object.entries(f.latency)) {
    const d = direct.latency[k]!;
    added[k] = { p50Ms: round3(v.p50Ms - d.p50Ms), p99Ms: round3(v.p99Ms - d.p99Ms) };
  }
  return { ...f, added, addedFirstChunkP50Ms: round3(f.firstChunkP50Ms - direct.firstChunkP50Ms),
    addedFirstChunkC1P50Ms: round3(f.firstChunkC1P50Ms - direct.firstChunkC1P50Ms) };
}

export const isMeasured = (e: PeerEntry): e is GatewayFigures => 'rps' in e;

/**
 * The issue's goal: added p50 ≤ 0.5 ms (every concurrency), first chunk +≤ 1 ms,
 * requests/s ≥ 5× Portkey's. Not met when Portkey was not measured. With the
 * floor's figures, each latency miss says what the floor adds there, and the
 * goals the floor misses too are listed in `floorMisses`.
 */
export function checkGoal(cordon: GatewayFigures, portkey: PeerEntry, floor?: GatewayFigures): GatewayGoal {
  const misses: string[] = [];
  const floorMisses: string[] = [];
  const floorSays = (added: number | undefined, goalMs: number, what: string): string => {
    if (added === undefined || !Number.isFinite(added)) return '';
    if (!(added <= goalMs)) floorMisses.push(`${what}: a bare Node.js pass-through adds ${added} ms (goal ≤ ${goalMs} ms)`);
    return `; a bare Node.js pass-through adds ${added} ms`;
  };
  for (const [k, v] of Object.entries(cordon.added)) {
    if (!(v.p50Ms <= 0.5)) misses.push(`added p50 at ${k} is ${v.p50Ms} ms (goal ≤ 0.5 ms${floorSays(floor?.added[k]?.p50Ms, 0.5, `added p50 at ${k}`)})`);
  }
  const addedP50 = misses.length === 0;
  const firstChunk = cordon.addedFirstChunkP50Ms <= 1;
  if (!firstChunk) {
    misses.push(`streaming adds ${cordon.addedFirstChunkP50Ms} ms to the first streamed event (goal ≤ 1 ms${floorSays(floor?.addedFirstChunkP50Ms, 1, 'first streamed event')})`);
  }
  let rpsVsPortkey: boolean | undefined;
  if (isMeasured(portkey)) {
    rpsVsPortkey = cordon.rps >= 5 * portkey.rps;
    if (!rpsVsPortkey) misses.push(`requests/s ${cordon.rps} is ${(cordon.rps / portkey.rps).toFixed(2)}× Portkey's ${portkey.rps} (goal ≥ 5×)`);
  } else misses.push('Portkey was not measured, so requests/s ≥ 5× Portkey cannot be checked');
  return { addedP50, firstChunk, rpsVsPortkey, met: misses.length === 0 && rpsVsPortkey === true, misses, floorMisses };
}

const ms = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');
const plus = (x: number): string => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${x.toFixed(2)}` : '-');

/** A Markdown table: one row per figure, one column per system. */
export function formatGatewayTable(direct: SystemFigures, systems: ReadonlyArray<[string, PeerEntry]>, rpsConcurrency: number): string {
  const head = ['', 'direct', ...systems.map(([n]) => n)];
  const rows: string[][] = [];
  const cell = (e: PeerEntry, f: (g: GatewayFigures) => string): string => (isMeasured(e) ? f(e) : 'not measured');
  for (const c of CONCURRENCIES) {
    const k = `c${c}`;
    rows.push([`p50 ms, concurrency ${c}`, ms(direct.latency[k]!.p50Ms),
      ...systems.map(([, e]) => cell(e, (g) => `${ms(g.latency[k]!.p50Ms)} (${plus(g.added[k]!.p50Ms)})`))]);
    rows.push([`p99 ms, concurrency ${c}`, ms(direct.latency[k]!.p99Ms),
      ...systems.map(([, e]) => cell(e, (g) => `${ms(g.latency[k]!.p99Ms)} (${plus(g.added[k]!.p99Ms)})`))]);
  }
  rows.push([`requests/s, concurrency ${rpsConcurrency}`, String(direct.rps), ...systems.map(([, e]) => cell(e, (g) => String(g.rps)))]);
  rows.push(['first streamed event p50 ms, concurrency 1', ms(direct.firstChunkC1P50Ms),
    ...systems.map(([, e]) => cell(e, (g) => `${ms(g.firstChunkC1P50Ms)} (${plus(g.addedFirstChunkC1P50Ms)})`))]);
  rows.push(['first streamed event p50 ms, concurrency 10', ms(direct.firstChunkP50Ms),
    ...systems.map(([, e]) => cell(e, (g) => `${ms(g.firstChunkP50Ms)} (${plus(g.addedFirstChunkP50Ms)})`))]);
  const line = (r: string[]): string => `| ${r.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}
