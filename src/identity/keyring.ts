/**
 * The identity signing keys: Ed25519 key pairs named by key id (`kid`, the
 * RFC 7638 JWK thumbprint of the public key), one file per key in
 * `$CORDON_HOME/keys/identity/<kid>.json` (mode 0600, directory 0700).
 *
 * - One key is **active** and signs; its file holds the private key (PKCS8 PEM).
 * - `rotate()` makes a new active key, and the active key is rotated by itself
 *   once it is `rotateEveryMs` old (checked each time a key is asked for).
 * - A rotated key is **retired**: its file is rewritten without the private
 *   key, and its public key is kept for verification until `retainMs` after
 *   the rotation (the longest token lifetime plus the clock tolerance), when
 *   every token it signed has expired. Then the file is deleted and its
 *   tokens give `unknown-kid`.
 * - A key file readable or writable by group or others, a key directory
 *   writable by them, or a file that is not a valid key is refused with a
 *   `KeyError` and a fix; cordon never overwrites or deletes such a file.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { InvalidInputError, KeyError } from '../errors/index.js';
import { ensurePrivateDir, writeFileAtomic } from '../util/index.js';

/** A key id: base64url SHA-256 (RFC 7638 thumbprint), 43 characters. */
export const KID = /^[A-Za-z0-9_-]{43}$/;
const KEY_FILE = /^([A-Za-z0-9_-]{43})\.json$/;
/** Default age at which the active key is replaced: 24 h. */
export const DEFAULT_ROTATE_EVERY_MS = 86_400_000;

/** One public key in the JWK set. */
export interface PublicJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
  kid: string;
  alg: 'EdDSA';
  use: 'sig';
}
export interface JwkSet {
  keys: PublicJwk[];
}

export interface KeyRingOptions {
  /** The key directory, e.g. `$CORDON_HOME/keys/identity`. Created (0700) when missing. */
  dir: string;
  /** How long a retired key's public half is kept: the longest token lifetime plus the clock tolerance. */
  retainMs: number;
  /** Age at which the active key is rotated. @default 86_400_000 (24 h) */
  rotateEveryMs?: number;
  /** Clock, for tests. @default Date.now */
  now?: () => number;
}

/** What the ring holds about one key (without the private key). */
export interface KeyInfo {
  kid: string;
  active: boolean;
  createdAtMs: number;
  retiredAtMs?: number;
  /** A retired key verifies tokens until then. */
  verifyUntilMs?: number;
}

export interface KeyRing {
  readonly dir: string;
  /** The key to sign with now; an active key older than `rotateEveryMs` is rotated first. */
  signingKey(): { kid: string; privateKey: KeyObject };
  /** The public key named `kid` while tokens it signed can still be valid, else undefined. */
  verificationKey(kid: string): KeyObject | undefined;
  /** Make a new active key and retire the current one. */
  rotate(): { kid: string };
  /** The public keys that verify tokens now, active first. */
  jwks(): JwkSet;
  /** The keys held now, active first. */
  list(): KeyInfo[];
}

const fileSchema = z.discriminatedUnion('state', [
  z.object({
    version: z.literal(1), state: z.literal('active'), kid: z.string().regex(KID), alg: z.literal('EdDSA'),
    createdAtMs: z.number().int().nonnegative(), privateKeyPem: z.string().min(1).max(4096),
  }).strict(),
  z.object({
    version: z.literal(1), state: z.literal('retired'), kid: z.string().regex(KID), alg: z.literal('EdDSA'),
    createdAtMs: z.number().int().nonnegative(), retiredAtMs: z.number().int().nonnegative(),
    verifyUntilMs: z.number().int().nonnegative(), publicKeyPem: z.string().min(1).max(4096),
  }).strict(),
]);

interface HeldKey {
  kid: string;
  createdAtMs: number;
  publicKey: KeyObject;
  privateKey: KeyObject | undefined;
  retiredAtMs: number | undefined;
  verifyUntilMs: number | undefined;
}

/** RFC 7638 thumbprint of an Ed25519 public key (base64url SHA-256 of its canonical JWK). */
export function jwkThumbprint(publicKey: KeyObject): string {
  const { x } = publicKey.export({ format: 'jwk' });
  return createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${String(x)}"}`).digest('base64url');
}

