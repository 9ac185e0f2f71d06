/**
 * Sandboxes: each with its state, isolation tier stated plainly, age,
 * expiry and resource use (limits from the config, memory and CPU measured
 * on the host); pause, resume, destroy. The detail view adds the sandbox's
 * recent commands, network decisions and model calls from the audit log.
 */
import { useCallback, useEffect, useState } from 'preact/hooks';
import type { WireAuditEvent, WireSandbox, WireSandboxUsage } from '../../../src/sdk/api-types.js';
import { StaleNote, useApp } from '../app.js';
import { age, clock, mib, summarise, tierLabel, until } from '../format.js';

function useSandboxActions(after: () => void) {
  const { api, report, live } = useApp();
  const [busy, setBusy] = useState<string | undefined>();
  const [confirming, setConfirming] = useState<string | undefined>();
  const run = async (id: string, what: 'pause' | 'resume' | 'destroy') => {
    setBusy(id);
    try {
      if (what === 'pause') await api.pauseSandbox(id);
      else if (what === 'resume') await api.resumeSandbox(id);
      else await api.destroySandbox(id);
    } catch (err) {
      report(err);
    } finally {
      setBusy(undefined);
      setConfirming(undefined);
      after();
    }
  };
  const Buttons = (p: { s: WireSandbox }) => {
    const s = p.s;
    const off = busy === s.id || live.status === 'down' || s.state === 'destroyed' || s.state === 'stopping';
    if (confirming === s.id) {
      return (
        <span class="actions">
          <button class="deny" disabled={off} onClick={() => void run(s.id, 'destroy')}>Destroy {s.id}: yes</button>
          <button onClick={() => setConfirming(undefined)}>Keep it</button>
        </span>
      );
    }
    return (
      <span class="actions">
        {s.state === 'paused'
          ? <button disabled={off} onClick={() => void run(s.id, 'resume')}>Resume</button>
          : <button disabled={off || s.state !== 'running'} onClick={() => void run(s.id, 'pause')}>Pause</button>}
        <button class="deny" disabled={off} onClick={() => setConfirming(s.id)}>Destroy…</button>
      </span>
    );
  };
  return Buttons;
}

function Tier(p: { s: WireSandbox }) {
  const t = tierLabel(p.s.tier);
  return <span class={`tier ${t.strong ? 'strong' : 'weak'}`} title={t.detail}>{t.short} <span class="muted">({t.detail})</span></span>;
}

function Use(p: { u: WireSandboxUsage | undefined }) {
  const u = p.u;
  if (!u) return <span class="muted">—</span>;
  return (
    <span>
      {u.rssMiB !== undefined ? `${mib(u.rssMiB)} of ${mib(u.memoryMiB)} RAM` : `${mib(u.memoryMiB)} RAM (not measured)`}
      {u.cpuSeconds !== undefined ? ` · ${u.cpuSeconds.toFixed(1)} CPU s` : ''}
      {u.vcpus !== undefined ? ` · ${u.vcpus} vCPU` : ''}
    </span>
  );
}

