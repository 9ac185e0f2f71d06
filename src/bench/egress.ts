/**
 * `cordon bench egress`: cordon's egress proxy side by side with tinyproxy and
 * squid in one run, through the same client to the same loopback TLS upstream.
 *
 * - cordon is the real door: `createEgressProxy`, a door of one sandbox whose
 *   policy allows `bench.test` (mapped to 127.0.0.1 by the proxy's resolver) and
 *   `127.0.0.1/32` on the upstream's port, writing every tunnel to a real
 *   `AuditLog` on a SQLite store in a throw-away `$CORDON_HOME`;
 * - the peers run from their own binaries with generated configs (`egress-peers.ts`);
 * - the upstream (`egress-upstream.ts`) and the client (`egress-client.ts`)
 *   each run in their own process, so neither shares an event loop with cordon;
 * - a bare Node.js CONNECT proxy (`egress-floor.ts`) is measured too, as the
 *   floor: what a textbook Node.js proxy (`pipe()`) gets here before it
 *   does anything of its own. The goal check names the minimum's rows it
 *   misses too.
 *
 * Rows: latency of an HTTPS GET with a new tunnel per request and on one
 * keep-alive tunnel (p50, p99, and what each proxy adds over a direct
 * connection), requests/s over `concurrency` keep-alive tunnels, and MB/s of
 * one download. Each round measures every row for every system in turn
 * (direct, cordon, tinyproxy, squid), so drift in other load hits all alike.
 *
 * @example
 * const r = await benchEgress({ rounds: 5, onProgress: console.error });
 * r.cordon.addedTunnelP50Ms; r.squid; // figures, or { missing, fix } / { failed }
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../audit/index.js';
import { CordonError } from '../errors/index.js';
import { createEgressCa, createEgressProxy, issueCertificate, type EgressProxy } from '../egress/index.js';
import { openStore, type Store } from '../store/index.js';
import { CORDON_VERSION } from '../version.js';
import { ensurePrivateDir } from '../util/index.js';
import type { ClientJob, ClientResult, ClientSetup, Via } from './egress-client.js';
import { startBareConnectProxy, type BareConnectProxy } from './egress-floor.js';
import { forkModule, type ChildLink } from './egress-ipc.js';
import { findPeer, processCpuUs, startPeer, type RunningPeer } from './egress-peers.js';
import {
  PEERS, checkGoal, directFigures, proxyFigures,
  type DirectFigures, type GoalCheck, type PeerEntry, type PeerName, type ProxyFigures, type SystemSamples,
} from './egress-stats.js';

export interface EgressBenchOptions {
  /** Rounds; each measures every row for every system once. @default 5 */
  rounds?: number;
  /** Timed sequential requests per system for each latency row, split over the rounds. @default 2000 */
  requests?: number;
  /** Size of the download, MiB. @default 100 */
  downloadMiB?: number;
  /** Keep-alive connections of the requests/s row. @default 50 */
  concurrency?: number;
  /** Seconds of each requests/s run (one per system per round). @default 2 */
  rpsSeconds?: number;
  /** Directories where the peers' binaries are looked for. @default `$PATH` and the usual sbin/bin directories */
  peerSearchPath?: string[];
  /** Progress lines for a terminal. */
  onProgress?: (line: string) => void;
}

export interface EgressBenchResult {
  direct: DirectFigures;
  cordon: ProxyFigures & { auditEvents: number };
  tinyproxy: PeerEntry;
  squid: PeerEntry;
  /** The bare Node.js CONNECT proxy (see egress-floor.ts): a reference, not a peer. */
  floor: ProxyFigures;
  goal: GoalCheck;
  setup: {
    rounds: number; requestsPerRow: number; concurrency: number; rpsSeconds: number; downloadMiB: number;
    node: string; cpus: number; loadAverageStart: number; loadAverageEnd: number;
  };
}

/** The name cordon's policy allows; the upstream's certificate is for it, and every system's TLS uses it as SNI. */
const BENCH_HOST = 'bench.test';

interface System {
  name: 'direct' | 'cordon' | 'floor' | PeerName;
  via?: Via;
  samples: SystemSamples;
  /** CPU time used so far by the proxy's process, µs (undefined for the direct connection or where unknown). */
  cpuUs?: () => number | undefined;
}

/** CPU of this process (cordon's door lives here; the client and the upstream do not). */
function ownCpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/**
 * Run the benchmark. cordon and the direct baseline must work; a peer that is
 * missing or fails is reported as such in its entry.
 * @throws when the upstream, the client, cordon or the direct connection fails
 */
