/**
 * Reads the TLS ClientHello that opens a CONNECT tunnel and extracts its SNI
 * (server_name, RFC 6066 §3), so that the proxy can require it to equal the
 * CONNECT host (no domain fronting). Our own parser: the hello may arrive in
 * many TCP segments and even across several TLS records (RFC 8446 §5.1); the
 * bytes read are handed back so they can be forwarded unchanged upstream.
 * Reading is bounded by a byte cap and a timeout.
 */
import type { Duplex } from 'node:stream';

/** TLS record content type `handshake` and handshake type `client_hello`. */
const RECORD_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const NAME_TYPE_HOST = 0;
/** A TLS record's fragment is at most 2^14 bytes (RFC 8446 §5.1). */
const MAX_RECORD_BYTES = 16384;

export type ClientHelloParse =
  | { status: 'incomplete' }
  | { status: 'ok'; sni?: string }
  | { status: 'invalid'; problem: string };

/**
 * Parse a ClientHello from the start of a TLS byte stream.
 * @example parseClientHello(firstBytes) // { status: 'ok', sni: 'api.example.com' }
 */
export function parseClientHello(buf: Buffer): ClientHelloParse {
  // Gather the handshake bytes carried by consecutive handshake records (usually one: then no copy).
  let first: Buffer | undefined;
  let parts: Buffer[] | undefined;
  let have = 0;
  let need = -1;
  let off = 0;
  while (need < 0 || have < need) {
    if (buf.length < off + 5) return { status: 'incomplete' };
    if (buf[off] !== RECORD_HANDSHAKE) return { status: 'invalid', problem: 'the stream does not start with a TLS handshake record' };
    if (buf[off + 1] !== 3) return { status: 'invalid', problem: 'the TLS record version is not 3.x' };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > MAX_RECORD_BYTES) return { status: 'invalid', problem: 'the TLS record length is out of range' };
    if (buf.length < off + 5 + len) return { status: 'incomplete' };
    const fragment = buf.subarray(off + 5, off + 5 + len);
    if (first === undefined) first = fragment;
    else (parts ??= [first]).push(fragment);
    have += len;
    off += 5 + len;
    if (need < 0 && have >= 4) {
      const hs = parts ? Buffer.concat(parts) : first;
      if (hs[0] !== HANDSHAKE_CLIENT_HELLO) return { status: 'invalid', problem: 'the first handshake message is not a ClientHello' };
      need = 4 + hs.readUIntBE(1, 3);
    }
  }
  return parseHelloBody((parts ? Buffer.concat(parts) : first!).subarray(4, need));
}

function parseHelloBody(b: Buffer): ClientHelloParse {
  const bad = (problem: string): ClientHelloParse => ({ status: 'invalid', problem });
  let p = 2 + 32; // legacy_version, random
  if (b.length < p + 1) return bad('the ClientHello is truncated');
  p += 1 + b[p]!; // session id
  if (b.length < p + 2) return bad('the ClientHello is truncated');
  p += 2 + b.readUInt16BE(p); // cipher suites
  if (b.length < p + 1) return bad('the ClientHello is truncated');
  p += 1 + b[p]!; // compression methods
  if (p === b.length) return { status: 'ok' }; // no extensions at all
  if (b.length < p + 2) return bad('the ClientHello is truncated');
  const end = p + 2 + b.readUInt16BE(p);
  if (end > b.length) return bad('the ClientHello extensions overrun the message');
  p += 2;
  while (p + 4 <= end) {
    const type = b.readUInt16BE(p);
    const len = b.readUInt16BE(p + 2);
    p += 4;
    if (p + len > end) return bad('a ClientHello extension overruns the message');
    if (type === EXT_SERVER_NAME) return parseServerName(b.subarray(p, p + len));
    p += len;
  }
  return { status: 'ok' };
}

function parseServerName(ext: Buffer): ClientHelloParse {
  if (ext.length < 2 || ext.readUInt16BE(0) !== ext.length - 2) return { status: 'invalid', problem: 'the server_name extension is malformed' };
  let p = 2;
  while (p + 3 <= ext.length) {
    const type = ext[p]!;
    const len = ext.readUInt16BE(p + 1);
    p += 3;
    if (p + len > ext.length) return { status: 'invalid', problem: 'the server_name entry overruns the extension' };
    if (type === NAME_TYPE_HOST) {
      const name = ext.subarray(p, p + len).toString('latin1');
      if (name.length === 0 || /[^\x21-\x7e]/.test(name)) return { status: 'invalid', problem: 'the SNI host name is empty or not printable ASCII' };
      return { status: 'ok', sni: name };
    }
    p += len;
  }
  return { status: 'ok' };
}

export interface ReadClientHelloOptions {
  /** Give up once more than this many bytes are buffered without a whole ClientHello. */
  maxBytes: number;
  /** Give up when the hello is not complete after this long. */
  timeoutMs: number;
}

export type ClientHelloResult =
  | { ok: true; sni?: string; bytes: Buffer }
  | { ok: false; reason: 'sni-invalid' | 'sni-timeout' | 'sni-too-large' | 'client-closed'; problem: string; bytes: Buffer };

/**
 * Read from `socket` until a whole ClientHello is buffered (or the cap, the
 * timeout or the end of the stream). The socket is left paused with its data
 * listener removed; the bytes read are returned for forwarding.
 */
export function readClientHello(socket: Duplex, opts: ReadClientHelloOptions): Promise<ClientHelloResult> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    const finish = (r: ClientHelloResult): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', onEnd);
      socket.pause();
      resolve(r);
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const parsed = parseClientHello(buf);
      if (parsed.status === 'ok') return finish({ ok: true, ...(parsed.sni !== undefined ? { sni: parsed.sni } : {}), bytes: buf });
      if (parsed.status === 'invalid') return finish({ ok: false, reason: 'sni-invalid', problem: parsed.problem, bytes: buf });
      if (buf.length > opts.maxBytes) {
        finish({ ok: false, reason: 'sni-too-large', problem: `the ClientHello is larger than ${opts.maxBytes} bytes`, bytes: buf });
      }
    };
    const onEnd = (): void => finish({ ok: false, reason: 'client-closed', problem: 'the client closed before sending a whole ClientHello', bytes: buf });
    const timer = setTimeout(() => {
      finish({ ok: false, reason: 'sni-timeout', problem: `no complete ClientHello within ${opts.timeoutMs} ms`, bytes: buf });
    }, opts.timeoutMs);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.once('error', onEnd);
    socket.resume();
  });
}
