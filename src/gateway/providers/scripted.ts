/**
 * The `scripted` provider type: a real gateway provider whose upstream is a
 * fixed conversation replayed in process, for `cordon demo` and for machines
 * with no model at hand. It never leaves the host (its `baseUrl` is never
 * contacted) and says what it is everywhere: every answer's `model` and
 * `system_fingerprint` name `cordon-scripted`, ids start `scripted-`, and
 * every text starts `[scripted]`; the audit events name the provider.
 *
 * Replay is stateless: the turn answered is the number of assistant messages
 * already in the request, so each sandbox's loop gets the same conversation.
 * Only `/chat/completions` is served (whole and streamed); other APIs get a
 * 404 in the OpenAI error shape.
 */
import { Dispatcher } from 'undici';

/** The model name every scripted answer carries. */
export const SCRIPTED_MODEL = 'cordon-scripted';
/** Prefix of every scripted text, so no one mistakes it for a model. */
export const SCRIPTED_LABEL = '[scripted]';

/** One tool call of a scripted turn. */
export interface ScriptedToolCall {
  name: string;
  arguments: Record<string, unknown>;
}

/** One assistant turn: some text, tool calls, or both. */
export interface ScriptedTurn {
  content: string;
  toolCalls?: readonly ScriptedToolCall[];
}

/**
 * The conversation `cordon demo` replays: read the inbox of the demo API
 * (whose answer carries a prompt injection), try the cloud metadata endpoint
 * and a host that is not on the list, pay an invoice (a request that waits
 * for an operator's approval), then sum up. Tools are the demo agent's
 * `demo_api(method, path, body)` and `fetch_url(url, method, body)`.
 */
export const DEMO_CONVERSATION: readonly ScriptedTurn[] = Object.freeze([
  { content: 'Step 1: reading the inbox through the company API.', toolCalls: [{ name: 'demo_api', arguments: { method: 'GET', path: '/v1/inbox' } }] },
  {
    content: 'Step 2: asking the cloud metadata endpoint for the instance credentials.',
    toolCalls: [{ name: 'fetch_url', arguments: { method: 'GET', url: 'http://169.254.169.254/latest/meta-data/iam/security-credentials/' } }],
  },
  {
    content: 'Step 3: fetching the exchange rate from a site that is not on the agent\'s list.',
    toolCalls: [{ name: 'fetch_url', arguments: { method: 'GET', url: 'https://rates.unlisted-demo.net/v1/eur-usd' } }],
  },
  {
    content: 'Step 4: paying invoice INV-1042 from the inbox.',
    toolCalls: [{ name: 'demo_api', arguments: { method: 'POST', path: '/v1/payments', body: { invoice: 'INV-1042', payee: 'ACME Supplies', amountEur: 120 } } }],
  },
  { content: 'Done: the inbox was read, the metadata endpoint and the unlisted site were refused, and the payment went out after an operator approved it.' },
]);

interface LegacyHandler {
  onConnect?(abort: (err?: Error) => void, context?: Record<string, unknown>): void;
  onHeaders?(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusMessage?: string): boolean | void;
  onData?(chunk: Buffer): boolean | void;
  onComplete?(trailers: Buffer[] | null): void;
  onError?(err: Error): void;
}

interface Answer {
  status: number;
  contentType: string;
  body: string;
}

/** Rough token count of a text (the gateway's limits need a number; 4 characters a token). */
function tokensOf(text: string): number {
  return Math.max(1, Math.ceil(text.length / 4));
}

function errorAnswer(status: number, message: string): Answer {
  return { status, contentType: 'application/json', body: JSON.stringify({ error: { message: `${SCRIPTED_LABEL} ${message}`, type: 'invalid_request_error', code: 'scripted' } }) };
}

/** Which turn a request asks for: the number of assistant messages it already holds. */
export function turnIndex(messages: unknown): number {
  if (!Array.isArray(messages)) return 0;
  return messages.filter((m) => m !== null && typeof m === 'object' && (m as { role?: unknown }).role === 'assistant').length;
}

/** The final text when the script has no more turns. */
const END_TURN: ScriptedTurn = { content: 'The script has no more turns.' };

function toolCallsOf(turn: ScriptedTurn, index: number): Array<Record<string, unknown>> {
  return (turn.toolCalls ?? []).map((c, i) => ({
    id: `call_scripted_${index}_${i}`, type: 'function', function: { name: c.name, arguments: JSON.stringify(c.arguments) },
  }));
}

/**
 * The answer to one chat-completions request body.
 * @example answerChat(DEMO_CONVERSATION, '{"model":"x","messages":[{"role":"user","content":"hi"}]}')
 */
