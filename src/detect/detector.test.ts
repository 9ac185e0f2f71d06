/**
 * The detector: novelty, rate and volume alerts after the learning window,
 * and what it says when it cannot judge (no history, gaps, a clock that goes
 * back, unknown event types, events without an agent).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDetector, parseDetectOptions, thresholdFor, type Alert, type DetectEvent, type DetectOptionsInput, type Unjudged } from './index.js';

const T0 = Date.UTC(2026, 0, 1, 9, 0, 0);
const ts = (minute: number, sec = 0) => new Date(T0 + minute * 60_000 + sec * 1000).toISOString();

/**
 * A steady agent: per minute 3 requests (≈2 KB out each), one command, one
 * file read, one model call; each minute is a session of its own (`learn-M`).
 */
function steady(minutes: number, from = 0, agent = 'a'): DetectEvent[] {
  const out: DetectEvent[] = [];
  for (let m = from; m < from + minutes; m++) {
    const sandbox = `learn-${m}`;
    for (let i = 0; i < 3; i++) {
      out.push({ ts: ts(m, 5 + i * 10), type: 'egress.request', agent, sandbox, data: { host: i === 2 ? 'pypi.org' : 'github.com', port: 443 } });
      out.push({ ts: ts(m, 6 + i * 10), type: 'egress.close', agent, sandbox, data: { bytesOut: 1800 + ((m * 7 + i * 13) % 5) * 100 } });
    }
    out.push({ ts: ts(m, 40), type: 'sandbox.exec', agent, sandbox, data: { argv: ['git', 'status'] } });
    out.push({ ts: ts(m, 42), type: 'sandbox.file.read', agent, sandbox, data: { path: '/workspace/app/main.py' } });
    out.push({ ts: ts(m, 45), type: 'llm.request', agent, sandbox, data: { model: 'gpt-4.1-mini' } });
    out.push({ ts: ts(m, 46), type: 'llm.response', agent, sandbox, data: { model: 'gpt-4.1-mini', tokensIn: 900 + (m % 3) * 50, tokensOut: 200 } });
  }
  return out;
}

function learned(extra: DetectOptionsInput = {}) {
  const notes: Unjudged[] = [];
  const d = createDetector({ options: { learnEvents: 1e9, minMinutes: 20, thresholds: { rate: 8 }, ...extra }, onUnjudged: (u) => notes.push(u) });
  for (const e of steady(40)) assert.deepEqual(d.observe(e), [], 'no alert while learning');
  d.freeze('a', ts(40));
  return { d, notes };
}

const feed = (d: ReturnType<typeof createDetector>, events: DetectEvent[]): Alert[] => events.flatMap((e) => d.observe(e));

