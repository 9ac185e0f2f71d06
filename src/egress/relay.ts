/**
 * The byte relay of a plain CONNECT tunnel (`relayTunnel`): each direction
 * counted, metered and written with backpressure, a half close passed on, the
 * close recorded once, when both sides are gone.
 *
 * Reads from the upstream land in a buffer the tunnel keeps and reuses
 * (`upstreamReader`: 16 KiB, 64 KiB while reads fill it), instead of a new
 * 64 KiB allocation per read. That is safe because each chunk is handed to
 * the client before the next read can land: a plain `net.Socket` client either passes the bytes to the kernel
 * inside `write()`, or keeps them counted in `writableLength` until it has,
 * and then the buffer is left to that write and the tunnel takes a new one
 * for its next read. Any other client stream (a guest's channel stream, which
 * may keep a chunk after `write()` returns) is given a copy. The buffer is
 * the tunnel's own: node fixes where a connection's next read lands before it
 * is needed, so a buffer shared between tunnels could be written by one while
 * it still backs another's pending write.
 *
 * @example
 * const reader = upstreamReader();
 * const upstream = await dialChecked(ctx.dial, address, port, timeoutMs, reader.onread);
 * relayTunnel(ctx, client, upstream, reader, helloBytes, data);
 */
import { Socket, type OnReadOpts } from 'node:net';
import type { Duplex } from 'node:stream';
import type { DoorContext, EgressEventData } from './context.js';

/** A tunnel's upstream read buffer starts this small (most tunnels carry requests and answers of a few KiB)... */
const SMALL_READ_BYTES = 16 * 1024;
/** ...and grows to this after a read that filled it (a download), as large as a default socket read. */
const LARGE_READ_BYTES = 64 * 1024;
/** A large buffer goes back to small after this many reads in a row that would have fitted the small one. */
const SHRINK_AFTER_SMALL_READS = 32;

/** Takes one chunk; `inReadBuffer`: the chunk is a view of the reader's buffer, valid only until it returns. False = stop reading until `resume()`. */
export type UpstreamSink = (chunk: Buffer, inReadBuffer: boolean) => boolean;

/** Where an upstream connection's reads go: held (as copies) until `attach`, then to the sink. */
export interface UpstreamReader {
  /** Pass to the dial. */
  readonly onread: OnReadOpts;
  /** Hand every read from now on to `sink`, the held ones first. Returns false when the sink asked to stop reading. */
  attach(sink: UpstreamSink): boolean;
  /** The last chunk still backs a pending write: read the next one into a new buffer. */
  leaveBufferToWrite(): void;
}

/** A reader for one upstream connection (see the file header). */
export function upstreamReader(): UpstreamReader {
  let buffer = Buffer.allocUnsafe(SMALL_READ_BYTES);
  let smallReads = 0;
  let sink: UpstreamSink | undefined;
  let held: Buffer[] = [];
  return {
    onread: {
      // Asked once when the socket is made and again after every read, for where the next read lands.
      buffer: () => buffer,
      callback: function onUpstreamRead(bytes: number, buf: Uint8Array): boolean {
        const chunk = (buf as Buffer).subarray(0, bytes);
        // Sized for the next read; this chunk stays valid (the old buffer lives on through it).
        if (bytes === buffer.length && bytes < LARGE_READ_BYTES) buffer = Buffer.allocUnsafe(LARGE_READ_BYTES);
        else if (buffer.length > SMALL_READ_BYTES) {
          smallReads = bytes <= SMALL_READ_BYTES ? smallReads + 1 : 0;
          if (smallReads >= SHRINK_AFTER_SMALL_READS) {
            buffer = Buffer.allocUnsafe(SMALL_READ_BYTES);
            smallReads = 0;
          }
        }
        if (sink) return sink(chunk, true);
        // Before the tunnel is relayed (e.g. a server that speaks first): keep a copy and stop reading.
        held.push(Buffer.from(chunk));
        return false;
      },
    },
    attach: function attach(to: UpstreamSink): boolean {
      sink = to;
      let more = true;
      for (const chunk of held) more = to(chunk, false) && more;
      held = [];
      return more;
    },
    leaveBufferToWrite: function leaveBufferToWrite(): void {
      buffer = Buffer.allocUnsafe(buffer.length);
    },
  };
}

