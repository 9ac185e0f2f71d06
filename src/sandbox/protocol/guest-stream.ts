/**
 * A stream channel as a Node Duplex: a TCP connection accepted by the guest
 * agent's egress listener, or one the host opened to a guest port with
 * `forward.open` (tunnels). Reading applies backpressure to the guest: credit
 * goes back only when the consumer has taken the bytes, so one slow consumer
 * holds up its own stream and no other.
 */
import { Duplex } from 'node:stream';
import { SandboxError } from '../../errors/index.js';
import type { ChannelState } from './channel-state.js';
import type { StreamOpen } from './messages.js';

export class GuestStream extends Duplex {
  /** The channel id (guest-allocated for egress streams, host-allocated for forwards). */
  readonly channel: number;
  /** The guest port: the one the connection arrived on (egress), or the one forwarded to. */
  readonly port: number;
  /** The client's address inside the guest (egress; informational, never trust it), or `host` for a forward. */
  readonly peer: string;
  readonly #ch: ChannelState;
  readonly #closeChannel: (reason: string) => void;
  #heldBytes = 0;
  #remoteClosed = false;

  constructor(ch: ChannelState, info: Pick<StreamOpen, 'port' | 'peer'>, closeChannel: (reason: string) => void) {
    super({ allowHalfOpen: true });
    this.channel = ch.id;
    this.port = info.port;
    this.peer = info.peer;
    this.#ch = ch;
    this.#closeChannel = closeChannel;
    ch.handlers.data = (payload) => {
      if (this.push(payload)) ch.consumed(payload.length);
      else this.#heldBytes += payload.length;
    };
    ch.handlers.eof = () => {
      this.push(null);
    };
    ch.handlers.close = (reason) => {
      this.#remoteClosed = true;
      if (reason) this.destroy(new SandboxError('sandbox-stream-closed', `the guest closed the stream: ${reason}`));
      else this.push(null);
    };
    ch.handlers.abort = (err) => {
      this.#remoteClosed = true;
      this.destroy(err);
    };
  }

  override _read(): void {
    if (this.#heldBytes === 0) return;
    const n = this.#heldBytes;
    this.#heldBytes = 0;
    this.#ch.consumed(n, true);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.#remoteClosed) {
      callback(new SandboxError('sandbox-stream-closed', 'the guest already closed this stream'));
      return;
    }
    this.#ch.send(chunk).then(() => callback(), callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#ch.endOutput();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.#remoteClosed) this.#closeChannel(err ? err.message : '');
    callback(err);
  }
}