test('each anomaly is flagged by the right detector after learning, with its evidence', async (t) => {
  const cases: { name: string; events: DetectEvent[]; kind: Alert['kind']; feature: string; value?: unknown }[] = [
    { name: 'new exfiltration domain', kind: 'novelty', feature: 'domain', value: 'drop-xq7.xyz',
      events: [{ ts: ts(50, 1), type: 'egress.request', agent: 'a', sandbox: 'sb-2', decision: 'allow', data: { host: 'Drop-XQ7.xyz.', port: 443 } }] },
    { name: 'read of ~/.ssh', kind: 'novelty', feature: 'path', value: '~/.ssh',
      events: [{ ts: ts(50, 1), type: 'sandbox.file.read', agent: 'a', sandbox: 'sb-2', data: { path: '/root/.ssh/id_rsa' } }] },
    { name: 'new program', kind: 'novelty', feature: 'command', value: 'nc',
      events: [{ ts: ts(50, 1), type: 'sandbox.exec', agent: 'a', sandbox: 'sb-2', data: { argv: ['/usr/bin/nc', '-e'] } }] },
    { name: 'new model', kind: 'novelty', feature: 'model', value: 'gpt-5',
      events: [{ ts: ts(50, 1), type: 'llm.request', agent: 'a', sandbox: 'sb-2', data: { model: 'gpt-5' } }] },
    { name: 'burst of 40 requests in a minute', kind: 'rate', feature: 'requests',
      events: Array.from({ length: 40 }, (_, i) => ({ ts: ts(50, i), type: 'egress.request', agent: 'a', sandbox: 'sb-2', data: { host: 'github.com', port: 443 } })) },
    { name: '200 MB out in one connection', kind: 'volume', feature: 'bytesOut', value: 200e6,
      events: [{ ts: ts(50, 1), type: 'egress.close', agent: 'a', sandbox: 'sb-2', data: { bytesOut: 200e6 } }] },
    { name: 'tokens spike', kind: 'volume', feature: 'tokens', value: 500_000,
      events: [{ ts: ts(50, 1), type: 'llm.response', agent: 'a', sandbox: 'sb-2', data: { model: 'gpt-4.1-mini', tokensIn: 450_000, tokensOut: 50_000 } }] },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const { d } = learned();
      const all = feed(d, c.events);
      assert.ok(all.every((a) => a.kind === c.kind), JSON.stringify(all));
      const alerts = all.filter((a) => a.feature === c.feature);
      assert.equal(alerts.length, 1, JSON.stringify(all));
      const a = alerts[0]!;
      assert.equal(a.kind, c.kind);
      assert.equal(a.feature, c.feature);
      if (c.value !== undefined) assert.equal(a.value, c.value);
      assert.equal(a.agent, 'a');
      assert.equal(a.sandbox, 'sb-2');
      assert.equal(a.action, 'none');
      assert.ok(a.score >= (a.evidence.threshold as number), `score ${a.score} over its threshold`);
    });
  }
});

test('novelty: nothing is flagged during the learning window, a new domain is once it is over (learnEvents)', () => {
  const d = createDetector({ options: { learnEvents: 400 } });
  // Seen twice while learning: not a singleton, so it does not raise the estimated chance of new domains.
  const seenTwice = [0, 1].map((i): DetectEvent => ({ ts: ts(0, i), type: 'egress.request', agent: 'a', sandbox: 's', data: { host: 'evil.example', port: 443 } }));
  const early = feed(d, [...seenTwice, ...steady(45, 1)]);
  assert.deepEqual(early, [], 'learning: no alerts');
  const b = d.baseline('a')!;
  assert.ok(b.learnedAt, 'learned after 400 events');
  assert.ok(b.sessions >= 40 && b.sessions <= 42, `sessions ${b.sessions}`);
  assert.equal(b.categories.domain['evil.example'], 2, 'the domain seen while learning is part of the baseline');
  const late = feed(d, [
    { ts: ts(60), type: 'egress.request', agent: 'a', sandbox: 't', data: { host: 'evil.example', port: 443 } },
    { ts: ts(60, 2), type: 'egress.request', agent: 'a', sandbox: 't', data: { host: 'new-drop.example', port: 443 } },
  ]);
  assert.deepEqual(late.map((a) => [a.kind, a.feature, a.value]), [['novelty', 'domain', 'new-drop.example']], 'host is not judged by default');
});

test('rate: the score is the robust z-score 0.6745·(x − median)/max(MAD, floor)', () => {
  const { d } = learned({ madFloor: { requests: 1.5 } });
  const p = d.baseline('a')!.profile.requests!;
  assert.deepEqual([p.median, p.mad], [4, 0], 'three egress requests and one model call per minute, no spread');
  const burst = Array.from({ length: 45 }, (_, i): DetectEvent => ({ ts: ts(60, i), type: 'egress.request', agent: 'a', sandbox: 'x', data: { host: 'github.com', port: 443 } }));
  const alerts = feed(d, burst);
  assert.equal(alerts.length, 1, 'one alert per minute and metric');
  const z = (0.6745 * (alerts[0]!.value as number - 4)) / 1.5;
  assert.equal(alerts[0]!.score, Math.round(z * 100) / 100);
  assert.ok((alerts[0]!.value as number) < 45, 'raised as soon as the minute crossed the threshold');
  assert.equal(alerts[0]!.evidence.median, 4);
});

