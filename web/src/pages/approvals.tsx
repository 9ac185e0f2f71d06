/**
 * The approvals queue: every pending approval with the exact action (method,
 * URL, headers as masked by the server, body excerpt, or tool and
 * arguments), agent, sandbox, age and expiry; approve or deny with a reason.
 *
 * A decision's result is never the page's own guess: after the POST the
 * approval is fetched again and its stored state is shown. An approval that
 * another operator (or the CLI, or its expiry) settled meanwhile is shown as
 * decided elsewhere, with who and when, and the local attempt as not applied.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import type { WireApproval } from '../../../src/sdk/api-types.js';
import { StaleNote, useApp } from '../app.js';
import { age, clock, until } from '../format.js';

type Outcome =
  | { kind: 'mine'; approval: WireApproval; asked: 'approve' | 'deny' }
  | { kind: 'elsewhere'; approval: WireApproval | undefined; id: string; attempted?: 'approve' | 'deny' }
  | { kind: 'unconfirmed'; id: string; asked: 'approve' | 'deny'; message: string };

export function ApprovalsPage() {
  const { api, report, live } = useApp();
  const [pending, setPending] = useState<WireApproval[] | undefined>();
  const [recent, setRecent] = useState<WireApproval[]>([]);
  const [loadedAt, setLoadedAt] = useState<number>();
  const [outcomes, setOutcomes] = useState<Record<string, Outcome>>({});
  const shown = useRef(new Set<string>());
  const deciding = useRef(new Set<string>());

  const load = useCallback(async () => {
    try {
      const [p, all] = await Promise.all([api.listApprovals({ state: 'pending', limit: 200 }), api.listApprovals({ limit: 50 })]);
      const stillPending = new Set(p.map((a) => a.id));
      const byId = new Map(all.map((a) => [a.id, a]));
      const next: Record<string, Outcome> = {};
      for (const id of shown.current) {
        if (stillPending.has(id) || deciding.current.has(id)) continue;
        shown.current.delete(id);
        next[id] = { kind: 'elsewhere', id, approval: byId.get(id) ?? (await api.getApproval(id).catch(() => undefined)) };
      }
      for (const a of p) shown.current.add(a.id);
      setOutcomes((o) => {
        const merged = { ...o, ...next };
        // Keep each shown result current (an approved request gets used; an approval expires).
        for (const [id, out] of Object.entries(merged)) {
          const fresh = byId.get(id);
          if (fresh && out.kind !== 'unconfirmed') merged[id] = { ...out, approval: fresh } as Outcome;
        }
        return merged;
      });
      setPending(p);
      setRecent(all.filter((a) => a.state !== 'pending'));
      setLoadedAt(Date.now());
    } catch (err) {
      report(err);
    }
  }, [api, report]);

  useEffect(() => {
    void load();
    return live.subscribe(['approval.'], () => void load());
  }, [load]);

  const decide = async (a: WireApproval, verdict: 'approve' | 'deny', reason: string): Promise<void> => {
    deciding.current.add(a.id);
    let conflict = false;
    try {
      await api.decideApproval(a.id, verdict, reason.trim() || undefined);
    } catch (err) {
      const code = (err as { code?: string }).code;
      // 409: decided or expired meanwhile; 404: gone. Either way the re-fetch below says what holds.
      if (code !== 'approval-not-pending' && code !== 'not-found') {
        deciding.current.delete(a.id);
        report(err);
        return;
      }
      conflict = true;
    }
    // Show what the control plane now holds, never the verdict we sent.
    let fresh: WireApproval | undefined;
    try {
      fresh = await api.getApproval(a.id);
    } catch (err) {
      if ((err as { code?: string }).code !== 'not-found') {
        setOutcomes((o) => ({ ...o, [a.id]: { kind: 'unconfirmed', id: a.id, asked: verdict, message: String((err as Error).message) } }));
        shown.current.delete(a.id);
        deciding.current.delete(a.id);
        return;
      }
    }
    shown.current.delete(a.id);
    deciding.current.delete(a.id);
    const settledByUs = !conflict && fresh !== undefined && (fresh.decidedBy !== undefined || fresh.approvers.length > 0);
    setOutcomes((o) => ({
      ...o,
      [a.id]: settledByUs ? { kind: 'mine', approval: fresh!, asked: verdict } : { kind: 'elsewhere', id: a.id, approval: fresh, attempted: verdict },
    }));
    void load();
  };

  const pendingIds = new Set((pending ?? []).map((a) => a.id));
  const results = Object.entries(outcomes).filter(([id]) => !pendingIds.has(id));
  return (
    <section id="approvals-page">
      <h2>Approvals <span class="count" id="pending-count">{pending ? `${pending.length} pending` : 'loading…'}</span></h2>
      <StaleNote loadedAt={loadedAt} />
      {results.map(([id, out]) => <OutcomeCard key={id} outcome={out} onDismiss={() => setOutcomes((o) => { const n = { ...o }; delete n[id]; return n; })} />)}
      {pending?.length === 0 && <p class="empty">{live.status === 'down' ? 'Nothing was waiting when this view was last loaded.' : 'Nothing is waiting for a decision.'}</p>}
      {pending?.map((a) => <PendingCard key={a.id} approval={a} onDecide={decide} />)}
      <h3>Recently settled</h3>
      <table class="grid" id="recent-approvals">
        <thead><tr><th>id</th><th>state</th><th>action</th><th>agent</th><th>sandbox</th><th>decided</th><th>used</th></tr></thead>
        <tbody>
          {recent.map((a) => (
            <tr key={a.id}>
              <td class="mono">{a.id}</td>
              <td><span class={`state ${a.state}`}>{a.state}</span></td>
              <td class="mono wrap">{actionLine(a)}</td>
              <td>{a.action.agent}</td>
              <td class="mono"><a href={`#/sandboxes/${a.action.sandboxId}`}>{a.action.sandboxId}</a></td>
              <td>{a.decidedBy ? `${a.decidedBy} · ${clock(a.decidedAt)}` : a.reason ?? ''}</td>
              <td>{a.consumedAt ? clock(a.consumedAt) : ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function actionLine(a: WireApproval): string {
  return a.action.kind === 'tool' ? `tool ${a.action.toolName ?? '?'}` : `${a.action.method ?? '?'} ${a.action.url ?? '?'}`;
}

function PendingCard(p: { approval: WireApproval; onDecide: (a: WireApproval, v: 'approve' | 'deny', reason: string) => Promise<void> }) {
  const { now, live } = useApp();
  const a = p.approval;
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState<'approve' | 'deny' | undefined>();
  const expired = Date.parse(a.expiresAt) <= now;
  const click = async (v: 'approve' | 'deny') => {
    setBusy(v);
    try {
      await p.onDecide(a, v, reason);
    } finally {
      setBusy(undefined);
    }
  };
  const act = a.action;
  return (
    <article class="card approval" data-approval={a.id}>
      <div class="row">
        <span class="verb">{act.kind === 'tool' ? 'TOOL' : act.method}</span>
        <span class="mono target">{act.kind === 'tool' ? act.toolName : act.url}</span>
      </div>
      <dl class="facts">
        <dt>agent</dt><dd>{act.agent}</dd>
        <dt>sandbox</dt><dd class="mono"><a href={`#/sandboxes/${act.sandboxId}`}>{act.sandboxId}</a></dd>
        <dt>asked</dt><dd>{age(a.createdAt, now)} ago</dd>
        <dt>expires</dt><dd class={expired ? 'bad' : ''}>{expired ? 'expired: the held request is refused (a timeout denies)' : until(a.expiresAt, now)}</dd>
        <dt>approval</dt><dd class="mono">{a.id}</dd>
        {a.approvers.length > 0 && <><dt>approved by</dt><dd>{a.approvers.join(', ')} (a second operator must approve)</dd></>}
      </dl>
      {act.headers && Object.keys(act.headers).length > 0 && (
        <table class="headers">
          <tbody>{Object.entries(act.headers).map(([k, v]) => <tr key={k}><th>{k}</th><td class="mono">{v}</td></tr>)}</tbody>
        </table>
      )}
      {act.kind === 'egress' && (
        <div class="body">
          <div class="muted">body: {act.bodyBytes ?? 0} bytes{act.bodySha256 ? ` · sha256 ${act.bodySha256.slice(0, 16)}…` : ''}{(act.bodyBytes ?? 0) > (act.bodyExcerpt?.length ?? 0) ? ' · excerpt below' : ''}</div>
          {act.bodyExcerpt ? <pre class="excerpt">{act.bodyExcerpt}</pre> : null}
        </div>
      )}
      {act.kind === 'tool' && <pre class="excerpt">{JSON.stringify(act.args, null, 2)}</pre>}
      <div class="decide">
        <input class="reason" placeholder="reason (kept in the audit log)" maxLength={1000} value={reason}
          onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
        <button class="approve" disabled={busy !== undefined || expired || live.status === 'down'} onClick={() => void click('approve')}>
          {busy === 'approve' ? 'Approving…' : 'Approve'}
        </button>
        <button class="deny" disabled={busy !== undefined || expired || live.status === 'down'} onClick={() => void click('deny')}>
          {busy === 'deny' ? 'Denying…' : 'Deny'}
        </button>
      </div>
    </article>
  );
}

function OutcomeCard(p: { outcome: Outcome; onDismiss: () => void }) {
  const o = p.outcome;
  let text: string;
  let cls: string;
  if (o.kind === 'unconfirmed') {
    cls = 'warn';
    text = `Your ${o.asked} of ${o.id} was sent, but its result could not be read back (${o.message}). Check the approval again before relying on it.`;
  } else if (o.kind === 'mine') {
    const a = o.approval;
    cls = a.state === 'approved' ? 'ok' : a.state === 'denied' ? 'denied' : 'warn';
    if (a.state === 'pending') text = `Your approval of ${a.id} is recorded (${a.approvers.join(', ')}); a second operator must approve before the request is released.`;
    else if (a.state === 'approved') text = `Approved by ${a.decidedBy} at ${clock(a.decidedAt)}${a.reason ? ` (“${a.reason}”)` : ''}. ${a.consumedAt ? `The held request was released at ${clock(a.consumedAt)}.` : 'The held request is being released.'}`;
    else if (a.state === 'denied') text = `Denied by ${a.decidedBy} at ${clock(a.decidedAt)}${a.reason ? ` (“${a.reason}”)` : ''}. The held request was refused.`;
    else text = `Approval ${a.id} is ${a.state}${a.reason ? ` (${a.reason})` : ''}.`;
  } else {
    const a = o.approval;
    cls = 'warn';
    const not = o.attempted ? ` Your ${o.attempted} was not applied.` : '';
    if (!a) text = `Approval ${o.id} no longer exists on the control plane.${not}`;
    else if (a.state === 'expired') text = `Approval ${a.id} expired undecided${a.reason ? ` (${a.reason})` : ''}: the held request was refused.${not}`;
    else text = `Approval ${a.id} was already ${a.state} elsewhere${a.decidedBy ? ` by ${a.decidedBy}` : ''}${a.decidedAt ? ` at ${clock(a.decidedAt)}` : ''}${a.reason ? ` (“${a.reason}”)` : ''}.${not}`;
  }
  const a = o.kind === 'unconfirmed' ? undefined : o.approval;
  return (
    <article class={`card outcome ${cls}`} data-outcome={o.kind === 'unconfirmed' ? o.id : (a?.id ?? (o as { id: string }).id)} data-kind={o.kind} data-state={a?.state ?? ''}>
      <p role="status">{text}</p>
      {a && <p class="mono muted">{actionLine(a)} · agent {a.action.agent} · sandbox {a.action.sandboxId}</p>}
      <button class="link" onClick={p.onDismiss}>dismiss</button>
    </article>
  );
}
