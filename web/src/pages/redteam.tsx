/**
 * The latest red-team scorecard (`cordon redteam` writes it): how many
 * attacks were contained, how many succeeded, and each attack with its
 * outcome and evidence, failures first.
 */
import { useEffect, useState } from 'preact/hooks';
import type { WireRedteamReport } from '../../../src/sdk/api-types.js';
import { useApp } from '../app.js';
import { clock, duration } from '../format.js';

const ORDER: Record<string, number> = { succeeded: 0, error: 1, contained: 2, 'not-applicable': 3 };

export function RedteamPage() {
  const { api, report } = useApp();
  const [card, setCard] = useState<WireRedteamReport | null | undefined>();
  useEffect(() => {
    api.redteamLatest().then((r) => setCard(r ?? null), (err) => report(err));
  }, [api, report]);
  if (card === undefined) return <section id="redteam-page"><h2>Red team</h2><p>loading…</p></section>;
  if (card === null) {
    return (
      <section id="redteam-page">
        <h2>Red team</h2>
        <p class="empty" id="redteam-none">No red-team run has been recorded yet. Run <code>cordon redteam</code> against this deployment; its scorecard shows up here.</p>
      </section>
    );
  }
  const s = card.summary;
  const attacks = [...card.attacks].sort((a, b) => (ORDER[a.outcome] ?? 9) - (ORDER[b.outcome] ?? 9) || a.category.localeCompare(b.category));
  return (
    <section id="redteam-page">
      <h2>Red team <span class="count">profile {card.profile}</span></h2>
      <p class="muted">Run {clock(card.startedAt)} → {clock(card.finishedAt)} ({duration(card.durationMs)}).</p>
      <div class="score" id="redteam-summary">
        <div class={`tile ${s.succeeded > 0 ? 'bad' : 'ok'}`}><b>{s.succeeded}</b> succeeded</div>
        <div class="tile ok"><b>{s.contained}</b> contained</div>
        <div class={`tile ${s.errors > 0 ? 'warn' : ''}`}><b>{s.errors}</b> errors</div>
        <div class="tile"><b>{s.notApplicable}</b> not applicable</div>
        <div class="tile"><b>{s.total}</b> total</div>
      </div>
      <table class="grid" id="redteam-attacks">
        <thead><tr><th>outcome</th><th>category</th><th>attack</th><th>evidence</th><th>time</th></tr></thead>
        <tbody>
          {attacks.map((a) => (
            <tr key={a.id} class={`outcome-${a.outcome}`}>
              <td><span class={`state ${a.outcome}`}>{a.outcome}</span></td>
              <td>{a.category}</td>
              <td><div>{a.title}</div><div class="mono muted">{a.id}</div></td>
              <td class="wrap">{a.evidence.length === 0 ? <span class="muted">—</span> : <ul>{a.evidence.slice(0, 8).map((e, i) => <li key={i} class="mono">{e}</li>)}</ul>}</td>
              <td>{duration(a.durationMs)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
