/**
 * The arithmetic of `cordon bench egress`, kept pure: percentiles, figures per
 * system from the samples of all rounds (added latency = proxy percentile −
 * direct percentile), the goal check against the faster peer, and the table
 * printed for a terminal and for BENCHMARKS.md.
 */

/** What the rounds collected for one system. */
export interface SystemSamples {
  /** Latencies of requests each on a new connection (a new tunnel each), ms. */
  tunnelMs: number[];
  /** Latencies of sequential requests on one keep-alive connection, ms. */
  keepAliveMs: number[];
  /** Requests/s of each round at the set concurrency. */
  rpsRounds: number[];
  /** MB/s (10^6 bytes/s) of each round's download. */
  downloadMBpsRounds: number[];
  errors: number;
  lastError?: string;
  /** CPU time of the proxy's process(es) during the new-tunnel jobs, and how many tunnels they opened (warm-ups included). */
  tunnelCpuUs?: number;
  tunnels?: number;
  /** CPU time of the proxy during the requests/s jobs, and the requests they served. */
  rpsCpuUs?: number;
  rpsRequests?: number;
}

export interface DirectFigures {
  tunnelP50Ms: number;
  tunnelP99Ms: number;
  keepAliveP50Ms: number;
  keepAliveP99Ms: number;
  /** Median over rounds. */
  rps: number;
  rpsMin: number;
  rpsMax: number;
  /** Median over rounds. */
  downloadMBps: number;
  requests: number;
  errors: number;
  lastError?: string;
}

export interface ProxyFigures extends DirectFigures {
  addedTunnelP50Ms: number;
  addedTunnelP99Ms: number;
  addedKeepAliveP50Ms: number;
  addedKeepAliveP99Ms: number;
  /** rps / direct rps. */
  rpsOfDirect: number;
  /** downloadMBps / direct downloadMBps. */
  downloadOfDirect: number;
  /** CPU time the proxy spent per new tunnel (its whole process: user + system). */
  cpuUsPerTunnel?: number;
  /** CPU time the proxy spent per request on keep-alive tunnels (requests/s row). */
  cpuUsPerRequest?: number;
  version?: string;
}

/** A peer that could not be measured, and why (never silently left out). */
export type PeerProblem = { missing: string; fix: string } | { failed: string };
export type PeerEntry = ProxyFigures | PeerProblem;

export const PEERS = ['tinyproxy', 'squid'] as const;
export type PeerName = (typeof PEERS)[number];

/** Nearest-rank percentile (`p` in 0..1) of unsorted values; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

export function median(values: readonly number[]): number {
  return percentile(values, 0.5);
}

const round = (n: number, digits: number): number => (Number.isFinite(n) ? Math.round(n * 10 ** digits) / 10 ** digits : n);

/** Figures of the direct connection (the baseline). */
export function directFigures(s: SystemSamples): DirectFigures {
  return {
    tunnelP50Ms: round(percentile(s.tunnelMs, 0.5), 3),
    tunnelP99Ms: round(percentile(s.tunnelMs, 0.99), 3),
    keepAliveP50Ms: round(percentile(s.keepAliveMs, 0.5), 3),
    keepAliveP99Ms: round(percentile(s.keepAliveMs, 0.99), 3),
    rps: Math.round(median(s.rpsRounds)),
    rpsMin: Math.round(Math.min(...s.rpsRounds)),
    rpsMax: Math.round(Math.max(...s.rpsRounds)),
    downloadMBps: round(median(s.downloadMBpsRounds), 1),
    requests: s.tunnelMs.length + s.keepAliveMs.length,
    errors: s.errors,
    ...(s.lastError ? { lastError: s.lastError } : {}),
  };
}

/** Figures of a proxy, with what it adds over the direct connection. */
export function proxyFigures(s: SystemSamples, direct: DirectFigures, version?: string): ProxyFigures {
  const f = directFigures(s);
  return {
    addedTunnelP50Ms: round(f.tunnelP50Ms - direct.tunnelP50Ms, 3),
    addedTunnelP99Ms: round(f.tunnelP99Ms - direct.tunnelP99Ms, 3),
    addedKeepAliveP50Ms: round(f.keepAliveP50Ms - direct.keepAliveP50Ms, 3),
    addedKeepAliveP99Ms: round(f.keepAliveP99Ms - direct.keepAliveP99Ms, 3),
    ...f,
    rpsOfDirect: round(f.rps / direct.rps, 2),
    downloadOfDirect: round(f.downloadMBps / direct.downloadMBps, 2),
    ...(s.tunnelCpuUs !== undefined && s.tunnels ? { cpuUsPerTunnel: Math.round(s.tunnelCpuUs / s.tunnels) } : {}),
    ...(s.rpsCpuUs !== undefined && s.rpsRequests ? { cpuUsPerRequest: round(s.rpsCpuUs / s.rpsRequests, 1) } : {}),
    ...(version ? { version } : {}),
  };
}

export function isMeasured(e: PeerEntry | undefined): e is ProxyFigures {
  return e !== undefined && 'rps' in e;
}

export interface GoalCheck {
  /** cordon is at least as fast as the faster measured peer on every row. */
  fasterPeerOnEveryRow: boolean;
  /** Added p50 ≤ 1 ms (new tunnel and keep-alive) and requests/s ≥ every measured peer. */
  minimum: boolean;
  /** One line per row where cordon is behind, with the figures. */
  misses: string[];
  /** Peers that were not measured (the comparison is then incomplete). */
  unmeasured: PeerName[];
  /**
   * The minimum's rows where the bare Node.js CONNECT proxy (the floor, when
   * measured: `node:http` CONNECT and `pipe()`) is behind too in this run.
   */
  floorMisses: string[];
}

