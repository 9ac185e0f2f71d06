/**
 * The built-in encrypted secret store: `$CORDON_HOME/secrets.enc`, sealed with
 * the master key (see masterkey.ts and format.ts).
 *
 * Every call reads the file afresh, so a daemon that resolves secrets at
 * sandbox creation sees what `cordon secrets set` wrote a moment earlier;
 * running sandboxes keep the values they started with. Writers take a lock
 * file, read, change and write the store atomically (temp file, fsync,
 * rename). A missing store file is an empty store; a store file that cannot
 * be read (wrong key, damaged, unknown version) is an error, never an empty
 * store, and is never overwritten.
 *
 * A master key rotation (rotate.ts) replaces the store file and then the key
 * file: a store that does not open with `master.key` is tried with the
 * rotation's pending key (`master.key.new`, left by an interrupted rotation),
 * and a read that saw the old store and the new key is tried once more.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { SECRET_NAME } from '../config/index.js';
import { KeyError } from '../errors/index.js';
import { ensurePrivateDir, writeFileAtomic } from '../util/index.js';
import { SecretError } from './errors.js';
import { openStoreFile, sealStore } from './format.js';
import { withFileLock } from './lock.js';
import { loadMasterKey, masterKeyPath, MASTER_KEY_ENV, pendingMasterKeyPath, readMasterKeyFile, type MasterKey } from './masterkey.js';
import { checkSecretBytes, SecretValue } from './value.js';

export const STORE_FILE = 'secrets.enc';
/** Largest store file read. */
export const MAX_STORE_BYTES = 16 * 1024 * 1024;

const EntrySchema = z.object({ value: z.string().base64(), createdAt: z.string().datetime(), updatedAt: z.string().datetime() }).strict();
const ContentSchema = z.object({ version: z.literal(1), secrets: z.record(z.string().regex(SECRET_NAME), EntrySchema) }).strict();
/** The decrypted store. */
export type StoreContent = z.infer<typeof ContentSchema>;
type Content = StoreContent;

/** What `ls` shows: never the value. */
export interface SecretMeta {
  name: string;
  createdAt: string;
  updatedAt: string;
}

export interface SecretStoreOptions {
  /** `$CORDON_HOME`. */
  home: string;
  /** Where `CORDON_MASTER_KEY` is read from. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Clock for timestamps. @default () => new Date() */
  now?: () => Date;
  /** How long a writer waits for another one. @default 5000 */
  lockWaitMs?: number;
}

export interface SetResult {
  /** False when an existing secret was replaced. */
  created: boolean;
  /** Set when this write created the master key file (tell the user to back it up). */
  createdKeyPath?: string;
}

export interface SecretStore {
  readonly path: string;
  /** Names and times, sorted by name. */
  list(): SecretMeta[];
  /** The value, or undefined when the store has no such secret. */
  get(name: string): SecretValue | undefined;
  /** Add or replace a secret. @throws SecretError `secret-invalid` for a bad name or value */
  set(name: string, value: Uint8Array): Promise<SetResult>;
  /** Remove a secret; false when there was none. */
  remove(name: string): Promise<boolean>;
}

/** The store file of a home. */
export function secretStorePath(home: string): string {
  return join(home, STORE_FILE);
}

/** The lock file every writer of the store (and a key rotation) holds. */
export function secretStoreLockPath(home: string): string {
  return `${secretStorePath(home)}.lock`;
}

/** How to supply the key a store was written with, for a wrong-key error. */
export function masterKeyFix(home: string, key: MasterKey): string {
  return key.source === 'env'
    ? `${MASTER_KEY_ENV} overrides ${masterKeyPath(home)}: set it to the key this store was written with, or unset it`
    : `restore the ${masterKeyPath(home)} this store was written with, or set ${MASTER_KEY_ENV} to that key`;
}

/** The error for a store file without any master key. */
export function keyMissingError(home: string): KeyError {
  const path = secretStorePath(home);
  return new KeyError('key-missing', `the secret store ${path} exists but its master key is missing (${MASTER_KEY_ENV} is not set and ${masterKeyPath(home)} does not exist)`, {
    fix: `restore ${masterKeyPath(home)} from backup, or set ${MASTER_KEY_ENV} to the key the store was written with`,
    details: { path },
  });
}

/**
 * Decrypt the store file `file` with `key`, or (when `key` is a key file's or
 * absent) with a pending rotation key that opens it. Returns the key that did.
 * @throws KeyError `key-missing`, `key-wrong` (the error of `key`, not of the pending key); SecretError as `openStoreFile`
 */
export function openStoreWithKey(home: string, file: Buffer, key: MasterKey | undefined): { content: StoreContent; key: MasterKey } {
  const path = secretStorePath(home);
  /** The pending key and the content, when there is one and it opens the store. */
  const withPending = (): { content: StoreContent; key: MasterKey } | undefined => {
    try {
      const candidate = readMasterKeyFile(pendingMasterKeyPath(home));
      return candidate ? { content: decodeStoreContent(openStoreFile(candidate.bytes, file, { path, keyFix: '' }), path), key: candidate } : undefined;
    } catch {
      return undefined; // not the pending key either: the caller reports the problem of the key in use
    }
  };
  if (key === undefined) {
    const next = withPending();
    if (next === undefined) throw keyMissingError(home);
    return next;
  }
  let plain: Buffer;
  try {
    plain = openStoreFile(key.bytes, file, { path, keyFix: masterKeyFix(home, key) });
  } catch (err) {
    if (key.source !== 'file' || !(err instanceof KeyError) || err.code !== 'key-wrong') throw err;
    const next = withPending();
    if (next) return next;
    throw err;
  }
  return { content: decodeStoreContent(plain, path), key };
}

