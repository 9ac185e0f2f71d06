/**
 * Small shared helpers with no policy in them: where cordon keeps its state,
 * writing private files atomically, canonical JSON.
 */
import { mkdirSync, writeFileSync, renameSync, chmodSync, openSync, fsyncSync, closeSync, readFileSync, statSync } from 'node:fs';
import { KeyError } from '../errors/index.js';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * The state directory: `$CORDON_HOME`, or `~/.cordon`.
 * @default `~/.cordon`
 */
export function cordonHome(env: NodeJS.ProcessEnv = process.env): string {
  const h = env.CORDON_HOME;
  return h && h.length > 0 ? resolve(h) : join(homedir(), '.cordon');
}

/** Create a directory (and parents) readable only by the owner. */
export function ensurePrivateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/**
 * Write a file atomically (temp file, fsync, rename) with the given mode.
 * @param mode file mode @default 0o600
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  ensurePrivateDir(dirname(path));
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  writeFileSync(tmp, data, { mode, flag: 'wx' });
  chmodSync(tmp, mode);
  fsyncPath(tmp);
  renameSync(tmp, path);
}

/** fsync a file or a directory (a directory: so that a rename or link in it is durable before the next step). */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Canonical JSON: object keys sorted by code unit, no whitespace, `undefined`
 * members dropped. Numbers must be finite. Two equal values always give the
 * same string, which is what the audit hash chain needs.
 *
 * Values whose objects already list their keys in that order (as the doors
 * build their audit data) are written by the native `JSON.stringify`, which
 * then gives the same text; anything else takes the general path.
 */
export function canonicalJson(value: unknown): string {
  return nativeOrderIsCanonical(value, 0) ? JSON.stringify(value) : generalCanonicalJson(value);
}

/** Deeper values than this take the general path (which has no such limit). */
const NATIVE_MAX_DEPTH = 32;

/**
 * True when `JSON.stringify(value)` is exactly its canonical JSON: only
 * strings, finite numbers, booleans, null, arrays and plain objects whose
 * `Object.keys` order is strictly ascending by code unit (integer-like keys,
 * which JavaScript lists first, then fail the check unless already in
 * order); `undefined` only as an object member (both drop it) or array
 * element (both write null). Nothing else: no toJSON, functions, symbols,
 * bigints, non-finite numbers, Dates, Maps, class instances or getters.
 */
function nativeOrderIsCanonical(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string': case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(value);
    case 'object': {
      if (value === null) return true;
      if (depth >= NATIVE_MAX_DEPTH) return false;
      if (Array.isArray(value)) {
        if (Object.getPrototypeOf(value) !== Array.prototype) return false;
        for (let i = 0; i < value.length; i++) {
          const v: unknown = value[i];
          if (v !== undefined && !nativeOrderIsCanonical(v, depth + 1)) return false;
        }
        return true;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) return false;
      const obj = value as Record<string, unknown>;
      let previous: string | undefined;
      for (const k in obj) {
        // Inherited keys fail; so do getters, which the native writer would call a second time (and might get another value).
        const d = Object.getOwnPropertyDescriptor(obj, k);
        if (d === undefined || !('value' in d)) return false;
        if (previous !== undefined && !(previous < k)) return false;
        previous = k;
        const v: unknown = d.value;
        if (v !== undefined && !nativeOrderIsCanonical(v, depth + 1)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

function generalCanonicalJson(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: non-finite number ${value}`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new TypeError('canonicalJson: bigint is not representable; convert it to a string');
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ',';
          const v = value[i];
          out += v === undefined ? 'null' : generalCanonicalJson(v);
        }
        return out + ']';
      }
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).sort();
      let out = '{';
      let first = true;
      for (const k of keys) {
        const v = obj[k];
        if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue;
        if (!first) out += ',';
        first = false;
        out += JSON.stringify(k) + ':' + generalCanonicalJson(v);
      }
      return out + '}';
    }
    default:
      throw new TypeError(`canonicalJson: cannot encode ${typeof value}`);
  }
}

/** Sleep for `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Read a file that holds a private key (audit signing key, master key, egress
 * CA key). Returns undefined when it does not exist; refuses one that is not
 * a regular file or cannot be read (`corrupt`), and one that group or others
 * may read (`key-permissions`, fix `chmod 600`).
 * @param what e.g. `the audit key`, used in the permissions message
 * @param corrupt builds the error for a file that is there but unusable
 */
export function readPrivateFile(path: string, what: string, corrupt: (why: string) => Error): string | undefined {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw corrupt((err as Error).message);
  }
  if (!st.isFile()) throw corrupt('it is not a regular file');
  const mode = Number(st.mode) & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new KeyError('key-permissions', `${what} ${path} is readable by other users (mode ${mode.toString(8).padStart(4, '0')}); refusing to use it`, {
      fix: `chmod 600 ${path}`,
      details: { path },
    });
  }
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw corrupt((err as Error).message);
  }
}
export { compileGlob, type GlobMatcher } from './glob.js';
