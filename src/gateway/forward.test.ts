/**
 * The stream relay against a provider and a client driven by hand: a
 * dispatcher whose handler calls the test makes (headers, chunks, end or
 * not), and an exchange whose writes wait until the test lets them through.
 * Each case checks that the call settles with the right outcome and that
 * nothing is left behind (the provider call ended, the client no longer
 * watched).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Dispatcher } from 'undici';
import { createOutputInspector } from './filters/output.js';
import { forward, type ForwardResult } from './forward.js';
import { chatCompletions } from './providers/openai.js';
import type { ProviderRuntime } from './providers/registry.js';
import type { Exchange } from './types.js';

const chunk = (content: string): string => `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
const STOP = `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`;
const DONE = 'data: [DONE]\n\n';

/** A provider the test drives: `handler` and `controller` once the call is dispatched. */
function manualProvider() {
  const state = { handler: undefined as Dispatcher.DispatchHandler | undefined, paused: false, aborted: undefined as Error | undefined };
  const controller: Dispatcher.DispatchController = {
    get aborted() { return state.aborted !== undefined; },
    get paused() { return state.paused; },
    get reason() { return state.aborted ?? null; },
    abort(reason: Error) {
      if (state.aborted) return;
      state.aborted = reason;
      state.handler?.onResponseError?.(controller, reason);
    },
    pause() { state.paused = true; },
    resume() { state.paused = false; },
  };
  const pool = {
    dispatch(_options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
      state.handler = handler;
      handler.onRequestStart?.(controller, {});
      return true;
    },
  } as unknown as Dispatcher;
  const provider: ProviderRuntime = { name: 'manual', type: 'openai', dialect: 'openai', models: undefined, pathFor: (s) => `/v1${s}`, pool };
  return {
    state, provider,
    start(): void { state.handler!.onResponseStart?.(controller, 200, { 'content-type': 'text/event-stream' }, 'OK'); },
    send(text: string): void { state.handler!.onResponseData?.(controller, Buffer.from(text)); },
  };
}

/** A client the test drives: writes wait while `blocked`; `leave()` is the client going away. */
function manualClient() {
  const state = { written: '', ended: false, blocked: false, gone: false, waits: [] as Array<() => void>, listeners: new Set<() => void>() };
  const ex: Exchange = {
    method: 'POST', path: '/v1/chat/completions',
    get signal(): AbortSignal { throw new Error('the relay should not need a signal'); },
    get aborted() { return state.gone; },
    onAbort(listener) {
      state.listeners.add(listener);
      return () => { state.listeners.delete(listener); };
    },
    header: () => undefined,
    readBody: () => Promise.reject(new Error('not used')),
    send(status, _headers, body) { state.written += `[${status}]${String(body)}`; state.ended = true; },
    startStream() { /* headers: nothing to record */ },
    write(text) {
      if (state.gone || state.ended) return undefined;
      state.written += text;
      if (!state.blocked) return undefined;
      return new Promise<void>((resolve) => { state.waits.push(resolve); });
    },
    end(last) {
      if (state.ended) return;
      if (last) state.written += last;
      state.ended = true;
    },
    get started() { return true; },
  };
  return {
    state, ex,
    leave(): void {
      state.gone = true;
      for (const l of [...state.listeners]) l();
      state.listeners.clear();
      for (const w of state.waits.splice(0)) w();
    },
  };
}

function call(provider: ProviderRuntime, ex: Exchange): Promise<ForwardResult> {
  return forward({
    ex, protocol: chatCompletions, provider, headers: {}, body: '{}', stream: true, stripUsage: false,
    inspector: createOutputInspector({ patterns: [] }), maxResponseBodyBytes: 1024 * 1024, callTimeoutMs: 60_000, startedMs: performance.now(),
  });
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

interface Case {
  name: string;
  run(p: ReturnType<typeof manualProvider>, c: ReturnType<typeof manualClient>): Promise<void>;
  outcome: string;
  /** The provider call was cut (rather than read to its end). */
  aborted: boolean;
}

const CASES: Case[] = [
  {
    name: 'the client leaves while the provider is paused for it',
    async run(p, c) {
      p.start();
      await tick();
      c.state.blocked = true;
      p.send(chunk('a'));
      assert.equal(p.state.paused, true, 'a write that has to wait pauses the provider');
      p.send(chunk('b')); // one more read already under way
      c.leave();
    },
    outcome: 'client-closed', aborted: true,
  },
  {
    name: 'the provider ends while paused, then the client catches up',
    async run(p, c) {
      p.start();
      await tick();
      c.state.blocked = true;
      p.send(chunk('a'));
      p.send(STOP + DONE);
      p.state.handler!.onResponseEnd?.(undefined as never, {});
      c.state.blocked = false;
      for (const w of c.state.waits.splice(0)) w();
    },
    outcome: 'ok', aborted: false,
  },
  {
    name: 'the provider sends its terminal event, then neither ends nor fails',
    async run(p) {
      p.start();
      await tick();
      p.send(chunk('a') + STOP + DONE);
    },
    outcome: 'ok', aborted: true,
  },
];

for (const c of CASES) {
  test(`relay: ${c.name} → ${c.outcome}, nothing left behind`, async () => {
    const p = manualProvider();
    const client = manualClient();
    const settled = call(p.provider, client.ex);
    await c.run(p, client);
    const result = await Promise.race([settled, new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000))]);
    assert.ok(result, 'the relay never settled');
    assert.equal(result.outcome, c.outcome);
    // The drain after a terminal event lasts about a second at most.
    for (let i = 0; i < 30 && c.aborted && !p.state.aborted; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(p.state.aborted !== undefined, c.aborted, 'the provider call was (not) cut');
    assert.equal(client.state.listeners.size, 0, 'the client is still watched');
    if (c.outcome === 'ok') assert.match(client.state.written, /\[DONE\]/);
  });
}
