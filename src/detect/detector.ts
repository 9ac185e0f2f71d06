/**
 * The detector: consumes audit events in order, learns one baseline per
 * agent, and after the learning window raises alerts for novelty (a value
 * never seen for this agent), rate (requests per minute) and volume (bytes
 * out and model tokens per minute). What it cannot judge (no history yet, a
 * clock that went back, a gap, an unknown event type, an event without an
 * agent) it says through `onUnjudged` and counts in `stats()`.
 *
 * @example
 * const d = createDetector({ options: { learnEvents: 500 }, onUnjudged: (u) => log(u.message) });
 * for (const e of events) for (const alert of d.observe(e)) notify(alert);
 */
import { randomUUID } from 'node:crypto';
import {
  contextChance, emptyBaseline, freezeBaseline, newValueChance, recordContextDiscovery, recordDiscovery, robustZ, transform, type BaselineState, type RateProfile,
} from './baseline.js';
import { AMOUNT_FEATURES, CATEGORY_FEATURES, features, type AmountFeature, type Category, type DetectEvent } from './features.js';
import { parseDetectOptions, thresholdFor, UPLOAD_FEATURE, type AlertAction, type DetectOptions, type DetectOptionsInput } from './options.js';

export type AlertKind = 'novelty' | 'rate' | 'volume';

export interface Alert {
  id: string;
  /** Timestamp of the event that raised it. */
  ts: string;
  seq?: number;
  agent: string;
  sandbox?: string;
  kind: AlertKind;
  /** `domain`, `path`, … for novelty; `requests`, `bytesOut`, `tokens` for rate and volume. */
  feature: string;
  /** The new value, or the per-minute total. */
  value: string | number;
  /** Novelty: −log10 of the chance of a new value; rate/volume: robust z-score. */
  score: number;
  evidence: Record<string, unknown>;
  action: AlertAction;
}

export type UnjudgedReason =
  | 'unknown-type' | 'no-agent' | 'bad-timestamp' | 'learning' | 'no-history' | 'clock-backwards' | 'gap' | 'out-of-order';

/** Something the detector saw but could not judge, and why. */
export interface Unjudged {
  reason: UnjudgedReason;
  message: string;
  agent?: string;
  sandbox?: string;
  seq?: number;
  ts?: string;
  details?: Record<string, unknown>;
}

/** Every score computed (for tuning and diagnostics), whether or not it crossed its threshold. */
export interface Score {
  kind: AlertKind;
  feature: string;
  score: number;
  agent: string;
  sandbox?: string;
  ts: string;
}

export interface DetectorOptions {
  options?: DetectOptionsInput;
  /** Baselines to resume from (e.g. loaded from the store). */
  baselines?: readonly BaselineState[];
  onUnjudged?: (u: Unjudged) => void;
  onScore?: (s: Score) => void;
  /** @default crypto.randomUUID */
  newId?: () => string;
}

export interface DetectorStats {
  events: number;
  alerts: number;
  unknownTypes: Record<string, number>;
  unjudged: Partial<Record<UnjudgedReason, number>>;
}

export interface Detector {
  readonly options: DetectOptions;
  /** Feed the next event; returns the alerts it raised (possibly none). */
  observe(event: DetectEvent): Alert[];
  /** Close every open minute (end of a stream); learning baselines take them in. */
  flush(): void;
  /**
   * End an agent's learning window now (an operator's word, or a benchmark
   * that learned from a fixed set of sessions). No-op when already learned.
   */
  freeze(agent: string, ts?: string): void;
  baseline(agent: string): BaselineState | undefined;
  baselines(): BaselineState[];
  stats(): DetectorStats;
}

interface Session {
  agent: string;
  sandbox: string | undefined;
  lastMs: number;
  minute: number;
  bucket: Partial<Record<AmountFeature, number>>;
  /** Metrics that alerted in the open minute (one alert per minute and metric). */
  alerted: Set<AmountFeature>;
  /** `feature\0value` already alerted in this session. */
  seen: Set<string>;
  /** Reasons already said for this session (each said once). */
  said: Set<string>;
  /** Sites first reached in this session that the baseline did not know. */
  newSites: Set<string>;
}

