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
import type { Dispatcher } from 'undici';
import type { CallOutcome } from './audit.js';
import { GatewayError, errorEvent, errorHeaders, errorObject, type Dialect } from './errors.js';
import type { OutputHit, OutputInspector } from './filters/output.js';
import type { ApiProtocol } from './providers/protocol.js';
import type { ProviderRuntime } from './providers/registry.js';
import { createSseSplitter, type SseEvent } from './sse.js';
import type { Exchange, Usage } from './types.js';

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

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

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

async function readCapped(body: Dispatcher.ResponseData['body'], maxBytes: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) {
      body.destroy();
      return undefined;
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size);
}

/** Send one call upstream and answer the client. Never throws for upstream or client trouble. */
export async function forward(input: ForwardInput): Promise<ForwardResult> {
  const { ex, provider, protocol } = input;
  const dialect = protocol.dialect;
  let res: Dispatcher.ResponseData;
  try {
    res = await provider.pool.request({
      method: 'POST',
      path: provider.pathFor(protocol.suffix),
      headers: input.headers,
      body: input.body,
      signal: ex.signal,
    });
  } catch (err) {
    if (ex.signal.aborted) return { status: 499, outcome: 'client-closed', usage: undefined, reachedModel: false };
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

async function relayUpstreamError(input: ForwardInput, res: Dispatcher.ResponseData): Promise<ForwardResult> {
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

async function relayWhole(input: ForwardInput, res: Dispatcher.ResponseData): Promise<ForwardResult> {
  const { ex, provider, protocol } = input;
  const dialect = protocol.dialect;
  let buf: Buffer | undefined;
  try {
    buf = await readCapped(res.body, input.maxResponseBodyBytes);
  } catch (err) {
    if (ex.signal.aborted) return { status: 499, outcome: 'client-closed', usage: undefined, reachedModel: true };
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

async function relayStream(input: ForwardInput, res: Dispatcher.ResponseData): Promise<ForwardResult> {
  const { ex, provider, protocol } = input;
  const dialect = protocol.dialect;
  const observer = protocol.observer(input.inspector, { stripUsage: input.stripUsage });
  const splitter = createSseSplitter();
  const decoder = new StringDecoder('utf8');
  let firstByteMs: number | undefined;
  ex.startStream(200, STREAM_HEADERS);

  const result = (outcome: CallOutcome, status: number, blockedBy?: OutputHit): ForwardResult => ({
    status, outcome, usage: observer.usage, reachedModel: true, ...(firstByteMs !== undefined ? { firstByteMs } : {}), ...(blockedBy ? { blockedBy } : {}),
  });
  /** Forward what may pass of `events`; returns an error that ends the stream, if any. */
  const pass = async (events: SseEvent[]): Promise<{ stop: GatewayError; hit?: OutputHit } | undefined> => {
    let out = '';
    let stop: { stop: GatewayError; hit?: OutputHit } | undefined;
    for (const ev of events) {
      let step;
      try {
        step = observer.onEvent(ev);
      } catch (err) {
        stop = { stop: err instanceof GatewayError ? err : new GatewayError(502, 'upstream-malformed', 'the provider sent an unreadable event') };
        break;
      }
      if (step === 'forward') out += ev.raw;
      else if (step !== 'drop') {
        if (step.action === 'block') {
          stop = { stop: blockedError(step), hit: step };
          break;
        }
        out += ev.raw;
      }
    }
    if (out.length > 0) {
      const wait = ex.write(out);
      if (wait) await wait;
    }
    return stop;
  };
  const finish = (stop: GatewayError): void => {
    res.body.destroy();
    respondError(ex, dialect, stop);
  };

  try {
    for await (const chunk of res.body) {
      firstByteMs ??= performance.now() - input.startedMs;
      const events = splitter.push(decoder.write(chunk as Buffer));
      if (events.length === 0) continue;
      const stopped = await pass(events);
      if (ex.signal.aborted) break;
      if (stopped) {
        finish(stopped.stop);
        return result(stopped.hit ? 'blocked' : 'upstream-malformed', stopped.stop.status, stopped.hit);
      }
    }
    if (ex.signal.aborted) {
      res.body.destroy();
      return result('client-closed', 499);
    }
    const rest = splitter.push(decoder.end());
    const stopped = await pass([...rest, ...splitter.flush()]);
    if (stopped) {
      finish(stopped.stop);
      return result(stopped.hit ? 'blocked' : 'upstream-malformed', stopped.stop.status, stopped.hit);
    }
    if (!observer.done) {
      finish(new GatewayError(502, 'upstream-cut', `provider ${provider.name} ended the stream before it was complete`, { fix: 'retry the request' }));
      return result('upstream-cut', 502);
    }
    ex.end();
    return result(observer.upstreamError ? 'upstream-error' : 'ok', 200);
  } catch (err) {
    if (ex.signal.aborted) return result('client-closed', 499);
    const timeout = isTimeout(err);
    finish(timeout ? upstreamFailure(provider, err)
      : new GatewayError(502, 'upstream-cut', `the connection to provider ${provider.name} broke during the stream`, { fix: 'retry the request', cause: err }));
    return result(timeout ? 'upstream-timeout' : 'upstream-cut', timeout ? 504 : 502);
  }
}
