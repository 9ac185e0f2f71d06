/**
 * Framing of the guest control channel (docs/guest-protocol.md, "Frames"):
 *
 *   u32 length (big-endian, of the rest) | u8 kind | u32 channel | payload
 *
 * {@link FrameDecoder} is incremental: it accepts chunks of any size, keeps
 * partial frames, and rejects an oversize length as soon as the 4-byte prefix
 * has arrived, before any of that frame's payload is buffered.
 */
import { GuestProtocolError } from './errors.js';

export const FrameKind = {
  Control: 1,
  Data: 2,
  DataStderr: 3,
  Eof: 4,
  Window: 5,
  Close: 6,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/** Largest value of the length field (kind + channel + payload). */
export const MAX_FRAME_BYTES = 256 * 1024;
/** Length prefix + kind + channel. */
export const FRAME_HEADER_BYTES = 9;
export const MAX_PAYLOAD_BYTES = MAX_FRAME_BYTES - 5;
/** Credit each side starts with, per direction of every data channel. */
export const INITIAL_WINDOW_BYTES = 256 * 1024;
/** Outstanding credit may never exceed this. */
export const MAX_WINDOW_BYTES = 0x7fff_ffff;
/** Largest DATA payload the host sends (smaller than the frame limit, for fairness). */
export const DATA_CHUNK_BYTES = 64 * 1024;
export const MAX_CLOSE_REASON_BYTES = 1024;
/** Channel ids at or above this are allocated by the guest (stream.open). */
export const GUEST_CHANNEL_BASE = 0x8000_0000;
export const CONTROL_CHANNEL = 0;

export interface Frame {
  kind: FrameKind;
  channel: number;
  payload: Buffer;
}

const KINDS = new Set<number>(Object.values(FrameKind));
const EMPTY = Buffer.alloc(0);

/**
 * Encode one frame.
 * @throws RangeError when the kind, channel or payload size is out of range (a host bug).
 */
export function encodeFrame(kind: FrameKind, channel: number, payload: Uint8Array = EMPTY): Buffer {
  if (!KINDS.has(kind)) throw new RangeError(`encodeFrame: unknown kind ${kind}`);
  if (!Number.isInteger(channel) || channel < 0 || channel > 0xffff_ffff) {
    throw new RangeError(`encodeFrame: channel ${channel} is not a u32`);
  }
  if (payload.length > MAX_PAYLOAD_BYTES) {
    throw new RangeError(`encodeFrame: payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  }
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt32BE(payload.length + 5, 0);
  out[4] = kind;
  out.writeUInt32BE(channel, 5);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

export interface FrameDecoderOptions {
  /** Largest accepted value of the length field. @default MAX_FRAME_BYTES */
  maxFrameBytes?: number;
}

/** Incremental frame parser. After it throws once, it keeps throwing the same error. */
export class FrameDecoder {
  readonly #maxFrameBytes: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #failure: GuestProtocolError | undefined;
  /** Length field of the frame being collected, once its header was checked; -1 before. */
  #pendingLength = -1;

  constructor(options: FrameDecoderOptions = {}) {
    this.#maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
  }

  /** Bytes held for a frame that is not complete yet. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /**
   * Add a chunk and return every frame it completes.
   * @throws GuestProtocolError on an oversize/undersize length or an unknown kind.
   */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failure) throw this.#failure;
    if (chunk.length > 0) {
      this.#chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      this.#buffered += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.#pendingLength < 0) {
        if (this.#buffered < 5) {
          if (this.#buffered >= 4) this.#checkLength(this.#peek(4).readUInt32BE(0));
          break;
        }
        const head = this.#peek(5);
        this.#checkLength(head.readUInt32BE(0));
        if (!KINDS.has(head[4]!)) this.#fail('unknown-kind', `frame kind ${head[4]!} is not defined`);
        this.#pendingLength = head.readUInt32BE(0);
      }
      if (this.#buffered < 4 + this.#pendingLength) break;
      const bytes = this.#take(4 + this.#pendingLength);
      this.#pendingLength = -1;
      frames.push({
        kind: bytes[4] as FrameKind,
        channel: bytes.readUInt32BE(5),
        payload: bytes.subarray(FRAME_HEADER_BYTES),
      });
    }
    return frames;
  }

  /**
   * The stream ended.
   * @throws GuestProtocolError when a frame was cut off.
   */
  end(): void {
    if (this.#failure) throw this.#failure;
    if (this.#buffered > 0) this.#fail('truncated-frame', `the stream ended inside a frame (${this.#buffered} bytes held)`);
  }

  #fail(reason: 'frame-too-large' | 'frame-too-short' | 'unknown-kind' | 'truncated-frame', message: string): never {
    this.#failure = new GuestProtocolError(reason, message);
    this.#chunks = [];
    this.#buffered = 0;
    this.#pendingLength = -1;
    throw this.#failure;
  }

  #checkLength(length: number): void {
    if (length > this.#maxFrameBytes) {
      this.#fail('frame-too-large', `length field ${length} exceeds the limit of ${this.#maxFrameBytes} bytes`);
    }
    if (length < 5) this.#fail('frame-too-short', `length field ${length} is shorter than kind + channel (5)`);
  }

  /** The first n buffered bytes (n <= 9), walking only the chunks that hold them. */
  #peek(n: number): Buffer {
    const first = this.#chunks[0]!;
    if (first.length >= n) return first;
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    for (const c of this.#chunks) {
      filled += c.copy(out, filled, 0, Math.min(c.length, n - filled));
      if (filled === n) break;
    }
    return out;
  }

  #take(n: number): Buffer {
    const first = this.#chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.#chunks[0]!;
        const use = Math.min(c.length, n - filled);
        c.copy(out, filled, 0, use);
        filled += use;
        if (use === c.length) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(use);
      }
    }
    this.#buffered -= n;
    return out;
  }
}
