/**
 * A thin typed client of the `/v1/sandboxes` API: one method per route, errors
 * mapped back to `CordonError` subclasses, command output streamed as raw
 * bytes. `Sandbox` is built on it; the CLI uses it directly for byte-exact
 * output.
 */
import { Agent, fetch, type Response } from 'undici';
import type { ExecResult } from '../sandbox/protocol/index.js';
import type { SandboxInfo } from '../sandbox/index.js';
import { resolveConnection, type Connection, type ConnectionOptions } from './discovery.js';
import { errorFromApi, errorFromResponse, timedOut, unreachable } from './errors.js';

export interface ExecRequest {
  /** Program and arguments. */
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  stdin?: Uint8Array;
  timeoutMs?: number;
  maxOutputBytes?: number;
}

export interface ExecStreamOptions {
  /** Each stdout chunk as it arrives. */
  onStdout?: (chunk: Buffer) => void;
  /** Each stderr chunk as it arrives. */
  onStderr?: (chunk: Buffer) => void;
  /** Aborting closes the stream; the control plane then kills the command. */
  signal?: AbortSignal;
}

/** Commands may stay silent for a long time: no body timeout on streams. */
const streamAgent = new Agent({ bodyTimeout: 0, headersTimeout: 300_000 });

export class CordonClient {
  readonly apiUrl: string;
  readonly #token: string;
  readonly #requestTimeoutMs: number;

  constructor(conn: Connection) {
    this.apiUrl = conn.apiUrl;
    this.#token = conn.token;
    this.#requestTimeoutMs = conn.requestTimeoutMs;
  }

  /** A client for the control plane found from the options (see {@link resolveConnection}). */
  static connect(opts: ConnectionOptions = {}): CordonClient {
    return new CordonClient(resolveConnection(opts));
  }

  createSandbox(body: { agent: string; timeoutMs?: number }): Promise<SandboxInfo> {
    return this.#json('POST', '/v1/sandboxes', body);
  }

  async listSandboxes(): Promise<SandboxInfo[]> {
    return (await this.#json<{ sandboxes: SandboxInfo[] }>('GET', '/v1/sandboxes')).sandboxes;
  }

  getSandbox(id: string): Promise<SandboxInfo> {
    return this.#json('GET', `/v1/sandboxes/${enc(id)}`);
  }

  pauseSandbox(id: string): Promise<SandboxInfo> {
    return this.#json('POST', `/v1/sandboxes/${enc(id)}/pause`);
  }

  resumeSandbox(id: string): Promise<SandboxInfo> {
    return this.#json('POST', `/v1/sandboxes/${enc(id)}/resume`);
  }

  destroySandbox(id: string): Promise<{ id: string; state: string }> {
    return this.#json('DELETE', `/v1/sandboxes/${enc(id)}`);
  }

  async readFile(id: string, path: string): Promise<Uint8Array> {
    const res = await this.#send('GET', `/v1/sandboxes/${enc(id)}/files?path=${encodeURIComponent(path)}`);
    return new Uint8Array(await res.arrayBuffer());
  }

  async writeFile(id: string, path: string, data: Uint8Array, opts: { mode?: number } = {}): Promise<{ path: string; bytes: number }> {
    const mode = opts.mode === undefined ? '' : `&mode=${opts.mode.toString(8).padStart(3, '0')}`;
    const res = await this.#send('PUT', `/v1/sandboxes/${enc(id)}/files?path=${encodeURIComponent(path)}${mode}`, data, 'application/octet-stream');
    return (await res.json()) as { path: string; bytes: number };
  }

  /**
   * Run a command and stream its output.
   * @throws the CordonError of a failed request, or of an `{"error"}` line in the stream
   */
  async exec(id: string, req: ExecRequest, opts: ExecStreamOptions = {}): Promise<ExecResult> {
    const { stdin, ...rest } = req;
    const body = { ...rest, ...(stdin !== undefined ? { stdin: Buffer.from(stdin).toString('base64') } : {}) };
    const res = await this.#send('POST', `/v1/sandboxes/${enc(id)}/exec`, JSON.stringify(body), 'application/json', {
      stream: true, ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (!res.body) throw errorFromApi(0, { error: 'sandbox-stream', message: 'the exec answer had no body' });
    let pending = '';
    let result: ExecResult | undefined;
    const handle = (line: string): void => {
      if (line.trim() === '') return;
      const msg = JSON.parse(line) as { stdout?: string; stderr?: string; result?: ExecResult; error?: unknown };
      if (typeof msg.stdout === 'string') opts.onStdout?.(Buffer.from(msg.stdout, 'base64'));
      else if (typeof msg.stderr === 'string') opts.onStderr?.(Buffer.from(msg.stderr, 'base64'));
      else if (msg.result) result = msg.result;
      else if (msg.error) throw errorFromApi(0, msg.error);
      // other line kinds are ignored, so the server may add some later
    };
    const decoder = new TextDecoder();
    for await (const chunk of res.body) {
      pending += decoder.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        handle(line);
      }
    }
    handle(pending + decoder.decode());
    if (!result) {
      throw errorFromApi(0, {
        error: 'sandbox-stream-ended',
        message: 'the command stream ended without a result (the control plane stopped, or the sandbox went away)',
        fix: 'check `cordon sandbox ls` and the control-plane log, then run the command again',
      });
    }
    return result;
  }

  async #json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.#send(method, path, body === undefined ? undefined : JSON.stringify(body), 'application/json');
    return (await res.json()) as T;
  }

  async #send(
    method: string, path: string, body?: string | Uint8Array, contentType?: string,
    o: { stream?: boolean; signal?: AbortSignal } = {},
  ): Promise<Response> {
    const timeout = o.stream ? undefined : AbortSignal.timeout(this.#requestTimeoutMs);
    const signals = [o.signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    let res: Response;
    try {
      res = await fetch(this.apiUrl + path, {
        method,
        headers: { authorization: `Bearer ${this.#token}`, ...(contentType && body !== undefined ? { 'content-type': contentType } : {}) },
        ...(body !== undefined ? { body } : {}),
        ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
        dispatcher: streamAgent,
      });
    } catch (err) {
      if (o.signal?.aborted) throw err;
      if (timeout?.aborted) throw timedOut(this.apiUrl, method, path, this.#requestTimeoutMs);
      throw unreachable(this.apiUrl, err);
    }
    if (res.ok) return res;
    throw await errorFromResponse(res);
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}
