/**
 * An agent's baseline: how often each value of each categorical feature was
 * seen, and the per-minute totals of its active minutes (minutes with at
 * least one such event), summarised on learning into a robust profile
 * (median and MAD) per amount. Plain JSON, so it can be stored and shown.
 */
import { AMOUNT_FEATURES, CATEGORY_FEATURES, type AmountFeature, type CategoryFeature } from './features.js';

export interface RateProfile {
  /** Median of the transformed per-minute totals. */
  median: number;
  /** Median absolute deviation of the same. */
  mad: number;
  /** Active minutes it was computed from. */
  minutes: number;
}

export interface BaselineState {
  version: 1;
  agent: string;
  /** Events with behaviour seen while learning. */
  events: number;
  /** Sessions (sandboxes) those events came from. */
  sessions: number;
  firstTs?: string;
  lastTs?: string;
  /** When learning ended (the profile is frozen or follows by EWMA from then). */
  learnedAt?: string;
  categories: Record<CategoryFeature, Record<string, number>>;
  /** Per feature, the ordinals (1-based, in `sessions`) of the sessions that showed a value for the first time. */
  discoveries?: Partial<Record<CategoryFeature, number[]>>;
  /** Per feature and context (a domain's suffix, a path's area), the ordinals of the sessions that showed a new value in that context. */
  contexts?: Partial<Record<CategoryFeature, Record<string, number[]>>>;
  /** Per-minute totals of active minutes while learning (cleared when learned). */
  minutes: Record<AmountFeature, number[]>;
  profile: Partial<Record<AmountFeature, RateProfile>>;
}

/** Volumes are judged on a log scale (bytes and tokens span orders of magnitude); requests as counts. */
export function transform(feature: AmountFeature, x: number): number {
  return feature === 'requests' ? x : Math.log1p(x);
}

