/**
 * One call to a provider and its answer to the client: the request goes out
 * on the provider's keep-alive pool; a non-streamed answer is read (capped),
 * inspected and passed on byte for byte; a streamed answer is passed on event
 * by event as it arrives, each event inspected before it is written, with no
 * buffering beyond an incomplete event. Every way a call can go wrong (the
 * provider refuses, times out, cuts the stream, sends garbage; the client
 * leaves) ends in a clean answer in the client's dialect, or in silence for a
 * client that is gone, and in a result that says what happened.
 */
import { StringDecoder } from 'node:string_decoder';
import type { CallOutcome } from './audit.js';
import { GatewayError, errorEvent, errorHeaders, errorObject, type Dialect } from './errors.js';
import type { OutputHit, OutputInspector } from './filters/output.js';
import type { ApiProtocol } from './providers/protocol.js';
import type { ProviderRuntime } from './providers/registry.js';
import { createSseSplitter, type SseEvent } from './sse.js';
import type { Exchange, Usage } from './types.js';
import { CALL_TIMEOUT_CODE, callUpstream, withDeadline, type UpstreamBody, type UpstreamResponse } from './upstream-call.js';

export interface ForwardInput {
  ex: Exchange;
  protocol: ApiProtocol;
  provider: ProviderRuntime;
  headers: Record<string, string>;
  body: string | Buffer;
  stream: boolean;
  stripUsage: boolean;
  inspector: OutputInspector;
  maxResponseBodyBytes: number;
  /** Longest the call may last, from sending it to the end of the answer (`upstream.callTimeoutMs`). */
  callTimeoutMs: number;
  /** `performance.now()` when the request arrived. */
  startedMs: number;
}

export interface ForwardResult {
  status: number;
  outcome: CallOutcome;
  usage: Usage | undefined;
  /** The provider accepted the call, so it may have used tokens. */
  reachedModel: boolean;
  firstByteMs?: number;
  /** The hit that stopped the answer. */
  blockedBy?: OutputHit;
}

/** Largest upstream error body read (to pass on or to discard). */
const MAX_ERROR_BODY_BYTES = 64 * 1024;
/** Longest stream event held whole, whatever maxResponseBodyBytes says (well under the longest string V8 can make). */
const MAX_STREAM_EVENT_CHARS = 256 * 1024 * 1024;
/** How long the rest of a stream is drained after its terminal event before the connection is dropped. */
const DRAIN_AFTER_TERMINAL_MS = 1000;
const STREAM_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' };

/** Answer with an error: a JSON body, or an error event if a stream already started. */
export function respondError(ex: Exchange, dialect: Dialect, err: GatewayError): void {
  if (!ex.started) {
    ex.send(err.status, errorHeaders(err), JSON.stringify(errorObject(dialect, err)));
    return;
  }
  void ex.write(errorEvent(dialect, err));
  ex.end();
}

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', CALL_TIMEOUT_CODE]);

function isTimeout(err: unknown): boolean {
  return TIMEOUT_CODES.has((err as { code?: string } | undefined)?.code ?? '');
}

function upstreamFailure(provider: ProviderRuntime, err: unknown): GatewayError {
  if (isTimeout(err)) {
    return new GatewayError(504, 'upstream-timeout', `provider ${provider.name} did not answer in time`, {
      fix: 'retry later; if it persists, check the provider or raise the gateway upstream timeouts', cause: err,
    });
  }
  const code = (err as { code?: string } | undefined)?.code;
  return new GatewayError(502, 'upstream-unreachable', `provider ${provider.name} could not be reached${code ? ` (${code})` : ''}`, {
    fix: `check providers.${provider.name}.baseUrl and that the provider is up`, cause: err,
  });
}

function blockedError(hit: OutputHit): GatewayError {
  const message = hit.filter === 'tool-url'
    ? `a tool call names a URL on ${hit.host ?? 'a host'} that the agent's egress policy does not allow (${hit.rule}); the response was stopped`
    : hit.filter === 'tool-args'
      ? 'a tool call\'s arguments are too large to check; the response was stopped'
      : `the model output matched output filter ${hit.rule}; the response was stopped`;
  return new GatewayError(403, hit.filter === 'tool-url' ? 'tool-url-blocked' : 'output-blocked', message, { retryable: false });
}