test('one novelty alert per session and value in freeze mode; ewma learns the value after alerting', () => {
  const ev = (sb: string, m: number): DetectEvent => ({ ts: ts(m), type: 'egress.request', agent: 'a', sandbox: sb, data: { host: 'new.example', port: 443 } });
  const frozen = learned().d;
  assert.equal(feed(frozen, [ev('s1', 50), ev('s1', 51)]).filter((a) => a.feature === 'domain').length, 1, 'deduplicated in a session');
  assert.equal(feed(frozen, [ev('s2', 52)]).filter((a) => a.feature === 'domain').length, 1, 'frozen: alerts again in the next session');
  const ewma = learned({ mode: 'ewma' }).d;
  assert.equal(feed(ewma, [ev('s1', 50)]).filter((a) => a.feature === 'domain').length, 1);
  assert.equal(feed(ewma, [ev('s2', 52)]).length, 0, 'ewma: the value is part of the baseline now');
});

test('ewma: the rate profile follows minutes that raised no alert', () => {
  const { d } = learned({ mode: 'ewma', ewmaAlpha: 0.5 });
  const before = d.baseline('a')!.profile.requests!.median;
  feed(d, Array.from({ length: 6 }, (_, i): DetectEvent => ({ ts: ts(50, i), type: 'egress.request', agent: 'a', sandbox: 'x', data: { host: 'github.com', port: 443 } })));
  feed(d, [{ ts: ts(51), type: 'egress.request', agent: 'a', sandbox: 'x', data: { host: 'github.com', port: 443 } }]);
  assert.equal(d.baseline('a')!.profile.requests!.median, before + 0.5 * (6 - before));
});

test('bad input: the detector keeps working and says what it could not judge', async (t) => {
  const cases: { name: string; events: DetectEvent[]; reason: Unjudged['reason']; thenAlerts: boolean }[] = [
    { name: 'a gap in the audit stream (missing seqs)', reason: 'gap', thenAlerts: true,
      events: [{ seq: 1000, ts: ts(50), type: 'egress.request', agent: 'a', sandbox: 'g', data: { host: 'github.com', port: 443 } },
        { seq: 1005, ts: ts(50, 1), type: 'egress.request', agent: 'a', sandbox: 'g', data: { host: 'x.example', port: 443 } }] },
    { name: 'a long silence in a session', reason: 'gap', thenAlerts: true,
      events: [{ ts: ts(50), type: 'egress.request', agent: 'a', sandbox: 'g', data: { host: 'github.com', port: 443 } },
        { ts: ts(90), type: 'egress.request', agent: 'a', sandbox: 'g', data: { host: 'x.example', port: 443 } }] },
    { name: 'a clock that jumps back an hour', reason: 'clock-backwards', thenAlerts: true,
      events: [{ ts: ts(50), type: 'egress.request', agent: 'a', sandbox: 'g', data: { host: 'github.com', port: 443 } },
        { ts: ts(-10), type: 'egress.request', agent: 'a', sandbox: 'g', data: { host: 'x.example', port: 443 } }] },
    { name: 'an unknown event type', reason: 'unknown-type', thenAlerts: false,
      events: [{ ts: ts(50), type: 'quantum.teleport', agent: 'a', sandbox: 'g', data: { host: 'x.example' } }] },
    { name: 'an event without an agent', reason: 'no-agent', thenAlerts: false,
      events: [{ ts: ts(50), type: 'egress.request', sandbox: 'g', data: { host: 'x.example', port: 443 } }] },
    { name: 'an unreadable timestamp', reason: 'bad-timestamp', thenAlerts: false,
      events: [{ ts: 'yesterday', type: 'egress.request', agent: 'a', sandbox: 'g', data: { host: 'x.example', port: 443 } }] },
    { name: 'an agent with no history', reason: 'learning', thenAlerts: false,
      events: [{ ts: ts(50), type: 'egress.request', agent: 'newcomer', sandbox: 'g', data: { host: 'x.example', port: 443 } }] },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const { d, notes } = learned();
      notes.length = 0;
      const before = d.stats().unjudged[c.reason] ?? 0;
      const alerts = feed(d, c.events);
      const said = notes.filter((n) => n.reason === c.reason);
      assert.equal(said.length, 1, `expected one ${c.reason} note, got ${JSON.stringify(notes)}`);
      assert.ok(said[0]!.message.length > 10);
      assert.equal((d.stats().unjudged[c.reason] ?? 0) - before, 1, 'counted');
      assert.equal(alerts.some((a) => a.value === 'x.example'), c.thenAlerts, 'judged (or not) despite the problem');
    });
  }
});

