/**
 * `cordon bench` without running a benchmark: the text printed for a result
 * (every system's failed requests are said, the floor's too) and the options
 * refused before anything runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import type { EgressBenchResult, GatewayBenchResult, GatewayFigures, ProxyFigures } from '../../bench/index.js';
import { InvalidInputError } from '../../errors/index.js';
import { egressText, gatewayText, registerBench } from './bench.js';

function proxy(o: Partial<ProxyFigures> = {}): ProxyFigures {
  return {
    tunnelP50Ms: 2, tunnelP99Ms: 3, keepAliveP50Ms: 0.2, keepAliveP99Ms: 0.4, rps: 20_000, rpsMin: 19_000, rpsMax: 21_000, downloadMBps: 900,
    requests: 100, errors: 0, addedTunnelP50Ms: 0.5, addedTunnelP99Ms: 0.8, addedKeepAliveP50Ms: 0.1, addedKeepAliveP99Ms: 0.2,
    rpsOfDirect: 0.5, downloadOfDirect: 0.9, ...o,
  };
}

function gateway(o: Partial<GatewayFigures> = {}): GatewayFigures {
  const latency = { c1: { p50Ms: 1, p99Ms: 2 }, c10: { p50Ms: 1, p99Ms: 2 }, c50: { p50Ms: 1, p99Ms: 2 }, c200: { p50Ms: 1, p99Ms: 2 } };
  const added = { c1: { p50Ms: 0.2, p99Ms: 0.3 }, c10: { p50Ms: 0.2, p99Ms: 0.3 }, c50: { p50Ms: 0.2, p99Ms: 0.3 }, c200: { p50Ms: 0.2, p99Ms: 0.3 } };
  return {
    latency, rps: 9000, firstChunkP50Ms: 1, firstChunkP99Ms: 2, firstChunkC1P50Ms: 1, errors: 0,
    added, addedFirstChunkP50Ms: 0.2, addedFirstChunkC1P50Ms: 0.2, ...o,
  };
}

const machine = { node: 'v20', cpus: 2, loadAverageStart: 0.1, loadAverageEnd: 0.2 };

test('bench egress text: a system\'s failed requests are said, the floor\'s as well as cordon\'s', () => {
  const r: EgressBenchResult = {
    direct: proxy(), cordon: { ...proxy({ errors: 2, lastError: 'cordon-side failure' }), auditEvents: 10 },
    tinyproxy: { missing: 'not installed', fix: 'apt-get install tinyproxy' }, squid: { failed: 'exited' },
    floor: proxy({ errors: 3, lastError: 'floor-side failure' }),
    goal: { fasterPeerOnEveryRow: true, minimum: true, misses: [], unmeasured: ['tinyproxy', 'squid'], floorMisses: [] },
    setup: { rounds: 1, requestsPerRow: 100, concurrency: 50, rpsSeconds: 2, downloadMiB: 10, ...machine },
  } as EgressBenchResult;
  const text = egressText(r);
  assert.match(text, /cordon: 2 failed requests \(last: cordon-side failure\)/);
  assert.match(text, /floor\): 3 failed requests \(last: floor-side failure\)/, 'the floor\'s figures rest on failed requests: the text says so');
});

test('bench gateway text: a system\'s failed requests are said, the floor\'s as well as cordon\'s', () => {
  const r: GatewayBenchResult = {
    direct: gateway(), cordon: { ...gateway({ errors: 1, lastError: 'cordon-side failure' }), auditEvents: 10 },
    portkey: { missing: 'not installed', fix: 'install it' }, floor: gateway({ errors: 4, lastError: 'floor-side failure' }),
    goal: { addedP50: true, firstChunk: true, rpsVsPortkey: undefined, met: false, misses: ['Portkey was not measured'], floorMisses: [] },
    setup: {
      rounds: 1, requestsPerRow: 100, rpsConcurrency: 50, rpsSeconds: 2, streamConcurrency: 10, auth: 'bench key', ...machine,
    },
  } as GatewayBenchResult;
  const text = gatewayText(r);
  assert.match(text, /cordon: 1 failed requests \(last: cordon-side failure\)/);
  assert.match(text, /floor\): 4 failed requests \(last: floor-side failure\)/, 'the floor\'s figures rest on failed requests: the text says so');
});

test('bench identity and secrets refuse counts that could only end in an out-of-memory crash, before anything runs', async () => {
  const cases: Array<[name: string, args: string[], option: string]> = [
    ['identity, 10 million tokens (about 5 KB each held at once)', ['identity', '--tokens', '10000000'], '--tokens'],
    ['identity, zero tokens', ['identity', '--tokens', '0'], '--tokens'],
    ['secrets, 10 million iterations', ['secrets', '--iterations', '10000000'], '--iterations'],
    ['secrets, a fraction', ['secrets', '--iterations', '2.5'], '--iterations'],
  ];
  for (const [name, args, option] of cases) {
    const program = new Command().exitOverride();
    registerBench(program);
    await assert.rejects(
      program.parseAsync(['node', 'cordon', 'bench', ...args]),
      (err: Error) => err instanceof InvalidInputError && err.message.startsWith(option) && /whole number from 1 to \d+/.test(err.fix ?? ''),
      name,
    );
  }
});