export async function benchEgress(o: EgressBenchOptions = {}): Promise<EgressBenchResult> {
  const rounds = o.rounds ?? 5;
  const requests = o.requests ?? 2000;
  const perRound = Math.max(1, Math.ceil(requests / rounds));
  const downloadMiB = o.downloadMiB ?? 100;
  const concurrency = o.concurrency ?? 50;
  const rpsSeconds = o.rpsSeconds ?? 2;
  const say = o.onProgress ?? ((): void => undefined);
  const loadStart = loadavg()[0]!;
  const work = mkdtempSync(join(tmpdir(), 'cordon-bench-egress-'));
  chmodSync(work, 0o711); // squid's own user must reach its directory below; home stays private
  const home = ensurePrivateDir(join(work, 'home'));
  const running: RunningPeer[] = [];
  const killPeers = (): void => { for (const p of running) if (p.pid) try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } };
  const onSignal = (): void => { killPeers(); rmSync(work, { recursive: true, force: true }); process.exit(130); };
  process.once('exit', killPeers).once('SIGINT', onSignal).once('SIGTERM', onSignal);
  let upstream: ChildLink | undefined;
  let client: ChildLink | undefined;
  let store: Store | undefined;
  let audit: AuditLog | undefined;
  let proxy: EgressProxy | undefined;
  let floor: BareConnectProxy | undefined;
  try {
    store = await openStore({ kind: 'sqlite', path: join(home, 'cordon.db') });
    const ca = createEgressCa({ commonName: 'cordon bench CA' });
    const cert = issueCertificate(ca, { hosts: [BENCH_HOST] });
    upstream = forkModule('egress-upstream');
    const up = await upstream.ask<{ ok: boolean; port?: number; error?: string }>(cert, 15_000);
    if (!up.ok || !up.port) throw new Error(`the bench upstream did not start: ${up.error ?? 'no port'}`);
    const upstreamPort = up.port;

    audit = await AuditLog.open({ store, keyDir: join(home, 'keys') });
    proxy = createEgressProxy({
      lookup: async (h) => (h === BENCH_HOST ? [{ address: '127.0.0.1', family: 4 }] : []),
      // The tunnel rows open a new CONNECT per request as fast as the client can: at the schema's maxima the request
      // rate (a burst of 1,000,000, then 100,000 a second) is far above every CONNECT of a whole run (thousands),
      // so it never refuses a bench request. The peers have no such rate; this measures the same work for all.
      limits: { maxRequestsPerSecond: 100_000, requestBurst: 1_000_000 },
    });
    const door = proxy.openDoor({
      sandboxId: 'sb-bench', agent: 'bench', audit,
      agentConfig: { egress: [{ host: BENCH_HOST, ports: [upstreamPort] }, { cidr: '127.0.0.1/32', ports: [upstreamPort] }] },
    });
    const { port: doorPort } = await door.listen(0, '127.0.0.1');
    floor = await startBareConnectProxy();

    const peers: Partial<Record<PeerName, PeerEntry>> = {};
    const versions: Partial<Record<PeerName, string>> = {};
    const systems: System[] = [
      { name: 'direct', samples: emptySamples() },
      { name: 'cordon', via: { host: '127.0.0.1', port: doorPort, target: `${BENCH_HOST}:${upstreamPort}` }, samples: emptySamples(), cpuUs: ownCpuUs },
      { name: 'floor', via: { host: '127.0.0.1', port: floor.port, target: `127.0.0.1:${upstreamPort}` }, samples: emptySamples(), cpuUs: ownCpuUs },
    ];
    for (const name of PEERS) {
      try {
        const bin = findPeer(name, o.peerSearchPath);
        say(`starting ${name} (${bin})`);
        const peer = await startPeer(name, bin, { dir: join(work, 'peers'), upstreamPort });
        running.push(peer);
        if (peer.version) versions[name] = peer.version;
        const pid = peer.pid;
        systems.push({
          name, via: { host: '127.0.0.1', port: peer.port, target: `127.0.0.1:${upstreamPort}` }, samples: emptySamples(),
          cpuUs: () => (pid === undefined ? undefined : processCpuUs(pid)),
        });
      } catch (err) {
        peers[name] = err instanceof CordonError && err.code === 'env-peer-missing'
          ? { missing: err.message, fix: err.fix ?? '' }
          : { failed: (err as Error).message };
        say(`${name}: ${(err as Error).message}`);
      }
    }

    client = forkModule('egress-client');
    const setup: ClientSetup = { upstreamPort, servername: BENCH_HOST, caPem: ca.certPem, timeoutMs: 10_000 };
    await client.ask({ setup }, 15_000);
    const run = runner(client, peers);

    say('warming up every system');
    const downloadBytes = downloadMiB * 1024 * 1024;
    for (const s of systems) {
      await run(s, { kind: 'tunnel', via: s.via, requests: 0, warmup: 50, capMs: 30_000 }, false);
      await run(s, { kind: 'keepalive', via: s.via, requests: 0, warmup: 200, capMs: 30_000 }, false);
      await run(s, { kind: 'rps', via: s.via, concurrency, seconds: 0.5, maxRequests: 100_000 }, false);
      await run(s, { kind: 'download', via: s.via, bytes: Math.min(downloadBytes, 16 * 1024 * 1024) }, false);
    }
    for (let r = 1; r <= rounds; r++) {
      const live = systems.filter((s) => isOurs(s.name) || !peers[s.name as PeerName]);
      say(`round ${r}/${rounds}: ${live.map((s) => s.name).join(', ')}`);
      for (const s of live) await run(s, { kind: 'tunnel', via: s.via, requests: perRound, warmup: 5, capMs: 90_000 });
      for (const s of live) await run(s, { kind: 'keepalive', via: s.via, requests: perRound, warmup: 20, capMs: 60_000 });
      for (const s of live) await run(s, { kind: 'rps', via: s.via, concurrency, seconds: rpsSeconds, maxRequests: 2_000_000 });
      for (const s of live) await run(s, { kind: 'download', via: s.via, bytes: downloadBytes });
    }

    const byName = new Map(systems.map((s) => [s.name, s]));
    const direct = directFigures(byName.get('direct')!.samples);
    const cordon = { ...proxyFigures(byName.get('cordon')!.samples, direct, `cordon ${CORDON_VERSION}`), auditEvents: audit.head.seq };
    for (const name of PEERS) peers[name] ??= proxyFigures(byName.get(name)!.samples, direct, versions[name]);
    const floorFigures = proxyFigures(byName.get('floor')!.samples, direct, `node:http CONNECT + pipe ${process.version}`);
    return {
      direct, cordon, tinyproxy: peers.tinyproxy!, squid: peers.squid!, floor: floorFigures,
      goal: checkGoal(cordon, peers, floorFigures),
      setup: {
        rounds, requestsPerRow: perRound * rounds, concurrency, rpsSeconds, downloadMiB,
        node: process.version, cpus: cpus().length, loadAverageStart: loadStart, loadAverageEnd: loadavg()[0]!,
      },
    };
  } finally {
    await client?.close();
    await Promise.all(running.map((p) => p.stop()));
    await floor?.close();
    await proxy?.close();
    await audit?.close();
    await store?.close();
    await upstream?.close();
    process.off('exit', killPeers).off('SIGINT', onSignal).off('SIGTERM', onSignal);
    rmSync(work, { recursive: true, force: true });
  }
}

