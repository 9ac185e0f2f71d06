/**
 * `cordon bench detect`: quality of the anomaly detector on labelled traces.
 * Thresholds are tuned on the traces of a training seed (the smallest
 * threshold per alert kind that keeps that kind's false alarms on normal
 * sessions within its budget), then the detector runs with them on the
 * traces of a different test seed, and only the test figures are reported as
 * the result.
 */
import { InvalidInputError } from '../errors/index.js';
import { createDetector, FEATURE_THRESHOLDS, parseDetectOptions, type Alert, type AlertKind, type DetectOptionsInput } from '../detect/index.js';
import { ANOMALY_KINDS, generateTraces, type AnomalyKind, type TraceOptions, type TraceSession, type TraceSet } from './detect-traces.js';

export interface DetectBenchOptions {
  /** Seed whose traces tune the thresholds. @default 1 */
  trainSeed?: number;
  /** Seed whose traces are reported. @default 2 */
  testSeed?: number;
  /** Trace sizes (seed excluded). */
  traces?: Omit<TraceOptions, 'seed'>;
  /** Held-out normal sessions per training trace set that the thresholds are tuned on. @default 500 */
  tuneNormalSessions?: number;
  /**
   * Training trace sets (seeds trainSeed, trainSeed + 1000, …): each learns
   * its own baselines, so the thresholds cover how baselines differ, not
   * only how sessions do. @default 6
   */
  tuneSets?: number;
  /** Tune thresholds on the training seed; false uses the defaults. @default true */
  tune?: boolean;
  /** Share of normal training sessions each feature may flag. @default 0.002 */
  fprBudgetPerFeature?: number;
  /** Other detector settings. */
  options?: Omit<DetectOptionsInput, 'thresholds'>;
}

export interface KindFigures { sessions: number; detected: number; recall: number }

export interface DetectBenchResult {
  cordon: {
    trainSeed: number;
    /** Every seed the thresholds were tuned on (none of them is the test seed). */
    trainSeeds: number[];
    testSeed: number;
    /** Per kind (the floor) and per feature (tuned on the training seed). */
    thresholds: { novelty: number; rate: number; volume: number; features: Record<string, number> };
    normalSessions: number;
    anomalousSessions: number;
    falsePositiveSessions: number;
    /** Share of normal sessions with at least one alert. */
    falsePositiveRate: number;
    /** Share of anomalous sessions with an alert at or after the injection. */
    recall: number;
    /** Of the sessions flagged, the share flagged for the injected anomaly. */
    precision: number;
    /** Of all alerts, the share raised at or after an injection in its session. */
    alertPrecision: number;
    alerts: number;
    perAnomaly: Record<AnomalyKind, KindFigures>;
    /** Which alert kind caught each anomaly kind (first alert after the injection). */
    caughtBy: Record<AnomalyKind, Partial<Record<AlertKind, number>>>;
    /** Normal sessions flagged, by `kind:feature` of their alerts. */
    falsePositivesByFeature: Record<string, number>;
    /** Per agent kind: false positives among its normal sessions, detections among its anomalous ones. */
    perAgentKind: Record<string, { normal: number; falsePositives: number; anomalous: number; detected: number; missed: Record<string, number> }>;
    events: number;
    eventsPerSec: number;
    unjudged: Record<string, number>;
  };
}

/** Highest score per feature (`domain`, `path`, `requests`, `bytesOut`, …) in a session. */
type MaxScores = Record<string, number>;
const KIND_OF: Record<string, AlertKind> = { requests: 'rate', bytesOut: 'volume', tokens: 'volume', 'bytesOut.newSite': 'volume' };

/** Feed the learning sessions, freeze every agent, then the evaluation sessions. */
function run(set: TraceSet, options: DetectOptionsInput, onSession: (s: TraceSession, alerts: Alert[], scores: { before: MaxScores; after: MaxScores }) => void) {
  let current: TraceSession | undefined;
  let scores = { before: zero(), after: zero() };
  const detector = createDetector({
    options,
    onScore(sc) {
      if (!current || sc.sandbox !== current.sandbox) return;
      const afterInjection = current.anomaly !== undefined && Date.parse(sc.ts) >= current.anomaly.atMs;
      const m = afterInjection ? scores.after : scores.before;
      m[sc.feature] = Math.max(m[sc.feature] ?? -Infinity, sc.score);
    },
  });
  let events = 0;
  for (const s of set.learn) for (const e of s.events) { detector.observe(e); events++; }
  const lastLearnTs = new Date(set.learn.at(-1)?.endMs ?? 0).toISOString();
  for (const a of set.agents) detector.freeze(a.name, lastLearnTs);
  const started = performance.now();
  let judged = 0;
  for (const s of set.evaluate) {
    current = s;
    scores = { before: zero(), after: zero() };
    const alerts: Alert[] = [];
    for (const e of s.events) { alerts.push(...detector.observe(e)); judged++; }
    onSession(s, alerts, scores);
  }
  const seconds = (performance.now() - started) / 1000;
  return { events: events + judged, eventsPerSec: judged / Math.max(seconds, 1e-9), stats: detector.stats() };
}