export function SandboxesPage() {
  const { api, report, live, now } = useApp();
  const [list, setList] = useState<WireSandbox[] | undefined>();
  const [usage, setUsage] = useState<Map<string, WireSandboxUsage>>(new Map());
  const [loadedAt, setLoadedAt] = useState<number>();
  const load = useCallback(async () => {
    try {
      const [s, u] = await Promise.all([api.listSandboxes(), api.sandboxUsage()]);
      setList(s);
      setUsage(new Map(u.map((x) => [x.id, x])));
      setLoadedAt(Date.now());
    } catch (err) {
      report(err);
    }
  }, [api, report]);
  useEffect(() => {
    void load();
    // Resource use changes without events: poll it, but only while someone can see the tab (each request is audited).
    const t = setInterval(() => document.visibilityState === 'visible' && void load(), 15_000);
    const off = live.subscribe(['sandbox.create', 'sandbox.ready', 'sandbox.pause', 'sandbox.resume', 'sandbox.destroy', 'detect.alert'], () => void load());
    return () => {
      clearInterval(t);
      off();
    };
  }, [load]);
  const Buttons = useSandboxActions(() => void load());
  return (
    <section id="sandboxes-page">
      <h2>Sandboxes <span class="count">{list ? `${list.length}` : 'loading…'}</span></h2>
      <StaleNote loadedAt={loadedAt} />
      {list?.length === 0 && <p class="empty">No sandbox is running.</p>}
      {list && list.length > 0 && (
        <table class="grid" id="sandbox-table">
          <thead><tr><th>id</th><th>agent</th><th>state</th><th>isolation</th><th>age</th><th>expires</th><th>resource use</th><th></th></tr></thead>
          <tbody>
            {list.map((s) => (
              <tr key={s.id} data-sandbox={s.id}>
                <td class="mono"><a href={`#/sandboxes/${s.id}`}>{s.id}</a></td>
                <td>{s.agent}</td>
                <td><span class={`state ${s.state}`}>{s.state}</span></td>
                <td><Tier s={s} /></td>
                <td>{age(s.createdAt, now)}</td>
                <td>{until(s.expiresAt, now)}</td>
                <td><Use u={usage.get(s.id)} /></td>
                <td><Buttons s={s} /></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

const GROUPS: Array<{ title: string; id: string; match: (e: WireAuditEvent) => boolean; keys: string[] }> = [
  { title: 'Recent commands', id: 'commands', match: (e) => e.type === 'sandbox.exec' || e.type === 'sandbox.exec.result', keys: ['argv', 'cwd', 'user', 'exitCode', 'signal', 'timedOut', 'durationMs', 'error'] },
  { title: 'Network decisions', id: 'network', match: (e) => e.type.startsWith('egress.') || e.type.startsWith('approval.'), keys: ['method', 'host', 'port', 'path', 'url', 'status', 'bytesOut', 'bytesIn', 'id'] },
  { title: 'Model calls', id: 'models', match: (e) => e.type.startsWith('llm.'), keys: ['model', 'provider', 'api', 'status', 'promptTokens', 'completionTokens', 'latencyMs'] },
  { title: 'Tool calls', id: 'tools', match: (e) => e.type.startsWith('tool.'), keys: ['server', 'tool', 'name', 'args'] },
];

export function SandboxDetail(p: { id: string }) {
  const { api, report, live, now } = useApp();
  const [s, setS] = useState<WireSandbox | undefined>();
  const [gone, setGone] = useState<string | undefined>();
  const [u, setU] = useState<WireSandboxUsage | undefined>();
  const [events, setEvents] = useState<WireAuditEvent[]>([]);
  const [loadedAt, setLoadedAt] = useState<number>();
  const load = useCallback(async () => {
    try {
      const ev = await api.auditEvents({ sandbox: p.id, order: 'desc', limit: 500 });
      setEvents(ev);
      try {
        setS(await api.getSandbox(p.id));
        setU((await api.sandboxUsage()).find((x) => x.id === p.id));
        setGone(undefined);
      } catch (err) {
        if ((err as { code?: string }).code !== 'not-found') throw err;
        setS(undefined);
        setGone(`Sandbox ${p.id} is not running (it ended or never existed); its audit history is below.`);
      }
      setLoadedAt(Date.now());
    } catch (err) {
      report(err);
    }
  }, [api, report, p.id]);
  useEffect(() => {
    void load();
    // A busy sandbox writes many events: reload at most once a second.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const off = live.subscribe([''], (e) => {
      if ((e === undefined || e.sandbox === p.id) && timer === undefined) {
        timer = setTimeout(() => {
          timer = undefined;
          void load();
        }, 1000);
      }
    });
    return () => {
      off();
      if (timer !== undefined) clearTimeout(timer);
    };
  }, [load]);
  const Buttons = useSandboxActions(() => void load());
  return (
    <section id="sandbox-detail">
      <p><a href="#/sandboxes">← all sandboxes</a></p>
      <h2 class="mono">{p.id}</h2>
      <StaleNote loadedAt={loadedAt} />
      {gone && <p class="notice">{gone}</p>}
      {s && (
        <dl class="facts wide">
          <dt>agent</dt><dd>{s.agent}</dd>
          <dt>state</dt><dd><span class={`state ${s.state}`}>{s.state}</span>{s.endReason ? ` (${s.endReason})` : ''}</dd>
          <dt>isolation</dt><dd><Tier s={s} /></dd>
          <dt>started</dt><dd>{clock(s.createdAt)} ({age(s.createdAt, now)} ago, from {s.startedFrom}, ready in {s.startMs} ms)</dd>
          <dt>expires</dt><dd>{until(s.expiresAt, now)}</dd>
          <dt>resource use</dt><dd><Use u={u} /></dd>
          <dt>actions</dt><dd><Buttons s={s} /></dd>
        </dl>
      )}
      {GROUPS.map((g) => {
        const rows = events.filter(g.match).slice(0, 50);
        return (
          <div key={g.id} id={`detail-${g.id}`}>
            <h3>{g.title} <span class="count">{rows.length}</span></h3>
            {rows.length === 0 ? <p class="empty">None recorded.</p> : (
              <table class="grid">
                <thead><tr><th>seq</th><th>time</th><th>type</th><th>decision</th><th>details</th></tr></thead>
                <tbody>
                  {rows.map((e) => (
                    <tr key={e.seq}>
                      <td>{e.seq}</td><td>{clock(e.ts)}</td><td class="mono">{e.type}</td>
                      <td>{e.decision && <span class={`decision ${e.decision}`}>{e.decision}</span>}{e.reason ? ` ${e.reason}` : ''}</td>
                      <td class="mono wrap">{summarise(e.data, g.keys)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
        );
      })}
    </section>
  );
}