test('unknown event types are counted per type and said once', () => {
  const notes: Unjudged[] = [];
  const d = createDetector({ onUnjudged: (u) => notes.push(u) });
  for (let i = 0; i < 5; i++) d.observe({ ts: ts(i), type: 'tunnel.open', agent: 'a', data: {} });
  d.observe({ ts: ts(6), type: 'detect.alert', agent: 'a', data: { value: 'x' } });
  assert.deepEqual(d.stats().unknownTypes, { 'tunnel.open': 5 });
  assert.equal(notes.filter((n) => n.reason === 'unknown-type').length, 1);
  assert.equal(d.stats().events, 6);
});

test('rates are not judged before the profile has minMinutes active minutes', () => {
  const notes: Unjudged[] = [];
  const d = createDetector({ options: { minMinutes: 50 }, onUnjudged: (u) => notes.push(u) });
  for (const e of steady(10)) d.observe(e);
  d.freeze('a', ts(10));
  const burst = Array.from({ length: 100 }, (_, i): DetectEvent => ({ ts: ts(20, i / 2), type: 'egress.request', agent: 'a', sandbox: 'y', data: { host: 'github.com', port: 443 } }));
  assert.deepEqual(feed(d, burst), []);
  const n = notes.filter((u) => u.reason === 'no-history');
  assert.equal(n.length, 1, 'said once per session and metric');
  assert.match(n[0]!.message, /10 active minutes, 50 needed/);
});

test('configured actions are carried by the alert; bad settings are refused with the field named', () => {
  const { d } = learned({ actions: { novelty: 'pause' } });
  const [a] = feed(d, [{ ts: ts(50), type: 'sandbox.file.read', agent: 'a', sandbox: 'p', data: { path: '/home/u/.aws/credentials' } }]);
  assert.equal(a?.action, 'pause');
  assert.throws(() => createDetector({ options: { mode: 'sometimes' as 'freeze' } }), /mode/);
  assert.throws(() => createDetector({ options: { thresholds: { features: { nonsense: 2 } as Record<string, number> } } }), /thresholds/);
});

test('bad input, then an anomaly: after each problem the detector still flags what it should', async (t) => {
  const exfil = (sandbox: string, minute: number): DetectEvent => ({ ts: ts(minute, 30), type: 'egress.request', agent: 'a', sandbox, data: { host: 'paste-x1.xyz', port: 443 } });
  const cases: { name: string; events: DetectEvent[]; reasons: Unjudged['reason'][] }[] = [
    { name: 'a clock that jumps a day ahead, then back', reasons: ['gap', 'clock-backwards'],
      events: [{ ts: ts(50), type: 'egress.request', agent: 'a', sandbox: 'j', data: { host: 'github.com', port: 443 } },
        { ts: ts(50 + 24 * 60), type: 'egress.request', agent: 'a', sandbox: 'j', data: { host: 'github.com', port: 443 } },
        { ts: ts(51), type: 'egress.request', agent: 'a', sandbox: 'j', data: { host: 'github.com', port: 443 } }] },
    { name: 'seqs missing and one out of order', reasons: ['gap', 'out-of-order'],
      events: [{ seq: 10, ts: ts(50), type: 'egress.request', agent: 'a', sandbox: 'j', data: { host: 'github.com', port: 443 } },
        { seq: 20, ts: ts(50, 1), type: 'sandbox.exec', agent: 'a', sandbox: 'j', data: { argv: ['git', 'status'] } },
        { seq: 15, ts: ts(50, 2), type: 'sandbox.exec', agent: 'a', sandbox: 'j', data: { argv: ['git', 'status'] } }] },
    { name: 'unknown event types in between, with odd data', reasons: ['unknown-type'],
      events: [{ ts: ts(50), type: 'vm.migrate', agent: 'a', sandbox: 'j', data: { to: 'elsewhere' } },
        { ts: ts(50, 1), type: 'x'.repeat(300), agent: 'a', data: null as unknown as Record<string, unknown> }] },
    { name: 'malformed fields of a known type', reasons: [],
      events: [{ ts: ts(50), type: 'egress.request', agent: 'a', sandbox: 'j', data: { host: ['a'], port: 'https' } },
        { ts: ts(50, 1), type: 'egress.close', agent: 'a', sandbox: 'j', data: { bytesOut: -5 } }] },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const { d, notes } = learned();
      notes.length = 0;
      assert.deepEqual(feed(d, c.events), [], 'the problem itself raises no alert');
      for (const r of c.reasons) assert.ok(notes.some((n) => n.reason === r), `said ${r}: ${JSON.stringify(notes.map((n) => n.reason))}`);
      const after = feed(d, [exfil('later', 60)]);
      assert.deepEqual(after.map((a) => [a.kind, a.feature, a.value]), [['novelty', 'domain', 'paste-x1.xyz']], 'a later anomaly is still flagged');
    });
  }
});

