/**
 * Smoke test of the secrets benchmark on a small run (the full run is
 * `cordon bench secrets`): the figures have the documented shape, and every
 * timed call did what its row claims, checked here against values this test
 * derives itself: a substituted request carried the real value and no
 * placeholder, a refused one was refused as exfiltration and left unchanged,
 * a clean body came out byte for byte, a leaking one was failed before the
 * value. The memory of one sandbox's secret state is there, in the JSON and
 * the text, and grows with the secrets (no timing is asserted).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runInNewContext } from 'node:vm';
import { EXFILTRATION_REASON, PLACEHOLDER_PATTERN, valuePatterns } from '../secrets/index.js';
import {
  benchBody, benchBoundHost, benchSandboxSecrets, benchSecretName, benchSecretValue, benchSecrets, formatSecretsText, fullGc,
  SECRETS_ROWS, UNBOUND_HOST, type SecretsCall, type SecretsRow,
} from './secrets.js';

test('benchSecrets: every row measured per secret count, every call what its row claims', async () => {
  const calls = new Map<string, SecretsCall[]>();
  const r = await benchSecrets({
    iterations: 12, warmup: 2, secretCounts: [1, 3], memorySecretCounts: [1], memorySandboxes: 1,
    observe: (count, row, call) => {
      const key = `${count}:${row}`;
      calls.set(key, [...(calls.get(key) ?? []), call]);
    },
  });

  assert.deepEqual(Object.keys(r.cordon), ['secrets1', 'secrets3']);
  for (const [count, key] of [[1, 'secrets1'], [3, 'secrets3']] as const) {
    const f = r.cordon[key]!;
    const expected = Array.from({ length: count }, (_, j) => valuePatterns(Buffer.from(benchSecretValue(j))).length).reduce((a, b) => a + b, 0);
    assert.ok(expected >= 6 * count);
    assert.equal(f.valuePatterns, expected, `${key}: the scanner's patterns for the sandbox's values`);
    for (const row of SECRETS_ROWS) {
      assert.equal(f[row].ops, 12, `${key} ${row}`);
      assert.ok(f[row].p50Us > 0 && f[row].p50Us <= f[row].p99Us && f[row].cpuUsPerOp > 0, `${key} ${row}: ${JSON.stringify(f[row])}`);
      assert.equal(calls.get(`${count}:${row}`)?.length, 12, `${key} ${row}: every timed call observed`);
    }
  }

  const seen = (count: number, row: SecretsRow): SecretsCall[] => calls.get(`${count}:${row}`)!;
  for (const count of [1, 3]) {
    for (const c of seen(count, 'substitute')) {
      const j = Number(c.secret!.slice('token_'.length));
      assert.equal(c.host, benchBoundHost(j));
      assert.equal(c.headers.authorization, `Bearer ${benchSecretValue(j)}`, 'the real value went to its bound host');
      assert.doesNotMatch(JSON.stringify(c.headers), PLACEHOLDER_PATTERN);
      assert.equal(c.result.deny, undefined);
    }
    assert.deepEqual(new Set(seen(count, 'substitute').map((c) => c.secret)), new Set(Array.from({ length: count }, (_, j) => benchSecretName(j))), 'every secret was swapped');
    for (const c of seen(count, 'refuseUnboundHost')) {
      assert.equal(c.host, UNBOUND_HOST);
      assert.equal(c.result.deny?.reason, EXFILTRATION_REASON);
      assert.match(String(c.headers.authorization), PLACEHOLDER_PATTERN, 'nothing was swapped into a refused request');
      assert.ok(!JSON.stringify(c.headers).includes(benchSecretValue(Number(c.secret!.slice(6)))));
      assert.deepEqual(c.findings.map((f) => [f.kind, f.secret]), [['placeholder-wrong-host', c.secret]]);
    }
    for (const c of seen(count, 'clean')) {
      assert.equal(c.result.deny, undefined);
      assert.deepEqual(c.findings, []);
      assert.equal(c.headers.authorization, undefined);
    }
    for (const [row, bytes] of [['body1KiB', 1024], ['body64KiB', 65536]] as const) {
      for (const c of seen(count, row)) {
        assert.equal(c.body?.error, undefined, row);
        assert.ok(c.body!.forwarded.equals(benchBody(bytes)), `${row}: passed on byte for byte`);
      }
    }
    for (const c of seen(count, 'bodyLeak64KiB')) {
      const leak = Buffer.from(benchSecretValue(Number(c.secret!.slice(6)))).toString('base64');
      assert.equal(c.body?.error?.reason, EXFILTRATION_REASON);
      assert.ok(!c.body!.forwarded.includes(leak), 'the value did not leave');
      assert.ok(c.body!.forwarded.length < 65536 - 200, `passed on ${c.body!.forwarded.length} bytes before the value`);
      assert.deepEqual(c.findings.map((f) => [f.kind, f.where, f.secret, f.encoding]), [['secret-value', 'body', c.secret, 'base64']]);
    }
  }

  const text = formatSecretsText(r);
  assert.match(text, /3 secrets bound/);
  assert.match(text, /placeholder → unbound host \(refused\)/);
  assert.match(text, /peers: none/);
});

test("benchSecrets: one sandbox's secret state weighed after GC, present in JSON and text, heavier with more secrets", async () => {
  const r = await benchSecrets({ iterations: 1, warmup: 0, secretCounts: [1], memorySecretCounts: [1, 100], memorySandboxes: 3 });
  const json = JSON.parse(JSON.stringify(r)) as typeof r;
  assert.deepEqual(Object.keys(json.stateMemory), ['secrets1', 'secrets100']);
  assert.deepEqual([json.setup.memorySecretCounts, json.setup.memorySandboxes], [[1, 100], 3]);
  const one = json.stateMemory.secrets1!;
  const hundred = json.stateMemory.secrets100!;
  assert.ok(Number.isFinite(one.stateMiB) && one.stateMiB > 0, `1 secret: ${one.stateMiB} MiB`);
  assert.ok(hundred.stateMiB > one.stateMiB, `100 secrets (${hundred.stateMiB} MiB) weigh more than 1 (${one.stateMiB} MiB)`);
  const patternBytes = Array.from({ length: 100 }, (_, j) => valuePatterns(Buffer.from(benchSecretValue(j))))
    .flat().reduce((n, p) => n + p.bytes.length, 0);
  assert.equal(hundred.valuePatterns, Array.from({ length: 100 }, (_, j) => valuePatterns(Buffer.from(benchSecretValue(j))).length).reduce((a, b) => a + b, 0));
  assert.ok(hundred.stateMiB * 1024 * 1024 >= patternBytes, `a kept state holds at least its own ${patternBytes} pattern bytes (${hundred.stateMiB} MiB)`);
  const text = formatSecretsText(r);
  assert.match(text, /memory of one sandbox's secret state, MiB/);
  assert.ok(text.includes(hundred.stateMiB.toFixed(2)), 'the 100-secret figure is printed');
  assert.match(text, /100 secrets/);
});

test('fullGc: a collector without --expose-gc, shown to free a dropped buffer as soon as it returns, every time', () => {
  const startedWithFlag = typeof (globalThis as { gc?: unknown }).gc === 'function';
  const gc = fullGc();
  assert.equal(typeof gc, 'function');
  if (!startedWithFlag) assert.equal(runInNewContext('typeof gc'), 'undefined', 'the flag was turned off again: later contexts get no gc');
  // Dead array buffers are released on a background thread after a collection; one collection alone left
  // the 16 MiB counted in about one round of five here. 40 rounds: a call that does not settle them fails.
  for (let round = 0; round < 40; round++) {
    const before = process.memoryUsage().arrayBuffers;
    ((): void => void Buffer.alloc(16 * 1024 * 1024, 1).length)();
    gc();
    const after = process.memoryUsage().arrayBuffers;
    assert.ok(after < before + 8 * 1024 * 1024, `round ${round}: the 16 MiB buffer is freed and counted so (${after - before} bytes more than before)`);
  }
});

test('bench inputs: fixed values and bodies; a fresh sandbox gets fresh placeholders', () => {
  assert.equal(benchSecretValue(7), benchSecretValue(7));
  assert.notEqual(benchSecretValue(7), benchSecretValue(8));
  assert.ok(benchBody(65536).equals(benchBody(65536)));
  assert.equal(benchBody(1024).length, 1024);
  assert.ok(!benchBody(65536).includes('%'), 'no percent sign: one search pass, as the setup says');
  const a = benchSandboxSecrets(2);
  const b = benchSandboxSecrets(2);
  assert.notEqual(a.placeholderOf('token_0'), b.placeholderOf('token_0'));
  assert.equal(a.isBound('token_1', { host: benchBoundHost(1), port: 443 }), true);
  assert.equal(a.isBound('token_1', { host: UNBOUND_HOST, port: 443 }), false);
});

test('benchSecrets refuses bad sizes', async () => {
  for (const [name, opts] of [
    ['no iterations', { iterations: 0 }],
    ['no secret counts', { secretCounts: [] }],
    ['a secret count of zero', { secretCounts: [0] }],
    ['no memory secret counts', { memorySecretCounts: [] }],
    ['a memory secret count above 500', { memorySecretCounts: [501] }],
    ['no sandboxes to weigh', { memorySandboxes: 0 }],
  ] as const) {
    await assert.rejects(benchSecrets(opts), RangeError, name);
  }
});
