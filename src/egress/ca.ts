/**
 * The per-deployment egress CA: an ECDSA P-256 certificate authority that the
 * guests trust, so that the egress proxy can terminate TLS for intercepted
 * hosts (method/path rules, bound secrets) and for `*.cordon.internal`.
 *
 * Leaves are short-lived (7 days at most), issued on first use per host and
 * kept in a bounded LRU cache; a cached leaf is re-issued well before it
 * expires. All leaves of one CA share one key pair (the CA key never signs
 * TLS handshakes, only certificates). The CA itself is made in memory
 * ({@link createEgressCa}) or kept in `$CORDON_HOME/keys` so that it stays the
 * same across restarts ({@link loadOrCreateEgressCa}).
 *
 * No name constraints: the CA must sign for whatever host an agent's policy
 * allows (which changes without re-creating the CA), so no subtree could be
 * listed; its key stays on the cordon host and leaves live 7 days at most.
 *
 * @example
 * const ca = loadOrCreateEgressCa(cordonHome());
 * tls.createServer({ ...ca.leafFor('api.github.com') });
 */
import { X509Certificate, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { InvalidInputError } from '../errors/index.js';
import { normalizeDestination } from '../policy/index.js';
import { buildCertificate, encodeName, keyIdentifier } from './cert.js';
import { subjectOf, toPem } from './der.js';

export interface EgressCa {
  /** The CA certificate guests must trust (PEM). */
  readonly certPem: string;
  /**
   * A leaf for one host (DNS name or IP literal), cached (bounded LRU),
   * valid at most 7 days, re-issued before it expires.
   * @throws InvalidInputError when `host` is neither a valid name nor an IP literal
   */
  leafFor(host: string): { certPem: string; keyPem: string };
}

export interface EgressCaOptions {
  /** Common name of the CA certificate. @default `cordon egress CA <random id>` */
  commonName?: string;
  /** Validity of the CA certificate in days. @default 3650 */
  validDays?: number;
  /** Validity of each leaf in days (at most 7). @default 7 */
  leafValidDays?: number;
  /** Leaves kept in the cache. @default 1000 */
  maxCachedLeaves?: number;
}

/** Leaves are valid from this long before issue, for clients whose clocks lag. */
const BACKDATE_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;
const MAX_LEAF_DAYS = 7;

/** The key behind each CA this module made; kept out of the `EgressCa` object so it is never serialised or logged. */
const CA_KEYS = new WeakMap<EgressCa, EgressCaMaterial>();

/** What a stored CA consists of; `ca-store.ts` reads and writes it. */
export interface EgressCaMaterial {
  key: KeyObject;
  cert: X509Certificate;
}

/** A new CA key and self-signed certificate. */
export function generateCaMaterial(opts: Pick<EgressCaOptions, 'commonName' | 'validDays'> = {}): EgressCaMaterial {
  const validDays = opts.validDays ?? 3650;
  if (!Number.isInteger(validDays) || validDays < 1 || validDays > 36500) {
    throw new InvalidInputError(`invalid egress CA validity ${validDays} days`, { fix: 'give validDays as a whole number of days from 1 to 36500' });
  }
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const name = encodeName(opts.commonName ?? `cordon egress CA ${keyIdentifier(publicKey).subarray(0, 4).toString('hex')}`, 'cordon');
  const now = Date.now();
  const certDer = buildCertificate({
    subject: name, issuer: name, publicKey, signingKey: privateKey, ca: true,
    notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + validDays * DAY_MS),
  });
  return { key: privateKey, cert: new X509Certificate(certDer) };
}

/**
 * Create an egress CA in memory (tests, ephemeral deployments).
 * @throws InvalidInputError for out-of-range options
 */
export function createEgressCa(opts: EgressCaOptions = {}): EgressCa {
  return egressCaFrom(generateCaMaterial(opts), opts);
}

/**
 * An egress CA around an existing key and certificate.
 * @throws InvalidInputError when the certificate is not a CA, not for this key, or expires within a day
 */