/** Latency differences this small are below what the bench resolves on a shared machine: a tie, not a miss. */
export const LATENCY_TIE_MS = 0.01;

/** Rows compared, lower-is-better ones first. */
const ROWS: Array<{ key: keyof ProxyFigures; label: string; better: 'lower' | 'higher'; unit: string }> = [
  { key: 'addedTunnelP50Ms', label: 'added p50, new tunnel per request', better: 'lower', unit: 'ms' },
  { key: 'addedTunnelP99Ms', label: 'added p99, new tunnel per request', better: 'lower', unit: 'ms' },
  { key: 'addedKeepAliveP50Ms', label: 'added p50, keep-alive', better: 'lower', unit: 'ms' },
  { key: 'addedKeepAliveP99Ms', label: 'added p99, keep-alive', better: 'lower', unit: 'ms' },
  { key: 'rps', label: 'requests/s', better: 'higher', unit: 'req/s' },
  { key: 'downloadMBps', label: 'download', better: 'higher', unit: 'MB/s' },
];

/** Compare cordon (and the floor, when given) with the measured peers, row by row. */
export function checkGoal(cordon: ProxyFigures, peers: Partial<Record<PeerName, PeerEntry>>, floor?: ProxyFigures): GoalCheck {
  const measured = PEERS.flatMap((name) => (isMeasured(peers[name]) ? [{ name, f: peers[name] as ProxyFigures }] : []));
  const misses: string[] = [];
  for (const row of ROWS) {
    const mine = cordon[row.key] as number;
    for (const { name, f } of measured) {
      const theirs = f[row.key] as number;
      const behind = row.better === 'lower' ? mine > theirs + LATENCY_TIE_MS : mine < theirs;
      if (behind) misses.push(`${row.label}: cordon ${mine} ${row.unit}, ${name} ${theirs} ${row.unit}`);
    }
  }
  const minimum = cordon.addedTunnelP50Ms <= 1 && cordon.addedKeepAliveP50Ms <= 1 && measured.every(({ f }) => cordon.rps >= f.rps);
  const floorMisses: string[] = [];
  if (floor) {
    if (floor.addedTunnelP50Ms > 1) floorMisses.push(`added p50, new tunnel: the bare Node.js proxy adds ${floor.addedTunnelP50Ms} ms (minimum ≤ 1 ms)`);
    if (floor.addedKeepAliveP50Ms > 1) floorMisses.push(`added p50, keep-alive: the bare Node.js proxy adds ${floor.addedKeepAliveP50Ms} ms (minimum ≤ 1 ms)`);
    for (const { name, f } of measured) {
      if (floor.rps < f.rps) floorMisses.push(`requests/s: the bare Node.js proxy ${floor.rps} req/s, ${name} ${f.rps} req/s`);
    }
  }
  return { fasterPeerOnEveryRow: misses.length === 0, minimum, misses, unmeasured: PEERS.filter((n) => !isMeasured(peers[n])), floorMisses };
}

const ms = (n: number): string => `${n.toFixed(2)} ms`;
const signed = (n: number): string => `${n >= 0 ? '+' : '−'}${Math.abs(n).toFixed(2)}`;
const int = (n: number): string => Math.round(n).toLocaleString('en');

/**
 * A Markdown table: one row per figure, one column per system.
 * @param downloadMiB size of the download, for the row's label
 */
export function formatTable(direct: DirectFigures, proxies: Array<[string, PeerEntry]>, o: { concurrency: number; downloadMiB: number }): string {
  const cell = (e: PeerEntry, pick: (f: ProxyFigures) => string): string => {
    if (isMeasured(e)) return pick(e);
    return 'missing' in e ? 'not installed' : 'failed';
  };
  const rows: Array<[string, string, (f: ProxyFigures) => string]> = [
    ['HTTPS GET, new tunnel per request, p50', ms(direct.tunnelP50Ms), (f) => `${ms(f.tunnelP50Ms)} (${signed(f.addedTunnelP50Ms)})`],
    ['HTTPS GET, new tunnel per request, p99', ms(direct.tunnelP99Ms), (f) => `${ms(f.tunnelP99Ms)} (${signed(f.addedTunnelP99Ms)})`],
    ['HTTPS GET, keep-alive (one tunnel), p50', ms(direct.keepAliveP50Ms), (f) => `${ms(f.keepAliveP50Ms)} (${signed(f.addedKeepAliveP50Ms)})`],
    ['HTTPS GET, keep-alive (one tunnel), p99', ms(direct.keepAliveP99Ms), (f) => `${ms(f.keepAliveP99Ms)} (${signed(f.addedKeepAliveP99Ms)})`],
    [`keep-alive, ${o.concurrency} concurrent, req/s`, int(direct.rps), (f) => `${int(f.rps)} (${f.rpsOfDirect.toFixed(2)}×)`],
    [`${o.downloadMiB} MiB download, MB/s`, direct.downloadMBps.toFixed(0), (f) => `${f.downloadMBps.toFixed(0)} (${f.downloadOfDirect.toFixed(2)}×)`],
    ['proxy CPU per new tunnel', '—', (f) => (f.cpuUsPerTunnel === undefined ? '?' : `${int(f.cpuUsPerTunnel)} µs`)],
    ['proxy CPU per keep-alive request', '—', (f) => (f.cpuUsPerRequest === undefined ? '?' : `${f.cpuUsPerRequest.toFixed(1)} µs`)],
  ];
  const lines = [
    `| figure | direct | ${proxies.map(([n]) => n).join(' | ')} |`,
    `|---|---|${proxies.map(() => '---|').join('')}`,
    ...rows.map(([label, d, pick]) => `| ${label} | ${d} | ${proxies.map(([, e]) => cell(e, pick)).join(' | ')} |`),
  ];
  return lines.join('\n');
}
