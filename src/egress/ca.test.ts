/**
 * Egress CA tests: certificates read back by node's X509Certificate and by
 * the openssl CLI, a real TLS handshake that trusts only the CA, the leaf
 * cache, and the key files in `$CORDON_HOME/keys` (permissions, restarts,
 * broken pairs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { KeyError, InvalidInputError } from '../errors/index.js';
import { tempDir } from '../testkit/index.js';
import { createEgressCa, issueCertificate, loadOrCreateEgressCa, EGRESS_CA_CERT_FILE, EGRESS_CA_KEY_FILE } from './index.js';
import * as der from './der.js';

const DAY_MS = 24 * 60 * 60 * 1000;

test('the CA certificate is a self-signed P-256 CA with the required extensions', () => {
  const ca = createEgressCa({ commonName: 'test CA' });
  const cert = new X509Certificate(ca.certPem);
  assert.equal(cert.ca, true);
  assert.equal(cert.verify(cert.publicKey), true);
  assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.match(cert.subject, /CN=test CA/);
  assert.equal(cert.subject, cert.issuer);
  const dir = tempDir('cordon-ca-');
  try {
    writeFileSync(join(dir.path, 'ca.pem'), ca.certPem);
    const text = execFileSync('openssl', ['x509', '-in', join(dir.path, 'ca.pem'), '-noout', '-text'], { encoding: 'utf8' });
    assert.match(text, /Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    assert.match(text, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
    assert.match(text, /Subject Key Identifier/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
    const serial = /Serial Number:\s+([0-9a-f:]+)/.exec(text)?.[1]?.split(':') ?? [];
    assert.equal(serial.length, 16, 'a 16-byte serial');
    assert.ok(Number.parseInt(serial[0]!, 16) < 0x80, 'a positive serial');
  } finally {
    dir.cleanup();
  }
});

const LEAF_CASES = [
  { name: 'a DNS name', host: 'api.example.com', check: (c: X509Certificate) => c.checkHost('api.example.com'), san: /DNS:api\.example\.com/ },
  { name: 'a name in upper case with a trailing dot (normalised)', host: 'API.Example.com.', check: (c: X509Certificate) => c.checkHost('api.example.com'), san: /DNS:api\.example\.com/ },
  { name: 'an internal name', host: 'llm.cordon.internal', check: (c: X509Certificate) => c.checkHost('llm.cordon.internal'), san: /DNS:llm\.cordon\.internal/ },
  { name: 'an IPv4 literal', host: '10.1.2.3', check: (c: X509Certificate) => c.checkIP('10.1.2.3'), san: /IP Address:10\.1\.2\.3/ },
  { name: 'an IPv6 literal', host: '[2001:db8::1]', check: (c: X509Certificate) => c.checkIP('2001:db8::1'), san: /IP Address:2001:DB8:0:0:0:0:0:1/ },
];

for (const c of LEAF_CASES) {
  test(`leafFor ${c.name}: verified by node and by openssl verify -x509_strict`, () => {
    const ca = createEgressCa();
    const caCert = new X509Certificate(ca.certPem);
    const leaf = ca.leafFor(c.host);
    const cert = new X509Certificate(leaf.certPem);
    assert.equal(cert.ca, false);
    assert.equal(cert.verify(caCert.publicKey), true);
    assert.equal(cert.checkIssued(caCert), true);
    assert.ok(c.check(cert), `the leaf covers ${c.host}`);
    assert.equal(cert.checkPrivateKey(createPrivateKey(leaf.keyPem)), true);
    assert.ok(Date.parse(cert.validTo) - Date.now() <= 7 * DAY_MS, 'valid at most 7 days');
    assert.ok(Date.parse(cert.validFrom) <= Date.now(), 'already valid');
    const dir = tempDir('cordon-ca-');
    try {
      writeFileSync(join(dir.path, 'ca.pem'), ca.certPem);
      writeFileSync(join(dir.path, 'leaf.pem'), leaf.certPem);
      const out = execFileSync('openssl', ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', join(dir.path, 'ca.pem'), join(dir.path, 'leaf.pem')], { encoding: 'utf8' });
      assert.match(out, /leaf\.pem: OK/);
      const text = execFileSync('openssl', ['x509', '-in', join(dir.path, 'leaf.pem'), '-noout', '-text'], { encoding: 'utf8' });
      assert.match(text, /Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text, /Key Usage: critical\s+Digital Signature\n/);
      assert.match(text, /Extended Key Usage:\s+TLS Web Server Authentication/);
      assert.match(text, c.san);
      assert.match(text, /Authority Key Identifier/);
    } finally {
      dir.cleanup();
    }
  });
}

test('a leaf from another CA does not verify against this one', () => {
  const a = createEgressCa();
  const b = createEgressCa();
  const leaf = new X509Certificate(a.leafFor('api.example.com').certPem);
  assert.equal(leaf.verify(new X509Certificate(b.certPem).publicKey), false);
});

const BAD_HOSTS = [
  { name: 'empty', host: '' },
  { name: 'a space', host: 'a b.example.com' },
  { name: 'non-ASCII', host: 'exämple.com' },
  { name: 'a port', host: 'example.com:443' },
  { name: 'an empty label', host: 'a..example.com' },
  { name: 'a wildcard', host: '*.example.com' },
];
for (const c of BAD_HOSTS) {
  test(`leafFor refuses ${c.name}`, () => {
    const ca = createEgressCa();
    assert.throws(() => ca.leafFor(c.host), InvalidInputError);
  });
}

test('leaves are cached per host, bounded, and share one key pair', () => {
  const ca = createEgressCa({ maxCachedLeaves: 2 });
  const first = ca.leafFor('a.example.com');
  assert.equal(ca.leafFor('A.example.com.').certPem, first.certPem, 'the same host gives the cached leaf');
  const other = ca.leafFor('b.example.com');
  assert.notEqual(other.certPem, first.certPem);
  assert.equal(other.keyPem, first.keyPem, 'one leaf key pair');
  ca.leafFor('a.example.com'); // a is now the most recently used
  ca.leafFor('c.example.com'); // evicts b
  assert.equal(ca.leafFor('a.example.com').certPem, first.certPem);
  assert.notEqual(ca.leafFor('b.example.com').certPem, other.certPem, 'b was evicted and re-issued');
});

test('a leaf close to its expiry is re-issued', () => {
  // 0.0001 days = 8.64 s of validity; renewal starts with half of it left.
  const ca = createEgressCa({ leafValidDays: 0.0001 });
  const first = ca.leafFor('a.example.com');
  assert.equal(ca.leafFor('a.example.com').certPem, first.certPem);
  const realNow = Date.now;
  Date.now = () => realNow() + 5_000;
  try {
    assert.notEqual(ca.leafFor('a.example.com').certPem, first.certPem);
  } finally {
    Date.now = realNow;
  }
});

test('leaves never outlive the CA, and bad options are refused', () => {
  const ca = createEgressCa({ validDays: 2 });
  const caEnd = Date.parse(new X509Certificate(ca.certPem).validTo);
  assert.ok(Date.parse(new X509Certificate(ca.leafFor('a.example.com').certPem).validTo) <= caEnd);
  assert.throws(() => createEgressCa({ leafValidDays: 8 }), InvalidInputError);
  assert.throws(() => createEgressCa({ validDays: 0 }), InvalidInputError);
  assert.throws(() => createEgressCa({ maxCachedLeaves: 0 }), InvalidInputError);
  assert.throws(() => createEgressCa({ validDays: 1 }), /expires/, 'a CA that expires within a day is refused');
});

test('a Node TLS client that trusts only the CA completes a handshake with a leaf', async () => {
  const ca = createEgressCa();
  const leaf = ca.leafFor('api.example.com');
  const server = createTlsServer({ cert: leaf.certPem, key: leaf.keyPem }, (s) => s.end('hello'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  try {
    const ok = tlsConnect({ host: '127.0.0.1', port, servername: 'api.example.com', ca: ca.certPem });
    const [data] = await once(ok, 'data') as [Buffer];
    assert.equal(data.toString(), 'hello');
    assert.equal(ok.authorized, true);
    ok.destroy();
    const wrongName = tlsConnect({ host: '127.0.0.1', port, servername: 'other.example.com', ca: ca.certPem });
    const [err] = await once(wrongName, 'error') as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
    const untrusted = tlsConnect({ host: '127.0.0.1', port, servername: 'api.example.com', ca: createEgressCa().certPem });
    const [err2] = await once(untrusted, 'error') as [NodeJS.ErrnoException];
    assert.equal(err2.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  } finally {
    server.close();
  }
});

test('issueCertificate makes a multi-host certificate with its own key', () => {
  const ca = createEgressCa();
  const issued = issueCertificate(ca, { hosts: ['upstream.example.com', '*.wild.example.com', '127.0.0.1'] });
  const cert = new X509Certificate(issued.certPem);
  assert.equal(cert.verify(new X509Certificate(ca.certPem).publicKey), true);
  assert.ok(cert.checkHost('upstream.example.com'));
  assert.ok(cert.checkHost('x.wild.example.com'));
  assert.ok(cert.checkIP('127.0.0.1'));
  assert.notEqual(issued.keyPem, ca.leafFor('upstream.example.com').keyPem);
  assert.throws(() => issueCertificate(ca, { hosts: [] }), InvalidInputError);
  assert.throws(() => issueCertificate({ certPem: ca.certPem, leafFor: ca.leafFor }, { hosts: ['a.example.com'] }), InvalidInputError);
});

test('loadOrCreateEgressCa keeps the same CA across restarts, key 0600', () => {
  const home = tempDir('cordon-ca-home-');
  try {
    const a = loadOrCreateEgressCa(home.path);
    const keyPath = join(home.path, 'keys', EGRESS_CA_KEY_FILE);
    const certPath = join(home.path, 'keys', EGRESS_CA_CERT_FILE);
    assert.equal(statSync(keyPath).mode & 0o777, 0o600);
    assert.equal(readFileSync(certPath, 'utf8'), a.certPem);
    const b = loadOrCreateEgressCa(home.path);
    assert.equal(b.certPem, a.certPem);
    const leaf = new X509Certificate(b.leafFor('api.example.com').certPem);
    assert.equal(leaf.verify(new X509Certificate(a.certPem).publicKey), true);
    assert.equal(issueCertificate(b, { hosts: ['x.example.com'] }).certPem.startsWith('-----BEGIN CERTIFICATE-----'), true);
  } finally {
    home.cleanup();
  }
});

const BROKEN_STORES: Array<{ name: string; breakIt: (keyPath: string, certPath: string) => void; code: string; fix: RegExp }> = [
  { name: 'a group-readable key', breakIt: (k) => chmodSync(k, 0o640), code: 'key-permissions', fix: /chmod 600/ },
  { name: 'a world-readable key', breakIt: (k) => chmodSync(k, 0o604), code: 'key-permissions', fix: /chmod 600/ },
  { name: 'a certificate without its key', breakIt: (k) => rmSync(k), code: 'key-missing', fix: /restore .* or remove/ },
  { name: 'a key without its certificate', breakIt: (_k, c) => rmSync(c), code: 'key-corrupt', fix: /remove both/ },
  { name: 'a garbage key', breakIt: (k) => writeFileSync(k, 'not a key'), code: 'key-corrupt', fix: /remove it/ },
  { name: 'a garbage certificate', breakIt: (_k, c) => writeFileSync(c, 'not a cert'), code: 'key-corrupt', fix: /remove both/ },
  { name: 'a certificate of another CA', breakIt: (_k, c) => writeFileSync(c, createEgressCa().certPem), code: 'key-corrupt', fix: /remove both/ },
];
for (const c of BROKEN_STORES) {
  test(`loadOrCreateEgressCa refuses ${c.name}`, () => {
    const home = tempDir('cordon-ca-home-');
    try {
      loadOrCreateEgressCa(home.path);
      const keyPath = join(home.path, 'keys', EGRESS_CA_KEY_FILE);
      c.breakIt(keyPath, join(home.path, 'keys', EGRESS_CA_CERT_FILE));
      assert.throws(() => loadOrCreateEgressCa(home.path), (err: unknown) => {
        assert.ok(err instanceof KeyError);
        assert.equal(err.code, c.code);
        assert.match(err.fix ?? '', c.fix);
        return true;
      });
    } finally {
      home.cleanup();
    }
  });
}

test('DER: integers are minimal and positive, lengths use the long form past 127 bytes', () => {
  assert.deepEqual(der.integer(0), Buffer.from([2, 1, 0]));
  assert.deepEqual(der.integer(127), Buffer.from([2, 1, 0x7f]));
  assert.deepEqual(der.integer(128), Buffer.from([2, 2, 0, 0x80]));
  assert.deepEqual(der.integer(Buffer.from([0, 0, 1])), Buffer.from([2, 1, 1]));
  assert.deepEqual(der.oid('1.2.840.10045.4.3.2'), Buffer.from('06082a8648ce3d040302', 'hex'));
  assert.deepEqual(der.namedBits([5, 6]), Buffer.from([3, 2, 1, 6]));
  assert.deepEqual(der.namedBits([0]), Buffer.from([3, 2, 7, 0x80]));
  assert.deepEqual(der.octetString(Buffer.alloc(200)).subarray(0, 3), Buffer.from([4, 0x81, 200]));
  assert.deepEqual(der.octetString(Buffer.alloc(300)).subarray(0, 4), Buffer.from([4, 0x82, 1, 44]));
  assert.equal(der.time(new Date(Date.UTC(2049, 11, 31, 23, 59, 59))).toString('latin1').slice(2), '491231235959Z');
  assert.equal(der.time(new Date(Date.UTC(2050, 0, 1))).toString('latin1').slice(2), '20500101000000Z');
  assert.throws(() => der.integer(-1), RangeError);
  assert.throws(() => der.oid('3.1'), RangeError);
});
