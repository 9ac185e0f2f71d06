/**
 * A small DER encoder (ITU-T X.690 §10), enough to write X.509 certificates
 * (RFC 5280): definite lengths, minimal integers, object identifiers, strings,
 * times, bit strings and context-specific tags. Encoding only: certificates
 * are read back with node's `X509Certificate`.
 */

/** Universal tag numbers used here (X.680 §8.6). */
const TAG = {
  boolean: 0x01, integer: 0x02, bitString: 0x03, octetString: 0x04, null: 0x05, oid: 0x06,
  utf8String: 0x0c, printableString: 0x13, ia5String: 0x16, utcTime: 0x17, generalizedTime: 0x18,
  sequence: 0x30, set: 0x31,
} as const;

/** One TLV: a tag byte, the definite length (short or long form), the contents. */
export function tlv(tag: number, contents: Uint8Array): Buffer {
  const len = contents.length;
  let head: Buffer;
  if (len < 0x80) {
    head = Buffer.from([tag, len]);
  } else {
    const bytes: number[] = [];
    for (let n = len; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
    head = Buffer.from([tag, 0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([head, contents]);
}

export function sequence(...items: Uint8Array[]): Buffer {
  return tlv(TAG.sequence, Buffer.concat(items));
}

/** A SET OF; DER sorts the encoded elements (X.690 §11.6). */
export function set(...items: Uint8Array[]): Buffer {
  const sorted = [...items].map((i) => Buffer.from(i)).sort(Buffer.compare);
  return tlv(TAG.set, Buffer.concat(sorted));
}

export function boolean(value: boolean): Buffer {
  return tlv(TAG.boolean, Buffer.from([value ? 0xff : 0x00]));
}

/**
 * A non-negative INTEGER from a number or big-endian unsigned bytes, in the
 * fewest bytes (one leading zero when the top bit is set, so it stays positive).
 */
export function integer(value: number | Uint8Array): Buffer {
  let bytes: Buffer;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`DER integer out of range: ${value}`);
    const out: number[] = [];
    for (let n = value; n > 0; n = Math.floor(n / 256)) out.unshift(n & 0xff);
    bytes = Buffer.from(out);
  } else {
    let start = 0;
    while (start < value.length && value[start] === 0) start += 1;
    bytes = Buffer.from(value.subarray(start));
  }
  if (bytes.length === 0 || (bytes[0]! & 0x80) !== 0) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return tlv(TAG.integer, bytes);
}

/** An OBJECT IDENTIFIER from dotted text, e.g. `2.5.29.19`. */
export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((a) => {
    if (!/^\d+$/.test(a)) throw new RangeError(`bad OID arc in ${dotted}`);
    return Number(a);
  });
  if (arcs.length < 2 || arcs[0]! > 2 || (arcs[0]! < 2 && arcs[1]! > 39)) throw new RangeError(`bad OID ${dotted}`);
  const out: number[] = [];
  const values = [arcs[0]! * 40 + arcs[1]!, ...arcs.slice(2)];
  for (const v of values) {
    if (!Number.isSafeInteger(v)) throw new RangeError(`OID arc too large in ${dotted}`);
    const base128: number[] = [v & 0x7f];
    for (let n = Math.floor(v / 128); n > 0; n = Math.floor(n / 128)) base128.unshift(0x80 | (n & 0x7f));
    out.push(...base128);
  }
  return tlv(TAG.oid, Buffer.from(out));
}

export function octetString(bytes: Uint8Array): Buffer {
  return tlv(TAG.octetString, bytes);
}

/** A BIT STRING of whole bytes (no unused bits), as keys and signatures are. */
export function bitString(bytes: Uint8Array): Buffer {
  return tlv(TAG.bitString, Buffer.concat([Buffer.from([0]), bytes]));
}

/**
 * A named BIT STRING (X.690 §11.2.2): bit 0 is the most significant bit of the
 * first byte; trailing zero bits are dropped and counted as unused.
 * @example namedBits([5, 6]) // keyCertSign + cRLSign: 03 02 01 06
 */
export function namedBits(bits: readonly number[]): Buffer {
  if (bits.length === 0) return tlv(TAG.bitString, Buffer.from([0]));
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const b of bits) bytes[Math.floor(b / 8)]! |= 0x80 >> (b % 8);
  const unused = 7 - (highest % 8);
  return tlv(TAG.bitString, Buffer.concat([Buffer.from([unused]), bytes]));
}

