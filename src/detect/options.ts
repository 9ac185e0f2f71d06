/**
 * The detector's settings, validated with zod. Defaults were tuned on the
 * training seed of `cordon bench detect` (see BENCHMARKS.md), never on the
 * seed the figures are reported for.
 */
import { z } from 'zod';
import { InvalidInputError } from '../errors/index.js';
import { AMOUNT_FEATURES, CATEGORY_FEATURES } from './features.js';

/** Bytes out on one connection to a site first seen in this session, judged against the agent's bytes out per minute. */
export const UPLOAD_FEATURE = 'bytesOut.newSite';
const FEATURE_NAMES = [...CATEGORY_FEATURES, ...AMOUNT_FEATURES, UPLOAD_FEATURE] as [string, ...string[]];

/** What an alert asks the control plane to do with the sandbox. */
export const ALERT_ACTIONS = ['none', 'approve', 'pause'] as const;
export type AlertAction = (typeof ALERT_ACTIONS)[number];

const action = z.enum(ALERT_ACTIONS).describe('none: record and notify; approve: hold every further door action of the session for a human; pause: pause the sandbox until an operator resumes it');
const positive = z.number().finite().positive();

export const detectOptionsSchema = z
  .object({
    learnEvents: z.number().int().min(1).default(2000).describe('events after which an agent\'s baseline is learned'),
    learnMs: z.number().int().min(60_000).default(7 * 24 * 3600_000).describe('time after the first event after which the baseline is learned, whichever comes first'),
    mode: z.enum(['freeze', 'ewma']).default('freeze').describe('freeze: the learned profile never changes; ewma: it keeps following behaviour that raised no alert'),
    ewmaAlpha: z.number().gt(0).lt(1).default(0.02).describe('ewma: weight of each new minute / observation'),
    minMinutes: z.number().int().min(3).default(20).describe('active minutes a rate profile needs before rates are judged'),
    maxHistoryMinutes: z.number().int().min(10).default(20_000).describe('active minutes kept while learning'),
    thresholds: z
      .object({
        novelty: positive.default(1.1).describe('−log10 of the estimated chance that a session shows a new value of the feature (1.1 ≈ 8 %; reachable once ~20 recent learning sessions showed no new value)'),
        rate: positive.default(20).describe('robust z-score of requests per minute'),
        volume: positive.default(5).describe('robust z-score of log bytes out / log tokens per minute (the training seeds of `cordon bench detect` tuned 4.7–4.9)'),
        features: z
          .record(z.enum(FEATURE_NAMES), positive)
          .default({})
          .describe('per-feature overrides, e.g. { domain: 2, path: 1.5, tokens: 6 }; built in: domain 1.6 (a new site is scored together with how rarely the agent finds new sites under its suffix, so its scores run higher than other features), bytesOut.newSite 3'),
      })
      .strict()
      .default({})
      .describe('alert thresholds by detector kind, with per-feature overrides'),
    madFloor: z
      .object({
        requests: positive.default(1.5).describe('smallest MAD of requests per minute'),
        bytesOut: positive.default(0.35).describe('smallest MAD of log bytes out per minute'),
        tokens: positive.default(0.35).describe('smallest MAD of log model tokens per minute'),
      })
      .strict()
      .default({})
      .describe('smallest MAD used, so a very regular history does not make every wobble an alert'),
    noveltyFeatures: z
      .array(z.enum(CATEGORY_FEATURES))
      .default(['domain', 'suffix', 'port', 'tool', 'command', 'command.arg', 'path.area', 'path', 'sensitive', 'model'])
      .describe('features judged for novelty; host is left out by default: a new host under a known site (another mirror of a package index) is common and weak evidence, and a new site is caught as domain'),
    gapMs: z.number().int().min(1000).default(10 * 60_000).describe('a silence longer than this in a session is reported as a gap'),
    clockSkewMs: z.number().int().min(0).default(5000).describe('how far back a timestamp may go before it is reported'),
    webhook: z
      .object({
        url: z
          .string()
          .refine((v) => { try { return ['http:', 'https:'].includes(new URL(v).protocol); } catch { return false; } }, { message: 'must be an http:// or https:// URL, e.g. "https://hooks.example.com/cordon"' })
          .describe('URL that receives a JSON POST ({text, alert}) for each alert'),
        timeoutMs: z.number().int().min(100).max(60_000).default(5000).describe('per attempt'),
        retries: z.number().int().min(0).max(10).default(2).describe('attempts after a failed first one (backoff 500 ms, doubled)'),
        maxQueued: z.number().int().min(1).max(100_000).default(100).describe('alerts waiting to be sent; beyond it an alert is not sent and detect.notify-failed is recorded'),
      })
      .strict()
      .optional()
      .describe('notify this URL of every alert (Slack-compatible `text` field); delivery never holds up detection, a failed delivery is audited'),
    actions: z
      .object({ novelty: action.default('none'), rate: action.default('none'), volume: action.default('none') })
      .strict()
      .default({})
      .describe('what an alert of each kind does: none (recorded only), approve (hold every further action the policy allows for an operator, until lifted) or pause'),
  })
  .strict();

export type DetectOptionsInput = z.input<typeof detectOptionsSchema>;
export type DetectOptions = z.output<typeof detectOptionsSchema>;

/**
 * Validate detector settings.
 * @throws InvalidInputError naming the first bad field
 */
export function parseDetectOptions(input: unknown = {}): DetectOptions {
  const r = detectOptionsSchema.safeParse(input ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new InvalidInputError(`invalid detect settings: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`, {
    fix: 'see the detect options in the documentation (learnEvents, learnMs, mode, thresholds, actions)',
  });
}

/**
 * Built-in per-feature thresholds, used unless `thresholds.features` names the
 * feature (tuned on the training seeds of `cordon bench detect`).
 */
export const FEATURE_THRESHOLDS: Readonly<Record<string, number>> = { domain: 1.6, [UPLOAD_FEATURE]: 3 };

/** The threshold of one feature: its override, its built-in value, or its alert kind's. */
export function thresholdFor(o: DetectOptions, kind: 'novelty' | 'rate' | 'volume', feature: string): number {
  return o.thresholds.features[feature] ?? FEATURE_THRESHOLDS[feature] ?? o.thresholds[kind];
}