const ignore = (): void => undefined;

/**
 * Read a whole body, at most `maxBytes` (undefined past that, the body
 * destroyed). Listeners, not an async iterator: this runs for every call.
 */
function readCapped(body: UpstreamBody, maxBytes: number): Promise<Buffer | undefined> {
  return new Promise<Buffer | undefined>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (): void => {
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', onError);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) {
        done();
        body.destroy();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      done();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (err: Error): void => {
      done();
      reject(err);
    };
    body.on('error', ignore); // an error after we stopped listening must not go unhandled
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', onError);
  });
}

/** Send one call upstream and answer the client. Never throws for upstream or client trouble. */
export async function forward(input: ForwardInput): Promise<ForwardResult> {
  // The call is dropped when the client leaves, or when it outlives upstream.callTimeoutMs (a provider that
  // trickles bytes forever would otherwise hold the call, its connection and its limits ticket).
  const watch = withDeadline(input.ex, input.callTimeoutMs, `the call to provider ${input.provider.name}`);
  try {
    return await forwardWithin(input, watch);
  } finally {
    watch.clear();
  }
}

async function forwardWithin(input: ForwardInput, watch: ReturnType<typeof withDeadline>): Promise<ForwardResult> {
  const { ex, provider, protocol } = input;
  const dialect = protocol.dialect;
  let res: UpstreamResponse;
  try {
    res = await callUpstream(provider.pool, { method: 'POST', path: provider.pathFor(protocol.suffix), headers: input.headers, body: input.body }, watch);
  } catch (err) {
    if (ex.aborted) return { status: 499, outcome: 'client-closed', usage: undefined, reachedModel: false };
    const failure = upstreamFailure(provider, err);
    respondError(ex, dialect, failure);
    return { status: failure.status, outcome: failure.reason === 'upstream-timeout' ? 'upstream-timeout' : 'upstream-error', usage: undefined, reachedModel: false };
  }
  if (res.statusCode < 200 || res.statusCode > 299) return relayUpstreamError(input, res);
  const contentType = String(res.headers['content-type'] ?? '');
  if (input.stream) {
    if (!contentType.includes('text/event-stream')) {
      res.body.destroy();
      const err = new GatewayError(502, 'upstream-malformed', `provider ${provider.name} did not answer a streamed request with an event stream`, {
        fix: 'check that the provider supports streaming for this API',
      });
      respondError(ex, dialect, err);
      return { status: 502, outcome: 'upstream-malformed', usage: undefined, reachedModel: true };
    }
    return relayStream(input, res);
  }
  return relayWhole(input, res);
}

async function relayUpstreamError(input: ForwardInput, res: UpstreamResponse): Promise<ForwardResult> {
  const { ex, provider, protocol } = input;
  const status = res.statusCode;
  let text = '';
  try {
    text = (await readCapped(res.body, MAX_ERROR_BODY_BYTES))?.toString('utf8') ?? '';
  } catch {
    // The error body is lost; the status alone is answered below.
  }
  const base = { status, outcome: 'upstream-status' as const, usage: undefined, reachedModel: false };
  if (status === 401 || status === 403) {
    respondError(ex, protocol.dialect, new GatewayError(502, 'upstream-auth', `provider ${provider.name} refused cordon's credentials (HTTP ${status})`, {
      fix: `check the secret named in providers.${provider.name}.apiKey`, retryable: false,
    }));
    return base;
  }
  const keyValues = [input.headers.authorization?.replace(/^Bearer /, ''), input.headers['x-api-key']].filter((v): v is string => !!v);
  let json = false;
  try {
    JSON.parse(text);
    json = text.length > 0;
  } catch {
    json = false;
  }
  if (json && !keyValues.some((k) => text.includes(k))) {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-cordon-upstream-status': String(status) };
    const retryAfter = res.headers['retry-after'];
    if (typeof retryAfter === 'string') headers['retry-after'] = retryAfter;
    ex.send(status, headers, text);
    return base;
  }
  respondError(ex, protocol.dialect, new GatewayError(status >= 500 ? 502 : status, 'upstream-status', `provider ${provider.name} answered HTTP ${status}`, {
    fix: status >= 500 ? 'retry later' : 'check the request against the provider\'s API',
  }));
  return base;
}