/** The direct connection, cordon and the floor must work; only a peer may fail without ending the bench. */
function isOurs(name: System['name']): name is 'direct' | 'cordon' | 'floor' {
  return name === 'direct' || name === 'cordon' || name === 'floor';
}

function emptySamples(): SystemSamples {
  return { tunnelMs: [], keepAliveMs: [], rpsRounds: [], downloadMBpsRounds: [], errors: 0 };
}

/**
 * Runs one job for one system through the client and files the figures.
 * A peer whose job fails is marked failed (and left out of later rounds);
 * for the direct connection or cordon the failure ends the bench.
 */
function runner(client: ChildLink, peers: Partial<Record<PeerName, PeerEntry>>) {
  return async function runJob(s: System, job: ClientJob, record = true): Promise<void> {
    if (!isOurs(s.name) && peers[s.name]) return;
    const timeoutMs = job.kind === 'rps' ? job.seconds * 1000 + 60_000 : job.kind === 'download' ? 300_000 : job.capMs + 60_000;
    const cpu0 = s.cpuUs?.();
    const reply = await client.ask<{ ok: boolean; result?: ClientResult; error?: string }>({ job }, timeoutMs);
    const cpu1 = s.cpuUs?.();
    const cpuUs = cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : undefined;
    const result = reply.ok ? reply.result : undefined;
    const failure = !result ? reply.error ?? 'no result'
      : job.kind === 'tunnel' || job.kind === 'keepalive'
        ? job.requests > 0 && !result.latenciesMs?.length ? `no request succeeded (${result.lastError ?? ''})` : undefined
        : !result.seconds || !result.requests ? `no request succeeded (${result.lastError ?? ''})` : undefined;
    if (failure) {
      const message = `${s.name}, ${job.kind}: ${failure}`;
      if (isOurs(s.name)) throw new Error(`bench egress: ${message}`);
      peers[s.name] = { failed: message };
      return;
    }
    if (!record || !result) return;
    s.samples.errors += result.errors;
    if (result.lastError) s.samples.lastError = result.lastError;
    if (job.kind === 'tunnel') {
      s.samples.tunnelMs.push(...result.latenciesMs!);
      if (cpuUs !== undefined) {
        s.samples.tunnelCpuUs = (s.samples.tunnelCpuUs ?? 0) + cpuUs;
        s.samples.tunnels = (s.samples.tunnels ?? 0) + (result.attempts ?? 0);
      }
    } else if (job.kind === 'keepalive') s.samples.keepAliveMs.push(...result.latenciesMs!);
    else if (job.kind === 'rps') {
      s.samples.rpsRounds.push(result.requests! / result.seconds!);
      if (cpuUs !== undefined) {
        s.samples.rpsCpuUs = (s.samples.rpsCpuUs ?? 0) + cpuUs;
        s.samples.rpsRequests = (s.samples.rpsRequests ?? 0) + (result.attempts ?? 0);
      }
    }
    else if (job.kind === 'download') s.samples.downloadMBpsRounds.push(job.bytes / result.seconds! / 1e6);
  };
}