/**
 * Validate decrypted store content.
 * @throws SecretError `secret-store-corrupt`
 */
export function decodeStoreContent(plain: Buffer, path: string): StoreContent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(plain.toString('utf8'));
  } catch {
    parsed = undefined;
  }
  const content = ContentSchema.safeParse(parsed);
  if (!content.success) {
    throw new SecretError('secret-store-corrupt', `cannot read the secret store ${path}: its decrypted content is not a valid store`, {
      fix: `restore ${path} from backup`,
      details: { path },
    });
  }
  return content.data;
}

/** Open (lazily: nothing is read until a method is called) the store in `opts.home`. */
export function openSecretStore(opts: SecretStoreOptions): SecretStore {
  const path = secretStorePath(opts.home);
  const env = opts.env ?? process.env;
  const now = opts.now ?? (() => new Date());

  /** The content and the key, or an empty content (and maybe no key) when there is no file. */
  function readOnce(): { content: Content; key: MasterKey | undefined } {
    const file = readStoreFile(path);
    const key = loadMasterKey({ home: opts.home, env });
    if (file === undefined) return { content: { version: 1, secrets: {} }, key };
    return openStoreWithKey(opts.home, file, key);
  }

  function read(): { content: Content; key: MasterKey | undefined } {
    try {
      return readOnce();
    } catch (err) {
      if (!(err instanceof KeyError) || err.code !== 'key-wrong') throw err;
      // a rotation may have replaced the store and then its key between this read's two file reads
      return readOnce();
    }
  }

  async function change(edit: (content: Content) => boolean): Promise<{ changed: boolean; createdKeyPath?: string }> {
    ensurePrivateDir(opts.home);
    return withFileLock(secretStoreLockPath(opts.home), () => {
      const { content, key: existing } = read();
      if (!edit(content)) return { changed: false };
      const key = existing ?? loadMasterKey({ home: opts.home, env, create: true })!;
      const sealed = sealStore(key.bytes, Buffer.from(JSON.stringify(content), 'utf8'));
      try {
        writeFileAtomic(path, sealed, 0o600);
      } catch (err) {
        throw new SecretError('secret-store-unwritable', `cannot write the secret store ${path}: ${(err as Error).message}`, {
          fix: `make ${opts.home} writable by this user`,
          cause: err,
        });
      }
      return { changed: true, ...(key.created && key.path ? { createdKeyPath: key.path } : {}) };
    }, { waitMs: opts.lockWaitMs ?? 5000 });
  }

  return {
    path,
    list() {
      const { content } = read();
      return Object.entries(content.secrets)
        .map(([name, e]) => ({ name, createdAt: e.createdAt, updatedAt: e.updatedAt }))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    },
    get(name) {
      checkName(name);
      const { secrets } = read().content;
      const entry = Object.hasOwn(secrets, name) ? secrets[name] : undefined;
      return entry ? new SecretValue(name, Buffer.from(entry.value, 'base64')) : undefined;
    },
    async set(name, value) {
      checkName(name);
      const bad = checkSecretBytes(value);
      if (bad) throw new SecretError('secret-invalid', `cannot store ${name}: ${bad.problem}`, { fix: bad.fix, details: { secret: name } });
      let created = false;
      const r = await change((content) => {
        const at = now().toISOString();
        const old = Object.hasOwn(content.secrets, name) ? content.secrets[name] : undefined;
        created = old === undefined;
        content.secrets[name] = { value: Buffer.from(value).toString('base64'), createdAt: old?.createdAt ?? at, updatedAt: at };
        return true;
      });
      return { created, ...(r.createdKeyPath ? { createdKeyPath: r.createdKeyPath } : {}) };
    },
    async remove(name) {
      checkName(name);
      const r = await change((content) => {
        if (!Object.hasOwn(content.secrets, name)) return false;
        delete content.secrets[name];
        return true;
      });
      return r.changed;
    },
  };
}

function checkName(name: string): void {
  if (!SECRET_NAME.test(name)) {
    // not echoed: a value pasted where the name belongs must not be printed
    throw new SecretError('secret-invalid', `the secret name given (${name.length} characters) is not valid`, {
      fix: 'use 1-64 letters, digits, "_" and "-", starting with a letter or "_", e.g. "github_token"',
    });
  }
}

/**
 * The store file's bytes, or undefined when it does not exist.
 * @throws SecretError `secret-store-corrupt` when it is not a readable regular file
 */
export function readStoreFile(path: string): Buffer | undefined {
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new Error('it is not a regular file');
    if (st.size > MAX_STORE_BYTES) throw new Error(`it is larger than ${MAX_STORE_BYTES} bytes`);
    return readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SecretError('secret-store-corrupt', `cannot read the secret store ${path}: ${(err as Error).message}`, {
      fix: `check ${path}: it must be a file written by cordon, readable by this user`,
      details: { path },
    });
  }
}
