/**
 * The audit log: a filterable stream (type, agent, sandbox, decision), newest
 * first and following live, the chain's verification status, and an export
 * of the filtered events as JSON lines.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import type { WireAuditEvent, WireAuditQuery, WireVerifyReport } from '../../../src/sdk/api-types.js';
import { StaleNote, useApp } from '../app.js';
import { clock } from '../format.js';

const TYPES = [
  'sandbox.create', 'sandbox.ready', 'sandbox.setup', 'sandbox.exec', 'sandbox.exec.result', 'sandbox.destroy', 'sandbox.pause', 'sandbox.resume',
  'sandbox.file.read', 'sandbox.file.write', 'sandbox.token', 'sandbox.token.failure', 'sandbox.protocol-error', 'sandbox.supervised', 'sandbox.unsupervised',
  'egress.request', 'egress.close', 'egress.refusals', 'egress.exfiltration', 'secret.reflected',
  'llm.auth', 'llm.request', 'llm.response', 'tool.auth', 'tool.call', 'tool.refused', 'tool.poisoned', 'tool.upstream',
  'tunnel.open', 'tunnel.session', 'tunnel.connect', 'tunnel.disconnect', 'tunnel.refused', 'tunnel.forbidden', 'tunnel.close',
  'approval.requested', 'approval.decided', 'approval.consumed', 'approval.expired', 'approval.refused', 'approval.forbidden', 'approval.notify-failed',
  'detect.alert', 'detect.error', 'detect.action-failed', 'detect.notify-failed', 'alert.acked',
  'api.auth', 'api.request', 'daemon.start', 'daemon.stop', 'audit.key-rotated', 'audit.dropped', 'telemetry.dropped',
];
const DECISIONS = ['allow', 'deny', 'approve', 'error'];

type Filter = { type: string; agent: string; sandbox: string; decision: string };

function queryOf(f: Filter): WireAuditQuery {
  return {
    ...(f.type ? { type: f.type } : {}), ...(f.agent ? { agent: f.agent } : {}),
    ...(f.sandbox ? { sandbox: f.sandbox } : {}), ...(f.decision ? { decision: f.decision } : {}),
  };
}

function matches(e: WireAuditEvent, f: Filter): boolean {
  return (!f.type || e.type === f.type) && (!f.agent || e.agent === f.agent) && (!f.sandbox || e.sandbox === f.sandbox) && (!f.decision || e.decision === f.decision);
}

export function AuditPage() {
  const { api, report, live } = useApp();
  const [filter, setFilter] = useState<Filter>({ type: '', agent: '', sandbox: '', decision: '' });
  // What is typed in the text fields, applied on change (leaving the field, Enter): a re-render while typing
  // (a live event) must not reset the field to the applied filter and lose the typing.
  const [draft, setDraft] = useState<Filter>({ type: '', agent: '', sandbox: '', decision: '' });
  const [events, setEvents] = useState<WireAuditEvent[] | undefined>();
  const [more, setMore] = useState(false);
  const [verify, setVerify] = useState<WireVerifyReport | 'checking' | undefined>();
  const [exported, setExported] = useState<string | undefined>();
  const [loadedAt, setLoadedAt] = useState<number>();
  const filterRef = useRef(filter);
  filterRef.current = filter;

  // Loads overlap when the filter changes while one is under way: only the newest may fill the table
  // (an older, unfiltered answer arriving last would otherwise replace the filtered one).
  const loads = useRef(0);
  const load = useCallback(async (f: Filter) => {
    const mine = ++loads.current;
    try {
      const ev = await api.auditEvents({ ...queryOf(f), order: 'desc', limit: 200 });
      if (mine !== loads.current) return;
      setEvents(ev);
      setMore(ev.length === 200);
      setLoadedAt(Date.now());
    } catch (err) {
      report(err);
    }
  }, [api, report]);

  const runVerify = useCallback(async () => {
    setVerify('checking');
    try {
      setVerify(await api.verifyAudit());
    } catch (err) {
      setVerify(undefined);
      report(err);
    }
  }, [api, report]);

  useEffect(() => void runVerify(), [runVerify]);
  useEffect(() => void load(filter), [load, filter]);
  useEffect(() => live.subscribe([''], (e) => {
    if (e === undefined) return void load(filterRef.current);
    if (matches(e, filterRef.current)) setEvents((old) => (old && !old.some((x) => x.seq === e.seq) ? [e, ...old].slice(0, 1000) : old));
  }), [load]);

  const older = async () => {
    const last = events?.[events.length - 1];
    if (!last) return;
    try {
      const ev = await api.auditEvents({ ...queryOf(filter), order: 'desc', limit: 200, beforeSeq: last.seq });
      setEvents([...(events ?? []), ...ev]);
      setMore(ev.length === 200);
    } catch (err) {
      report(err);
    }
  };

  const exportNow = async () => {
    try {
      const text = await api.exportAudit(queryOf(filter));
      const lines = text === '' ? 0 : text.trimEnd().split('\n').length;
      const url = URL.createObjectURL(new Blob([text], { type: 'application/x-ndjson' }));
      const a = document.createElement('a');
      a.href = url;
      a.download = `cordon-audit-${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      setExported(`Exported ${lines} events as JSON lines.`);
    } catch (err) {
      report(err);
    }
  };

  const typed = (k: keyof Filter) => (e: Event) => {
    const v = (e.target as HTMLInputElement).value;
    setDraft((d) => ({ ...d, [k]: v }));
  };
  const field = (k: keyof Filter) => (e: Event) => {
    const v = (e.target as HTMLInputElement).value.trim();
    setDraft((d) => ({ ...d, [k]: v }));
    setFilter((f) => ({ ...f, [k]: v }));
  };
  return (
    <section id="audit-page">
      <h2>Audit log</h2>
      <div id="verify-status" class={`card verify ${verify === undefined || verify === 'checking' ? '' : verify.ok ? 'ok' : 'bad'}`}>
        {verify === 'checking' && <span>Verifying the hash chain and signed checkpoints…</span>}
        {verify === undefined && <span>Chain not verified yet.</span>}
        {verify !== undefined && verify !== 'checking' && (verify.ok
          ? <span>Chain intact: {verify.events} events checked, {verify.checkpoints} signed checkpoints{verify.unsealedEvents ? `, ${verify.unsealedEvents} events after the last checkpoint (chained, not yet signed)` : ''} ({verify.durationMs} ms).</span>
          : <span><strong>Tampering detected</strong>{verify.firstBadSeq !== undefined ? ` at seq ${verify.firstBadSeq}` : ''}{verify.problem ? ` (${verify.problem})` : ''}: {verify.message}</span>)}
        <button onClick={() => void runVerify()} disabled={verify === 'checking'}>Verify again</button>
      </div>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>type <input list="audit-types" value={draft.type} onInput={typed('type')} onChange={field('type')} placeholder="any" id="filter-type" /></label>
        <datalist id="audit-types">{TYPES.map((t) => <option key={t} value={t} />)}</datalist>
        <label>agent <input value={draft.agent} onInput={typed('agent')} onChange={field('agent')} placeholder="any" id="filter-agent" /></label>
        <label>sandbox <input value={draft.sandbox} onInput={typed('sandbox')} onChange={field('sandbox')} placeholder="any" id="filter-sandbox" /></label>
        <label>decision <select value={filter.decision} onChange={field('decision')} id="filter-decision">
          <option value="">any</option>{DECISIONS.map((d) => <option key={d} value={d}>{d}</option>)}
        </select></label>
        <button type="button" onClick={() => void exportNow()} id="export">Export JSONL</button>
        {exported && <span class="muted" id="export-note">{exported}</span>}
      </form>
      <StaleNote loadedAt={loadedAt} />
      <table class="grid" id="audit-table">
        <thead><tr><th>seq</th><th>time</th><th>type</th><th>actor</th><th>agent</th><th>sandbox</th><th>decision</th><th>data</th></tr></thead>
        <tbody>
          {(events ?? []).map((e) => (
            <tr key={e.seq}>
              <td>{e.seq}</td><td>{clock(e.ts)}</td><td class="mono">{e.type}</td><td>{e.actor}</td><td>{e.agent ?? ''}</td>
              <td class="mono">{e.sandbox ? <a href={`#/sandboxes/${e.sandbox}`}>{e.sandbox}</a> : ''}</td>
              <td>{e.decision && <span class={`decision ${e.decision}`}>{e.decision}</span>}{e.reason ? ` ${e.reason}` : ''}</td>
              <td class="mono wrap data">{JSON.stringify(e.data).slice(0, 300)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {events?.length === 0 && <p class="empty">No event matches.</p>}
      {more && <button onClick={() => void older()}>Older events</button>}
    </section>
  );
}
