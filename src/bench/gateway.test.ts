/**
 * Pure parts of `cordon bench gateway` (no timing, no servers): percentiles,
 * added-latency figures, the goal check, the table, and the Portkey cache's
 * package.json.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensurePortkey, HONO_NODE_SERVER_OVERRIDE, PeerUnavailable, PORTKEY_VERSION, portkeyPackageJson } from './gateway-portkey.js';
import { checkGoal, emptySamples, formatGatewayTable, gatewayFigures, quantile, systemFigures, type GatewaySamples, type PeerEntry } from './gateway-stats.js';

function samples(latencyMs: number, rps: number, firstChunkMs: number): GatewaySamples {
  const s = emptySamples();
  for (const c of [1, 10, 50, 200] as const) s.latencyMs[c] = Array.from({ length: 100 }, (_, i) => latencyMs + i / 100);
  s.rps = [rps - 10, rps, rps + 10];
  s.firstChunkMs = [firstChunkMs, firstChunkMs, firstChunkMs + 5];
  s.firstChunkC1Ms = [firstChunkMs / 2];
  return s;
}

test('quantile: nearest rank, unsorted input, empty is NaN', () => {
  const cases: Array<[string, number[], number, number]> = [
    ['median of odd count', [5, 1, 3], 0.5, 3],
    ['median of even count takes the lower', [4, 1, 3, 2], 0.5, 2],
    ['p99 of 100 values is the 99th', Array.from({ length: 100 }, (_, i) => 100 - i), 0.99, 99],
    ['p99 of 3 values is the largest', [1, 2, 3], 0.99, 3],
  ];
  for (const [name, values, q, want] of cases) assert.equal(quantile(values, q), want, name);
  assert.ok(Number.isNaN(quantile([], 0.5)));
});

test('gatewayFigures: added latency is the difference of p50 and p99 to direct, per concurrency', () => {
  const direct = systemFigures(samples(1, 40_000, 0.1));
  const g = gatewayFigures(samples(1.3, 9000, 0.6), direct, 'x 1');
  assert.equal(g.added.c10!.p50Ms, 0.3);
  assert.equal(g.added.c200!.p99Ms, 0.3);
  assert.equal(g.addedFirstChunkP50Ms, 0.5);
  assert.equal(g.addedFirstChunkC1P50Ms, 0.25);
  assert.equal(g.rps, 9000);
  assert.equal(g.version, 'x 1');
});

test('checkGoal: each part of the goal, by named case', () => {
  const direct = systemFigures(samples(1, 40_000, 0.1));
  const portkey = gatewayFigures(samples(3, 1000, 25), direct);
  const cases: Array<[string, GatewaySamples, PeerEntry, boolean, RegExp | undefined]> = [
    ['all met', samples(1.4, 6000, 0.9), portkey, true, undefined],
    ['added p50 too high', samples(1.6, 6000, 0.9), portkey, false, /added p50 at c1 is 0\.6 ms/],
    ['first chunk too late', samples(1.4, 6000, 1.2), portkey, false, /streaming adds 1\.1 ms/],
    ['requests/s below 5× Portkey', samples(1.4, 4990, 0.9), portkey, false, /requests\/s 4990 is 4\.99× Portkey's 1000/],
    ['Portkey missing cannot be met', samples(1.4, 6000, 0.9), { missing: 'no npm', fix: 'install npm' }, false, /Portkey was not measured/],
  ];
  for (const [name, s, peer, met, miss] of cases) {
    const goal = checkGoal(gatewayFigures(s, direct), peer);
    assert.equal(goal.met, met, name);
    if (miss) assert.match(goal.misses.join('\n'), miss, name);
    else assert.deepEqual(goal.misses, [], name);
  }
});

test('checkGoal with the floor: each latency miss says what the bare pass-through adds, and the goals it misses too are listed', () => {
  const direct = systemFigures(samples(1, 40_000, 0.1));
  const portkey = gatewayFigures(samples(3, 1000, 25), direct);
  const cordon = gatewayFigures(samples(1.9, 6000, 1.6), direct);
  const cases: Array<[string, GatewaySamples, number]> = [
    ['floor meets every goal: none listed', samples(1.2, 30_000, 0.4), 0],
    ['floor misses added p50 at every concurrency and the first event', samples(1.7, 20_000, 1.3), 5],
  ];
  for (const [name, floorSamples, floorMissCount] of cases) {
    const floor = gatewayFigures(floorSamples, direct);
    const goal = checkGoal(cordon, portkey, floor);
    assert.equal(goal.met, false, name);
    assert.match(goal.misses.join('\n'), /added p50 at c50 is 0\.9 ms \(goal ≤ 0\.5 ms; a bare Node\.js pass-through adds 0\.\d+ ms\)/, name);
    assert.equal(goal.floorMisses.length, floorMissCount, name);
  }
  const floorMissing = checkGoal(cordon, portkey, gatewayFigures(samples(1.7, 20_000, 1.3), direct));
  assert.match(floorMissing.floorMisses.join('\n'), /first streamed event: a bare Node\.js pass-through adds 1\.2 ms \(goal ≤ 1 ms\)/);
  assert.deepEqual(checkGoal(cordon, portkey).floorMisses, [], 'without the floor nothing is listed');
});

test('formatGatewayTable: one row per figure, a peer not measured says so', () => {
  const direct = systemFigures(samples(1, 40_000, 0.1));
  const cordon = gatewayFigures(samples(1.25, 9000, 0.3), direct);
  const table = formatGatewayTable(direct, [['cordon', cordon], ['Portkey', { failed: 'HTTP 500', fix: 'reinstall' }]], 50);
  const lines = table.split('\n');
  assert.equal(lines.length, 2 + 4 * 2 + 3);
  assert.match(table, /\| p50 ms, concurrency 10 \| 1\.49 \| 1\.74 \(\+0\.25\) \| not measured \|/);
  assert.match(table, /\| requests\/s, concurrency 50 \| 40000 \| 9000 \| not measured \|/);
});

test('portkeyPackageJson pins Portkey and overrides @hono/node-server', () => {
  const pkg = JSON.parse(portkeyPackageJson()) as { dependencies: Record<string, string>; overrides: Record<string, string> };
  assert.equal(pkg.dependencies['@portkey-ai/gateway'], PORTKEY_VERSION);
  assert.equal(pkg.overrides['@hono/node-server'], HONO_NODE_SERVER_OVERRIDE);
});

test('ensurePortkey without install: an empty folder is "missing", with the install command as the fix', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-portkey-test-'));
  try {
    assert.throws(() => ensurePortkey(dir, false, () => undefined), (err: unknown) => {
      assert.ok(err instanceof PeerUnavailable);
      assert.equal(err.kind, 'missing');
      assert.match(err.fix, /npm install @portkey-ai\/gateway@/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
