/**
 * GuestConnection: the transport half of the host end of the control channel.
 *
 * Wraps a Duplex (the virtio-serial chardev socket, or a child's stdio in
 * tests), allocates channel ids, correlates request ids with promises (each
 * with a timeout), routes DATA/EOF/WINDOW/CLOSE frames, and treats the guest
 * as hostile: the first protocol violation emits `'protocol-error'` with a
 * precise reason, fails every pending request and destroys the socket.
 * The operations (exec, files, tokens) live in GuestChannel, its subclass.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { InvalidInputError, SandboxError } from '../../errors/index.js';
import { ChannelState, type ChannelKind } from './channel-state.js';
import { GuestOpError, GuestProtocolError } from './errors.js';
import {
  CONTROL_CHANNEL, FrameDecoder, FrameKind, GUEST_CHANNEL_BASE, MAX_CLOSE_REASON_BYTES, MAX_PAYLOAD_BYTES,
  MAX_WINDOW_BYTES, encodeFrame, type Frame,
} from './frame.js';
import { GuestStream } from './guest-stream.js';
import {
  PROTOCOL_VERSION, decodeControl, describeIssue, errorResponseSchema, notificationSchemas, responseSchemas,
  type GuestHello, type GuestLog, type GuestOp, type GuestResponse, type StreamOpen,
} from './messages.js';

export interface GuestChannelOptions {
  /** Deadline for every request except exec. @default 30_000 */
  requestTimeoutMs?: number;
  /** How long `ready` waits for the guest's hello. @default 15_000 */
  helloTimeoutMs?: number;
  /** Time the host allows beyond an exec's own timeoutMs before giving up on it. @default 5_000 */
  execGraceMs?: number;
  /** Most guest-opened streams at once; one more is a protocol error. @default 256 */
  maxGuestStreams?: number;
  /** Sustained `log` notifications per second; the burst is five times this. @default 50 */
  logsPerSecond?: number;
  /** Most host-opened forwards (forward.open, for tunnels) at once; the guest allows 64. @default 64 */
  maxForwards?: number;
}

export interface GuestChannelEvents {
  hello: [GuestHello];
  log: [GuestLog];
  stream: [GuestStream, StreamOpen];
  'protocol-error': [GuestProtocolError];
  close: [Error];
}

const MAX_EXPIRED_IDS = 1024;

interface Pending {
  op: GuestOp;
  channel: ChannelState | undefined;
  timer: NodeJS.Timeout | undefined;
  check: ((body: Record<string, unknown>) => void) | undefined;
  keepChannel: boolean;
  resolve(body: unknown): void;
  reject(err: Error): void;
}

export interface RequestOptions {
  timeoutMs?: number;
  channel?: ChannelState;
  /** Extra consistency check on the response; throws a GuestProtocolError. */
  check?: (body: Record<string, unknown>) => void;
  /** The channel outlives an ok response (forward.open: it becomes a stream). @default false */
  keepChannel?: boolean;
}

export class GuestConnection extends EventEmitter<GuestChannelEvents> {
  /** Resolves with the guest's hello; rejects if it does not come within helloTimeoutMs. */
  readonly ready: Promise<GuestHello>;
  readonly #socket: Duplex;
  readonly #decoder = new FrameDecoder();
  protected readonly opts: Required<GuestChannelOptions>;
  readonly #pending = new Map<number, Pending>();
  readonly #expired = new Map<number, number | undefined>();
  readonly #channels = new Map<number, ChannelState>();
  #hello: GuestHello | undefined;
  #resolveHello!: (h: GuestHello) => void;
  #rejectHello!: (e: Error) => void;
  #helloTimer: NodeJS.Timeout | undefined;
  #nextRequestId = 1;
  #nextChannelId = 1;
  #logTokens: number;
  #logRefilledAt = Date.now();
  #closed: Error | undefined;

