/**
 * A typed client of the operator API built on the standard `fetch` alone, so
 * the same code runs in Node (the SDK) and in the browser (the dashboard):
 * approvals, sandboxes and their resource use, the audit log (query, verify,
 * export, live stream), alerts and the latest red-team scorecard. Errors are
 * the `CordonError` subclasses of {@link errorFromApi}; a control plane that
 * cannot be reached is `env-daemon-unreachable`.
 *
 * Imports nothing from Node: keep it that way (the dashboard bundles it).
 *
 * @example
 * const api = new OperatorClient({ baseUrl: 'http://127.0.0.1:8787', token });
 * for (const a of await api.listApprovals({ state: 'pending' })) console.log(a.id, a.action.url);
 * await api.decideApproval(id, 'approve', 'expected deploy');
 */
import type {
  WireAlert, WireApproval, WireApprovalState, WireAuditEvent, WireAuditQuery, WireHealth, WireRedteamReport,
  WireSandbox, WireSandboxUsage, WireVerifyReport,
} from './api-types.js';
import { errorFromApi, errorFromResponse, timedOut, unreachable } from './errors.js';

export interface OperatorClientOptions {
  /** Base URL of the control plane, e.g. `http://127.0.0.1:8787` (empty: same origin, in a browser). */
  baseUrl: string;
  /** The operator token. */
  token: string;
  /** Per-request timeout, in ms (not for streams). @default 30000 */
  requestTimeoutMs?: number;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
}

export interface EventStreamOptions {
  /** Audit event type prefixes to receive, e.g. `['approval.', 'sandbox.']`. @default every type but `api.` */
  types?: string[];
  /** Start after this seq. @default the head when the stream opens */
  afterSeq?: number;
  signal?: AbortSignal;
  /** Called once the server accepted the stream. */
  onOpen?: () => void;
  onEvent: (e: WireAuditEvent) => void;
}

export class OperatorClient {
  readonly baseUrl: string;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(o: OperatorClientOptions) {
    this.baseUrl = o.baseUrl.replace(/\/+$/, '');
    this.#token = o.token;
    this.#timeoutMs = o.requestTimeoutMs ?? 30_000;
    this.#fetch = o.fetch ?? globalThis.fetch.bind(globalThis);
  }

  health(): Promise<WireHealth> {
    return this.#json('GET', '/v1/health');
  }

