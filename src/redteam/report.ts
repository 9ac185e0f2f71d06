/**
 * Reports of a red-team run: the terminal summary, the JSON scorecard (also
 * kept as `$CORDON_HOME/redteam/latest.json` for the dashboard), a
 * self-contained HTML page (one row per attack: outcome and evidence; no
 * script, no external request; every string escaped, since evidence holds
 * text a hostile guest chose), and a side-by-side table of two profiles.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CATEGORIES, ScorecardSchema, type AttackReport, type Outcome, type Scorecard } from './types.js';

const LABEL: Record<Outcome, string> = { contained: 'contained', succeeded: 'SUCCEEDED', error: 'could not judge', 'not-applicable': 'not applicable' };

/** Where the latest scorecard of a profile is kept. */
export function latestPath(home: string, profile: Scorecard['profile']): string {
  return join(home, 'redteam', profile === 'protected' ? 'latest.json' : 'latest-unprotected.json');
}

/** Validate, then write atomically (0600: evidence names hosts and paths). */
export function writeScorecard(path: string, card: Scorecard): void {
  const valid = ScorecardSchema.parse(card);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(valid, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}

/** Terminal-safe: no control characters from guest text. */
function plain(s: string): string {
  return s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '?');
}

/** One line per attack and the summary, for a terminal or a CI log. */
export function formatText(card: Scorecard, o: { description?: string } = {}): string {
  const lines: string[] = [];
  if (o.description) lines.push(plain(o.description), '');
  for (const cat of CATEGORIES) {
    const rows = card.attacks.filter((a) => a.category === cat);
    if (rows.length === 0) continue;
    lines.push(`${cat}:`);
    for (const a of rows) lines.push(`  ${LABEL[a.outcome].padEnd(15)} ${a.id.padEnd(36)} ${plain(a.evidence[0] ?? '').slice(0, 110)}`);
  }
  const s = card.summary;
  lines.push('', `${card.profile}: ${s.total} attacks: ${s.contained} contained, ${s.succeeded} succeeded, ${s.errors} could not judge, ${s.notApplicable} not applicable (${Math.round(card.durationMs / 1000)} s)`);
  return lines.join('\n') + '\n';
}

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const COLOR: Record<Outcome, string> = { contained: '#1a7f37', succeeded: '#cf222e', error: '#9a6700', 'not-applicable': '#6e7781' };

function row(a: AttackReport): string {
  const ev = a.evidence.map((e) => `<li>${escapeHtml(e)}</li>`).join('');
  return `<tr><td><code>${escapeHtml(a.id)}</code><br><small>${escapeHtml(a.category)}</small></td><td>${escapeHtml(a.title)}</td>`
    + `<td style="color:${COLOR[a.outcome]};font-weight:bold">${escapeHtml(LABEL[a.outcome])}</td><td><ul>${ev}</ul></td><td>${(a.durationMs / 1000).toFixed(1)} s</td></tr>`;
}

/** A self-contained page (inline CSS only; no script, image, font or link that loads anything). */
export function formatHtml(card: Scorecard, o: { description?: string } = {}): string {
  const s = card.summary;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>cordon red team: ${escapeHtml(card.profile)}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;color:#1f2328}table{border-collapse:collapse;width:100%}td,th{border:1px solid #d0d7de;padding:6px;vertical-align:top;text-align:left}th{background:#f6f8fa}ul{margin:0;padding-left:1.2em}code{font-size:13px}li{word-break:break-word}</style>
</head><body>
<h1>cordon red team: ${escapeHtml(card.profile)} profile</h1>
<p>${escapeHtml(o.description ?? '')}</p>
<p>${s.total} attacks: <b style="color:${COLOR.contained}">${s.contained} contained</b>, <b style="color:${COLOR.succeeded}">${s.succeeded} succeeded</b>, ${s.errors} could not judge, ${s.notApplicable} not applicable.
Started ${escapeHtml(card.startedAt)}, took ${Math.round(card.durationMs / 1000)} s. Each attack is scored by outcome: did the canary leave, did the action happen.</p>
<table><thead><tr><th>attack</th><th>what it tries</th><th>outcome</th><th>evidence</th><th>time</th></tr></thead>
<tbody>
${card.attacks.map(row).join('\n')}
</tbody></table>
</body></html>
`;
}

/** A Markdown table of two scorecards side by side (README / docs). */
export function formatComparison(protectedCard: Scorecard, unprotectedCard: Scorecard): string {
  const other = new Map(unprotectedCard.attacks.map((a) => [a.id, a]));
  const cell = (a: AttackReport | undefined): string => (a ? LABEL[a.outcome] : '—');
  const lines = ['| attack | category | protected (cordon) | unprotected (weak setup) |', '|---|---|---|---|'];
  for (const a of protectedCard.attacks) lines.push(`| \`${a.id}\` | ${a.category} | ${cell(a)} | ${cell(other.get(a.id))} |`);
  const sum = (c: Scorecard): string => `${c.summary.contained} contained, ${c.summary.succeeded} succeeded, ${c.summary.errors} could not judge, ${c.summary.notApplicable} n/a`;
  lines.push(`| **total ${protectedCard.summary.total}** | | ${sum(protectedCard)} | ${sum(unprotectedCard)} |`);
  return lines.join('\n') + '\n';
}
