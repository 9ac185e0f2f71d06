/**
 * `cordon bench gateway`: cordon's LLM gateway side by side with Portkey
 * (`@portkey-ai/gateway`) in one run, in front of the same fake
 * OpenAI-compatible upstream, driven by the same load generator.
 *
 * - cordon is the real gateway: `createGateway` with a real `AuditLog` on a
 *   SQLite store in a throw-away `$CORDON_HOME`, served by
 *   `startGatewayServer`. Its `authenticate` accepts one fixed bench key, so
 *   the authentication measured here is a table look-up, not the
 *   channel-bound sandbox token check of a real deployment;
 * - Portkey is installed on demand into a cache folder and run as its own
 *   process (`gateway-portkey.ts`); when it cannot be, its entry says
 *   `{ missing | failed, fix }`;
 * - the upstream (`gateway-upstream.ts`) and the client (`gateway-client.ts`)
 *   each run in their own process;
 * - a bare Node.js pass-through (`gateway-floor.ts`) is measured too, as the
 *   floor: what any Node.js gateway pays here before doing anything of its
 *   own. The goal check names the goals that even it misses.
 *
 * Rows: latency of a chat completion at concurrency 1, 10, 50 and 200 (p50, p99,
 * and what each gateway adds over calling the upstream directly), requests/s
 * at concurrency 50, and the time to the first whole event of a streamed completion
 * at concurrency 1 and 10. Each round measures every row for every system in turn.
 *
 * @example
 * const r = await benchGateway({ cacheDir: join(home, 'peers', 'portkey'), onProgress: console.error });
 * r.cordon.added.c50.p50Ms; r.portkey; // figures, or { missing | failed, fix }
 * r.floor.added.c50.p50Ms; r.goal.floorMisses; // what a bare pass-through adds, and the goals it misses too
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../audit/index.js';
import { createGateway, presentedToken, startGatewayServer, type Authenticate, type Gateway, type GatewayServer } from '../gateway/index.js';
import { openStore, type Store } from '../store/index.js';
import { ensurePrivateDir } from '../util/index.js';
import { CORDON_VERSION } from '../version.js';
import type { LoadJob, LoadResult } from './gateway-client.js';
import { startPassThrough, type PassThrough } from './gateway-floor.js';
import { ensurePortkey, PeerUnavailable, startPortkey, type RunningPortkey } from './gateway-portkey.js';
import {
  CONCURRENCIES, checkGoal, emptySamples, gatewayFigures, systemFigures,
  type GatewayFigures, type GatewayGoal, type GatewaySamples, type PeerEntry, type SystemFigures,
} from './gateway-stats.js';
import { forkModule, type ChildLink } from './egress-ipc.js';

export interface GatewayBenchOptions {
  /** Folder Portkey is installed into on demand (e.g. `$CORDON_HOME/peers/portkey`). */
  cacheDir: string;
  /** Use the Portkey already installed in this folder; never install. @default install into `cacheDir` */
  portkeyDir?: string;
  /** Rounds; each measures every row for every system once. @default 5 */
  rounds?: number;
  /** Timed requests per system for each latency row, split over the rounds. @default 2000 */
  requests?: number;
  /** Seconds of each requests/s run (one per system per round). @default 2 */
  rpsSeconds?: number;
  /** Progress lines for a terminal. */
  onProgress?: (line: string) => void;
}

export interface GatewayBenchResult {
  direct: SystemFigures;
  cordon: GatewayFigures & { auditEvents: number };
  portkey: PeerEntry;
  /** The bare Node.js pass-through (see gateway-floor.ts): a reference, not a peer. */
  floor: GatewayFigures;
  goal: GatewayGoal;
  setup: {
    rounds: number; requestsPerRow: number; rpsConcurrency: number; rpsSeconds: number; streamConcurrency: number;
    node: string; cpus: number; loadAverageStart: number; loadAverageEnd: number; auth: string;
  };
}

/** The one key the bench's authenticator accepts. */
export const BENCH_KEY = 'cordon-bench-key';
const RPS_CONCURRENCY = 50;
const STREAM_CONCURRENCY = 10;
const MODEL = 'gpt-4o-mini';
const BODY = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hello to the benchmark.' }] });
/** The upstream echoes it in 3-character pieces: 20 events (role, 17 pieces, stop, [DONE]), one write each. */
const STREAM_BODY = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hello to the benchmark, in twenty short pieces.' }], stream: true });

const benchAuthenticate: Authenticate = async function benchAuthenticate(req) {
  return presentedToken(req) === BENCH_KEY ? { ok: true, agent: 'bench', sandboxId: 'sb-bench' } : { ok: false, reason: 'unknown-token' };
};