export function emptyBaseline(agent: string): BaselineState {
  const categories = {} as BaselineState['categories'];
  for (const f of CATEGORY_FEATURES) categories[f] = {};
  const minutes = {} as BaselineState['minutes'];
  for (const f of AMOUNT_FEATURES) minutes[f] = [];
  return { version: 1, agent, events: 0, sessions: 0, categories, discoveries: {}, minutes, profile: {} };
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Median absolute deviation from the median. */
export function mad(xs: readonly number[], med = median(xs)): number {
  return median(xs.map((x) => Math.abs(x - med)));
}

/**
 * Robust z-score: 0.6745·(x − median)/MAD, with MAD never below `madFloor`.
 * (0.6745 makes it comparable to a standard z-score for normal data.)
 */
export function robustZ(x: number, p: Pick<RateProfile, 'median' | 'mad'>, madFloor: number): number {
  return (0.6745 * (x - p.median)) / Math.max(p.mad, madFloor);
}

/** Summarise the learned minutes into profiles and drop the raw minutes. */
export function freezeBaseline(b: BaselineState, ts: string): void {
  for (const f of AMOUNT_FEATURES) {
    const xs = b.minutes[f].map((x) => transform(f, x));
    if (xs.length > 0) {
      const med = median(xs);
      b.profile[f] = { median: med, mad: mad(xs, med), minutes: xs.length };
    }
    b.minutes[f] = [];
  }
  b.learnedAt = ts;
}

/** Most discovery ordinals kept per feature. */
const MAX_DISCOVERIES = 1000;

/** Note that the current session (ordinal `b.sessions`) showed a new value of a feature. */
export function recordDiscovery(b: BaselineState, feature: CategoryFeature): void {
  const d = ((b.discoveries ??= {})[feature] ??= []);
  if (d[d.length - 1] === b.sessions) return;
  d.push(b.sessions);
  if (d.length > MAX_DISCOVERIES) d.splice(0, d.length - MAX_DISCOVERIES);
}

/** Note that the current session showed a new value of a feature in a context. */
export function recordContextDiscovery(b: BaselineState, feature: CategoryFeature, context: string): void {
  const d = (((b.contexts ??= {})[feature] ??= {})[context] ??= []);
  if (d[d.length - 1] === b.sessions) return;
  d.push(b.sessions);
  if (d.length > MAX_DISCOVERIES) d.splice(0, d.length - MAX_DISCOVERIES);
}

/**
 * The chance that a new value of a feature falls in a given context, from
 * where the agent's discoveries happened while learning (counted in sessions
 * with a discovery there): (discoveries in the context + 1) / (discoveries +
 * K), add-one over K = the contexts that ever saw a discovery plus one for any
 * other. Unlike the rate of new values, this is a share, so every learning
 * session counts, not only the latest half. An agent that keeps finding new
 * `.edu` sites makes a new `.edu` site weak evidence; a new `.net` site, where
 * it found nothing new after its first session, is not.
 */
export function contextChance(b: BaselineState, feature: CategoryFeature, context: string): {
  chance: number; inContext: number; all: number; contexts: number;
} {
  const byContext = b.contexts?.[feature] ?? {};
  let all = 0;
  let inContext = 0;
  for (const [ctx, ordinals] of Object.entries(byContext)) {
    const n = ordinals.length;
    all += n;
    if (ctx === context) inContext = n;
  }
  const contexts = Object.keys(byContext).length + 1;
  return { chance: Math.min(1, (inContext + 1) / (all + contexts)), inContext, all, contexts };
}

/**
 * Novelty of a value never seen for a feature, as the estimated chance that a
 * session of this agent shows some new value of it; the score is −log10 of
 * that chance, so a threshold reads as a false-positive budget per session
 * (1.5 ≈ 3 %). Two estimates, the larger wins:
 * - Good–Turing: the chance that one observation is new is
 *   (values seen once + 1) / (observations + 1); times observations per session;
 * - discovery rate: of the latest half of the sessions learned from, the share
 *   that showed a new value, (d + 1) / (n + 1). It stays honest when no value
 *   was seen exactly once but new values still keep coming.
 */
export function newValueChance(b: BaselineState, feature: CategoryFeature): {
  pNew: number; perSession: number; score: number; observations: number; singletons: number; distinct: number; recentSessions: number; recentDiscoveries: number;
} {
  const counts = Object.values(b.categories[feature] ?? {});
  const observations = counts.reduce((a, c) => a + c, 0);
  const singletons = counts.filter((c) => c === 1).length;
  const sessions = Math.max(1, b.sessions ?? 1);
  const pNew = observations === 0 ? 1 / (b.events + 1) : Math.min(1, (singletons + 1) / (observations + 1));
  const goodTuring = pNew * Math.max(1, observations / sessions);
  const recentSessions = Math.max(1, Math.floor(sessions / 2));
  const recentDiscoveries = (b.discoveries?.[feature] ?? []).filter((n) => n > sessions - recentSessions).length;
  const discovery = (recentDiscoveries + 1) / (recentSessions + 1);
  const perSession = Math.min(1, Math.max(goodTuring, discovery));
  return { pNew, perSession, score: -Math.log10(perSession), observations, singletons, distinct: counts.length, recentSessions, recentDiscoveries };
}

/** A compact view for `cordon baseline show`. */
export function summariseBaseline(b: BaselineState, top = 20): Record<string, unknown> {
  const categories: Record<string, unknown> = {};
  for (const f of CATEGORY_FEATURES) {
    const entries = Object.entries(b.categories[f] ?? {}).sort((x, y) => y[1] - x[1]); // a baseline stored before the feature existed has none
    categories[f] = { distinct: entries.length, top: Object.fromEntries(entries.slice(0, top)) };
  }
  return {
    agent: b.agent,
    state: b.learnedAt ? 'learned' : 'learning',
    events: b.events,
    sessions: b.sessions ?? 0,
    firstTs: b.firstTs ?? null,
    lastTs: b.lastTs ?? null,
    learnedAt: b.learnedAt ?? null,
    learningMinutes: Object.fromEntries(AMOUNT_FEATURES.map((f) => [f, b.minutes[f].length])),
    profile: b.profile,
    categories,
  };
}
