/**
 * One call to a provider through undici's handler interface, without the
 * stream, promise and abort-signal machinery of `Dispatcher.request()`: every
 * model call goes through here, so what it costs is paid on every call.
 *
 * The answer's body is an `EventEmitter` with the few members the relay uses
 * (`data`, `end` and `error` events; `pause`, `resume`, `destroy`). Chunks
 * that arrive before anyone listens (the head and the first bytes often come
 * in one read) are kept and handed over once a `data` listener is added, as
 * a paused stream would.
 *
 * @example
 * const res = await callUpstream(pool, { method: 'POST', path, headers, body }, ex); // ex: the client's Exchange
 * res.body.on('data', onChunk).once('end', onEnd).once('error', onError);
 */
import { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';

export interface UpstreamResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: UpstreamBody;
}

/** The body of an upstream answer, fed by the handler below. */
export class UpstreamBody extends EventEmitter {
  #controller: Dispatcher.DispatchController | undefined;
  /** Chunks not handed over yet (no `data` listener yet, or paused). */
  #held: Buffer[] = [];
  #ended = false;
  #failed: Error | undefined;
  #paused = false;
  #destroyed = false;
  #flushing = false;

  constructor() {
    super();
    this.on('newListener', (event: string) => {
      if (event === 'data' && (this.#held.length > 0 || this.#ended || this.#failed)) queueMicrotask(() => this.#flush());
    });
  }

  /** @internal */
  attach(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
  }

  /** @internal */
  push(chunk: Buffer): void {
    if (this.#destroyed) return;
    if (this.#paused || this.#held.length > 0 || this.listenerCount('data') === 0) {
      this.#held.push(chunk);
      return;
    }
    this.emit('data', chunk);
  }

  /** @internal */
  finish(err?: Error): void {
    if (this.#destroyed || this.#ended || this.#failed) return;
    if (err) this.#failed = err;
    else this.#ended = true;
    if (this.#held.length === 0 && !this.#paused && this.listenerCount('data') > 0) this.#settle();
  }

  /** Stop reading from the provider until `resume()`. */
  pause(): this {
    this.#paused = true;
    // Once the answer is complete the connection may carry another call: its reads are not ours to pause.
    if (!this.#ended && !this.#failed && !this.#destroyed) this.#controller?.pause();
    return this;
  }

  resume(): this {
    if (!this.#paused) return this;
    this.#paused = false;
    this.#flush();
    // A held chunk handed over just now may have paused the body again: the provider then stays paused.
    if (!this.#paused && !this.#ended && !this.#failed && !this.#destroyed) this.#controller?.resume();
    return this;
  }

  /** Drop the rest of the answer (the connection is closed if it was not complete). No event follows. */
  destroy(): this {
    if (this.#destroyed) return this;
    this.#destroyed = true;
    this.#held = [];
    if (!this.#ended && !this.#failed && this.#controller && !this.#controller.aborted) this.#controller.abort(new Error('the gateway dropped the answer'));
    return this;
  }

  #flush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#held.length > 0 && !this.#paused && !this.#destroyed && this.listenerCount('data') > 0) this.emit('data', this.#held.shift()!);
    } finally {
      this.#flushing = false;
    }
    if (this.#held.length === 0 && !this.#paused && this.listenerCount('data') > 0) this.#settle();
  }

  #settle(): void {
    if (this.#destroyed) return;
    if (this.#failed) {
      const err = this.#failed;
      this.#destroyed = true;
      // An 'error' nobody listens to would throw: it is dropped instead (whoever listened has gone).
      if (this.listenerCount('error') > 0) this.emit('error', err);
      return;
    }
    if (this.#ended) {
      this.#destroyed = true;
      this.emit('end');
    }
  }
}

/** Who the answer is for: the call is aborted when they go away. `Exchange` fits. */
export interface CallerWatch {
  readonly aborted: boolean;
  /** Call `listener` once when the caller goes away (with the reason, if there is one); returns the undo. */
  onAbort(listener: (reason?: Error) => void): () => void;
}

/** Error code of a call that outlived its deadline (see {@link withDeadline}). */
export const CALL_TIMEOUT_CODE = 'CORDON_CALL_TIMEOUT';

/**
 * `caller`, and also aborted `timeoutMs` after now with an error whose code is
 * {@link CALL_TIMEOUT_CODE}. `clear()` once the call is over.
 */
export function withDeadline(caller: CallerWatch, timeoutMs: number, what: string): CallerWatch & { clear(): void } {
  let expired: Error | undefined;
  const listeners = new Set<(reason?: Error) => void>();
  const timer = setTimeout(() => {
    expired = Object.assign(new Error(`${what} took longer than ${timeoutMs} ms`), { code: CALL_TIMEOUT_CODE });
    for (const l of [...listeners]) l(expired);
    listeners.clear();
  }, timeoutMs);
  timer.unref();
  return {
    get aborted() { return expired !== undefined || caller.aborted; },
    onAbort(listener) {
      if (expired) {
        const e = expired;
        queueMicrotask(() => listener(e));
        return () => undefined;
      }
      listeners.add(listener);
      const undo = caller.onAbort(listener);
      return () => {
        listeners.delete(listener);
        undo();
      };
    },
    clear() {
      clearTimeout(timer);
      listeners.clear();
    },
  };
}


/**
 * Send a request; resolves once the provider's status and headers are in.
 * The call is aborted when `caller` goes away (before or after the answer started).
 * @throws the connection or timeout error when no answer started
 */
export function callUpstream(dispatcher: Dispatcher, options: Dispatcher.DispatchOptions, caller: CallerWatch): Promise<UpstreamResponse> {
  return new Promise<UpstreamResponse>((resolve, reject) => {
    const body = new UpstreamBody();
    let controller: Dispatcher.DispatchController | undefined;
    let started = false;
    let over = false;
    let reason: Error | undefined;
    const onAbort = (why?: Error): void => {
      if (why instanceof Error) reason ??= why; // a signal's listener gets an Event, not a reason
      const err = reason ?? Object.assign(new Error('the client went away'), { name: 'AbortError' });
      if (controller && !controller.aborted) controller.abort(err);
    };
    if (caller.aborted) {
      const err = new Error('the client went away');
      err.name = 'AbortError';
      reject(err);
      return;
    }
    const unwatch = caller.onAbort(onAbort);
    const done = (): void => {
      over = true;
      unwatch();
    };
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(c) {
        controller = c;
        body.attach(c);
        if (caller.aborted) onAbort();
      },
      onResponseStart(_c, statusCode, headers) {
        if (statusCode < 200) return; // 1xx: the answer is still to come
        started = true;
        resolve({ statusCode, headers, body });
      },
      onResponseData(_c, chunk) {
        body.push(chunk);
      },
      onResponseEnd() {
        if (!over) done();
        body.finish();
      },
      onResponseError(_c, err) {
        if (!over) done();
        if (!started) reject(err);
        else body.finish(err);
      },
    };
    try {
      dispatcher.dispatch(options, handler);
    } catch (err) {
      // A dispatcher that throws instead of calling onResponseError (bad options, a closed pool).
      done();
      reject(err);
    }
  });
}