/** Sessions of an agent that reaches a new `.edu` site in every second session, besides its usual sites. */
function explorer(sessions: number): DetectEvent[] {
  const out: DetectEvent[] = [];
  for (let s = 0; s < sessions; s++) {
    const sandbox = `ex-${s}`;
    const hosts = ['en.wikipedia.org', 'arxiv.org', 'openreview.net', ...(s % 2 === 0 ? [`www.univ${s}.edu`] : [])];
    hosts.forEach((host, i) => out.push({ ts: ts(s, i), type: 'egress.request', agent: 'r', sandbox, data: { host, port: 443 } }));
    out.push({ ts: ts(s, 30), type: 'sandbox.file.read', agent: 'r', sandbox, data: { path: '/root/.kube/config' } });
  }
  return out;
}

test('an agent that often reaches new sites needs stronger evidence: a new site where it keeps finding them is not flagged, one under another suffix is', async (t) => {
  const d = createDetector({ options: { learnEvents: 1e9, thresholds: { features: { domain: 1.3 } } } });
  for (const e of explorer(40)) d.observe(e);
  d.freeze('r', ts(40));
  const one = (sandbox: string, host: string) => feed(d, [{ ts: ts(50), type: 'egress.request', agent: 'r', sandbox, data: { host, port: 443 } }]);
  await t.test('a new .edu site: within its habits', () => assert.deepEqual(one('n1', 'www.univ999.edu'), []));
  await t.test('a new .net site: it knows .net, but never discovers anything there', () => {
    const [a] = one('n2', 'x7k2-drop.net');
    assert.equal(a?.feature, 'domain');
    assert.equal(a?.evidence.context, 'net');
    assert.ok(Number(a?.evidence.contextChance) < 0.1, `context chance ${a?.evidence.contextChance}`);
  });
  await t.test('a new .xyz site: a suffix it never used', () => {
    const [a] = one('n3', 'x7k2-drop.xyz');
    assert.ok(a, 'flagged');
    assert.deepEqual([a.feature, ...(a.evidence.alsoNew as { feature: string }[]).map((n) => n.feature)].sort(), ['domain', 'suffix']);
  });
  await t.test('a credential class it reads every session (~/.kube/config) is learned; ~/.ssh is not', () => {
    assert.deepEqual(feed(d, [{ ts: ts(50), type: 'sandbox.file.read', agent: 'r', sandbox: 'n4', data: { path: '/home/r/.kube/config' } }]), []);
    const [a] = feed(d, [{ ts: ts(50), type: 'sandbox.file.read', agent: 'r', sandbox: 'n5', data: { path: '/root/.ssh/id_ed25519' } }]);
    assert.ok(a, 'flagged');
    assert.ok([a.feature, ...(a.evidence.alsoNew as { feature: string }[]).map((n) => n.feature)].includes('sensitive'));
  });
});