/**
 * Open the key ring in `dir`: load every key file, drop retired keys whose
 * tokens have all expired, and create the first key on first start.
 * @throws KeyError `key-permissions`, `key-corrupt`, `key-unwritable`
 * @example const ring = openKeyRing({ dir: join(home, 'keys', 'identity'), retainMs: 605_000 });
 */
export function openKeyRing(o: KeyRingOptions): KeyRing {
  const now = o.now ?? (() => Date.now());
  const rotateEveryMs = o.rotateEveryMs ?? DEFAULT_ROTATE_EVERY_MS;
  if (!Number.isInteger(rotateEveryMs) || rotateEveryMs < 1000) {
    throw new InvalidInputError(`rotateEveryMs ${rotateEveryMs} is not a whole number of ms of at least 1000`, { fix: 'rotate at most once a second, e.g. every 86400000 ms (24 h)' });
  }
  if (!Number.isInteger(o.retainMs) || o.retainMs < 0) {
    throw new InvalidInputError(`retainMs ${o.retainMs} is not a non-negative whole number`, { fix: 'pass the longest token lifetime plus the clock tolerance' });
  }
  const dir = o.dir;
  openDir(dir);
  const keys: HeldKey[] = readdirSync(dir).flatMap((name) => {
    const m = KEY_FILE.exec(name);
    return m ? [readKeyFile(join(dir, name), m[1]!)] : [];
  });
  const retired: HeldKey[] = [];
  const actives = keys.filter((k) => k.privateKey).sort((a, b) => b.createdAtMs - a.createdAtMs);
  let active: HeldKey | undefined = actives[0];
  // Several active files mean a rotation was interrupted: the newest one wins.
  for (const k of actives.slice(1)) {
    const r = retiredAt(k, now());
    write(r);
    retired.push(r);
  }
  retired.push(...keys.filter((k) => !k.privateKey));
  prune();
  if (!active) active = createKey();

  function createKey(): HeldKey {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const key: HeldKey = {
      kid: jwkThumbprint(publicKey), createdAtMs: now(), publicKey, privateKey, retiredAtMs: undefined, verifyUntilMs: undefined,
    };
    write(key);
    return key;
  }

  /** `key` without its private half; its public key verifies for `retainMs` more. */
  function retiredAt(key: HeldKey, atMs: number): HeldKey {
    return { ...key, privateKey: undefined, retiredAtMs: atMs, verifyUntilMs: atMs + o.retainMs };
  }

  function write(key: HeldKey): void {
    const body = key.privateKey
      ? { version: 1, state: 'active', kid: key.kid, alg: 'EdDSA', createdAtMs: key.createdAtMs, privateKeyPem: key.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() }
      : { version: 1, state: 'retired', kid: key.kid, alg: 'EdDSA', createdAtMs: key.createdAtMs, retiredAtMs: key.retiredAtMs, verifyUntilMs: key.verifyUntilMs, publicKeyPem: key.publicKey.export({ format: 'pem', type: 'spki' }).toString() };
    const path = join(dir, `${key.kid}.json`);
    try {
      writeFileAtomic(path, JSON.stringify(body, null, 2) + '\n', 0o600);
    } catch (err) {
      throw new KeyError('key-unwritable', `cannot write the identity key ${path}: ${(err as Error).message}`, {
        fix: `make ${dir} writable by this user (mode 700)`, cause: err,
      });
    }
  }

  /** Forget retired keys whose tokens have all expired, and delete their files. */
  function prune(): void {
    const t = now();
    for (let i = retired.length - 1; i >= 0; i--) {
      const k = retired[i]!;
      if ((k.verifyUntilMs ?? 0) > t) continue;
      retired.splice(i, 1);
      try {
        unlinkSync(join(dir, `${k.kid}.json`));
      } catch {
        // Only a public key whose window has closed: it is refused from memory now and pruned again at the next start.
      }
    }
  }

  function rotate(): { kid: string } {
    const next = createKey();
    const old = retiredAt(active!, now());
    active = next;
    retired.unshift(old);
    prune();
    // After the switch in memory: if this write fails, the old file stays `active`
    // on disk and the next start retires it (the newest active key wins).
    write(old);
    return { kid: next.kid };
  }

  function signingKey(): { kid: string; privateKey: KeyObject } {
    if (now() - active!.createdAtMs >= rotateEveryMs) rotate();
    return { kid: active!.kid, privateKey: active!.privateKey! };
  }

  function verificationKey(kid: string): KeyObject | undefined {
    if (kid === active!.kid) return active!.publicKey;
    const k = retired.find((r) => r.kid === kid);
    return k && (k.verifyUntilMs ?? 0) > now() ? k.publicKey : undefined;
  }

  function held(): HeldKey[] {
    prune();
    return [active!, ...[...retired].sort((a, b) => (b.retiredAtMs ?? 0) - (a.retiredAtMs ?? 0))];
  }

  function jwks(): JwkSet {
    return {
      keys: held().map((k) => ({ kty: 'OKP', crv: 'Ed25519', x: String(k.publicKey.export({ format: 'jwk' }).x), kid: k.kid, alg: 'EdDSA', use: 'sig' })),
    };
  }

  function list(): KeyInfo[] {
    return held().map((k) => ({
      kid: k.kid, active: k === active, createdAtMs: k.createdAtMs,
      ...(k.retiredAtMs === undefined ? {} : { retiredAtMs: k.retiredAtMs, verifyUntilMs: k.verifyUntilMs }),
    }));
  }

  return { dir, signingKey, verificationKey, rotate, jwks, list };
}

