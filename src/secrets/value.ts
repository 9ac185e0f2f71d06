/**
 * A secret's value in memory, wrapped so that it does not leak by accident:
 * `String(v)`, template literals, `JSON.stringify` and `util.inspect` (so
 * console and pino logs) all print `[secret NAME]`. The bytes are reachable
 * only through `reveal()`, which the egress proxy's substitution calls.
 *
 * Every value, whatever its source, passes the same check: 8 bytes to 64 KiB
 * of UTF-8 text on one line (no NUL, CR, LF or other control characters except
 * tab). Values are sent in HTTP headers, where a line break would inject
 * another header, and the exfiltration scanner needs at least
 * {@link MIN_SECRET_BYTES} bytes to recognise a value in traffic without
 * flagging ordinary data; shorter values are refused, not merely warned about.
 */
import { inspect } from 'node:util';

/** Shortest value accepted: shorter ones cannot be told apart from ordinary traffic. */
export const MIN_SECRET_BYTES = 8;
/** Longest value accepted. */
export const MAX_SECRET_BYTES = 64 * 1024;

const utf8 = new TextDecoder('utf-8', { fatal: true });

export class SecretValue {
  readonly name: string;
  readonly #bytes: Buffer;

  /** Wraps a copy of `bytes`; check them first with {@link checkSecretBytes}. */
  constructor(name: string, bytes: Uint8Array) {
    this.name = name;
    this.#bytes = Buffer.from(bytes);
  }

  /** Length in bytes. */
  get byteLength(): number {
    return this.#bytes.length;
  }

  /** The real value as text. Only the code that sends it upstream may call this. */
  reveal(): string {
    return this.#bytes.toString('utf8');
  }

  /** A copy of the real value's bytes. */
  revealBytes(): Buffer {
    return Buffer.from(this.#bytes);
  }

  /** Constant-time comparison with other bytes. */
  equals(other: Uint8Array): boolean {
    if (other.length !== this.#bytes.length) return false;
    let diff = 0;
    for (let i = 0; i < other.length; i++) diff |= other[i]! ^ this.#bytes[i]!;
    return diff === 0;
  }

  toString(): string {
    return `[secret ${this.name}]`;
  }

  toJSON(): string {
    return this.toString();
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

/** Why bytes cannot be a secret value, or undefined when they can. */
export function checkSecretBytes(bytes: Uint8Array): { problem: string; fix: string } | undefined {
  const oneLine = 'a secret is sent in an HTTP header, so it must be one line of text; store only the credential itself';
  if (bytes.length === 0) return { problem: 'the value is empty', fix: 'provide the credential' };
  if (bytes.length < MIN_SECRET_BYTES) {
    return {
      problem: `the value is ${bytes.length} bytes long; cordon needs at least ${MIN_SECRET_BYTES} to recognise it in traffic`,
      fix: 'use the full credential (API keys and tokens are longer); a value this short cannot be protected from exfiltration',
    };
  }
  if (bytes.length > MAX_SECRET_BYTES) {
    return { problem: `the value is ${bytes.length} bytes long, more than ${MAX_SECRET_BYTES}`, fix: 'store only the credential itself' };
  }
  for (const b of bytes) {
    if (b === 0) return { problem: 'the value contains a NUL byte', fix: oneLine };
    if (b === 0x0a || b === 0x0d) return { problem: 'the value contains a line break', fix: oneLine };
    if ((b < 0x20 && b !== 0x09) || b === 0x7f) return { problem: 'the value contains a control character', fix: oneLine };
  }
  try {
    utf8.decode(bytes);
  } catch {
    return { problem: 'the value is not UTF-8 text', fix: 'store binary credentials in a text form such as base64' };
  }
  return undefined;
}

/** `bytes` without one trailing `\n` or `\r\n` (what `echo` and most CLIs add). */
export function trimTrailingNewline(bytes: Buffer): Buffer {
  if (bytes.length > 0 && bytes[bytes.length - 1] === 0x0a) {
    const end = bytes.length > 1 && bytes[bytes.length - 2] === 0x0d ? bytes.length - 2 : bytes.length - 1;
    return bytes.subarray(0, end);
  }
  return bytes;
}