interface System {
  name: 'direct' | 'cordon' | 'floor' | 'portkey';
  url: string;
  headers: Record<string, string>;
  samples: GatewaySamples;
}

/** Run one load job for a system and (when `record`) add its samples. */
function runner(client: ChildLink) {
  return async function run(s: System, job: Omit<LoadJob, 'url' | 'headers'>, record: (r: LoadResult) => void): Promise<LoadResult> {
    const r = await client.ask<LoadResult>({ ...job, url: s.url, headers: s.headers }, (job.capSeconds + 60) * 1000);
    s.samples.errors += r.errors;
    if (r.lastError) s.samples.lastError = r.lastError;
    record(r);
    return r;
  };
}

/**
 * Run the benchmark. cordon and the direct baseline must work; Portkey that
 * cannot be installed, started or used is reported as such in its entry.
 * @throws when the upstream, the client or cordon's gateway cannot start
 */
export async function benchGateway(o: GatewayBenchOptions): Promise<GatewayBenchResult> {
  const rounds = o.rounds ?? 5;
  const perRound = Math.max(1, Math.ceil((o.requests ?? 2000) / rounds));
  const rpsSeconds = o.rpsSeconds ?? 2;
  const say = o.onProgress ?? ((): void => undefined);
  const loadStart = loadavg()[0]!;
  const work = mkdtempSync(join(tmpdir(), 'cordon-bench-gateway-'));
  const home = ensurePrivateDir(join(work, 'home'));
  let upstream: ChildLink | undefined;
  let client: ChildLink | undefined;
  let store: Store | undefined;
  let audit: AuditLog | undefined;
  let gateway: Gateway | undefined;
  let server: GatewayServer | undefined;
  let portkey: RunningPortkey | undefined;
  let floor: PassThrough | undefined;
  const killPortkey = (): void => { if (portkey?.pid) try { process.kill(portkey.pid, 'SIGKILL'); } catch { /* gone */ } };
  const onSignal = (): void => { killPortkey(); rmSync(work, { recursive: true, force: true }); process.exit(130); };
  process.once('exit', killPortkey).once('SIGINT', onSignal).once('SIGTERM', onSignal);
  try {
    // forkModule's names are typed for the egress bench; it forks `./<name>` beside it, which these modules are.
    upstream = forkModule('gateway-upstream');
    const up = await upstream.ask<{ ok: boolean; url?: string; error?: string }>({}, 15_000);
    if (!up.ok || !up.url) throw new Error(`the bench upstream did not start: ${up.error ?? 'no url'}`);

    store = await openStore({ kind: 'sqlite', path: join(home, 'cordon.db') });
    audit = await AuditLog.open({ store, keyDir: join(home, 'keys') });
    const limits = { requestsPerMinute: 1e9, tokensPerMinute: 1e12, tokensPerDay: 1e15, concurrentRequests: 10_000 };
    gateway = createGateway({
      config: {
        agents: { bench: { llm: { models: ['gpt-*'], limits }, egress: [] } },
        providers: { openai: { type: 'openai', baseUrl: `${up.url}/v1`, apiKey: '{{secret.openai_key}}' } },
      },
      audit, authenticate: benchAuthenticate,
      resolveSecret: async function benchSecret() { return 'sk-bench-upstream'; },
    });
    server = await startGatewayServer(gateway);
    floor = await startPassThrough(up.url);

    const json = { 'content-type': 'application/json' };
    const systems: System[] = [
      { name: 'direct', url: `${up.url}/v1/chat/completions`, headers: { ...json, authorization: 'Bearer sk-bench-upstream' }, samples: emptySamples() },
      { name: 'cordon', url: `${server.url}/v1/chat/completions`, headers: { ...json, authorization: `Bearer ${BENCH_KEY}` }, samples: emptySamples() },
      { name: 'floor', url: `${floor.url}/v1/chat/completions`, headers: { ...json, authorization: 'Bearer sk-bench-upstream' }, samples: emptySamples() },
    ];

    client = forkModule('gateway-client');
    const run = runner(client);
    const ignore = (): void => undefined;

    let portkeyEntry: PeerEntry | undefined;
    let portkeyVersion: string | undefined;
    try {
      const dir = o.portkeyDir ?? o.cacheDir;
      portkeyVersion = ensurePortkey(dir, o.portkeyDir === undefined, say);
      say(`starting Portkey (${portkeyVersion}) from ${dir}`);
      portkey = await startPortkey(dir);
      const pk: System = {
        name: 'portkey', url: `${portkey.url}/v1/chat/completions`, samples: emptySamples(),
        headers: { ...json, authorization: 'Bearer sk-bench-upstream', 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${up.url}/v1` },
      };
      for (const body of [BODY, STREAM_BODY]) {
        const r = await run(pk, { body, concurrency: 1, requests: 3, warmup: 0, capSeconds: 20 }, ignore);
        if (r.errors > 0) {
          throw new PeerUnavailable('failed', `Portkey answered ${body === BODY ? 'a chat completion' : 'a streamed chat completion'} with an error: ${r.lastError}`,
            `delete ${dir} to reinstall Portkey with the @hono/node-server override, or pass --portkey DIR with a working install`);
        }
      }
      pk.samples = emptySamples();
      systems.push(pk);
    } catch (err) {
      if (!(err instanceof PeerUnavailable)) throw err;
      portkeyEntry = err.kind === 'missing' ? { missing: err.message, fix: err.fix } : { failed: err.message, fix: err.fix };
      say(`Portkey was not measured: ${err.message}; fix: ${err.fix}`);
      await portkey?.stop();
      portkey = undefined;
    }

    for (const s of systems) {
      const r = await run(s, { body: BODY, concurrency: 1, requests: 3, warmup: 0, capSeconds: 20 }, ignore);
      if (r.errors > 0) throw new Error(`${s.name} does not answer a chat completion: ${r.lastError}`);
      s.samples = emptySamples();
    }
    say('warming up every system');
    for (const s of systems) {
      await run(s, { body: BODY, concurrency: RPS_CONCURRENCY, requests: 0, warmup: 1000, capSeconds: 30 }, ignore);
      await run(s, { body: STREAM_BODY, concurrency: STREAM_CONCURRENCY, requests: 0, warmup: 200, capSeconds: 30, firstChunk: true }, ignore);
    }
    for (let round = 1; round <= rounds; round++) {
      say(`round ${round}/${rounds}: ${systems.map((s) => s.name).join(', ')}`);
      for (const c of CONCURRENCIES) {
        for (const s of systems) {
          await run(s, { body: BODY, concurrency: c, requests: perRound, warmup: c, capSeconds: 60 }, (r) => { s.samples.latencyMs[c].push(...r.latencyMs); });
        }
      }
      for (const s of systems) {
        await run(s, { body: BODY, concurrency: RPS_CONCURRENCY, requests: 10_000_000, warmup: RPS_CONCURRENCY, capSeconds: rpsSeconds, keepSamples: 1 },
          (r) => { if (r.seconds > 0) s.samples.rps.push(r.done / r.seconds); });
      }
      for (const s of systems) {
        await run(s, { body: STREAM_BODY, concurrency: STREAM_CONCURRENCY, requests: perRound, warmup: STREAM_CONCURRENCY, capSeconds: 60, firstChunk: true },
          (r) => { s.samples.firstChunkMs.push(...r.latencyMs); });
      }
      for (const s of systems) {
        await run(s, { body: STREAM_BODY, concurrency: 1, requests: perRound, warmup: 5, capSeconds: 60, firstChunk: true },
          (r) => { s.samples.firstChunkC1Ms.push(...r.latencyMs); });
      }
    }

    const byName = new Map(systems.map((s) => [s.name, s]));
    const direct = systemFigures(byName.get('direct')!.samples);
    const cordon = { ...gatewayFigures(byName.get('cordon')!.samples, direct, `cordon ${CORDON_VERSION}`), auditEvents: audit.head.seq };
    const portkeyResult: PeerEntry = portkeyEntry ?? gatewayFigures(byName.get('portkey')!.samples, direct, portkeyVersion);
    const floorResult = gatewayFigures(byName.get('floor')!.samples, direct, `node:http + undici ${process.version}`);
    return {
      direct, cordon, portkey: portkeyResult, floor: floorResult, goal: checkGoal(cordon, portkeyResult, floorResult),
      setup: {
        rounds, requestsPerRow: perRound * rounds, rpsConcurrency: RPS_CONCURRENCY, rpsSeconds, streamConcurrency: STREAM_CONCURRENCY,
        node: process.version, cpus: cpus().length, loadAverageStart: loadStart, loadAverageEnd: loadavg()[0]!,
        auth: 'cordon: a fixed bench key (table look-up), not the channel-bound sandbox token check',
      },
    };
  } finally {
    await client?.close();
    await portkey?.stop();
    await floor?.close();
    await server?.close();
    await gateway?.close();
    await audit?.close();
    await store?.close();
    await upstream?.close();
    process.off('exit', killPortkey).off('SIGINT', onSignal).off('SIGTERM', onSignal);
    rmSync(work, { recursive: true, force: true });
  }
}
