/**
 * The guest side of egress set up by the sandbox layer, without a VM: where
 * the deployment CA goes (system bundle, or /tmp on a read-only root), that it
 * is added once, and that the login-shell files give the same proxy
 * variables as commands get. The in-VM proof is egress-vm.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  environmentFile, GUEST_CA_BUNDLE_PATH, GUEST_CA_FALLBACK, GUEST_CA_PATH, guestProxyEnv, installEgressCa, profileScript, type GuestFiles,
} from './egress.js';
import { GuestOpError } from './protocol/index.js';

const CA = '-----BEGIN CERTIFICATE-----\nMIIBcordon\n-----END CERTIFICATE-----\n';
const ROOTS = '-----BEGIN CERTIFICATE-----\nMIIBroot1\n-----END CERTIFICATE-----\n';

/** A guest file system in memory; paths under `readOnly` prefixes refuse writes with the guest's code. */
function memoryGuest(files: Record<string, string>, o: { readOnly?: string[]; writeError?: string } = {}) {
  const writes: { path: string; mode: number }[] = [];
  const io: GuestFiles = {
    async read(path) {
      if (!(path in files)) throw new GuestOpError('file.read', 'not-found', `${path}: no such file`);
      return Buffer.from(files[path]!);
    },
    async write(path, data, mode) {
      if (o.writeError) throw new GuestOpError('file.write', o.writeError, path);
      if ((o.readOnly ?? []).some((p) => path.startsWith(p))) throw new GuestOpError('file.write', 'read-only', `${path}: read-only file system`);
      writes.push({ path, mode });
      files[path] = data.toString();
    },
  };
  return { io, files, writes };
}

const cases: { name: string; files: Record<string, string>; readOnly?: string[]; bundle: string; ca: string; written: string[]; bundleText: string }[] = [
  { name: 'the system bundle gets the CA appended', files: { [GUEST_CA_BUNDLE_PATH]: ROOTS },
    bundle: GUEST_CA_BUNDLE_PATH, ca: GUEST_CA_PATH, written: [GUEST_CA_PATH, GUEST_CA_BUNDLE_PATH], bundleText: ROOTS + CA },
  { name: 'a bundle without a final newline is not glued to the CA', files: { [GUEST_CA_BUNDLE_PATH]: ROOTS.trimEnd() },
    bundle: GUEST_CA_BUNDLE_PATH, ca: GUEST_CA_PATH, written: [GUEST_CA_PATH, GUEST_CA_BUNDLE_PATH], bundleText: ROOTS + CA },
  { name: 'a bundle that already holds the CA is left alone (a restored snapshot)', files: { [GUEST_CA_BUNDLE_PATH]: ROOTS + CA },
    bundle: GUEST_CA_BUNDLE_PATH, ca: GUEST_CA_PATH, written: [GUEST_CA_PATH], bundleText: ROOTS + CA },
  { name: 'no system bundle: the bundle is the CA alone', files: {},
    bundle: GUEST_CA_BUNDLE_PATH, ca: GUEST_CA_PATH, written: [GUEST_CA_PATH, GUEST_CA_BUNDLE_PATH], bundleText: CA },
  { name: 'a read-only root (process back ends): both files go to /tmp', files: { [GUEST_CA_BUNDLE_PATH]: ROOTS }, readOnly: ['/etc', '/usr'],
    bundle: GUEST_CA_FALLBACK.bundle, ca: GUEST_CA_FALLBACK.ca, written: [GUEST_CA_FALLBACK.ca, GUEST_CA_FALLBACK.bundle], bundleText: ROOTS + CA },
];
for (const c of cases) {
  test(`installEgressCa: ${c.name}`, async () => {
    const g = memoryGuest({ ...c.files }, { readOnly: c.readOnly });
    const r = await installEgressCa(g.io, CA);
    assert.deepEqual(r.paths, { bundle: c.bundle, ca: c.ca });
    assert.deepEqual(g.writes.map((w) => w.path), c.written);
    assert.ok(g.writes.every((w) => w.mode === 0o644), 'world-readable: every user in the guest must trust it');
    assert.equal(g.files[c.bundle], c.bundleText);
    assert.equal(g.files[c.ca], CA);
    assert.deepEqual(r.env, {
      SSL_CERT_FILE: c.bundle, CURL_CA_BUNDLE: c.bundle, GIT_SSL_CAINFO: c.bundle, REQUESTS_CA_BUNDLE: c.bundle, PIP_CERT: c.bundle,
      NODE_EXTRA_CA_CERTS: c.ca,
    });
  });
}

test('installEgressCa: any other guest error fails the setup (no silent half-install)', async () => {
  const g = memoryGuest({ [GUEST_CA_BUNDLE_PATH]: ROOTS }, { writeError: 'no-space' });
  await assert.rejects(installEgressCa(g.io, CA), (err: GuestOpError) => err.guestCode === 'no-space');
});

test('login shells: /etc/profile.d and /etc/environment give the proxy variables commands get', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-profile-'));
  try {
    const script = join(dir, 'cordon-egress.sh');
    writeFileSync(script, profileScript());
    const names = Object.keys(guestProxyEnv());
    const show = `. ${script}; for v in ${names.join(' ')} NODE_EXTRA_CA_CERTS; do eval "printf '%s=%s\\n' $v \\"\\$$v\\""; done`;
    const out = execFileSync('sh', ['-c', show], { env: { PATH: process.env.PATH }, encoding: 'utf8' });
    const expected = [...Object.entries(guestProxyEnv()).map(([k, v]) => `${k}=${v}`), 'NODE_EXTRA_CA_CERTS='];
    assert.deepEqual(out.trim().split('\n'), expected, 'the CA variables only once the CA file exists (the host has none)');
    assert.deepEqual(environmentFile().trim().split('\n'), expected.slice(0, -1));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