const MINUTE_MS = 60_000;

export function createDetector(o: DetectorOptions = {}): Detector {
  const opts = parseDetectOptions(o.options ?? {});
  const newId = o.newId ?? randomUUID;
  const agents = new Map<string, BaselineState>();
  for (const b of o.baselines ?? []) {
    const copy = structuredClone(b);
    // Baselines stored before a feature existed have no values for it: none seen yet.
    for (const f of CATEGORY_FEATURES) copy.categories[f] ??= {};
    agents.set(b.agent, copy);
  }
  const sessions = new Map<string, Session>();
  const stats: DetectorStats = { events: 0, alerts: 0, unknownTypes: {}, unjudged: {} };
  let lastSeq: number | undefined;

  function unjudged(u: Unjudged): void {
    stats.unjudged[u.reason] = (stats.unjudged[u.reason] ?? 0) + 1;
    o.onUnjudged?.(u);
  }
  function sayOnce(s: Session, key: string, u: Unjudged): void {
    if (s.said.has(key)) {
      stats.unjudged[u.reason] = (stats.unjudged[u.reason] ?? 0) + 1;
      return;
    }
    s.said.add(key);
    unjudged(u);
  }

  function baselineOf(agent: string): BaselineState {
    let b = agents.get(agent);
    if (!b) agents.set(agent, (b = emptyBaseline(agent)));
    return b;
  }

  function closeMinute(s: Session): void {
    const b = baselineOf(s.agent);
    for (const f of AMOUNT_FEATURES) {
      const x = s.bucket[f];
      if (x === undefined || x <= 0) continue;
      if (!b.learnedAt) {
        const xs = b.minutes[f];
        xs.push(x);
        if (xs.length > opts.maxHistoryMinutes) xs.splice(0, xs.length - opts.maxHistoryMinutes);
      } else if (opts.mode === 'ewma' && !s.alerted.has(f)) {
        const p = b.profile[f];
        const t = transform(f, x);
        if (p) {
          const a = opts.ewmaAlpha;
          p.mad = (1 - a) * p.mad + a * Math.abs(t - p.median);
          p.median = (1 - a) * p.median + a * t;
          p.minutes += 1;
        } else b.profile[f] = { median: t, mad: 0, minutes: 1 };
      }
    }
    s.bucket = {};
    s.alerted.clear();
  }

  function learn(b: BaselineState, cats: readonly Category[], e: DetectEvent, ms: number): void {
    b.events += 1;
    b.firstTs ??= e.ts;
    if (!b.lastTs || Date.parse(b.lastTs) < ms) b.lastTs = new Date(ms).toISOString();
    for (const c of cats) {
      const n = b.categories[c.feature][c.value] ?? 0;
      if (n === 0) {
        recordDiscovery(b, c.feature);
        if (c.context !== undefined) recordContextDiscovery(b, c.feature, c.context);
      }
      b.categories[c.feature][c.value] = n + 1;
    }
    const spanMs = ms - Date.parse(b.firstTs);
    if (b.events >= opts.learnEvents || spanMs >= opts.learnMs) {
      // The open minutes of this agent's sessions belong to the learning window.
      for (const s of sessions.values()) if (s.agent === b.agent) { closeMinute(s); }
      freezeBaseline(b, new Date(ms).toISOString());
    }
  }

  function alert(s: Session, e: DetectEvent, kind: AlertKind, feature: string, value: string | number, score: number, evidence: Record<string, unknown>): Alert {
    const a: Alert = {
      id: newId(), ts: e.ts, agent: s.agent, kind, feature, value, score: Math.round(score * 100) / 100, evidence,
      action: opts.actions[kind],
    };
    if (e.seq !== undefined) a.seq = e.seq;
    if (s.sandbox !== undefined) a.sandbox = s.sandbox;
    stats.alerts += 1;
    return a;
  }

  function judgeNovelty(b: BaselineState, s: Session, e: DetectEvent, c: Category, out: Alert[]): void {
    if ((b.categories[c.feature][c.value] ?? 0) > 0) return;
    const chance = newValueChance(b, c.feature);
    // Where the agent's discoveries happen: a new value in a context where it
    // keeps finding new ones is weaker evidence than one where it never does.
    const ctx = c.context === undefined ? undefined : contextChance(b, c.feature, c.context);
    const score = ctx === undefined ? chance.score : -Math.log10(chance.perSession * ctx.chance);
    o.onScore?.({ kind: 'novelty', feature: c.feature, score, agent: s.agent, ...(s.sandbox ? { sandbox: s.sandbox } : {}), ts: e.ts });
    if (opts.mode === 'ewma') {
      b.categories[c.feature][c.value] = 1;
      recordDiscovery(b, c.feature);
      if (c.context !== undefined) recordContextDiscovery(b, c.feature, c.context);
    }
    const key = `${c.feature}\0${c.value}`;
    const threshold = thresholdFor(opts, 'novelty', c.feature);
    if (score < threshold || s.seen.has(key)) return;
    s.seen.add(key);
    out.push(alert(s, e, 'novelty', c.feature, c.value, score, {
      ...(c.raw !== undefined ? { raw: c.raw } : {}), eventType: e.type,
      pNew: Number(chance.pNew.toPrecision(3)), perSession: Number(chance.perSession.toPrecision(3)), sessions: b.sessions,
      recentSessions: chance.recentSessions, recentDiscoveries: chance.recentDiscoveries, observations: chance.observations, distinctSeen: chance.distinct,
      ...(chance.observations === 0 ? { firstUseOfFeature: true } : {}),
      ...(ctx && c.context !== undefined ? { context: c.context, contextChance: Number(ctx.chance.toPrecision(3)), discoveriesInContext: ctx.inContext, discoveriesAll: ctx.all } : {}),
      threshold,
    }));
  }

  function judgeAmount(b: BaselineState, s: Session, e: DetectEvent, f: AmountFeature, out: Alert[]): void {
    const p: RateProfile | undefined = b.profile[f];
    if (!p || p.minutes < opts.minMinutes) {
      sayOnce(s, `no-history:${f}`, {
        reason: 'no-history', agent: s.agent, ...(s.sandbox ? { sandbox: s.sandbox } : {}), ts: e.ts,
        message: `${f} per minute of agent ${s.agent} not judged: the baseline has ${p?.minutes ?? 0} active minutes, ${opts.minMinutes} needed`,
        details: { feature: f, minutes: p?.minutes ?? 0, needed: opts.minMinutes },
      });
      return;
    }
    const x = s.bucket[f] ?? 0;
    const kind: AlertKind = f === 'requests' ? 'rate' : 'volume';
    const z = robustZ(transform(f, x), p, opts.madFloor[f]);
    o.onScore?.({ kind, feature: f, score: z, agent: s.agent, ...(s.sandbox ? { sandbox: s.sandbox } : {}), ts: e.ts });
    const threshold = thresholdFor(opts, kind, f);
    if (z < threshold || s.alerted.has(f)) return;
    s.alerted.add(f);
    out.push(alert(s, e, kind, f, x, z, {
      minute: new Date(s.minute * MINUTE_MS).toISOString(), perMinute: x, scale: f === 'requests' ? 'count' : 'log1p',
      median: round3(p.median), mad: round3(p.mad), madFloor: opts.madFloor[f], profileMinutes: p.minutes,
      typicalPerMinute: round3(f === 'requests' ? p.median : Math.expm1(p.median)), threshold,
    }));
  }

  /**
   * Bytes sent on one connection to a site first reached in this session,
   * against the agent's usual bytes out per minute: an upload to somewhere
   * new is judged even for an agent that often reaches new sites.
   */
  function judgeUpload(b: BaselineState, s: Session, e: DetectEvent, site: string, bytes: number, out: Alert[]): void {
    const p = b.profile.bytesOut;
    if (!p || p.minutes < opts.minMinutes) return; // said once per session by judgeAmount
    const z = robustZ(transform('bytesOut', bytes), p, opts.madFloor.bytesOut);
    o.onScore?.({ kind: 'volume', feature: UPLOAD_FEATURE, score: z, agent: s.agent, ...(s.sandbox ? { sandbox: s.sandbox } : {}), ts: e.ts });
    const threshold = thresholdFor(opts, 'volume', UPLOAD_FEATURE);
    const key = `${UPLOAD_FEATURE}\0${site}`;
    if (z < threshold || s.seen.has(key)) return;
    s.seen.add(key);
    out.push(alert(s, e, 'volume', UPLOAD_FEATURE, bytes, z, {
      site, bytesOut: bytes, scale: 'log1p', median: round3(p.median), mad: round3(p.mad), madFloor: opts.madFloor.bytesOut,
      typicalPerMinute: round3(Math.expm1(p.median)), threshold, why: 'bytes sent to a site first reached in this session',
    }));
  }

  function observe(e: DetectEvent): Alert[] {
    stats.events += 1;
    const where = { ...(e.agent ? { agent: e.agent } : {}), ...(e.sandbox ? { sandbox: e.sandbox } : {}), ...(e.seq !== undefined ? { seq: e.seq } : {}) };
    if (e.seq !== undefined) {
      if (lastSeq !== undefined && e.seq > lastSeq + 1) {
        unjudged({ reason: 'gap', ...where, ts: e.ts, message: `audit stream gap: seq ${lastSeq + 1}..${e.seq - 1} missing; what they recorded was not judged`, details: { missing: e.seq - lastSeq - 1 } });
      } else if (lastSeq !== undefined && e.seq <= lastSeq) {
        unjudged({ reason: 'out-of-order', ...where, ts: e.ts, message: `event seq ${e.seq} arrived after seq ${lastSeq}`, details: { lastSeq } });
      }
      lastSeq = Math.max(lastSeq ?? e.seq, e.seq);
    }
    const f = features(e);
    if (!f) {
      const first = stats.unknownTypes[e.type] === undefined;
      stats.unknownTypes[e.type] = (stats.unknownTypes[e.type] ?? 0) + 1;
      if (first) unjudged({ reason: 'unknown-type', ...where, ts: e.ts, message: `event type ${JSON.stringify(e.type)} is not modelled; events of this type are ignored (counted in stats)` });
      else stats.unjudged['unknown-type'] = (stats.unjudged['unknown-type'] ?? 0) + 1;
      return [];
    }
    if (e.type === 'sandbox.destroy' && e.agent) {
      const ended = sessions.get(`${e.agent}\0${e.sandbox ?? ''}`);
      if (ended) closeMinute(ended);
      sessions.delete(`${e.agent}\0${e.sandbox ?? ''}`);
      return [];
    }
    const amounts = Object.entries(f.amounts) as [AmountFeature, number][];
    if (f.categories.length === 0 && amounts.length === 0) return [];
    let ms = Date.parse(e.ts);
    if (!Number.isFinite(ms)) {
      unjudged({ reason: 'bad-timestamp', ...where, message: `event has an unreadable timestamp ${JSON.stringify(String(e.ts).slice(0, 40))}; not judged` });
      return [];
    }
    if (!e.agent) {
      unjudged({ reason: 'no-agent', ...where, ts: e.ts, message: `${e.type} event names no agent; no baseline to judge it against` });
      return [];
    }
    const key = `${e.agent}\0${e.sandbox ?? ''}`;
    let s = sessions.get(key);
    if (!s) {
      s = { agent: e.agent, sandbox: e.sandbox, lastMs: ms, minute: Math.floor(ms / MINUTE_MS), bucket: {}, alerted: new Set(), seen: new Set(), said: new Set(), newSites: new Set() };
      sessions.set(key, s);
      const b = baselineOf(e.agent);
      if (!b.learnedAt || opts.mode === 'ewma') b.sessions = (b.sessions ?? 0) + 1;
    }
    if (ms < s.lastMs - opts.clockSkewMs) {
      unjudged({ reason: 'clock-backwards', ...where, ts: e.ts, message: `clock went back ${Math.round((s.lastMs - ms) / 1000)} s in session ${e.sandbox ?? '(none)'}; the event is counted in the current minute`, details: { backMs: s.lastMs - ms } });
      ms = s.lastMs;
    } else if (ms - s.lastMs > opts.gapMs) {
      unjudged({ reason: 'gap', ...where, ts: e.ts, message: `no event for ${Math.round((ms - s.lastMs) / 1000)} s in session ${e.sandbox ?? '(none)'}; rates across the silence are not judged`, details: { silenceMs: ms - s.lastMs } });
    }
    ms = Math.max(ms, s.lastMs);
    s.lastMs = ms;
    const minute = Math.floor(ms / MINUTE_MS);
    if (minute !== s.minute) {
      closeMinute(s);
      s.minute = minute;
    }
    for (const [name, x] of amounts) s.bucket[name] = (s.bucket[name] ?? 0) + x;
    const b = baselineOf(e.agent);
    if (!b.learnedAt) {
      sayOnce(s, 'learning', {
        reason: 'learning', ...where, ts: e.ts,
        message: `agent ${e.agent} has no learned baseline yet (${b.events}/${opts.learnEvents} events); this session is learned from, not judged`,
        details: { events: b.events, learnEvents: opts.learnEvents, learnMs: opts.learnMs },
      });
      learn(b, f.categories, e, ms);
      return [];
    }
    const novel: Alert[] = [];
    for (const c of f.categories) {
      if (c.feature === 'domain' && (b.categories.domain[c.value] ?? 0) === 0) s.newSites.add(c.value);
      if (opts.noveltyFeatures.includes(c.feature)) judgeNovelty(b, s, e, c, novel);
      else if (opts.mode === 'ewma') b.categories[c.feature][c.value] = (b.categories[c.feature][c.value] ?? 0) + 1;
    }
    const out: Alert[] = novel.length > 1 ? [mergeNovelty(novel)] : novel;
    stats.alerts -= novel.length - out.length;
    for (const [name] of amounts) judgeAmount(b, s, e, name, out);
    if (f.site !== undefined && f.amounts.bytesOut !== undefined && s.newSites.has(f.site)) judgeUpload(b, s, e, f.site, f.amounts.bytesOut, out);
    return out;
  }

  return {
    options: opts,
    observe,
    flush: function flush(): void {
      for (const s of sessions.values()) closeMinute(s);
    },
    freeze: function freeze(agent: string, ts = new Date().toISOString()): void {
      const b = baselineOf(agent);
      if (b.learnedAt) return;
      for (const s of sessions.values()) if (s.agent === agent) closeMinute(s);
      freezeBaseline(b, ts);
    },
    baseline: (agent) => agents.get(agent),
    baselines: () => [...agents.values()],
    stats: () => structuredClone(stats),
  };
}

/**
 * One event that is new in several ways (a new domain under a new suffix, a
 * new path in a new sensitive class) raises one alert: the highest-scoring
 * one, with the others named in its evidence as `alsoNew`.
 */
function mergeNovelty(alerts: readonly Alert[]): Alert {
  const sorted = [...alerts].sort((x, y) => y.score - x.score);
  const top = sorted[0]!;
  top.evidence.alsoNew = sorted.slice(1).map((a) => ({ feature: a.feature, value: a.value, score: a.score }));
  return top;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
