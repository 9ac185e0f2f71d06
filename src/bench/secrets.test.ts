/**
 * Smoke test of the secrets benchmark on a small run (the full run is
 * `cordon bench secrets`): the figures have the documented shape, and every
 * timed call did what its row claims, checked here against values this test
 * derives itself: a substituted request carried the real value and no
 * placeholder, a refused one was refused as exfiltration and left unchanged,
 * a clean body came out byte for byte, a leaking one was failed before the
 * value.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EXFILTRATION_REASON, PLACEHOLDER_PATTERN, valuePatterns } from '../secrets/index.js';
import {
  benchBody, benchBoundHost, benchSandboxSecrets, benchSecretName, benchSecretValue, benchSecrets, formatSecretsText,
  SECRETS_ROWS, UNBOUND_HOST, type SecretsCall, type SecretsRow,
} from './secrets.js';

test('benchSecrets: every row measured per secret count, every call what its row claims', async () => {
  const calls = new Map<string, SecretsCall[]>();
  const r = await benchSecrets({
    iterations: 12, warmup: 2, secretCounts: [1, 3],
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
  ] as const) {
    await assert.rejects(benchSecrets(opts), RangeError, name);
  }
});
