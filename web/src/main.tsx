/**
 * The cordon operator dashboard: sign-in with the operator token, then the
 * approvals queue, sandboxes, audit log, alerts and the latest red-team
 * scorecard. Hash routes (`#/approvals`, `#/sandboxes/ID`, …) keep the
 * server side a plain static bundle.
 */
import { render } from 'preact';
import { useCallback, useEffect, useMemo, useState } from 'preact/hooks';
import { AppProvider, useApp } from './app.js';
import { AlertsPage } from './pages/alerts.js';
import { ApprovalsPage } from './pages/approvals.js';
import { AuditPage } from './pages/audit.js';
import { RedteamPage } from './pages/redteam.js';
import { SandboxDetail, SandboxesPage } from './pages/sandboxes.js';
import { agentCredentialKind, clientFor, forgetToken, storedToken, storeToken, troubleOf } from './session.js';
import './styles.css';

function useHashRoute(): string[] {
  const read = () => location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

function SignIn(p: { notice: string | undefined; onSignedIn: (token: string) => void }) {
  const [token, setToken] = useState('');
  const [problem, setProblem] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (ev: Event) => {
    ev.preventDefault();
    const t = token.trim();
    setProblem(undefined);
    if (t === '') return setProblem('Paste the operator token first.');
    const kind = agentCredentialKind(t);
    if (kind) return setProblem(`Refused: this is ${kind}, an agent credential. Only the operator token signs in here; agents can never see or decide approvals.`);
    setBusy(true);
    try {
      await clientFor(t).health();
      storeToken(t);
      p.onSignedIn(t);
    } catch (err) {
      const trouble = troubleOf(err);
      setProblem(trouble.kind === 'signed-out'
        ? 'Refused: the control plane does not accept this token. Use the operator token from $CORDON_HOME/operator-token (shown once by the first `cordon up`).'
        : trouble.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <h1>cordon</h1>
      <p>Sign in with the operator token of this control plane.</p>
      {p.notice && <p class="notice" role="alert">{p.notice}</p>}
      <form onSubmit={submit}>
        <label for="token">Operator token</label>
        <input id="token" type="password" autocomplete="off" spellcheck={false} value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
        <button type="submit" disabled={busy}>{busy ? 'Checking…' : 'Sign in'}</button>
      </form>
      {problem && <p class="error" role="alert" id="signin-problem">{problem}</p>}
      <p class="hint">The token stays in this tab only (session storage) and is sent only to this control plane.</p>
    </main>
  );
}

const TABS: Array<[string, string]> = [['approvals', 'Approvals'], ['sandboxes', 'Sandboxes'], ['audit', 'Audit'], ['alerts', 'Alerts'], ['redteam', 'Red team']];

function Shell(p: { onSignOut: () => void }) {
  const route = useHashRoute();
  const { live, trouble, clearTrouble } = useApp();
  const page = route[0] ?? 'approvals';
  let body;
  if (page === 'sandboxes' && route[1]) body = <SandboxDetail id={route[1]} />;
  else if (page === 'sandboxes') body = <SandboxesPage />;
  else if (page === 'audit') body = <AuditPage />;
  else if (page === 'alerts') body = <AlertsPage />;
  else if (page === 'redteam') body = <RedteamPage />;
  else body = <ApprovalsPage />;
  return (
    <div class="shell">
      <header>
        <span class="brand">cordon</span>
        <nav>
          {TABS.map(([id, label]) => <a key={id} href={`#/${id}`} class={page === id ? 'active' : ''}>{label}</a>)}
        </nav>
        <span class={`live-indicator ${live.status}`} id="live-status" title="the audit stream that keeps this page current">
          {live.status === 'live' ? '● live' : live.status === 'connecting' ? '○ connecting…' : '○ not live'}
        </span>
        <button class="link" onClick={p.onSignOut}>Sign out</button>
      </header>
      {trouble && (
        <div class={`banner ${trouble.kind}`} role="alert" id="trouble">
          <span>{trouble.message}{trouble.kind === 'error' && trouble.fix ? ` Fix: ${trouble.fix}` : ''}</span>
          {trouble.kind === 'error' && <button class="link" onClick={clearTrouble}>dismiss</button>}
        </div>
      )}
      <main>{body}</main>
    </div>
  );
}

function Root() {
  const [token, setToken] = useState<string | undefined>(storedToken);
  const [notice, setNotice] = useState<string | undefined>();
  const api = useMemo(() => (token ? clientFor(token) : undefined), [token]);
  const signOut = useCallback((message?: string) => {
    forgetToken();
    setNotice(message);
    setToken(undefined);
  }, []);
  if (!api) return <SignIn notice={notice} onSignedIn={(t) => { setNotice(undefined); setToken(t); }} />;
  return (
    <AppProvider api={api} onSignedOut={signOut}>
      <Shell onSignOut={() => signOut('Signed out.')} />
    </AppProvider>
  );
}

render(<Root />, document.getElementById('app')!);