/** Create the directory (0700) and refuse one that others can write to. */
function openDir(dir: string): void {
  try {
    ensurePrivateDir(dir);
  } catch (err) {
    throw new KeyError('key-unwritable', `cannot create the identity key directory ${dir}: ${(err as Error).message}`, {
      fix: `create ${dir} (mode 700) and make it writable by this user`, cause: err,
    });
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new KeyError('key-corrupt', `${dir} is not a directory`, { fix: `move ${dir} aside; cordon creates the directory` });
  if ((st.mode & 0o022) !== 0) {
    throw new KeyError('key-permissions', `${dir} is writable by other users (mode ${octal(st.mode)}); they could plant a signing key. Refusing to use it`, {
      fix: `chmod 700 ${dir}`, details: { path: dir },
    });
  }
}

/** Read and check one key file; never changes it. */
function readKeyFile(path: string, kidFromName: string): HeldKey {
  const st = lstatSync(path);
  if (!st.isFile()) throw corrupt(path, 'it is not a regular file');
  if ((st.mode & 0o077) !== 0) {
    throw new KeyError('key-permissions', `${path} is readable or writable by other users (mode ${octal(st.mode)}); refusing to use it`, {
      fix: `chmod 600 ${path}`, details: { path },
    });
  }
  let parsed: z.infer<typeof fileSchema>;
  try {
    const r = fileSchema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
    if (!r.success) throw new Error(`${r.error.issues[0]?.path.join('.') || '(root)'}: ${r.error.issues[0]?.message ?? 'invalid'}`);
    parsed = r.data;
  } catch (err) {
    throw corrupt(path, `not an identity key file (${(err as Error).message})`);
  }
  let privateKey: KeyObject | undefined;
  let publicKey: KeyObject;
  try {
    if (parsed.state === 'active') {
      privateKey = createPrivateKey({ key: parsed.privateKeyPem, format: 'pem' });
      publicKey = createPublicKey(privateKey);
    } else {
      publicKey = createPublicKey({ key: parsed.publicKeyPem, format: 'pem' });
    }
  } catch (err) {
    throw corrupt(path, `the key does not parse (${(err as Error).message})`);
  }
  if (publicKey.asymmetricKeyType !== 'ed25519') throw corrupt(path, `it holds a ${publicKey.asymmetricKeyType ?? 'unknown'} key, not Ed25519`);
  const kid = jwkThumbprint(publicKey);
  if (kid !== parsed.kid || kid !== kidFromName) throw corrupt(path, `the key's thumbprint is ${kid}, not the kid in its name and content`);
  return {
    kid, createdAtMs: parsed.createdAtMs, publicKey, privateKey,
    retiredAtMs: parsed.state === 'retired' ? parsed.retiredAtMs : undefined,
    verifyUntilMs: parsed.state === 'retired' ? parsed.verifyUntilMs : undefined,
  };
}

function octal(mode: number): string {
  return (mode & 0o777).toString(8).padStart(4, '0');
}

function corrupt(path: string, why: string): KeyError {
  return new KeyError('key-corrupt', `cannot use the identity key ${path}: ${why}`, {
    fix: `restore ${path} from backup, or move it aside: cordon then signs with a new key, and tokens signed by the old one stop verifying (they expire within minutes anyway)`,
    details: { path },
  });
}
