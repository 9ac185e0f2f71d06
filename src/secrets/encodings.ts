/**
 * The byte patterns by which a secret value is recognised in traffic, and
 * the percent-decoding used to normalise URL-encoded text.
 *
 * For a value `v` of n bytes the patterns are: `v` itself; its hex, lower and
 * upper case; its JSON string form when that differs (a quote or backslash
 * escaped); and its base64 and base64url forms at each of the three byte
 * alignments it can have inside a longer base64 text. For alignment a (the
 * value starts a bytes after a 3-byte boundary) only the characters whose six
 * bits all come from `v` are kept: characters ceil(8a/6) up to, not
 * including, floor(8(a+n)/6) of the encoding of a zero bytes followed by `v`.
 * URL-encoded forms (any subset of bytes percent-encoded) are found by
 * searching the same patterns in the percent-decoded text.
 */

export type SecretEncoding = 'raw' | 'json' | 'hex' | 'base64' | 'base64url' | 'url';

export interface BytePattern {
  bytes: Buffer;
  encoding: SecretEncoding;
}

/** Every pattern of `value`, each distinct byte string once, most literal first. */
export function valuePatterns(value: Buffer): BytePattern[] {
  const out: BytePattern[] = [];
  const add = (bytes: Buffer, encoding: SecretEncoding): void => {
    if (bytes.length > 0 && !out.some((p) => p.bytes.equals(bytes))) out.push({ bytes, encoding });
  };
  add(value, 'raw');
  const text = value.toString('utf8');
  add(Buffer.from(JSON.stringify(text).slice(1, -1), 'utf8'), 'json');
  if (text.includes(' ')) add(Buffer.from(text.replaceAll(' ', '+'), 'utf8'), 'url'); // form encoding of spaces
  const hex = value.toString('hex');
  add(Buffer.from(hex, 'latin1'), 'hex');
  add(Buffer.from(hex.toUpperCase(), 'latin1'), 'hex');
  for (const alphabet of ['base64', 'base64url'] as const) {
    for (let a = 0; a < 3; a++) {
      const encoded = Buffer.concat([Buffer.alloc(a), value]).toString(alphabet);
      const core = encoded.slice(Math.ceil((8 * a) / 6), Math.floor((8 * (a + value.length)) / 6));
      add(Buffer.from(core, 'latin1'), alphabet);
    }
  }
  return out;
}

const HEX_VALUE = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[0x30 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX_VALUE[0x41 + i] = 10 + i;
  HEX_VALUE[0x61 + i] = 10 + i;
}

/**
 * `%XX` sequences (either case) replaced by their byte; everything else,
 * including a `%` not followed by two hex digits, kept as is. One level.
 */
export function percentDecode(input: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(input.length);
  let o = 0;
  for (let i = 0; i < input.length; i++) {
    const b = input[i]!;
    if (b === 0x25 && i + 2 < input.length) {
      const hi = HEX_VALUE[input[i + 1]!]!;
      const lo = HEX_VALUE[input[i + 2]!]!;
      if (hi >= 0 && lo >= 0) {
        out[o++] = (hi << 4) | lo;
        i += 2;
        continue;
      }
    }
    out[o++] = b;
  }
  return out.subarray(0, o);
}
