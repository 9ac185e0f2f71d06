/**
 * Operator tokens for the control-plane API.
 *
 * A token is created at first start, written to `$CORDON_HOME/operator-token`
 * (mode 0600) and shown once on the terminal. The server keeps only its SHA-256
 * and compares in constant time. Agent tokens (see `identity/`) are never
 * operator tokens: they carry a different prefix and are refused here.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { KeyError } from '../errors/index.js';
import { writeFileAtomic } from '../util/index.js';

/** Prefix of every operator token. */
export const OPERATOR_TOKEN_PREFIX = 'cop_';
const TOKEN_RE = /^cop_[A-Za-z0-9_-]{43}$/;

export function operatorTokenPath(home: string): string {
  return join(home, 'operator-token');
}

export interface OperatorToken {
  /** The token itself (only held by the CLI and shown once). */
  token: string;
  /** True when this call created the token (so the caller may show it once). */
  created: boolean;
  path: string;
}

/** Read the operator token, creating it (0600) on first start. */
export function loadOrCreateOperatorToken(home: string): OperatorToken {
  const path = operatorTokenPath(home);
  if (!existsSync(path)) {
    const token = OPERATOR_TOKEN_PREFIX + randomBytes(32).toString('base64url');
    writeFileAtomic(path, token + '\n', 0o600);
    return { token, created: true, path };
  }
  return { token: readOperatorToken(home), created: false, path };
}

/** Read an existing operator token; throws KeyError naming the file and the fix. */
export function readOperatorToken(home: string): string {
  const path = operatorTokenPath(home);
  let text: string;
  try {
    const st = statSync(path);
    if ((st.mode & 0o077) !== 0) {
      throw new KeyError('key-permissions', `${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)})`, {
        fix: `chmod 600 ${path}`,
      });
    }
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    if (err instanceof KeyError) throw err;
    throw new KeyError('key-missing', `cannot read the operator token at ${path}: ${(err as Error).message}`, {
      fix: 'start the control plane once with `cordon up` to create it, or set CORDON_HOME to the right directory',
      cause: err,
    });
  }
  if (!TOKEN_RE.test(text)) {
    throw new KeyError('key-corrupt', `${path} does not hold a valid operator token`, {
      fix: `move ${path} aside and run \`cordon up\` to create a new one (then give it to every operator)`,
    });
  }
  return text;
}

/** SHA-256 of a token, as a Buffer. */
export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * Returns a checker that compares a presented token with the operator token
 * in constant time. Anything malformed is false.
 */
export function operatorTokenChecker(token: string): (presented: string | undefined) => boolean {
  const expected = hashToken(token);
  return function isOperatorToken(presented) {
    if (typeof presented !== 'string' || presented.length > 256 || !presented.startsWith(OPERATOR_TOKEN_PREFIX)) return false;
    return timingSafeEqual(hashToken(presented), expected);
  };
}