test('a baseline saved before the suffix and sensitive features existed resumes and judges them', () => {
  const { d } = learned();
  const old = structuredClone(d.baseline('a')!) as unknown as { categories: Record<string, unknown> };
  delete old.categories.suffix;
  delete old.categories.sensitive;
  const resumed = createDetector({ baselines: [old as never] });
  const [a] = resumed.observe({ ts: ts(60), type: 'sandbox.file.read', agent: 'a', sandbox: 'r', data: { path: '/root/.ssh/id_rsa' } });
  assert.ok(a, 'flagged');
  assert.ok([a.feature, ...(a.evidence.alsoNew as { feature: string }[]).map((n) => n.feature)].includes('sensitive'));
  assert.equal(resumed.baseline('a')!.categories.suffix !== undefined, true);
});

test('settings: default thresholds, and the alert webhook is validated', async (t) => {
  await t.test('defaults', () => assert.deepEqual(parseDetectOptions({}).thresholds, { novelty: 1.1, rate: 20, volume: 5, features: {} }));
  await t.test('a new site is judged against its built-in threshold unless overridden', () => {
    const o = parseDetectOptions({ thresholds: { novelty: 0.5, features: { path: 2 } } });
    assert.deepEqual([thresholdFor(o, 'novelty', 'domain'), thresholdFor(o, 'novelty', 'path'), thresholdFor(o, 'novelty', 'tool')], [1.6, 2, 0.5]);
    assert.equal(thresholdFor(parseDetectOptions({ thresholds: { features: { domain: 3 } } }), 'novelty', 'domain'), 3);
  });
  await t.test('no webhook unless configured', () => assert.equal(parseDetectOptions({}).webhook, undefined));
  await t.test('webhook defaults', () => assert.deepEqual(parseDetectOptions({ webhook: { url: 'https://hooks.example.com/x' } }).webhook, { url: 'https://hooks.example.com/x', timeoutMs: 5000, retries: 2, maxQueued: 100 }));
  for (const [name, webhook, field] of [
    ['not a URL', { url: 'hooks.example.com' }, /webhook\.url/],
    ['not http(s)', { url: 'file:///etc/passwd' }, /webhook\.url/],
    ['too many retries', { url: 'https://h.example', retries: 50 }, /webhook\.retries/],
    ['unknown field', { url: 'https://h.example', secret: 'x' }, /webhook/],
  ] as const) await t.test(`refused: ${name}`, () => assert.throws(() => parseDetectOptions({ webhook }), field));
});

test('an upload to a site first reached in this session is judged against the usual bytes out per minute', async (t) => {
  const close = (sandbox: string, host: string, bytesOut: number, sec = 2): DetectEvent[] => [
    { ts: ts(60, sec), type: 'egress.request', agent: 'a', sandbox, data: { host, port: 443 } },
    { ts: ts(60, sec + 1), type: 'egress.close', agent: 'a', sandbox, data: { host, port: 443, bytesOut } },
  ];
  const uploads = (alerts: Alert[]) => alerts.filter((a) => a.feature === 'bytesOut.newSite');
  await t.test('60 KB to a new site (a minute usually sends about 6 KB): flagged, once per site and session', () => {
    const { d } = learned();
    const [a, ...rest] = uploads(feed(d, [...close('u1', 'paste.example.org', 60_000), ...close('u1', 'paste.example.org', 60_000, 20)]));
    assert.ok(a, 'flagged');
    assert.equal(rest.length, 0);
    assert.equal(a.kind, 'volume');
    assert.equal(a.evidence.site, 'example.org');
    assert.ok(a.score >= 3, `score ${a.score}`);
  });
  await t.test('a usual request size to a new site: no upload alert', () => {
    const { d } = learned();
    assert.deepEqual(uploads(feed(d, close('u2', 'paste.example.org', 1900))), []);
  });
  await t.test('the same 60 KB to a known site: no upload alert (left to the per-minute volume)', () => {
    const { d } = learned();
    assert.deepEqual(uploads(feed(d, close('u3', 'github.com', 60_000))), []);
  });
  await t.test('a site new to the agent stays new for its session even after the first request', () => {
    const { d } = learned();
    feed(d, close('u4', 'paste.example.org', 1900));
    assert.equal(uploads(feed(d, close('u4', 'paste.example.org', 60_000, 30))).length, 1);
  });
});
