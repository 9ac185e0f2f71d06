/**
 * The master key that encrypts the secret store: 32 bytes, from
 * `CORDON_MASTER_KEY` when set, else from `$CORDON_HOME/keys/master.key`.
 *
 * `CORDON_MASTER_KEY` accepts exactly 64 hex digits, or the base64 (or
 * base64url) encoding of 32 bytes, padded or not; surrounding whitespace is
 * ignored, anything else is refused. The key file holds 64 hex digits and a
 * newline, mode 0600; a file that group or others can read is refused. A key
 * file is created only when a new store is written and none exists, with
 * O_EXCL; only `cordon secrets rotate-master` replaces it (see rotate.ts),
 * through `keys/master.key.new`, the pending key of a rotation in progress.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { KeyError } from '../errors/index.js';
import { ensurePrivateDir, readPrivateFile } from '../util/index.js';

export const MASTER_KEY_ENV = 'CORDON_MASTER_KEY';
export const MASTER_KEY_BYTES = 32;
const GENERATE_FIX = 'generate one with `openssl rand -hex 32` (or `head -c 32 /dev/urandom | base64`)';

export interface MasterKey {
  readonly bytes: Buffer;
  /** Where it came from: the environment variable or the key file. */
  readonly source: 'env' | 'file';
  /** The key file, when `source` is `file`. */
  readonly path?: string;
  /** Whether this call created the key file. */
  readonly created: boolean;
}

export interface LoadMasterKeyOptions {
  /** `$CORDON_HOME`. */
  home: string;
  /** Where `CORDON_MASTER_KEY` is read from. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Create the key file when there is neither a variable nor a file. @default false */
  create?: boolean;
}

/** The key file of a home. */
export function masterKeyPath(home: string): string {
  return join(home, 'keys', 'master.key');
}

/**
 * The pending key of a master key rotation: written before the store is
 * re-encrypted, renamed over `master.key` after. Readers fall back to it when
 * the store no longer opens with `master.key` (see store.ts and rotate.ts).
 */
export function pendingMasterKeyPath(home: string): string {
  return join(home, 'keys', 'master.key.new');
}

/**
 * The key in a key file (64 hex digits, mode 0600), or undefined when the
 * file does not exist.
 * @throws KeyError `key-permissions`, `key-corrupt`
 */
export function readMasterKeyFile(path: string): MasterKey | undefined {
  const bytes = readKeyFile(path);
  return bytes ? { bytes, source: 'file', path, created: false } : undefined;
}

/**
 * Decode a master key written as 64 hex digits or base64/base64url of 32 bytes.
 * @param where names the input in messages, e.g. "CORDON_MASTER_KEY".
 * @throws KeyError `key-invalid`; the message never contains the input.
 */
export function parseMasterKey(text: string, where: string): Buffer {
  const s = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(s)) return Buffer.from(s, 'hex');
  const unpadded = s.endsWith('=') ? s.slice(0, -1) : s;
  const alphabet = /^[A-Za-z0-9+/]{43}$/.test(unpadded) ? 'base64' : /^[A-Za-z0-9_-]{43}$/.test(unpadded) ? 'base64url' : undefined;
  if (alphabet) {
    const bytes = Buffer.from(unpadded, alphabet);
    // 43 characters carry 258 bits: the last 2 must be zero, or the text is not an encoding of these bytes
    if (bytes.length === MASTER_KEY_BYTES && bytes.toString(alphabet).replace(/=+$/, '') === unpadded) return bytes;
  }
  throw new KeyError('key-invalid', `${where} is not a 32-byte key (${s.length} characters; expected 64 hex digits, or 43-44 characters of base64)`, {
    fix: `${GENERATE_FIX}; the value is never printed`,
    details: { where },
  });
}

/**
 * The master key, or undefined when neither `CORDON_MASTER_KEY` nor the key
 * file exists and `create` is false.
 * @throws KeyError `key-invalid`, `key-permissions`, `key-corrupt`, `key-unwritable`
 */
export function loadMasterKey(opts: LoadMasterKeyOptions): MasterKey | undefined {
  const env = opts.env ?? process.env;
  const fromEnv = env[MASTER_KEY_ENV];
  if (fromEnv !== undefined) {
    if (fromEnv.trim() === '') {
      throw new KeyError('key-invalid', `${MASTER_KEY_ENV} is set but empty`, { fix: `unset it to use ${masterKeyPath(opts.home)}, or set it to a key: ${GENERATE_FIX}` });
    }
    return { bytes: parseMasterKey(fromEnv, MASTER_KEY_ENV), source: 'env', created: false };
  }
  const path = masterKeyPath(opts.home);
  const existing = readKeyFile(path);
  if (existing) return { bytes: existing, source: 'file', path, created: false };
  if (!opts.create) return undefined;
  return createKeyFile(path);
}

/** The key in `path`, or undefined when the file does not exist. */
function readKeyFile(path: string): Buffer | undefined {
  const text = readPrivateFile(path, 'the secret store master key', (why) => corrupt(path, why));
  if (text === undefined) return undefined;
  if (!/^[0-9a-fA-F]{64}\s*$/.test(text)) throw corrupt(path, 'it does not hold 64 hex digits');
  return Buffer.from(text.trim(), 'hex');
}

/** Write a new random key with O_EXCL; a concurrent creator's key wins. */
function createKeyFile(path: string): MasterKey {
  const dir = join(path, '..');
  try {
    ensurePrivateDir(dir);
  } catch (err) {
    throw new KeyError('key-unwritable', `cannot create the key directory ${dir}: ${(err as Error).message}`, {
      fix: `create ${dir} (mode 700) and make it writable by this user, or set ${MASTER_KEY_ENV}`,
      cause: err,
    });
  }
  const bytes = randomBytes(MASTER_KEY_BYTES);
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const winner = readKeyFile(path);
      if (winner) return { bytes: winner, source: 'file', path, created: false };
    }
    throw new KeyError('key-unwritable', `cannot create ${path}: ${(err as Error).message}`, {
      fix: `make ${dir} writable by this user, or set ${MASTER_KEY_ENV}`,
      cause: err,
    });
  }
  try {
    writeSync(fd, bytes.toString('hex') + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return { bytes, source: 'file', path, created: true };
}

function corrupt(path: string, why: string): KeyError {
  return new KeyError('key-corrupt', `cannot use the secret store master key ${path}: ${why}`, {
    fix: `restore ${path} from backup (64 hex digits, mode 600); without it the secret store cannot be read`,
    details: { path },
  });
}