  async listApprovals(q: { state?: WireApprovalState; limit?: number } = {}): Promise<WireApproval[]> {
    return (await this.#json<{ approvals: WireApproval[] }>('GET', `/v1/approvals${query(q)}`)).approvals;
  }

  getApproval(id: string): Promise<WireApproval> {
    return this.#json('GET', `/v1/approvals/${enc(id)}`);
  }

  /** @throws CordonError `approval-not-pending` (409) when it was decided or expired meanwhile */
  decideApproval(id: string, verdict: 'approve' | 'deny', reason?: string): Promise<WireApproval> {
    return this.#json('POST', `/v1/approvals/${enc(id)}/${verdict}`, reason ? { reason } : {});
  }

  async listSandboxes(): Promise<WireSandbox[]> {
    return (await this.#json<{ sandboxes: WireSandbox[] }>('GET', '/v1/sandboxes')).sandboxes;
  }

  getSandbox(id: string): Promise<WireSandbox> {
    return this.#json('GET', `/v1/sandboxes/${enc(id)}`);
  }

  async sandboxUsage(): Promise<WireSandboxUsage[]> {
    return (await this.#json<{ usage: WireSandboxUsage[] }>('GET', '/v1/usage/sandboxes')).usage;
  }

  pauseSandbox(id: string): Promise<WireSandbox> {
    return this.#json('POST', `/v1/sandboxes/${enc(id)}/pause`);
  }

  resumeSandbox(id: string): Promise<WireSandbox> {
    return this.#json('POST', `/v1/sandboxes/${enc(id)}/resume`);
  }

  destroySandbox(id: string): Promise<{ id: string; state: string }> {
    return this.#json('DELETE', `/v1/sandboxes/${enc(id)}`);
  }

  async auditEvents(q: WireAuditQuery = {}): Promise<WireAuditEvent[]> {
    return (await this.#json<{ events: WireAuditEvent[] }>('GET', `/v1/audit/events${query(q)}`)).events;
  }

  verifyAudit(): Promise<WireVerifyReport> {
    return this.#json('GET', '/v1/audit/verify');
  }

  /** Every matching event as JSON lines (the stored body plus `hash`), in seq order. */
  async exportAudit(q: Omit<WireAuditQuery, 'limit' | 'order' | 'beforeSeq'> = {}): Promise<string> {
    return (await this.#send('GET', `/v1/audit/export${query({ ...q, format: 'jsonl' })}`)).text();
  }

  async listAlerts(q: { acked?: boolean; agent?: string; limit?: number } = {}): Promise<WireAlert[]> {
    return (await this.#json<{ alerts: WireAlert[] }>('GET', `/v1/alerts${query(q)}`)).alerts;
  }

  ackAlert(id: string): Promise<WireAlert> {
    return this.#json('POST', `/v1/alerts/${enc(id)}/ack`);
  }

  /** The latest scorecard, or undefined when no red-team run has written one. */
  async redteamLatest(): Promise<WireRedteamReport | undefined> {
    const res = await this.#send('GET', '/v1/redteam/latest', undefined, { passStatus: 404 });
    if (res.status !== 404) return (await res.json()) as WireRedteamReport;
    const body = (await res.json().catch(() => undefined)) as { error?: string } | undefined;
    if (body?.error === 'redteam-no-report') return undefined;
    throw errorFromApi(404, body);
  }

  /**
   * Follow the audit log as server-sent events until the signal aborts or the
   * server ends the stream (resolves), or the connection fails (rejects).
   */
  async streamEvents(o: EventStreamOptions): Promise<void> {
    const q = query({ ...(o.types ? { types: o.types.join(',') } : {}), ...(o.afterSeq !== undefined ? { afterSeq: o.afterSeq } : {}) });
    const res = await this.#send('GET', `/v1/events/stream${q}`, undefined, { stream: true, ...(o.signal ? { signal: o.signal } : {}) });
    if (!res.body) throw errorFromApi(0, { error: 'api-stream', message: 'the event stream had no body' });
    o.onOpen?.();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let pending = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        let end: number;
        while ((end = pending.indexOf('\n\n')) >= 0) {
          const block = pending.slice(0, end);
          pending = pending.slice(end + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
          if (data !== '' && /^event: ?audit$/m.test(block)) o.onEvent(JSON.parse(data) as WireAuditEvent);
        }
      }
    } catch (err) {
      if (o.signal?.aborted) return;
      throw unreachable(this.baseUrl || 'this page\'s origin', err);
    } finally {
      reader.releaseLock();
    }
  }

  async #json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.#send(method, path, body === undefined ? undefined : JSON.stringify(body));
    return (await res.json()) as T;
  }

  async #send(method: string, path: string, body?: string, o: { stream?: boolean; signal?: AbortSignal; passStatus?: number } = {}): Promise<Response> {
    const timeout = o.stream ? undefined : AbortSignal.timeout(this.#timeoutMs);
    const signals = [o.signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    let res: Response;
    try {
      res = await this.#fetch(this.baseUrl + path, {
        method,
        headers: { authorization: `Bearer ${this.#token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body } : {}),
        ...(signals.length > 0 ? { signal: signals.length === 1 ? signals[0] : AbortSignal.any(signals) } : {}),
      });
    } catch (err) {
      if (o.signal?.aborted) throw err;
      if (timeout?.aborted) throw timedOut(this.baseUrl, method, path, this.#timeoutMs);
      throw unreachable(this.baseUrl || 'this page\'s origin', err);
    }
    if (res.ok || res.status === o.passStatus) return res;
    throw await errorFromResponse(res);
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}

/** `?a=1&b=x` from the defined values, or ''. */
function query(q: object): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s === '' ? '' : `?${s}`;
}