  constructor(socket: Duplex, options: GuestChannelOptions = {}) {
    super();
    this.#socket = socket;
    this.opts = {
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      helloTimeoutMs: options.helloTimeoutMs ?? 15_000,
      execGraceMs: options.execGraceMs ?? 5_000,
      maxGuestStreams: options.maxGuestStreams ?? 256,
      logsPerSecond: options.logsPerSecond ?? 50,
      maxForwards: options.maxForwards ?? 64,
    };
    this.#logTokens = this.opts.logsPerSecond * 5;
    this.ready = new Promise<GuestHello>((resolve, reject) => {
      this.#resolveHello = resolve;
      this.#rejectHello = reject;
    });
    this.ready.catch(() => {}); // observed through `ready` by callers; never an unhandled rejection
    this.#helloTimer = setTimeout(() => {
      this.#rejectHello(new SandboxError('sandbox-hello-timeout',
        `the guest agent did not say hello within ${this.opts.helloTimeoutMs} ms`,
        { fix: 'Check the guest console log: the agent may have failed to start or to find its control port.' }));
    }, this.opts.helloTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.#onChunk(chunk));
    socket.on('end', () => {
      try {
        this.#decoder.end();
        this.#teardown(disconnected());
      } catch (err) {
        this.#fail(err as GuestProtocolError);
      }
    });
    socket.on('close', () => this.#teardown(disconnected()));
    socket.on('error', (err) => this.#teardown(disconnected(err)));
  }

  /** The guest's hello, once received. */
  get hello(): GuestHello | undefined {
    return this.#hello;
  }

  /** Why the channel closed, or undefined while it is open. */
  get closedReason(): Error | undefined {
    return this.#closed;
  }

  /** Close the connection from the host side. Pending requests fail with `sandbox-closed`. */
  close(): void {
    this.#teardown(new SandboxError('sandbox-closed', 'the host closed the guest control channel'));
  }

  // ---- frames in ----

  #onChunk(chunk: Buffer): void {
    if (this.#closed) return;
    try {
      for (const frame of this.#decoder.push(chunk)) {
        this.#onFrame(frame);
        if (this.#closed) return;
      }
    } catch (err) {
      if (err instanceof GuestProtocolError) this.#fail(err);
      else this.#fail(new GuestProtocolError('bad-message', `host failed to handle a frame: ${String(err)}`));
    }
  }

  #onFrame(f: Frame): void {
    if (f.kind === FrameKind.Control) {
      if (f.channel !== CONTROL_CHANNEL) throw new GuestProtocolError('control-on-data-channel', `CONTROL frame on channel ${f.channel}`);
      this.#onControl(decodeControl(f.payload));
      return;
    }
    if (f.channel === CONTROL_CHANNEL) throw new GuestProtocolError('data-on-control-channel', `frame kind ${f.kind} on channel 0`);
    const ch = this.#channels.get(f.channel);
    if (!ch) throw new GuestProtocolError('unknown-channel', `frame kind ${f.kind} on channel ${f.channel}, which is not open`);
    if (ch.kind === 'forward' && !ch.established && !ch.closing) {
      throw new GuestProtocolError('unexpected-frame', `frame kind ${f.kind} on forward channel ${ch.id} before the forward.open answer`);
    }
    switch (f.kind) {
      case FrameKind.Data:
      case FrameKind.DataStderr: {
        const stderr = f.kind === FrameKind.DataStderr;
        if (f.payload.length === 0) throw new GuestProtocolError('empty-data', `empty DATA frame on channel ${ch.id}`);
        if (ch.kind === 'file.write' || (stderr && ch.kind !== 'exec')) {
          throw new GuestProtocolError('unexpected-frame', `${stderr ? 'DATA_STDERR' : 'DATA'} on ${ch.kind} channel ${ch.id}`);
        }
        if (ch.remoteEof) throw new GuestProtocolError('data-after-eof', `DATA after EOF on channel ${ch.id}`);
        if (f.payload.length > ch.recvCredit) {
          throw new GuestProtocolError('window-exceeded',
            `channel ${ch.id} sent ${f.payload.length} bytes with only ${ch.recvCredit} bytes of credit`);
        }
        ch.recvCredit -= f.payload.length;
        if (!ch.closing) ch.handlers.data?.(f.payload, stderr);
        return;
      }
      case FrameKind.Eof:
        if (f.payload.length !== 0) throw new GuestProtocolError('bad-eof', `EOF with a ${f.payload.length}-byte payload`);
        if (ch.kind === 'file.write') throw new GuestProtocolError('unexpected-frame', `EOF on file.write channel ${ch.id}`);
        if (ch.remoteEof) throw new GuestProtocolError('duplicate-eof', `second EOF on channel ${ch.id}`);
        ch.remoteEof = true;
        if (!ch.closing) ch.handlers.eof?.();
        return;
      case FrameKind.Window: {
        if (f.payload.length !== 4) throw new GuestProtocolError('bad-window', `WINDOW payload of ${f.payload.length} bytes (must be 4)`);
        const inc = f.payload.readUInt32BE(0);
        if (inc === 0) throw new GuestProtocolError('bad-window', `WINDOW increment of 0 on channel ${ch.id}`);
        if (ch.sendCredit + inc > MAX_WINDOW_BYTES) {
          throw new GuestProtocolError('window-overflow', `channel ${ch.id} credit would exceed ${MAX_WINDOW_BYTES}`);
        }
        ch.sendCredit += inc;
        ch.pump();
        return;
      }
      case FrameKind.Close: {
        if (f.payload.length > MAX_CLOSE_REASON_BYTES) throw new GuestProtocolError('bad-close', `CLOSE reason of ${f.payload.length} bytes`);
        let reason: string;
        try {
          reason = new TextDecoder('utf-8', { fatal: true }).decode(f.payload);
        } catch {
          throw new GuestProtocolError('bad-close', 'CLOSE reason is not UTF-8');
        }
        if (ch.kind !== 'stream' && ch.kind !== 'forward') throw new GuestProtocolError('unexpected-frame', `CLOSE on ${ch.kind} channel ${ch.id}`);
        this.#channels.delete(ch.id);
        ch.drop();
        if (!ch.closing) {
          this.#write(encodeFrame(FrameKind.Close, ch.id));
          ch.handlers.close?.(reason);
        }
        return;
      }
    }
  }

  #onControl(msg: Record<string, unknown>): void {
    if ('id' in msg) {
      this.#onResponse(msg);
      return;
    }
    const op = msg.op;
    if (typeof op !== 'string') throw new GuestProtocolError('bad-message', 'control message has neither id nor op');
    if (!Object.hasOwn(notificationSchemas, op)) throw new GuestProtocolError('unknown-op', `unknown op ${JSON.stringify(op.slice(0, 64))}`);
    const parsed = notificationSchemas[op as keyof typeof notificationSchemas].safeParse(msg);
    if (!parsed.success) throw new GuestProtocolError('bad-message', `${op}: ${describeIssue(parsed.error)}`);
    const m = parsed.data;
    if (m.op === 'hello') this.#onHello(m);
    else if (m.op === 'log') this.#onLog(m);
    else this.#onStreamOpen(m);
  }

  #onResponse(msg: Record<string, unknown>): void {
    const id = msg.id;
    if (typeof id !== 'number' || !Number.isInteger(id)) throw new GuestProtocolError('bad-response', 'response id is not an integer');
    const p = this.#pending.get(id);
    if (!p) {
      if (!this.#expired.has(id)) throw new GuestProtocolError('unknown-response-id', `response to id ${id}, which is not pending`);
      const chId = this.#expired.get(id);
      this.#expired.delete(id);
      // A forward that the guest opened after all stays until its CLOSE answers ours; anything else ends here.
      if (chId !== undefined && !(this.#channels.get(chId)?.kind === 'forward' && msg.ok === true)) this.#endChannel(chId);
      return;
    }
    if (msg.ok === false) {
      const parsed = errorResponseSchema.safeParse(msg);
      if (!parsed.success) throw new GuestProtocolError('bad-response', `${p.op} error: ${describeIssue(parsed.error)}`);
      this.#settle(id, p, false);
      p.reject(new GuestOpError(p.op, parsed.data.error.code, parsed.data.error.message));
      return;
    }
    const parsed = responseSchemas[p.op].safeParse(msg);
    if (!parsed.success) throw new GuestProtocolError('bad-response', `${p.op}: ${describeIssue(parsed.error)}`);
    const { id: _id, ok: _ok, ...body } = parsed.data as Record<string, unknown>;
    this.#settle(id, p, true);
    try {
      p.check?.(body);
    } catch (err) {
      p.reject(err as Error);
      throw err;
    }
    p.resolve(body);
  }

  #onHello(m: GuestHello): void {
    if (this.#hello) throw new GuestProtocolError('duplicate-hello', 'the guest said hello twice (did the agent restart?)');
    if (m.protocol !== PROTOCOL_VERSION) {
      throw new GuestProtocolError('unsupported-protocol', `guest speaks protocol ${m.protocol}; this host speaks ${PROTOCOL_VERSION}`);
    }
    this.#hello = m;
    clearTimeout(this.#helloTimer);
    this.#resolveHello(m);
    this.emit('hello', m);
  }

  #onLog(m: GuestLog): void {
    const now = Date.now();
    const burst = this.opts.logsPerSecond * 5;
    this.#logTokens = Math.min(burst, this.#logTokens + ((now - this.#logRefilledAt) * this.opts.logsPerSecond) / 1000);
    this.#logRefilledAt = now;
    if (this.#logTokens < 1) throw new GuestProtocolError('log-flood', `more than ${this.opts.logsPerSecond} log messages per second`);
    this.#logTokens -= 1;
    this.emit('log', m);
  }

  #onStreamOpen(m: StreamOpen): void {
    if (this.#channels.has(m.channel)) throw new GuestProtocolError('channel-in-use', `stream.open for open channel ${m.channel}`);
    let streams = 0;
    for (const c of this.#channels.values()) if (c.kind === 'stream') streams++;
    if (streams >= this.opts.maxGuestStreams) {
      throw new GuestProtocolError('stream-limit', `more than ${this.opts.maxGuestStreams} streams open at once`);
    }
    const ch = new ChannelState(m.channel, 'stream', (f) => this.#write(f));
    this.#channels.set(ch.id, ch);
    if (this.listenerCount('stream') === 0) {
      this.abortChannel(ch, 'no egress handler on the host');
      return;
    }
    this.emit('stream', new GuestStream(ch, m, (reason) => this.abortChannel(ch, reason)), m);
  }

  // ---- requests and channels ----

  protected request<Op extends GuestOp>(op: Op, body: Record<string, unknown>, options: RequestOptions = {}): Promise<GuestResponse<Op>> {
    const ch = options.channel;
    if (this.#closed) {
      if (ch) this.#endChannel(ch.id);
      return Promise.reject(this.#closed);
    }
    let id = this.#nextRequestId;
    while (this.#pending.has(id) || this.#expired.has(id)) id = id >= 0xffff_ffff ? 1 : id + 1;
    this.#nextRequestId = id >= 0xffff_ffff ? 1 : id + 1;
    const payload = Buffer.from(JSON.stringify({ id, op, ...body }));
    if (payload.length > MAX_PAYLOAD_BYTES) {
      if (ch) this.#endChannel(ch.id);
      return Promise.reject(new InvalidInputError(`${op} request is ${payload.length} bytes; the limit is ${MAX_PAYLOAD_BYTES}`, {
        fix: 'Shorten argv/env, or pass large inputs as a file or on stdin.',
      }));
    }
    const timeoutMs = options.timeoutMs ?? this.opts.requestTimeoutMs;
    return new Promise<GuestResponse<Op>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        this.#expired.set(id, ch?.id);
        if (this.#expired.size > MAX_EXPIRED_IDS) this.#expired.delete(this.#expired.keys().next().value!);
        if (ch) this.abortChannel(ch, 'request timed out');
        reject(new SandboxError('sandbox-timeout', `the guest did not answer ${op} within ${timeoutMs} ms`, {
          fix: 'The guest may be overloaded or hung; check `cordon sandbox ls` and its console log.',
        }));
      }, timeoutMs);
      this.#pending.set(id, {
        op, channel: ch, timer, check: options.check, keepChannel: options.keepChannel ?? false, resolve: resolve as (b: unknown) => void, reject,
      });
      this.#write(encodeFrame(FrameKind.Control, CONTROL_CHANNEL, payload));
    });
  }

  #settle(id: number, p: Pending, ok: boolean): void {
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if (!p.channel) return;
    // Synchronously, so that DATA right behind the answer (same chunk) finds the channel established.
    if (ok && p.keepChannel) p.channel.established = true;
    else this.#endChannel(p.channel.id);
  }

  protected openChannel(kind: ChannelKind): ChannelState {
    if (this.#closed) throw this.#closed;
    if (kind === 'forward') {
      let forwards = 0;
      for (const c of this.#channels.values()) if (c.kind === 'forward') forwards++;
      if (forwards >= this.opts.maxForwards) {
        throw new SandboxError('sandbox-forward-limit', `${forwards} forwards are open to this guest; the limit is ${this.opts.maxForwards}`, {
          fix: 'close tunnel connections that are no longer needed, then retry',
        });
      }
    }
    let id = this.#nextChannelId;
    while (this.#channels.has(id)) id = id >= GUEST_CHANNEL_BASE - 1 ? 1 : id + 1;
    this.#nextChannelId = id >= GUEST_CHANNEL_BASE - 1 ? 1 : id + 1;
    const ch = new ChannelState(id, kind, (f) => this.#write(f));
    this.#channels.set(id, ch);
    return ch;
  }

  #endChannel(id: number): void {
    const ch = this.#channels.get(id);
    if (!ch) return;
    this.#channels.delete(id);
    ch.drop();
  }

  /** Number of open channels of a kind (for health views and tests). */
  protected channelCount(kind: ChannelKind): number {
    let n = 0;
    for (const c of this.#channels.values()) if (c.kind === kind) n++;
    return n;
  }

  /** Host-initiated CLOSE: the guest kills/aborts and answers (requests) or acknowledges (streams). */
  protected abortChannel(ch: ChannelState, reason: string): void {
    if (this.#channels.get(ch.id) !== ch || ch.closing) return;
    const bytes = Buffer.from(reason).subarray(0, MAX_CLOSE_REASON_BYTES);
    this.#write(encodeFrame(FrameKind.Close, ch.id, bytes));
    ch.drop();
    ch.closing = true;
  }

  #write(frame: Buffer): void {
    if (!this.#closed) this.#socket.write(frame);
  }

  #fail(err: GuestProtocolError): void {
    if (this.#closed) return;
    this.emit('protocol-error', err);
    this.#teardown(err);
  }

  #teardown(err: Error): void {
    if (this.#closed) return;
    this.#closed = err;
    clearTimeout(this.#helloTimer);
    this.#rejectHello(err);
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.#pending.clear();
    for (const ch of this.#channels.values()) {
      ch.drop();
      ch.handlers.abort?.(err);
    }
    this.#channels.clear();
    this.#socket.destroy();
    this.emit('close', err);
  }
}

function disconnected(cause?: unknown): SandboxError {
  return new SandboxError('sandbox-disconnected', 'the guest agent connection closed', {
    fix: 'The VM may have stopped or the agent crashed; check the sandbox console log.',
    cause,
  });
}
