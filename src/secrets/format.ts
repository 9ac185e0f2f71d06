/**
 * The secret store's file format: an authenticated header, then the
 * AES-256-GCM ciphertext of the store's JSON, then the 16-byte GCM tag.
 *
 * ```
 * offset  size  field
 *      0     8  magic "CORDSECS"
 *      8     1  format version (1)
 *      9     1  algorithm (1 = AES-256-GCM, key from HKDF-SHA256 of the master key)
 *     10     8  key id: HKDF-SHA256(master key, info "cordon secrets key id v1"), 8 bytes
 *     18    12  nonce, fresh and random for every write
 *     30     n  ciphertext
 *   30+n    16  GCM tag
 * ```
 * The whole header is the GCM additional data, so changing any byte of the
 * file fails authentication. The key id tells a wrong master key apart from a
 * damaged file without revealing anything about the key.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { KeyError } from '../errors/index.js';
import { SecretError } from './errors.js';

const MAGIC = Buffer.from('CORDSECS', 'ascii');
export const STORE_FORMAT_VERSION = 1;
const ALG_AES_256_GCM = 1;
const KEY_ID_BYTES = 8;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
export const HEADER_BYTES = MAGIC.length + 2 + KEY_ID_BYTES + NONCE_BYTES;

function derive(master: Buffer, info: string, bytes: number): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), info, bytes));
}

/** The public id of a master key (16 hex digits): which key a store needs, never the key. */
export function masterKeyId(master: Buffer): string {
  return derive(master, 'cordon secrets key id v1', KEY_ID_BYTES).toString('hex');
}

/** Encrypt `plaintext` into a store file with a fresh nonce. */
export function sealStore(master: Buffer, plaintext: Buffer): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header[MAGIC.length] = STORE_FORMAT_VERSION;
  header[MAGIC.length + 1] = ALG_AES_256_GCM;
  Buffer.from(masterKeyId(master), 'hex').copy(header, MAGIC.length + 2);
  const nonce = randomBytes(NONCE_BYTES);
  nonce.copy(header, MAGIC.length + 2 + KEY_ID_BYTES);
  const cipher = createCipheriv('aes-256-gcm', derive(master, 'cordon secrets store v1', 32), nonce);
  cipher.setAAD(header);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([header, body, cipher.getAuthTag()]);
}

export interface OpenStoreFileOptions {
  /** The file, for messages. */
  path: string;
  /** How to supply the right key, for the wrong-key fix. */
  keyFix: string;
}

/**
 * Decrypt a store file.
 * @throws SecretError `secret-store-corrupt` (not a store, truncated, altered), `secret-store-version`;
 *   KeyError `key-wrong` (encrypted with another master key)
 */
export function openStoreFile(master: Buffer, file: Buffer, opts: OpenStoreFileOptions): Buffer {
  const { path } = opts;
  if (file.length < MAGIC.length || !file.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw corrupt(path, 'it is not a cordon secret store (wrong magic bytes)');
  }
  if (file.length < HEADER_BYTES + TAG_BYTES) throw corrupt(path, `it is truncated (${file.length} bytes)`);
  const version = file[MAGIC.length]!;
  if (version !== STORE_FORMAT_VERSION) {
    throw new SecretError('secret-store-version', `${path} has format version ${version}; this cordon reads version ${STORE_FORMAT_VERSION}`, {
      fix: version > STORE_FORMAT_VERSION ? 'upgrade cordon to the version that wrote this store' : `restore ${path} from backup`,
      details: { path, version },
    });
  }
  if (file[MAGIC.length + 1] !== ALG_AES_256_GCM) throw corrupt(path, `it names an unknown algorithm (${file[MAGIC.length + 1]})`);
  const header = file.subarray(0, HEADER_BYTES);
  const fileKeyId = header.subarray(MAGIC.length + 2, MAGIC.length + 2 + KEY_ID_BYTES).toString('hex');
  const ourKeyId = masterKeyId(master);
  if (fileKeyId !== ourKeyId) {
    throw new KeyError('key-wrong', `${path} was encrypted with another master key (key id ${fileKeyId}; the key in use has id ${ourKeyId}), or its header was altered`, {
      fix: opts.keyFix,
      details: { path, storeKeyId: fileKeyId, keyId: ourKeyId },
    });
  }
  const nonce = header.subarray(MAGIC.length + 2 + KEY_ID_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', derive(master, 'cordon secrets store v1', 32), nonce);
  decipher.setAAD(header);
  decipher.setAuthTag(file.subarray(file.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(file.subarray(HEADER_BYTES, file.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw corrupt(path, 'it failed authentication: the file is damaged, truncated or was modified');
  }
}

function corrupt(path: string, why: string): SecretError {
  return new SecretError('secret-store-corrupt', `cannot read the secret store ${path}: ${why}`, {
    fix: `restore ${path} from backup; cordon never replaces a store it cannot read (move it aside to start an empty one)`,
    details: { path },
  });
}
