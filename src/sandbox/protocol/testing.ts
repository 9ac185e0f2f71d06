/**
 * Test doubles for the control protocol: an in-memory duplex pair and a
 * scriptable fake guest. The fake guest plays the attacker in tests (it sends
 * whatever bytes a test asks for); it is not a cordon component.
 */
import { Duplex } from 'node:stream';
import { FrameDecoder, FrameKind, encodeFrame, type Frame } from './frame.js';
import { PROTOCOL_VERSION } from './messages.js';

/** Two connected in-memory Duplex ends: what one writes, the other reads. */
export function duplexPair(): [Duplex, Duplex] {
  let a: Duplex;
  let b: Duplex;
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
      destroy(err, cb) {
        const p = peer();
        if (!p.destroyed) p.destroy();
        cb(err);
      },
    });
  a = make(() => b);
  b = make(() => a);
  return [a, b];
}

export interface ControlFrame {
  id: number;
  op: string;
  [key: string]: unknown;
}

/** The guest end of a duplex pair, driven by a test. */
export class FakeGuest {
  readonly socket: Duplex;
  readonly #decoder = new FrameDecoder();
  readonly #frames: Frame[] = [];
  readonly #waiters: ((f: Frame) => void)[] = [];

  constructor(socket: Duplex) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.#decoder.push(chunk)) {
        const w = this.#waiters.shift();
        if (w) w(f);
        else this.#frames.push(f);
      }
    });
    socket.on('error', () => {});
  }

  /** Raw bytes, exactly as given. */
  raw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  frame(kind: FrameKind, channel: number, payload?: Uint8Array): void {
    this.raw(encodeFrame(kind, channel, payload));
  }

  control(message: unknown): void {
    this.frame(FrameKind.Control, 0, Buffer.from(JSON.stringify(message)));
  }

  hello(overrides: Record<string, unknown> = {}): void {
    this.control({
      op: 'hello', protocol: PROTOCOL_VERSION, version: '0.1.0', kernel: '6.1.0-test', bootTimeMs: 1,
      pid: 42, maxFrameBytes: 262144, proxyPort: null, ...overrides,
    });
  }

  /** The next frame the host sent. */
  next(): Promise<Frame> {
    const f = this.#frames.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Skip frames until a CONTROL request arrives; returns it parsed. */
  async request(): Promise<ControlFrame> {
    for (;;) {
      const f = await this.next();
      if (f.kind === FrameKind.Control) return JSON.parse(f.payload.toString('utf8')) as ControlFrame;
    }
  }

  /** Frames already received and not yet taken. */
  get queued(): readonly Frame[] {
    return this.#frames;
  }
}
