/**
 * A minimal QMP (QEMU Machine Protocol) client over a unix socket: the
 * greeting, capability negotiation, commands with their replies in order, and
 * asynchronous events. Lines are JSON objects separated by newlines.
 */
import { connect, type Socket } from 'node:net';
import { SandboxError } from '../../errors/index.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpClient {
  /** Run a command; resolves with its `return` value, rejects with its `error`. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown>;
  /** Wait for the first event matching `match`, or reject after `timeoutMs`. */
  waitForEvent(match: (e: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent>;
  /** Every event received so far. */
  readonly events: readonly QmpEvent[];
  close(): void;
}

/**
 * Connect, read the greeting and enter command mode.
 * @param timeoutMs how long to wait for QEMU to answer @default 5000
 */
export async function connectQmp(socketPath: string, timeoutMs = 5000): Promise<QmpClient> {
  const sock = await new Promise<Socket>((resolve, reject) => {
    const s = connect(socketPath);
    s.once('connect', () => resolve(s));
    s.once('error', (e) => reject(new SandboxError('sandbox-qmp', `cannot connect to QMP at ${socketPath}: ${e.message}`, { cause: e })));
  });
  const events: QmpEvent[] = [];
  const pending: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  const waiters = new Set<{ match: (e: QmpEvent) => boolean; resolve: (e: QmpEvent) => void }>();
  let greeted: (() => void) | undefined;
  let gotGreeting = false;
  let closedError: Error | undefined;
  let buf = '';

  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) dispatch(line);
    }
  });
  const onClose = () => {
    closedError = new SandboxError('sandbox-qmp', 'QMP connection closed (QEMU exited?)');
    for (const p of pending.splice(0)) p.reject(closedError);
  };
  sock.on('close', onClose);
  sock.on('error', () => undefined); // 'close' follows and rejects what is pending

  function dispatch(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // not JSON: ignore rather than trust it
    }
    if ('QMP' in msg) {
      gotGreeting = true;
      return greeted?.();
    }
    if (typeof msg['event'] === 'string') {
      const e = msg as unknown as QmpEvent;
      events.push(e);
      for (const w of waiters) if (w.match(e)) { waiters.delete(w); w.resolve(e); }
      return;
    }
    const p = pending.shift();
    if (!p) return;
    if ('error' in msg) {
      const err = msg['error'] as { class?: string; desc?: string };
      p.reject(new SandboxError('sandbox-qmp', `QMP error ${err.class ?? ''}: ${err.desc ?? 'unknown'}`));
    } else p.resolve(msg['return']);
  }

  function execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (closedError) return Promise.reject(closedError);
    return new Promise((resolve, reject) => {
      pending.push({ resolve, reject });
      sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    });
  }

  function waitForEvent(match: (e: QmpEvent) => boolean, ms: number): Promise<QmpEvent> {
    const seen = events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = {
        match,
        resolve: (e: QmpEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new SandboxError('sandbox-timeout', `no matching QMP event within ${ms} ms`));
      }, ms);
      waiters.add(w);
    });
  }

  try {
    await withTimeout(new Promise<void>((resolve) => (gotGreeting ? resolve() : (greeted = resolve))), timeoutMs, 'QMP greeting');
    await withTimeout(execute('qmp_capabilities'), timeoutMs, 'qmp_capabilities');
  } catch (err) {
    sock.destroy();
    throw err;
  }
  return {
    execute,
    waitForEvent,
    events,
    close: () => sock.destroy(),
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SandboxError('sandbox-timeout', `${what} did not arrive within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
