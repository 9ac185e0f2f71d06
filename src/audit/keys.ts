/**
 * The Ed25519 key that signs audit checkpoints.
 *
 * `keyDir/audit-ed25519.key` holds the private key (PKCS8 PEM, mode 0600, in a
 * 0700 directory) and `keyDir/audit-ed25519.pub` the public key (SPKI PEM).
 * A key file is never overwritten (only a deliberate rotation, rotate.ts,
 * replaces the key): a corrupt or too-open one is refused with a fix, a
 * missing public key is derived again, and the public key of a retired key is
 * kept as `audit-ed25519.<keyId>.pub` so old checkpoints still verify.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, readdirSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { KeyError } from '../errors/index.js';
import { ensurePrivateDir, readPrivateFile, writeFileAtomic } from '../util/index.js';

export const PRIVATE_KEY_FILE = 'audit-ed25519.key';
/** The event type that records a key rotation (`data.oldKeyId`, `data.newKeyId`); verification stops trusting the old key after it. */
export const KEY_ROTATED_EVENT = 'audit.key-rotated';
export const PUBLIC_KEY_FILE = 'audit-ed25519.pub';
const PUBLIC_KEY_PATTERN = /^audit-ed25519(\.[0-9a-f]{16})?\.pub$/;

export interface AuditSigningKey {
  /** First 16 hex digits of SHA-256 of the raw 32-byte public key. */
  keyId: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicKeyPem: string;
  /** Path of the private key file. */
  path: string;
}

export interface LoadKeyOptions {
  /** Create a key when none exists. @default true */
  create?: boolean;
}

/** keyId of an Ed25519 public key. */
export function keyIdOf(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: 'jwk' });
  const raw = Buffer.from(String(jwk.x), 'base64url');
  return createHash('sha256').update(raw).digest('hex').slice(0, 16);
}

/**
 * Load the signing key from `keyDir`, creating it on first start.
 * @throws KeyError `key-corrupt` (unreadable or not an Ed25519 PKCS8 PEM), `key-permissions`
 *   (group/world bits set), `key-missing` (absent and `create` is false), `key-mismatch`
 *   (the .pub file holds another key)
 */
export function loadOrCreateSigningKey(keyDir: string, opts: LoadKeyOptions = {}): AuditSigningKey {
  const path = join(keyDir, PRIVATE_KEY_FILE);
  try {
    ensurePrivateDir(keyDir);
  } catch (err) {
    throw new KeyError('key-unwritable', `cannot create the key directory ${keyDir}: ${(err as Error).message}`, {
      fix: `create ${keyDir} (mode 700) and make it writable by this user`,
      cause: err,
    });
  }
  let privateKey = readPrivateKey(path);
  if (privateKey === undefined) {
    if (opts.create === false) {
      throw new KeyError('key-missing', `the audit signing key ${path} does not exist`, {
        fix: `restore ${path} from backup`,
      });
    }
    privateKey = createKeyFile(path);
  }
  const publicKey = createPublicKey(privateKey);
  const keyId = keyIdOf(publicKey);
  const publicKeyPem = publicKey.export({ format: 'pem', type: 'spki' }).toString();
  ensurePublicKeyFile(keyDir, keyId, publicKeyPem);
  return { keyId, privateKey, publicKey, publicKeyPem, path };
}

