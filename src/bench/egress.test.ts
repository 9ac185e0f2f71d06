/**
 * `cordon bench egress` without its timings: the statistics and the goal
 * check, the peers' generated configs, finding a peer (and the error naming
 * the install command when it is missing), and one tiny real run in which the
 * peers are missing or broken and must be reported so, not left out.
 * (The figures themselves come from running it: `cordon bench egress`.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CordonError } from '../errors/index.js';
import { benchEgress } from './egress.js';
import { PEER_INSTALL, cpuUsFromProcStat, findPeer, squidConfig, tinyproxyConfig } from './egress-peers.js';
import { checkGoal, directFigures, formatTable, percentile, proxyFigures, type ProxyFigures, type SystemSamples } from './egress-stats.js';

const samples = (o: Partial<SystemSamples>): SystemSamples => ({ tunnelMs: [], keepAliveMs: [], rpsRounds: [], downloadMBpsRounds: [], errors: 0, ...o });

const percentileCases: Array<{ name: string; values: number[]; p: number; want: number }> = [
  { name: 'median of an odd count is the middle value', values: [3, 1, 2], p: 0.5, want: 2 },
  { name: 'median of an even count is the upper middle (nearest rank)', values: [4, 1, 3, 2], p: 0.5, want: 3 },
  { name: 'p99 of 100 values is the largest', values: Array.from({ length: 100 }, (_, i) => 100 - i), p: 0.99, want: 100 },
  { name: 'p99 of 1000 values is the 991st smallest', values: Array.from({ length: 1000 }, (_, i) => i + 1), p: 0.99, want: 991 },
  { name: 'one value is every percentile', values: [7], p: 0.99, want: 7 },
];
for (const c of percentileCases) {
  test(`percentile: ${c.name}`, () => assert.equal(percentile(c.values, c.p), c.want));
}
test('percentile of nothing is NaN, and the input is not reordered', () => {
  assert.ok(Number.isNaN(percentile([], 0.5)));
  const v = [3, 1, 2];
  percentile(v, 0.5);
  assert.deepEqual(v, [3, 1, 2]);
});

test('proxy figures: added latency is proxy percentile minus direct percentile; ratios are against direct', () => {
  const direct = directFigures(samples({ tunnelMs: [2, 2, 2, 10], keepAliveMs: [0.1, 0.1, 0.1, 1], rpsRounds: [10_000, 20_000, 30_000], downloadMBpsRounds: [500, 800, 900] }));
  assert.deepEqual(
    [direct.tunnelP50Ms, direct.tunnelP99Ms, direct.rps, direct.rpsMin, direct.rpsMax, direct.downloadMBps, direct.requests],
    [2, 10, 20_000, 10_000, 30_000, 800, 8],
  );
  const f = proxyFigures(samples({
    tunnelMs: [2.5, 2.5, 2.5, 12], keepAliveMs: [0.15, 0.15, 0.15, 3], rpsRounds: [15_000], downloadMBpsRounds: [400],
    tunnelCpuUs: 30_000, tunnels: 100, rpsCpuUs: 45_000, rpsRequests: 3000, errors: 2, lastError: 'reset',
  }), direct, 'squid 5.7');
  assert.deepEqual(
    [f.addedTunnelP50Ms, f.addedTunnelP99Ms, f.addedKeepAliveP50Ms, f.addedKeepAliveP99Ms, f.rpsOfDirect, f.downloadOfDirect],
    [0.5, 2, 0.05, 2, 0.75, 0.5],
  );
  assert.deepEqual([f.cpuUsPerTunnel, f.cpuUsPerRequest, f.errors, f.lastError, f.version], [300, 15, 2, 'reset', 'squid 5.7']);
});

function figures(o: Partial<ProxyFigures>): ProxyFigures {
  return {
    addedTunnelP50Ms: 0.3, addedTunnelP99Ms: 3, addedKeepAliveP50Ms: 0.03, addedKeepAliveP99Ms: 0.1,
    tunnelP50Ms: 2.3, tunnelP99Ms: 7, keepAliveP50Ms: 0.06, keepAliveP99Ms: 0.2, rps: 25_000, rpsMin: 24_000, rpsMax: 26_000,
    downloadMBps: 700, requests: 4000, errors: 0, rpsOfDirect: 0.5, downloadOfDirect: 0.9, ...o,
  };
}

const goalCases: Array<{ name: string; cordon: Partial<ProxyFigures>; squid?: Partial<ProxyFigures>; tinyMissing?: boolean; faster: boolean; minimum: boolean; misses: RegExp[] }> = [
  { name: 'ahead on every row', cordon: { addedTunnelP50Ms: 0.2, addedTunnelP99Ms: 2, addedKeepAliveP50Ms: 0.02, addedKeepAliveP99Ms: 0.05, rps: 30_000, downloadMBps: 900 }, faster: true, minimum: true, misses: [] },
  { name: 'equal on every row counts as met', cordon: {}, faster: true, minimum: true, misses: [] },
  { name: 'a latency within 0.01 ms is a tie', cordon: { addedKeepAliveP50Ms: 0.039 }, faster: true, minimum: true, misses: [] },
  { name: 'slower new tunnels but under 1 ms: minimum still met', cordon: { addedTunnelP50Ms: 0.9 }, faster: false, minimum: true, misses: [/new tunnel per request: cordon 0.9 ms, tinyproxy 0.3 ms/, /cordon 0.9 ms, squid 0.3 ms/] },
  { name: 'over 1 ms added fails the minimum', cordon: { addedTunnelP50Ms: 1.2 }, faster: false, minimum: false, misses: [/tinyproxy/, /squid/] },
  { name: 'fewer requests/s than one peer fails the minimum', cordon: { rps: 24_000 }, squid: { rps: 20_000 }, faster: false, minimum: false, misses: [/requests\/s: cordon 24000 req\/s, tinyproxy 25000/] },
  { name: 'a missing peer is left out of the comparison and listed', cordon: { rps: 24_000 }, squid: { rps: 20_000 }, tinyMissing: true, faster: true, minimum: true, misses: [] },
];
for (const c of goalCases) {
  test(`goal check: ${c.name}`, () => {
    const g = checkGoal(figures(c.cordon), {
      tinyproxy: c.tinyMissing ? { missing: 'tinyproxy is not installed', fix: PEER_INSTALL } : figures({}),
      squid: figures(c.squid ?? {}),
    });
    assert.equal(g.fasterPeerOnEveryRow, c.faster, g.misses.join('; '));
    assert.equal(g.minimum, c.minimum);
    assert.equal(g.misses.length, c.misses.length, g.misses.join('; '));
    c.misses.forEach((re, i) => assert.match(g.misses[i]!, re));
    assert.deepEqual(g.unmeasured, c.tinyMissing ? ['tinyproxy'] : []);
  });
}

const floorCases: Array<{ name: string; floor?: Partial<ProxyFigures>; want: RegExp[] }> = [
  { name: 'no floor measured: nothing listed', want: [] },
  { name: 'a floor as fast as the peers: nothing listed', floor: { rps: 26_000 }, want: [] },
  { name: 'a floor behind squid on requests/s is listed with both figures', floor: { rps: 24_000 }, want: [/requests\/s: the bare Node\.js proxy 24000 req\/s, tinyproxy 25000/, /squid 25000/] },
  { name: 'a floor over 1 ms per new tunnel is listed', floor: { addedTunnelP50Ms: 1.3, rps: 30_000 }, want: [/new tunnel: the bare Node\.js proxy adds 1\.3 ms/] },
];
for (const c of floorCases) {
  test(`goal check, floor: ${c.name}`, () => {
    const g = checkGoal(figures({ rps: 20_000 }), { tinyproxy: figures({}), squid: figures({}) }, c.floor ? figures(c.floor) : undefined);
    assert.equal(g.minimum, false, 'cordon behind both peers on requests/s');
    assert.equal(g.floorMisses.length, c.want.length, g.floorMisses.join('; '));
    c.want.forEach((re, i) => assert.match(g.floorMisses[i]!, re));
  });
}

test('the table has a column per system and says which peer is not installed or failed', () => {
  const direct = directFigures(samples({ tunnelMs: [2], keepAliveMs: [0.05], rpsRounds: [40_000], downloadMBpsRounds: [1000] }));
  const text = formatTable(direct, [['cordon', figures({ cpuUsPerTunnel: 900 })], ['tinyproxy', { missing: 'x', fix: PEER_INSTALL }], ['squid', { failed: 'exited' }]], { concurrency: 50, downloadMiB: 100 });
  const lines = text.split('\n');
  assert.equal(lines[0], '| figure | direct | cordon | tinyproxy | squid |');
  assert.match(text, /\| HTTPS GET, new tunnel per request, p50 \| 2\.00 ms \| 2\.30 ms \(\+0\.30\) \| not installed \| failed \|/);
  assert.match(text, /\| keep-alive, 50 concurrent, req\/s \| 40,000 \| 25,000 \(0\.50×\) \|/);
  assert.match(text, /\| 100 MiB download, MB\/s \|/);
  assert.match(text, /\| proxy CPU per new tunnel \| — \| 900 µs \|/);
});

test('peer configs: loopback only, CONNECT to the upstream port only, no cache, own files', () => {
  const t = tinyproxyConfig({ port: 18001, upstreamPort: 18443, dir: '/run/x' });
  for (const line of ['Port 18001', 'Listen 127.0.0.1', 'Allow 127.0.0.1', 'ConnectPort 18443']) assert.ok(t.split('\n').includes(line), `tinyproxy: ${line}`);
  assert.equal(t.match(/^ConnectPort /gm)?.length, 1, 'one ConnectPort: nothing else can be tunnelled to');

  const s = squidConfig({ port: 18002, upstreamPort: 18443, dir: '/run/x/squid' }).split('\n');
  for (const line of ['http_port 127.0.0.1:18002', 'acl bench_port port 18443', 'http_access allow CONNECT bench_src bench_dst bench_port',
    'http_access deny all', 'cache deny all', 'access_log none', 'cache_log /run/x/squid/cache.log', 'pid_filename /run/x/squid/squid.pid']) {
    assert.ok(s.includes(line), `squid: ${line}`);
  }
  assert.equal(s.filter((l) => l.startsWith('http_access allow')).length, 1);
  assert.ok(s.indexOf('http_access deny all') > s.indexOf('http_access allow CONNECT bench_src bench_dst bench_port'), 'deny all comes last');
  assert.ok(!s.some((l) => l.startsWith('cache_effective_user')), 'no user switch unless asked');
  assert.ok(squidConfig({ port: 1, upstreamPort: 2, dir: '/d', effectiveUser: 'proxy' }).includes('\ncache_effective_user proxy\n'));
});

test('findPeer: the first executable on the search path; a missing peer is an error naming the install command', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-peers-'));
  try {
    const notExecutable = join(dir, 'a');
    const executable = join(dir, 'b');
    mkdirSync(notExecutable);
    mkdirSync(executable);
    writeFileSync(join(notExecutable, 'squid'), '#!/bin/sh\n', { mode: 0o644 });
    writeFileSync(join(executable, 'squid'), '#!/bin/sh\n');
    chmodSync(join(executable, 'squid'), 0o755);
    assert.equal(findPeer('squid', [notExecutable, executable]), join(executable, 'squid'));

    assert.throws(() => findPeer('tinyproxy', [dir]), (err: unknown) => {
      assert.ok(err instanceof CordonError);
      assert.equal(err.code, 'env-peer-missing');
      assert.equal(err.fix, 'apt-get install -y tinyproxy squid');
      assert.match(err.message, /tinyproxy is not installed/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const statCases: Array<{ name: string; stat: string; want: number | undefined }> = [
  { name: 'a plain command name', stat: '4242 (squid) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 25 0 0 20 0 1 0 100 0 0', want: 1_750_000 },
  { name: 'a command name with spaces and parentheses', stat: '7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 0 0', want: 70_000 },
  { name: 'a truncated line', stat: '7 (x) R 1 7', want: undefined },
];
for (const c of statCases) {
  test(`cpuUsFromProcStat: ${c.name}`, () => assert.equal(cpuUsFromProcStat(c.stat), c.want));
}

test('a tiny real run: cordon and direct are measured; a missing peer and a broken peer are reported as such', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-egress-test-'));
  try {
    // A "tinyproxy" that dies at start; no squid at all on this search path.
    writeFileSync(join(dir, 'tinyproxy'), '#!/bin/sh\necho "config broken" >&2\nexit 3\n');
    chmodSync(join(dir, 'tinyproxy'), 0o755);
    const r = await benchEgress({ rounds: 1, requests: 20, downloadMiB: 1, concurrency: 4, rpsSeconds: 0.2, peerSearchPath: [dir] });
    assert.ok('missing' in r.squid, JSON.stringify(r.squid));
    assert.match(r.squid.missing, /^squid is not installed/);
    assert.equal(r.squid.fix, 'apt-get install -y tinyproxy squid');
    assert.ok('failed' in r.tinyproxy, JSON.stringify(r.tinyproxy));
    assert.match((r.tinyproxy as { failed: string }).failed, /tinyproxy did not start: tinyproxy exited \(code 3\): .*config broken/);
    assert.deepEqual(r.goal.unmeasured, ['tinyproxy', 'squid']);
    assert.equal(r.cordon.errors, 0, r.cordon.lastError);
    assert.equal(r.direct.errors, 0, r.direct.lastError);
    assert.ok(r.cordon.requests >= 40 && r.direct.requests >= 40, 'every latency request of both was timed');
    assert.ok(r.cordon.rps > 0 && r.cordon.downloadMBps > 0 && r.direct.rps > 0);
    // Every tunnel through cordon was audited: its request and its close, warm-ups included.
    assert.ok(r.cordon.auditEvents >= 2 * 20, `audit events ${r.cordon.auditEvents}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