async function relayWhole(input: ForwardInput, res: UpstreamResponse): Promise<ForwardResult> {
  const { ex, provider, protocol } = input;
  const dialect = protocol.dialect;
  let buf: Buffer | undefined;
  try {
    buf = await readCapped(res.body, input.maxResponseBodyBytes);
  } catch (err) {
    if (ex.aborted) return { status: 499, outcome: 'client-closed', usage: undefined, reachedModel: true };
    const failure = isTimeout(err) ? upstreamFailure(provider, err)
      : new GatewayError(502, 'upstream-cut', `provider ${provider.name} closed the connection before the answer was complete`, { fix: 'retry', cause: err });
    respondError(ex, dialect, failure);
    return { status: failure.status, outcome: isTimeout(err) ? 'upstream-timeout' : 'upstream-cut', usage: undefined, reachedModel: true };
  }
  const firstByteMs = performance.now() - input.startedMs;
  if (buf === undefined) {
    respondError(ex, dialect, new GatewayError(502, 'upstream-too-large', `provider ${provider.name} sent an answer larger than ${input.maxResponseBodyBytes} bytes`, {
      fix: 'ask for a shorter answer, or raise the gateway maxResponseBodyBytes setting',
    }));
    return { status: 502, outcome: 'upstream-malformed', usage: undefined, reachedModel: true, firstByteMs };
  }
  let answer: unknown;
  let inspected: ReturnType<ApiProtocol['inspect']>;
  try {
    answer = JSON.parse(buf.toString('utf8'));
    inspected = protocol.inspect(answer, input.inspector);
  } catch (err) {
    const e = err instanceof GatewayError ? err : new GatewayError(502, 'upstream-malformed', `provider ${provider.name} sent an answer that is not JSON`, {
      fix: 'check that the provider base URL points at a compatible API',
    });
    respondError(ex, dialect, e);
    return { status: 502, outcome: 'upstream-malformed', usage: undefined, reachedModel: true, firstByteMs };
  }
  if (inspected.hit) {
    respondError(ex, dialect, blockedError(inspected.hit));
    return { status: 403, outcome: 'blocked', usage: inspected.usage, reachedModel: true, firstByteMs, blockedBy: inspected.hit };
  }
  ex.send(200, { 'content-type': 'application/json' }, buf);
  return { status: 200, outcome: 'ok', usage: inspected.usage, reachedModel: true, firstByteMs };
}

/**
 * Pass a stream on event by event. Each upstream read is split into whole
 * events, each event is inspected, and what may pass is written in one
 * write; a write the client cannot take yet pauses the upstream. Once the
 * terminal event is through, the client's response ends with it (one write
 * less per call), and the rest of the upstream body is read and dropped.
 */
