/**
 * The app's shared state: the signed-in client, a ticking clock, the live
 * audit stream (one per tab, shared by the pages) and the one place that
 * turns failures into plain words (signed out, control plane gone, error).
 */
import { createContext, type ComponentChildren } from 'preact';
import { useContext, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { WireAuditEvent } from '../../src/sdk/api-types.js';
import type { OperatorClient } from '../../src/sdk/operator-client.js';
import { troubleOf, type Trouble } from './session.js';

export type LiveStatus = 'connecting' | 'live' | 'down';

/** Called with each event, or with `undefined` after a reconnect (refetch: events may have been missed). */
export type LiveListener = (e: WireAuditEvent | undefined) => void;

export interface AppContext {
  api: OperatorClient;
  /** ms since the epoch, updated every second. */
  now: number;
  live: { status: LiveStatus; since: number; subscribe(prefixes: string[], fn: LiveListener): () => void };
  /** Show a failure (signs out on a refused token). */
  report(err: unknown): void;
  /** The trouble shown in the banner, if any. */
  trouble: Trouble | undefined;
  clearTrouble(): void;
}

const Ctx = createContext<AppContext | undefined>(undefined);

export function useApp(): AppContext {
  const c = useContext(Ctx);
  if (!c) throw new Error('useApp outside <AppProvider>');
  return c;
}

export function AppProvider(p: { api: OperatorClient; onSignedOut: (message: string) => void; children: ComponentChildren }) {
  const [now, setNow] = useState(Date.now());
  const [status, setStatus] = useState<LiveStatus>('connecting');
  const [since, setSince] = useState(Date.now());
  const [trouble, setTrouble] = useState<Trouble | undefined>();
  const listeners = useRef(new Set<{ prefixes: string[]; fn: LiveListener }>());

  const report = useMemo(() => function report(err: unknown): void {
    const t = troubleOf(err);
    if (t.kind === 'signed-out') p.onSignedOut(t.message);
    else setTrouble(t);
  }, [p.onSignedOut]);

  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);

  // One audit stream for the tab; reconnects with backoff and tells the pages to refetch.
  useEffect(() => {
    const abort = new AbortController();
    let failures = 0;
    let wasDown = false;
    const notify = (e: WireAuditEvent | undefined): void => {
      for (const l of listeners.current) if (e === undefined || l.prefixes.some((x) => e.type.startsWith(x))) l.fn(e);
    };
    (async function follow() {
      while (!abort.signal.aborted) {
        try {
          await p.api.streamEvents({
            signal: abort.signal,
            onOpen: () => {
              failures = 0;
              setStatus('live');
              setSince(Date.now());
              setTrouble((t) => (t?.kind === 'unreachable' ? undefined : t));
              if (wasDown) notify(undefined);
              wasDown = false;
            },
            onEvent: notify,
          });
        } catch (err) {
          if (abort.signal.aborted) return;
          const t = troubleOf(err);
          if (t.kind === 'signed-out') return p.onSignedOut(t.message);
          setTrouble(t);
        }
        if (abort.signal.aborted) return;
        wasDown = true;
        setStatus('down');
        setSince(Date.now());
        failures++;
        await new Promise((r) => setTimeout(r, Math.min(5000, 500 * 2 ** Math.min(failures, 4))));
      }
    })();
    return () => abort.abort();
  }, [p.api]);

  const value: AppContext = {
    api: p.api,
    now,
    live: {
      status, since,
      subscribe(prefixes, fn) {
        const entry = { prefixes, fn };
        listeners.current.add(entry);
        return () => listeners.current.delete(entry);
      },
    },
    report,
    trouble,
    clearTrouble: () => setTrouble(undefined),
  };
  return <Ctx.Provider value={value}>{p.children}</Ctx.Provider>;
}

/** Says plainly when what is shown may be out of date. */
export function StaleNote(p: { loadedAt: number | undefined }) {
  const { live, now } = useApp();
  if (live.status !== 'down') return null;
  const at = p.loadedAt ? new Date(p.loadedAt).toLocaleTimeString(undefined, { hour12: false }) : 'never';
  return (
    <p class="stale" role="status">
      Not live: the control plane is not answering. This view was last loaded at {at} ({Math.round((now - (p.loadedAt ?? now)) / 1000)}s ago)
      and may be out of date; actions are disabled until it answers again.
    </p>
  );
}
