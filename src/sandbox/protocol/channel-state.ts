/**
 * Host-side state of one data channel: credit in both directions, the queue of
 * bytes waiting for credit, and the handlers that receive the guest's frames.
 *
 * Credit rules (docs/guest-protocol.md, "Flow control"): each direction starts
 * with INITIAL_WINDOW_BYTES; a sender decrements its credit by every DATA
 * payload byte and stops at zero; the receiver returns credit with WINDOW
 * frames once it has consumed the bytes.
 */
import { DATA_CHUNK_BYTES, FrameKind, INITIAL_WINDOW_BYTES, encodeFrame } from './frame.js';

/** `stream`: opened by the guest (egress); `forward`: opened by the host's forward.open (tunnels). */
export type ChannelKind = 'exec' | 'file.read' | 'file.write' | 'stream' | 'forward';

/** Credit is returned in steps of at least this many bytes (unless forced). */
export const WINDOW_GRANT_BYTES = 64 * 1024;

export interface ChannelHandlers {
  /** A DATA (stderr=false) or DATA_STDERR (stderr=true) payload. May throw a GuestProtocolError. */
  data?(payload: Buffer, stderr: boolean): void;
  /** The guest will send no more data on this channel. */
  eof?(): void;
  /** The guest closed a stream channel (reason is empty for a clean close). */
  close?(reason: string): void;
  /** The whole control connection went down. */
  abort?(err: Error): void;
}

type Queued = { data: Uint8Array; offset: number; done: () => void } | { eof: true };

export class ChannelState {
  readonly id: number;
  readonly kind: ChannelKind;
  /** Bytes the host may still send. */
  sendCredit = INITIAL_WINDOW_BYTES;
  /** Bytes the guest may still send. */
  recvCredit = INITIAL_WINDOW_BYTES;
  /** Bytes consumed but not yet granted back. */
  unacked = 0;
  remoteEof = false;
  /** The host sent CLOSE (abort); frames are discarded until the guest answers. */
  closing = false;
  /** The channel ended; queued and future sends are discarded. */
  dead = false;
  /** forward: the guest answered forward.open with ok; until then it may send nothing on the channel. */
  established = false;
  handlers: ChannelHandlers = {};
  readonly #write: (frame: Buffer) => void;
  #queue: Queued[] = [];
  #localEof = false;

  constructor(id: number, kind: ChannelKind, write: (frame: Buffer) => void) {
    this.id = id;
    this.kind = kind;
    this.#write = write;
  }

  /** Queue bytes for the guest; resolves once they are framed (or discarded because the channel ended). */
  send(data: Uint8Array): Promise<void> {
    if (this.dead || this.closing || this.#localEof || data.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#queue.push({ data, offset: 0, done: resolve });
      this.pump();
    });
  }

  /** Send EOF after everything queued so far. */
  endOutput(): void {
    if (this.dead || this.closing || this.#localEof) return;
    this.#localEof = true;
    this.#queue.push({ eof: true });
    this.pump();
  }

  /** Frame as much queued data as the credit allows. */
  pump(): void {
    while (!this.dead && this.#queue.length > 0) {
      const item = this.#queue[0]!;
      if ('eof' in item) {
        this.#write(encodeFrame(FrameKind.Eof, this.id));
        this.#queue.shift();
        continue;
      }
      if (this.sendCredit <= 0) return;
      const n = Math.min(item.data.length - item.offset, this.sendCredit, DATA_CHUNK_BYTES);
      this.#write(encodeFrame(FrameKind.Data, this.id, item.data.subarray(item.offset, item.offset + n)));
      item.offset += n;
      this.sendCredit -= n;
      if (item.offset === item.data.length) {
        this.#queue.shift();
        item.done();
      }
    }
  }

  /** Record consumed bytes and grant credit back when enough has accumulated. */
  consumed(n: number, force = false): void {
    this.unacked += n;
    if (this.dead || this.closing) return;
    if (this.unacked >= WINDOW_GRANT_BYTES || (force && this.unacked > 0)) {
      const inc = Buffer.allocUnsafe(4);
      inc.writeUInt32BE(this.unacked, 0);
      this.#write(encodeFrame(FrameKind.Window, this.id, inc));
      this.recvCredit += this.unacked;
      this.unacked = 0;
    }
  }

  /** The channel ended: settle queued sends (their bytes are discarded). */
  drop(): void {
    this.dead = true;
    for (const item of this.#queue) if (!('eof' in item)) item.done();
    this.#queue = [];
  }
}