function relayStream(input: ForwardInput, res: UpstreamResponse): Promise<ForwardResult> {
  const { ex, provider, protocol } = input;
  const dialect = protocol.dialect;
  const observer = protocol.observer(input.inspector, { stripUsage: input.stripUsage });
  const splitter = createSseSplitter();
  const decoder = new StringDecoder('utf8');
  const body = res.body;
  const maxEventChars = Math.min(input.maxResponseBodyBytes, MAX_STREAM_EVENT_CHARS);
  let firstByteMs: number | undefined;
  ex.startStream(200, STREAM_HEADERS);

  const result = (outcome: CallOutcome, status: number, blockedBy?: OutputHit): ForwardResult => ({
    status, outcome, usage: observer.usage, reachedModel: true, ...(firstByteMs !== undefined ? { firstByteMs } : {}), ...(blockedBy ? { blockedBy } : {}),
  });
  /** What may pass of `events`, and the error that ends the stream, if any. */
  const take = (events: SseEvent[]): { out: string; stop?: { error: GatewayError; hit?: OutputHit } } => {
    let out = '';
    for (const ev of events) {
      let step;
      try {
        step = observer.onEvent(ev);
      } catch (err) {
        return { out, stop: { error: err instanceof GatewayError ? err : new GatewayError(502, 'upstream-malformed', 'the provider sent an unreadable event') } };
      }
      if (step === 'forward') out += ev.raw;
      else if (step !== 'drop') {
        if (step.action === 'block') return { out, stop: { error: blockedError(step), hit: step } };
        out += ev.raw;
      }
    }
    return { out };
  };

  return new Promise<ForwardResult>((resolve) => {
    let settled = false;
    /** The client's response ended after the terminal event; the upstream is only drained. */
    let ended = false;
    /** A provider that holds the connection (or trickles bytes) after the terminal event is cut off. */
    let drainTimer: NodeJS.Timeout | undefined;
    const settle = (r: ForwardResult): void => {
      if (settled) return;
      settled = true;
      if (drainTimer) clearTimeout(drainTimer);
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', onError);
      if (!ended) resolve(r);
    };
    const stopWith = (stop: { error: GatewayError; hit?: OutputHit }): void => {
      body.destroy();
      respondError(ex, dialect, stop.error);
      settle(result(stop.hit ? 'blocked' : 'upstream-malformed', stop.error.status, stop.hit));
    };
    /** Write what passed; end the response if the stream is complete. @returns false once the call is settled */
    const deliver = (events: SseEvent[], last: boolean): boolean => {
      const { out, stop } = take(events);
      if (stop) {
        if (out.length > 0) void ex.write(out);
        stopWith(stop);
        return false;
      }
      if (observer.done) {
        ex.end(out);
        ended = true;
        resolve(result(observer.upstreamError ? 'upstream-error' : 'ok', 200));
        if (last) settle(result('ok', 200));
        else {
          drainTimer = setTimeout(function dropLingeringUpstream() {
            body.destroy();
            settle(result('ok', 200));
          }, DRAIN_AFTER_TERMINAL_MS);
          drainTimer.unref();
        }
        return !last;
      }
      if (out.length > 0) {
        const wait = ex.write(out);
        if (wait) {
          body.pause();
          void wait.then(() => { if (!settled) body.resume(); });
        }
      }
      return true;
    };
    const onData = (chunk: Buffer): void => {
      if (ended) return; // after the terminal event: drained, not passed on
      firstByteMs ??= performance.now() - input.startedMs;
      if (ex.aborted) {
        body.destroy();
        settle(result('client-closed', 499));
        return;
      }
      const events = splitter.push(decoder.write(chunk));
      if (events.length > 0) deliver(events, false);
      // An event that never ends would grow without bound (and past the longest string, throw): stopped at the answer cap.
      if (!settled && !ended && splitter.pendingChars > maxEventChars) {
        stopWith({ error: new GatewayError(502, 'upstream-too-large', `provider ${provider.name} sent a stream event larger than ${maxEventChars} bytes`, {
          fix: 'check the provider; or raise the gateway maxResponseBodyBytes setting',
        }) });
      }
    };
    const onEnd = (): void => {
      if (ended) return settle(result('ok', 200));
      if (ex.aborted) return settle(result('client-closed', 499));
      const rest = splitter.push(decoder.end());
      if (!deliver([...rest, ...splitter.flush()], true)) return;
      if (ended) return;
      body.destroy();
      respondError(ex, dialect, new GatewayError(502, 'upstream-cut', `provider ${provider.name} ended the stream before it was complete`, { fix: 'retry the request' }));
      settle(result('upstream-cut', 502));
    };
    const onError = (err: Error): void => {
      if (ended) return settle(result('ok', 200));
      if (ex.aborted) return settle(result('client-closed', 499));
      const timeout = isTimeout(err);
      respondError(ex, dialect, timeout ? upstreamFailure(provider, err)
        : new GatewayError(502, 'upstream-cut', `the connection to provider ${provider.name} broke during the stream`, { fix: 'retry the request', cause: err }));
      settle(result(timeout ? 'upstream-timeout' : 'upstream-cut', timeout ? 504 : 502));
    };
    body.on('error', ignore); // an error after settling must not go unhandled
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', onError);
  });
}