function zero(): MaxScores {
  return {};
}

/**
 * Per feature, the smallest threshold that keeps the share of normal
 * sessions it flags within the budget, with a margin of 10 % over the
 * highest normal score it must clear, and never below the floor of its kind.
 */
export function tuneThresholds(normalMax: readonly MaxScores[], budget: number, floor: Record<AlertKind, number>): Record<string, number> {
  const out: Record<string, number> = {};
  const features = new Set(normalMax.flatMap((m) => Object.keys(m)));
  const allowed = Math.floor(budget * normalMax.length);
  for (const f of features) {
    const xs = normalMax.map((m) => m[f] ?? -Infinity).filter(Number.isFinite).sort((a, b) => b - a);
    const edge = xs[allowed];
    const min = floor[KIND_OF[f] ?? 'novelty'];
    out[f] = edge === undefined ? min : Math.max(min, Math.round(edge * 110 + 1) / 100);
  }
  return out;
}

export function benchDetect(o: DetectBenchOptions = {}): DetectBenchResult {
  const trainSeed = o.trainSeed ?? 1;
  const testSeed = o.testSeed ?? 2;
  const base: DetectOptionsInput = { ...(o.options ?? {}), learnEvents: 1e12, learnMs: 1e15 };
  const trainSeeds = Array.from({ length: o.tuneSets ?? 6 }, (_, i) => trainSeed + i * 1000);
  if (trainSeeds.includes(testSeed)) {
    throw new InvalidInputError(`test seed ${testSeed} is one of the training seeds (${trainSeeds.join(', ')})`, { fix: 'report on a seed the thresholds were not tuned on, e.g. --train-seed 1 --seed 2' });
  }
  const floor = { novelty: 1, rate: 3, volume: 3 };
  // Untuned: the detector's own defaults (options.ts); tuning starts from them too.
  const defaults = parseDetectOptions({}).thresholds;
  let thresholds = { novelty: defaults.novelty, rate: defaults.rate, volume: defaults.volume, features: { ...FEATURE_THRESHOLDS, ...defaults.features } as Record<string, number> };
  if (o.tune ?? true) {
    const normalMax: MaxScores[] = [];
    for (const seed of trainSeeds) {
      const tuning = generateTraces({ ...o.traces, normalSessions: o.tuneNormalSessions ?? 500, anomalousPerKind: 0, seed });
      run(tuning, { ...base, thresholds }, (_s, _alerts, sc) => {
        normalMax.push(sc.before);
      });
    }
    thresholds = { ...floor, features: tuneThresholds(normalMax, o.fprBudgetPerFeature ?? 0.002, floor) };
  }
  const set = generateTraces({ ...o.traces, seed: testSeed });
  const perAnomaly = Object.fromEntries(ANOMALY_KINDS.map((k) => [k, { sessions: 0, detected: 0, recall: 0 }])) as Record<AnomalyKind, KindFigures>;
  const caughtBy = Object.fromEntries(ANOMALY_KINDS.map((k) => [k, {}])) as Record<AnomalyKind, Partial<Record<AlertKind, number>>>;
  const fpByKind: Record<string, number> = {};
  const perAgentKind: DetectBenchResult['cordon']['perAgentKind'] = {};
  let normal = 0, fpSessions = 0, anomalous = 0, detected = 0, falselyFlaggedAnomalous = 0, alertsTotal = 0, trueAlerts = 0;
  const r = run(set, { ...base, thresholds }, (s, alerts) => {
    alertsTotal += alerts.length;
    const ak = (perAgentKind[s.kind] ??= { normal: 0, falsePositives: 0, anomalous: 0, detected: 0, missed: {} });
    if (!s.anomaly) ak.normal++; else ak.anomalous++;
    if (!s.anomaly && alerts.length > 0) ak.falsePositives++;
    if (s.anomaly) {
      if (alerts.some((a) => Date.parse(a.ts) >= s.anomaly!.atMs)) ak.detected++;
      else {
        const what = s.anomaly.detail.includes('tokens') ? 'volume-tokens' : s.anomaly.kind === 'volume-spike' ? 'volume-bytes' : s.anomaly.kind;
        ak.missed[what] = (ak.missed[what] ?? 0) + 1;
      }
    }
    if (!s.anomaly) {
      normal++;
      if (alerts.length > 0) {
        fpSessions++;
        for (const k of new Set(alerts.map((a) => `${a.kind}:${a.feature}`))) fpByKind[k] = (fpByKind[k] ?? 0) + 1;
      }
      return;
    }
    anomalous++;
    const at = s.anomaly.atMs;
    const after = alerts.filter((a) => Date.parse(a.ts) >= at);
    trueAlerts += after.length;
    const k = perAnomaly[s.anomaly.kind];
    k.sessions++;
    if (after.length > 0) {
      detected++;
      k.detected++;
      const by = caughtBy[s.anomaly.kind];
      by[after[0]!.kind] = (by[after[0]!.kind] ?? 0) + 1;
    } else if (alerts.length > 0) falselyFlaggedAnomalous++;
  });
  for (const k of ANOMALY_KINDS) perAnomaly[k].recall = ratio(perAnomaly[k].detected, perAnomaly[k].sessions);
  return {
    cordon: {
      trainSeed, trainSeeds: o.tune ?? true ? trainSeeds : [], testSeed, thresholds,
      normalSessions: normal, anomalousSessions: anomalous, falsePositiveSessions: fpSessions,
      falsePositiveRate: ratio(fpSessions, normal),
      recall: ratio(detected, anomalous),
      precision: ratio(detected, detected + fpSessions + falselyFlaggedAnomalous),
      alertPrecision: ratio(trueAlerts, alertsTotal),
      alerts: alertsTotal, perAnomaly, caughtBy, falsePositivesByFeature: fpByKind, perAgentKind,
      events: r.events, eventsPerSec: Math.round(r.eventsPerSec),
      unjudged: r.stats.unjudged as Record<string, number>,
    },
  };
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : Math.round((a / b) * 10000) / 10000;
}