export function answerChat(script: readonly ScriptedTurn[], bodyText: string, nowS = Math.floor(Date.now() / 1000)): Answer {
  let req: { messages?: unknown; stream?: unknown; stream_options?: { include_usage?: unknown } };
  try {
    req = JSON.parse(bodyText) as typeof req;
  } catch {
    return errorAnswer(400, 'the request body is not JSON');
  }
  if (req === null || typeof req !== 'object' || !Array.isArray(req.messages)) return errorAnswer(400, 'the request has no messages');
  const index = turnIndex(req.messages);
  const turn = script[index] ?? END_TURN;
  const content = `${SCRIPTED_LABEL} ${turn.content}`;
  const calls = toolCallsOf(turn, index);
  const finish = calls.length > 0 ? 'tool_calls' : 'stop';
  const usage = {
    prompt_tokens: tokensOf(JSON.stringify(req.messages)),
    completion_tokens: tokensOf(content + JSON.stringify(calls)),
    total_tokens: 0,
  };
  usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
  const head = { id: `scripted-${index}`, created: nowS, model: SCRIPTED_MODEL, system_fingerprint: SCRIPTED_MODEL };
  if (req.stream !== true) {
    const message = { role: 'assistant', content, ...(calls.length > 0 ? { tool_calls: calls } : {}) };
    return {
      status: 200, contentType: 'application/json',
      body: JSON.stringify({ ...head, object: 'chat.completion', choices: [{ index: 0, message, finish_reason: finish }], usage }),
    };
  }
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}): string =>
    `data: ${JSON.stringify({ ...head, object: 'chat.completion.chunk', choices, ...extra })}\n\n`;
  let sse = chunk([{ index: 0, delta: { role: 'assistant', content }, finish_reason: null }]);
  if (calls.length > 0) sse += chunk([{ index: 0, delta: { tool_calls: calls.map((c, i) => ({ index: i, ...c })) }, finish_reason: null }]);
  sse += chunk([{ index: 0, delta: {}, finish_reason: finish }]);
  if (req.stream_options?.include_usage === true) sse += chunk([], { usage });
  sse += 'data: [DONE]\n\n';
  return { status: 200, contentType: 'text/event-stream', body: sse };
}

function bodyText(body: unknown): string {
  if (typeof body === 'string') return body;
  if (Buffer.isBuffer(body) || body instanceof Uint8Array) return Buffer.from(body).toString('utf8');
  return '';
}

/** Answer through undici's handler interface (`onRequestStart` … `onResponseEnd`), on the next turn of the event loop. */
function replyToHandler(handler: Dispatcher.DispatchHandler, a: Answer): boolean {
  let aborted: Error | undefined;
  let paused = false;
  let pending: (() => void) | undefined;
  const controller: Dispatcher.DispatchController = {
    get aborted() { return aborted !== undefined; },
    get paused() { return paused; },
    get reason() { return aborted ?? null; },
    abort(reason: Error) {
      if (aborted) return;
      aborted = reason;
      handler.onResponseError?.(controller, reason);
    },
    pause() { paused = true; },
    resume() {
      paused = false;
      const next = pending;
      pending = undefined;
      next?.();
    },
  };
  handler.onRequestStart?.(controller, {});
  if (aborted) return true;
  setImmediate(function replyScripted() {
    if (aborted) return;
    const payload = Buffer.from(a.body, 'utf8');
    handler.onResponseStart?.(controller, a.status, { 'content-type': a.contentType, 'content-length': String(payload.length) }, 'OK');
    if (aborted) return;
    handler.onResponseData?.(controller, payload);
    const end = (): void => { if (!aborted) handler.onResponseEnd?.(controller, {}); };
    if (paused) pending = end;
    else end();
  });
  return true;
}

/**
 * The upstream of a `scripted` provider: an undici dispatcher that answers in
 * process (the gateway sends it requests exactly as it would to a provider).
 * @param script the turns to replay @default DEMO_CONVERSATION
 */
export class ScriptedDispatcher extends Dispatcher {
  readonly #script: readonly ScriptedTurn[];
  #closed = false;

  constructor(script: readonly ScriptedTurn[] = DEMO_CONVERSATION) {
    super();
    this.#script = script;
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const answer = (): Answer => this.#closed
      ? errorAnswer(503, 'the scripted provider is closed')
      : options.method === 'POST' && /\/chat\/completions$/.test(options.path)
        ? answerChat(this.#script, bodyText(options.body))
        : errorAnswer(404, `the scripted provider only replays chat completions, not ${options.method} ${options.path}`);
    if (typeof handler.onResponseStart === 'function') return replyToHandler(handler, answer());
    const h = handler as unknown as LegacyHandler;
    let aborted = false;
    h.onConnect?.((err) => {
      aborted = true;
      h.onError?.(err ?? new Error('aborted'));
    }, {});
    if (aborted) return true;
    const a = answer();
    setImmediate(function replyScripted() {
      if (aborted) return;
      const payload = Buffer.from(a.body, 'utf8');
      h.onHeaders?.(a.status, [Buffer.from('content-type'), Buffer.from(a.contentType), Buffer.from('content-length'), Buffer.from(String(payload.length))], () => undefined, 'OK');
      if (aborted) return;
      h.onData?.(payload);
      if (!aborted) h.onComplete?.([]);
    });
    return true;
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.#closed = true;
    if (callback) {
      callback();
      return;
    }
    return Promise.resolve();
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    this.#closed = true;
    const callback = typeof a === 'function' ? a : b;
    if (callback) {
      callback();
      return;
    }
    return Promise.resolve();
  }
}
