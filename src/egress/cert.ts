/**
 * Builds X.509 v3 certificates (RFC 5280) for the egress CA: a TBSCertificate
 * written with the DER encoder in `der.ts`, signed with ECDSA P-256 / SHA-256
 * by node:crypto (`sign()` gives the DER `Ecdsa-Sig-Value` of RFC 5480 §2.2
 * that goes into the signature BIT STRING). Two shapes: a CA certificate
 * (basicConstraints CA:true pathlen 0, keyCertSign + cRLSign) and a TLS server
 * leaf (CA:false, digitalSignature, serverAuth, subjectAltName).
 */
import { createHash, randomBytes, sign, type KeyObject } from 'node:crypto';
import { InvalidInputError } from '../errors/index.js';
import { normalizeDestination } from '../policy/index.js';
import * as der from './der.js';

/** Object identifiers (RFC 5280 §4.2.1, RFC 5758 §3.2, RFC 5480 §2.1.1). */
const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

/** keyUsage bit numbers (RFC 5280 §4.2.1.3). */
const KEY_USAGE = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

/** RFC 5280 upper bound for a common name (ub-common-name). */
const MAX_CN_CHARS = 64;

export interface CertificateSpec {
  /** DER of the subject Name (see {@link encodeName}). */
  subject: Buffer;
  /** DER of the issuer Name: the CA's subject, byte for byte. */
  issuer: Buffer;
  /** The key the certificate is for. */
  publicKey: KeyObject;
  /** The issuer's private key (the subject's own key for a self-signed CA). */
  signingKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  /** Make a CA certificate (pathlen 0: it signs leaves only). */
  ca?: boolean;
  /** Server names and IP literals for a leaf's subjectAltName. */
  hosts?: readonly string[];
  /** The issuer's subjectKeyIdentifier, for a leaf's authorityKeyIdentifier. */
  authorityKeyId?: Buffer;
}

/** A Name with a common name and an optional organisation, in the usual O-then-CN order. */
export function encodeName(commonName: string, organization?: string): Buffer {
  const rdn = (type: string, value: string): Buffer => der.set(der.sequence(der.oid(type), der.utf8String(value)));
  return der.sequence(...(organization ? [rdn(OID.organization, organization)] : []), rdn(OID.commonName, commonName.slice(0, MAX_CN_CHARS)));
}

/**
 * The key identifier of RFC 5280 §4.2.1.2 method (1): SHA-1 of the
 * subjectPublicKey bits (here the uncompressed EC point).
 */
export function keyIdentifier(publicKey: KeyObject): Buffer {
  const jwk = publicKey.export({ format: 'jwk' });
  if (jwk.kty !== 'EC' || !jwk.x || !jwk.y) throw new InvalidInputError('the egress CA works with EC keys only');
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
  return createHash('sha1').update(point).digest();
}

/** 16 random bytes, positive and without a leading zero byte (RFC 5280 §4.1.2.2: at most 20 octets). */
export function randomSerial(): Buffer {
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  return serial;
}

/**
 * One GeneralName per host: `dNSName` for names (a leading `*.` allowed),
 * `iPAddress` (4 or 16 bytes) for IP literals.
 * @throws InvalidInputError for anything that is neither
 */
export function subjectAltNames(hosts: readonly string[]): Buffer {
  if (hosts.length === 0) throw new InvalidInputError('a leaf certificate needs at least one host');
  return der.sequence(...hosts.map((raw) => {
    const wildcard = typeof raw === 'string' && raw.startsWith('*.');
    const dest = normalizeDestination(wildcard ? raw.slice(2) : raw);
    if (dest.kind === 'bad') throw new InvalidInputError(`cannot issue a certificate for ${JSON.stringify(String(raw).slice(0, 100))}: ${dest.problem}`);
    if (dest.kind === 'ip') {
      if (wildcard) throw new InvalidInputError(`a wildcard cannot cover an IP address (${raw})`);
      return der.implicitPrimitive(7, dest.ip.bytes);
    }
    return der.implicitPrimitive(2, Buffer.from(wildcard ? `*.${dest.host}` : dest.host, 'ascii'));
  }));
}

/** Build and sign one certificate; returns its DER. */
export function buildCertificate(spec: CertificateSpec): Buffer {
  const algorithm = der.sequence(der.oid(OID.ecdsaWithSha256));
  const spki = spec.publicKey.export({ format: 'der', type: 'spki' });
  const subjectKeyId = keyIdentifier(spec.publicKey);
  const ext = (id: string, critical: boolean, value: Buffer): Buffer =>
    der.sequence(der.oid(id), ...(critical ? [der.boolean(true)] : []), der.octetString(value));
  const extensions: Buffer[] = [];
  if (spec.ca) {
    extensions.push(
      ext(OID.basicConstraints, true, der.sequence(der.boolean(true), der.integer(0))),
      ext(OID.keyUsage, true, der.namedBits([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign])),
      ext(OID.subjectKeyIdentifier, false, der.octetString(subjectKeyId)),
    );
  } else {
    extensions.push(
      // CA:false is the DEFAULT, which DER leaves out: an empty SEQUENCE.
      ext(OID.basicConstraints, true, der.sequence()),
      ext(OID.keyUsage, true, der.namedBits([KEY_USAGE.digitalSignature])),
      ext(OID.extKeyUsage, false, der.sequence(der.oid(OID.serverAuth))),
      ext(OID.subjectAltName, false, subjectAltNames(spec.hosts ?? [])),
      ext(OID.subjectKeyIdentifier, false, der.octetString(subjectKeyId)),
    );
    if (spec.authorityKeyId) {
      extensions.push(ext(OID.authorityKeyIdentifier, false, der.sequence(der.implicitPrimitive(0, spec.authorityKeyId))));
    }
  }
  const tbs = der.sequence(
    der.explicit(0, der.integer(2)), // v3
    der.integer(randomSerial()),
    algorithm,
    spec.issuer,
    der.sequence(der.time(spec.notBefore), der.time(spec.notAfter)),
    spec.subject,
    spki,
    der.explicit(3, der.sequence(...extensions)),
  );
  const signature = sign('sha256', tbs, spec.signingKey);
  return der.sequence(tbs, algorithm, der.bitString(signature));
}