/** How long a half-closed tunnel may linger to flush the other direction. */
const HALF_CLOSE_GRACE_MS = 5_000;

/**
 * Relay both ways and count bytes. When one side closes, the other is ended
 * and destroyed once its pending bytes are flushed (or after a grace period);
 * an error on either side destroys both. The close is recorded once, when
 * both are gone. Each direction has one function that counts, meters and
 * writes (with backpressure through 'drain'), instead of `pipe()` plus
 * counting listeners. `first` (the ClientHello) goes upstream first.
 */
export function relayTunnel(
  ctx: DoorContext, client: Duplex, upstream: Socket, reader: UpstreamReader, first: Buffer, data: EgressEventData,
): void {
  const conn = ctx.stateOf(client);
  conn.upstream = upstream;
  if (client.destroyed || upstream.destroyed) {
    // A side went away while the tunnel was checked and recorded: its 'close' may be gone, and nothing below would end the other.
    client.destroy();
    upstream.destroy();
    ctx.recordClose(conn.closeReason ?? 'closed', { ...data, bytesIn: 0, bytesOut: 0, durationMs: 0 });
    return;
  }
  const started = Date.now();
  let bytesOut = first.length;
  let bytesIn = 0;
  let closeReason = 'closed';
  let open = 2;
  const fail = (reason: string): void => {
    if (closeReason === 'closed') closeReason = reason;
    client.destroy();
    upstream.destroy();
  };
  const meter = ctx.meter(fail);
  meter.out(first.length);
  const closed = (other: Duplex) => (): void => {
    // The closed side can neither send nor receive: flush what the other side still has to write, then drop it.
    if (!other.destroyed) {
      if (other.writableFinished) other.destroy();
      else {
        const grace = setTimeout(() => other.destroy(), HALF_CLOSE_GRACE_MS).unref();
        other.once('close', () => clearTimeout(grace));
        other.once('finish', () => other.destroy()).end();
      }
    }
    open -= 1;
    if (open === 0) meter.done();
    if (open === 0) ctx.recordClose(conn.closeReason ?? closeReason, { ...data, bytesIn, bytesOut, durationMs: Date.now() - started });
  };
  const touch = conn.touch;
  // A tunnel opened before its sandbox became supervised carries nothing more out: the client must ask again (and be held).
  const supervisedNow = data.approval === undefined ? ctx.supervised : undefined;
  // Only a plain socket's writes are known to let go of a chunk (or count it in writableLength) when write() returns.
  const plainClient = Object.getPrototypeOf(client) === Socket.prototype;
  // The door's own activity listener is no longer needed: the relay below marks activity itself
  // (one 'data' listener per socket: EventEmitter copies the list on each emit when there are more).
  client.removeListener('data', touch);
  client.on('data', function clientToUpstream(chunk: Buffer): void {
    if (supervisedNow?.()) return fail('supervised');
    bytesOut += chunk.length;
    touch();
    meter.out(chunk.length);
    if (!upstream.write(chunk)) client.pause();
  });
  const upstreamToClient: UpstreamSink = function upstreamToClient(chunk: Buffer, inReadBuffer: boolean): boolean {
    bytesIn += chunk.length;
    touch();
    if (!inReadBuffer) return client.write(chunk);
    if (!plainClient) return client.write(Buffer.from(chunk));
    const more = client.write(chunk);
    if (client.writableLength > 0) reader.leaveBufferToWrite();
    return more;
  };
  // A dialler that ignored `onread` delivers through 'data' events instead (added before `attach`, so that order holds).
  upstream.on('data', function upstreamData(chunk: Buffer): void {
    if (!upstreamToClient(chunk, false)) upstream.pause();
  });
  upstream.on('drain', () => client.resume());
  client.on('drain', () => upstream.resume());
  // A half close is passed on, as `pipe()` would.
  client.once('end', () => upstream.end());
  upstream.once('end', () => client.end());
  upstream.once('error', () => fail('upstream-error'));
  client.once('error', () => fail('client-error'));
  upstream.once('close', closed(client));
  client.once('close', closed(upstream));
  upstream.write(first);
  if (reader.attach(upstreamToClient)) upstream.resume();
  else upstream.pause();
  client.resume();
  touch();
}