const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

/** The human-readable report: goal check, per anomaly and per agent kind, thresholds, seeds. */
export function formatDetectText(r: DetectBenchResult): string {
  const c = r.cordon;
  const lines = [
    `detection on seed ${c.testSeed} (thresholds tuned on seeds ${c.trainSeeds.join(', ') || '- (defaults)'}): ${c.normalSessions} normal and ${c.anomalousSessions} anomalous sessions`,
    `  false positives: ${c.falsePositiveSessions} of ${c.normalSessions} normal sessions = ${pct(c.falsePositiveRate)}  (goal ≤ 1 %: ${c.falsePositiveRate <= 0.01 ? 'met' : 'not met'})`,
    `  recall:          ${pct(c.recall)}  (goal ≥ 95 %: ${c.recall >= 0.95 ? 'met' : 'not met'})`,
    `  precision:       ${pct(c.precision)} of flagged sessions, ${pct(c.alertPrecision)} of ${c.alerts} alerts`,
    '',
    'anomaly          sessions  detected  recall   caught by',
    ...ANOMALY_KINDS.map((k) => {
      const a = c.perAnomaly[k];
      const by = Object.entries(c.caughtBy[k]).map(([kind, n]) => `${kind} ${n}`).join(', ');
      return `${k.padEnd(16)} ${String(a.sessions).padStart(8)}  ${String(a.detected).padStart(8)}  ${pct(a.recall).padStart(7)}  ${by}`;
    }),
    '',
    'agent kind   normal  false pos.  anomalous  detected  missed',
    ...Object.entries(c.perAgentKind).map(([k, a]) =>
      `${k.padEnd(12)} ${String(a.normal).padStart(6)}  ${String(a.falsePositives).padStart(10)}  ${String(a.anomalous).padStart(9)}  ${String(a.detected).padStart(8)}  ${Object.entries(a.missed).map(([m, n]) => `${m} ${n}`).join(', ') || '-'}`),
    '',
    `thresholds: ${Object.entries(c.thresholds.features).map(([f, t]) => `${f} ${t}`).join(', ')} (others: novelty ${c.thresholds.novelty}, rate ${c.thresholds.rate}, volume ${c.thresholds.volume})`,
    `${c.events} events, ${c.eventsPerSec.toLocaleString('en')} events/s judged; not judged: ${Object.entries(c.unjudged).map(([k, n]) => `${k} ${n}`).join(', ')}`,
    '',
  ];
  return lines.join('\n');
}