export function utf8String(text: string): Buffer {
  return tlv(TAG.utf8String, Buffer.from(text, 'utf8'));
}

export function printableString(text: string): Buffer {
  if (!/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(text)) throw new RangeError('not a PrintableString');
  return tlv(TAG.printableString, Buffer.from(text, 'ascii'));
}

export function ia5String(text: string): Buffer {
  if (!/^[\x00-\x7f]*$/.test(text)) throw new RangeError('not an IA5String');
  return tlv(TAG.ia5String, Buffer.from(text, 'ascii'));
}

/**
 * An X.509 Time (RFC 5280 §4.1.2.5): UTCTime for 1950–2049, GeneralizedTime
 * otherwise; whole seconds, always `Z`.
 */
export function time(date: Date): Buffer {
  const y = date.getUTCFullYear();
  const two = (n: number): string => String(n).padStart(2, '0');
  const rest = `${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(TAG.utcTime, Buffer.from(`${two(y % 100)}${rest}`, 'ascii'));
  return tlv(TAG.generalizedTime, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'ascii'));
}

/** `[n] EXPLICIT`: a constructed context tag around one encoded value. */
export function explicit(n: number, inner: Uint8Array): Buffer {
  return tlv(0xa0 | n, inner);
}

/** `[n] IMPLICIT` of a primitive type: the context tag replaces the universal one. */
export function implicitPrimitive(n: number, contents: Uint8Array): Buffer {
  return tlv(0x80 | n, contents);
}

/** `[n] IMPLICIT` of a constructed type (SEQUENCE, SET). */
export function implicitConstructed(n: number, contents: Uint8Array): Buffer {
  return tlv(0xa0 | n, contents);
}

/** Wrap DER bytes as PEM with 64-character lines. */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Where one TLV starts and ends: `[start, contentStart, end)`. */
function readTlv(buf: Uint8Array, start: number): { tag: number; contentStart: number; end: number } {
  if (start + 2 > buf.length) throw new RangeError('DER truncated');
  const tag = buf[start]!;
  let len = buf[start + 1]!;
  let contentStart = start + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || contentStart + n > buf.length) throw new RangeError('DER length unsupported');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[contentStart + i]!;
    contentStart += n;
  }
  const end = contentStart + len;
  if (end > buf.length) throw new RangeError('DER truncated');
  return { tag, contentStart, end };
}

/**
 * The subject Name of a DER certificate, byte for byte (a leaf's issuer must
 * equal its CA's subject): Certificate → tbsCertificate → the sixth field
 * (after version, serial, signature algorithm, issuer and validity).
 * @throws RangeError when the bytes are not a v3 certificate
 */
export function subjectOf(certDer: Uint8Array): Buffer {
  const cert = readTlv(certDer, 0);
  const tbs = readTlv(certDer, cert.contentStart);
  let at = tbs.contentStart;
  const first = readTlv(certDer, at);
  if (first.tag !== 0xa0) throw new RangeError('not an X.509 v3 certificate');
  at = first.end;
  for (let i = 0; i < 4; i++) at = readTlv(certDer, at).end; // serial, signature, issuer, validity
  const subject = readTlv(certDer, at);
  if (subject.tag !== 0x30) throw new RangeError('the certificate subject is not a SEQUENCE');
  return Buffer.from(certDer.subarray(at, subject.end));
}
