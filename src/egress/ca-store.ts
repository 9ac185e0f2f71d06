/**
 * Keeps the egress CA in `$CORDON_HOME/keys` so that it is the same across
 * restarts (guests keep trusting it): `egress-ca.key` (PKCS#8 PEM, mode 0600,
 * refused when group or others may read it) and `egress-ca.crt` (PEM). The
 * first start creates both; the key is placed with an exclusive link, so two
 * processes starting at once agree on one CA. A pair that does not match, a
 * lone file, or a CA that is about to expire is refused with the fix.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { KeyError } from '../errors/index.js';
import { ensurePrivateDir, readPrivateFile, writeFileAtomic } from '../util/index.js';
import { egressCaFrom, generateCaMaterial, type EgressCa, type EgressCaOptions } from './ca.js';

export const EGRESS_CA_KEY_FILE = 'egress-ca.key';
export const EGRESS_CA_CERT_FILE = 'egress-ca.crt';

/**
 * Load the deployment's egress CA from `<home>/keys`, creating it on first use.
 * @param home the state directory (`cordonHome()`)
 * @throws KeyError when the files are unreadable, too open, mismatched or expiring
 * @example const ca = loadOrCreateEgressCa(cordonHome()); // same CA on every start
 */
export function loadOrCreateEgressCa(home: string, opts: Omit<EgressCaOptions, 'validDays' | 'commonName'> = {}): EgressCa {
  const dir = ensurePrivateDir(join(home, 'keys'));
  const keyPath = join(dir, EGRESS_CA_KEY_FILE);
  const certPath = join(dir, EGRESS_CA_CERT_FILE);
  let key = readKey(keyPath);
  if (!key) {
    if (exists(certPath)) {
      throw new KeyError('key-missing', `${certPath} exists but its key ${keyPath} does not`, {
        fix: `restore ${keyPath} from backup, or remove ${certPath} to make a new egress CA (guests must then trust the new one)`,
        details: { path: keyPath },
      });
    }
    key = create(keyPath, certPath);
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readFileSync(certPath));
  } catch (err) {
    throw new KeyError('key-corrupt', `cannot read the egress CA certificate ${certPath}: ${(err as Error).message}`, {
      fix: `restore ${certPath} from backup, or remove both ${keyPath} and ${certPath} to make a new egress CA`,
      details: { path: certPath },
      cause: err,
    });
  }
  try {
    return egressCaFrom({ key, cert }, opts);
  } catch (err) {
    throw new KeyError('key-corrupt', `the egress CA in ${dir} cannot be used: ${(err as Error).message}`, {
      fix: `remove both ${keyPath} and ${certPath} to make a new egress CA (guests get the new certificate when they start)`,
      details: { path: certPath },
      cause: err,
    });
  }
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The CA key in `path`, or undefined when the file does not exist. */
function readKey(path: string): KeyObject | undefined {
  const pem = readPrivateFile(path, 'the egress CA key', (why) => new KeyError('key-corrupt', `cannot use the egress CA key ${path}: ${why}`, {
    fix: `make ${path} a regular file readable by this user, or remove it and ${EGRESS_CA_CERT_FILE} beside it to make a new egress CA`, details: { path },
  }));
  if (pem === undefined) return undefined;
  try {
    const key = createPrivateKey({ key: pem, format: 'pem' });
    if (key.asymmetricKeyType !== 'ec') throw new Error(`it holds a ${key.asymmetricKeyType ?? 'unknown'} key, not ECDSA P-256`);
    return key;
  } catch (err) {
    throw new KeyError('key-corrupt', `the egress CA key ${path} cannot be read: ${(err as Error).message}`, {
      fix: `restore ${path} from backup, or remove it and ${EGRESS_CA_CERT_FILE} beside it to make a new egress CA`,
      details: { path },
      cause: err,
    });
  }
}

/** Make a new CA: certificate written first, then the key linked into place exclusively (the loser loads the winner's). */
function create(keyPath: string, certPath: string): KeyObject {
  const material = generateCaMaterial();
  const tmp = `${keyPath}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, material.key.export({ format: 'pem', type: 'pkcs8' }).toString());
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, keyPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new KeyError('key-unwritable', `cannot create ${keyPath}: ${(err as Error).message}`, {
        fix: 'make the keys directory writable by this user', details: { path: keyPath }, cause: err,
      });
    }
    const winner = readKey(keyPath);
    if (winner) return winner;
  } finally {
    unlinkSync(tmp);
  }
  writeFileAtomic(certPath, material.cert.toString(), 0o644);
  return material.key;
}
