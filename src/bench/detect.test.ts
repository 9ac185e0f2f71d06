/**
 * The labelled trace generator is deterministic by seed, and the detection
 * benchmark reports coherent figures on a small run (the full run is
 * `cordon bench detect`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { benchDetect, tuneThresholds } from './detect.js';
import { ANOMALY_KINDS, createRng, generateTraces } from './detect-traces.js';

const digest = (x: unknown) => createHash('sha256').update(JSON.stringify(x)).digest('hex');
const small = { agentsPerKind: 1, learnSessions: 40, normalSessions: 30, anomalousPerKind: 8 };

test('traces are deterministic by seed and differ between seeds', () => {
  const a = generateTraces({ seed: 7, ...small });
  const b = generateTraces({ seed: 7, ...small });
  const c = generateTraces({ seed: 8, ...small });
  assert.equal(digest(a), digest(b));
  assert.notEqual(digest(a), digest(c));
  assert.equal(a.evaluate.filter((s) => s.anomaly).length, ANOMALY_KINDS.length * 8);
  for (const s of a.evaluate) {
    const times = s.events.map((e) => Date.parse(e.ts));
    assert.deepEqual(times, [...times].sort((x, y) => x - y), `${s.sandbox} is in time order`);
    if (s.anomaly) assert.ok(s.anomaly.atMs >= s.startMs && s.anomaly.atMs <= s.endMs, 'the injection lies inside its session');
  }
});

test('the PRNG is reproducible and roughly uniform', () => {
  const r1 = createRng(42);
  const r2 = createRng(42);
  const xs = Array.from({ length: 10_000 }, () => r1.next());
  assert.deepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => r2.next()));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
});

test('tuneThresholds keeps each feature above the normal sessions it may not flag', () => {
  const t = tuneThresholds([{ domain: 0.5, requests: 4 }, { domain: 2, requests: 10 }, { requests: 6 }], 0, { novelty: 1, rate: 3, volume: 3 });
  assert.equal(t.domain, 2.21);
  assert.equal(t.requests, 11.01);
});

test('benchDetect: figures are consistent on a small run with separate seeds', () => {
  const r = benchDetect({ trainSeed: 11, testSeed: 12, traces: small }).cordon;
  assert.equal(r.normalSessions, 30);
  assert.equal(r.anomalousSessions, ANOMALY_KINDS.length * 8);
  assert.equal(r.falsePositiveRate, Math.round((r.falsePositiveSessions / r.normalSessions) * 10000) / 10000);
  const detected = Object.values(r.perAnomaly).reduce((s, k) => s + k.detected, 0);
  assert.equal(r.recall, Math.round((detected / r.anomalousSessions) * 10000) / 10000);
  assert.ok(r.recall > 0.5, `recall ${r.recall}`);
  for (const k of ANOMALY_KINDS) assert.equal(r.perAnomaly[k].sessions, 8);
  assert.ok(r.trainSeeds.length === 6 && !r.trainSeeds.includes(r.testSeed), 'tuned on other seeds than the one reported');
  assert.throws(() => benchDetect({ trainSeed: 2, testSeed: 1002, traces: small }), /training seeds/);
  assert.ok(r.unjudged['unknown-type']! > 0, 'the traces carry event types the detector does not model');
});
