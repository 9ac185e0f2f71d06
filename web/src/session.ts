/**
 * Sign-in state of the dashboard.
 *
 * The operator token is kept in `sessionStorage` (this tab only, gone when
 * the tab closes), not in a cookie: the API reads the token only from the
 * `Authorization` header, so no request carries it implicitly and a page on
 * another site cannot make the browser send it (no CSRF to defend against,
 * and the API needs no cookie path of its own). What protects the token in
 * the tab is the strict CSP (`script-src 'self'`, no inline script, no
 * third-party code): an injected string cannot run and read it.
 *
 * Agent credentials (a sandbox service key `cordon-sk-…`, an identity JWT)
 * are refused before they are sent anywhere; the server refuses them too.
 */
import { OperatorClient } from '../../src/sdk/operator-client.js';

const KEY = 'cordon.operatorToken';

/** What a failure means for the person looking at the page. */
export type Trouble =
  | { kind: 'signed-out'; message: string }
  | { kind: 'unreachable'; message: string }
  | { kind: 'error'; message: string; fix?: string; code?: string };

export function storedToken(): string | undefined {
  try {
    return sessionStorage.getItem(KEY) ?? undefined;
  } catch {
    return undefined;
  }
}

export function storeToken(token: string): void {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(KEY);
}

export function clientFor(token: string): OperatorClient {
  return new OperatorClient({ baseUrl: '', token, requestTimeoutMs: 15_000 });
}

/** Why a token cannot be an operator token, judged by its shape alone. */
export function agentCredentialKind(token: string): string | undefined {
  if (/^cordon-sk-/.test(token)) return 'a sandbox service key';
  if (/^eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) return 'a sandbox identity token';
  return undefined;
}

/** The plain meaning of an error thrown by the client. */
export function troubleOf(err: unknown): Trouble {
  const e = err as { code?: string; message?: string; fix?: string } | undefined;
  const code = e?.code ?? '';
  if (code === 'unauthenticated') {
    return { kind: 'signed-out', message: 'The control plane no longer accepts your operator token (it was revoked or replaced). Sign in again with the current token from $CORDON_HOME/operator-token.' };
  }
  if (code === 'env-daemon-unreachable' || code === 'env-daemon-timeout') {
    return { kind: 'unreachable', message: 'The control plane is not answering: it may have stopped. What is shown may be out of date; the page keeps trying.' };
  }
  return { kind: 'error', message: e?.message ?? String(err), ...(e?.fix ? { fix: e.fix } : {}), ...(code ? { code } : {}) };
}
