/**
 * Alerts raised by the detector, newest first, each with its evidence,
 * score and the action it carried out; acknowledge one (recorded in the
 * audit log as `alert.acked`).
 */
import { useCallback, useEffect, useState } from 'preact/hooks';
import type { WireAlert } from '../../../src/sdk/api-types.js';
import { StaleNote, useApp } from '../app.js';
import { clock } from '../format.js';

export function AlertsPage() {
  const { api, report, live } = useApp();
  const [alerts, setAlerts] = useState<WireAlert[] | undefined>();
  const [showAcked, setShowAcked] = useState(false);
  const [loadedAt, setLoadedAt] = useState<number>();
  const load = useCallback(async () => {
    try {
      setAlerts(await api.listAlerts({ limit: 200, ...(showAcked ? {} : { acked: false }) }));
      setLoadedAt(Date.now());
    } catch (err) {
      report(err);
    }
  }, [api, report, showAcked]);
  useEffect(() => {
    void load();
    return live.subscribe(['detect.alert', 'alert.'], () => void load());
  }, [load]);
  const ack = async (id: string) => {
    try {
      await api.ackAlert(id);
    } catch (err) {
      report(err);
    }
    void load();
  };
  return (
    <section id="alerts-page">
      <h2>Alerts <span class="count">{alerts ? `${alerts.length}${showAcked ? '' : ' open'}` : 'loading…'}</span></h2>
      <label class="toggle"><input type="checkbox" checked={showAcked} onChange={(e) => setShowAcked((e.target as HTMLInputElement).checked)} /> show acknowledged</label>
      <StaleNote loadedAt={loadedAt} />
      {alerts?.length === 0 && <p class="empty">No {showAcked ? '' : 'open '}alerts. Agents behave as their baselines say (or are still being learned).</p>}
      {alerts?.map((a) => (
        <article key={a.id} class={`card alert ${a.ackedAt ? 'acked' : ''}`} data-alert={a.id}>
          <div class="row">
            <span class="verb">{a.kind}</span>
            <span><strong>{a.feature}</strong> = <span class="mono">{String(a.value)}</span></span>
            <span class="muted">score {a.score.toFixed(2)} · action <strong>{a.action}</strong></span>
          </div>
          <dl class="facts">
            <dt>agent</dt><dd>{a.agent}</dd>
            <dt>sandbox</dt><dd class="mono">{a.sandbox ? <a href={`#/sandboxes/${a.sandbox}`}>{a.sandbox}</a> : '—'}</dd>
            <dt>when</dt><dd>{clock(a.ts)}{a.seq !== undefined ? ` (audit seq ${a.seq})` : ''}</dd>
            <dt>id</dt><dd class="mono">{a.id}</dd>
          </dl>
          <h4>Evidence</h4>
          <pre class="excerpt">{JSON.stringify(a.evidence, null, 2)}</pre>
          {a.ackedAt
            ? <p class="muted">Acknowledged by {a.ackedBy} at {clock(a.ackedAt)}.</p>
            : <button disabled={live.status === 'down'} onClick={() => void ack(a.id)}>Acknowledge</button>}
        </article>
      ))}
    </section>
  );
}