export function egressCaFrom(material: EgressCaMaterial, opts: Omit<EgressCaOptions, 'commonName' | 'validDays'> = {}): EgressCa {
  const { key, cert } = material;
  const leafDays = opts.leafValidDays ?? MAX_LEAF_DAYS;
  const maxLeaves = opts.maxCachedLeaves ?? 1000;
  if (!(leafDays > 0 && leafDays <= MAX_LEAF_DAYS)) {
    throw new InvalidInputError(`invalid leaf validity ${leafDays} days`, { fix: `give leafValidDays between 0 and ${MAX_LEAF_DAYS} days` });
  }
  if (!Number.isInteger(maxLeaves) || maxLeaves < 1) {
    throw new InvalidInputError(`invalid leaf cache size ${maxLeaves}`, { fix: 'give maxCachedLeaves as a positive whole number' });
  }
  if (!cert.ca || !cert.checkPrivateKey(key) || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new InvalidInputError('the egress CA certificate is not a P-256 CA certificate for its key', {
      fix: 'use a CA made by cordon (remove the egress-ca files to make a new one)',
    });
  }
  const caNotAfterMs = Date.parse(cert.validTo);
  if (!(caNotAfterMs - Date.now() > DAY_MS)) {
    throw new InvalidInputError(`the egress CA certificate expires at ${cert.validTo}`, {
      fix: 'remove the egress-ca key and certificate to make a new CA, then give guests the new certificate',
    });
  }
  const issuer = subjectOf(cert.raw);
  const authorityKeyId = keyIdentifier(cert.publicKey);
  const leafKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const leafKeyPem = leafKeys.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const leafValidMs = leafDays * DAY_MS;
  // Re-issue once less than this remains: half the validity, at most a day.
  const renewBeforeMs = Math.min(DAY_MS, leafValidMs / 2);
  const cache = new Map<string, { certPem: string; notAfterMs: number }>();

  const ca: EgressCa = {
    certPem: cert.toString(),
    leafFor: function leafFor(host: string): { certPem: string; keyPem: string } {
      const dest = normalizeDestination(host);
      if (dest.kind === 'bad') throw new InvalidInputError(`cannot issue a certificate for ${JSON.stringify(String(host).slice(0, 100))}: ${dest.problem}`);
      const now = Date.now();
      const hit = cache.get(dest.host);
      if (hit && hit.notAfterMs - now > renewBeforeMs) {
        cache.delete(dest.host); // re-insert: most recently used last
        cache.set(dest.host, hit);
        return { certPem: hit.certPem, keyPem: leafKeyPem };
      }
      const notAfterMs = Math.min(now + leafValidMs, caNotAfterMs);
      const certDer = buildCertificate({
        subject: encodeName(dest.host), issuer, publicKey: leafKeys.publicKey, signingKey: key,
        notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(notAfterMs), hosts: [dest.host], authorityKeyId,
      });
      const entry = { certPem: toPem('CERTIFICATE', certDer), notAfterMs: Math.floor(notAfterMs / 1000) * 1000 };
      cache.delete(dest.host);
      cache.set(dest.host, entry);
      while (cache.size > maxLeaves) cache.delete(cache.keys().next().value as string);
      return { certPem: entry.certPem, keyPem: leafKeyPem };
    },
  };
  CA_KEYS.set(ca, material);
  return ca;
}

/**
 * Issue a certificate signed by `ca` for several hosts, with its own new key
 * (tests' upstream servers; never cached).
 * @param o.hosts names (a leading `*.` allowed) and IP literals
 * @param o.validDays @default 1
 */
export function issueCertificate(ca: EgressCa, o: { hosts: string[]; validDays?: number }): { certPem: string; keyPem: string } {
  const signer = CA_KEYS.get(ca);
  if (!signer) throw new InvalidInputError('issueCertificate needs a CA made by createEgressCa or loadOrCreateEgressCa');
  const validDays = o.validDays ?? 1;
  if (!(validDays > 0 && validDays <= 825)) throw new InvalidInputError(`invalid validity ${validDays} days`, { fix: 'give validDays between 0 and 825' });
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const certDer = buildCertificate({
    subject: encodeName(o.hosts[0] ?? 'cordon test'), issuer: subjectOf(signer.cert.raw),
    publicKey, signingKey: signer.key, hosts: o.hosts, authorityKeyId: keyIdentifier(signer.cert.publicKey),
    notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(Math.min(now + validDays * DAY_MS, Date.parse(signer.cert.validTo))),
  });
  return { certPem: toPem('CERTIFICATE', certDer), keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
}