/** The private key in `path`, or undefined when the file does not exist. */
function readPrivateKey(path: string): KeyObject | undefined {
  const pem = readPrivateFile(path, 'the audit key', (why) => corrupt(path, why));
  if (pem === undefined) return undefined;
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw corrupt(path, `not a PEM private key (${(err as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw corrupt(path, `it holds a ${key.asymmetricKeyType ?? 'unknown'} key, not Ed25519`);
  return key;
}

/** Write a new key with O_EXCL: an existing file is never replaced. */
function createKeyFile(path: string): KeyObject {
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      const winner = readPrivateKey(path); // another process created it first
      if (winner) return winner;
    }
    throw new KeyError('key-unwritable', `cannot create ${path}: ${(err as Error).message}`, {
      fix: 'make the key directory writable by this user',
      cause: err,
    });
  }
  try {
    writeSync(fd, pem);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return privateKey;
}

/** Write the .pub file if missing; keep a .pub of another key under its keyId. */
function ensurePublicKeyFile(keyDir: string, keyId: string, pem: string): void {
  const pubPath = join(keyDir, PUBLIC_KEY_FILE);
  let existing: string | undefined;
  try {
    existing = readFileSync(pubPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw corrupt(pubPath, (err as Error).message);
  }
  if (existing !== undefined) {
    let otherId: string;
    try {
      otherId = keyIdOf(createPublicKey(existing));
    } catch (err) {
      throw new KeyError('key-mismatch', `${pubPath} is not a valid public key (${(err as Error).message})`, {
        fix: `move ${pubPath} aside; cordon derives it again from ${PRIVATE_KEY_FILE}`,
        details: { path: pubPath },
      });
    }
    if (otherId === keyId) return;
    renameSync(pubPath, retiredPublicKeyPath(keyDir, otherId));
  }
  writeFileAtomic(pubPath, pem, 0o644);
}

/**
 * keyId of the current key of `keyDir`: its `audit-ed25519.pub`, or the
 * public half of its private key when the .pub is missing; undefined when
 * neither can be read.
 */
export function currentKeyId(keyDir: string): string | undefined {
  try {
    return keyIdOf(parsePublicKeyPem(readFileSync(join(keyDir, PUBLIC_KEY_FILE), 'utf8')));
  } catch {
    try {
      const priv = readPrivateKey(join(keyDir, PRIVATE_KEY_FILE));
      return priv ? keyIdOf(createPublicKey(priv)) : undefined;
    } catch {
      return undefined;
    }
  }
}

/** Where the public key of the retired key `keyId` is kept. */
export function retiredPublicKeyPath(keyDir: string, keyId: string): string {
  return join(keyDir, `audit-ed25519.${keyId}.pub`);
}

/**
 * True when `keyDir` keeps the public key of the retired key `keyId` (its
 * file exists and holds that very key). Never throws: anything unreadable is false.
 */
export function hasRetiredPublicKey(keyDir: string, keyId: string): boolean {
  if (!/^[0-9a-f]{16}$/.test(keyId)) return false;
  try {
    return keyIdOf(parsePublicKeyPem(readFileSync(retiredPublicKeyPath(keyDir, keyId), 'utf8'))) === keyId;
  } catch {
    return false;
  }
}

/**
 * Every audit public key in `keyDir` (current and retired), by keyId. When only
 * the private key is there, its public half is derived.
 * @throws KeyError `key-missing` when the directory holds no audit key at all
 */
export function loadPublicKeys(keyDir: string): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  let names: string[] = [];
  try {
    names = readdirSync(keyDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw corrupt(keyDir, (err as Error).message);
  }
  for (const n of names.filter((x) => PUBLIC_KEY_PATTERN.test(x))) {
    const p = join(keyDir, n);
    const key = parsePublicKeyPem(readFileSync(p, 'utf8'), p);
    keys.set(keyIdOf(key), key);
  }
  if (keys.size === 0 && names.includes(PRIVATE_KEY_FILE)) {
    const priv = readPrivateKey(join(keyDir, PRIVATE_KEY_FILE));
    if (priv) {
      const pub = createPublicKey(priv);
      keys.set(keyIdOf(pub), pub);
    }
  }
  if (keys.size === 0) {
    throw new KeyError('key-missing', `no audit public key (${PUBLIC_KEY_FILE}) in ${keyDir}`, {
      fix: 'pass the directory that holds the audit keys, or the public key itself',
    });
  }
  return keys;
}

/** Parse an Ed25519 public key in SPKI PEM. */
export function parsePublicKeyPem(pem: string, source = 'the public key'): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw corrupt(source, `not a PEM public key (${(err as Error).message})`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw corrupt(source, 'not an Ed25519 key');
  return key;
}

function corrupt(path: string, why: string): KeyError {
  return new KeyError('key-corrupt', `cannot use the audit key ${path}: ${why}`, {
    fix: `restore ${path} from backup; cordon never overwrites it (move it aside only if the key is lost for good: checkpoints it signed then verify only with its .pub file)`,
    details: { path },
  });
}
