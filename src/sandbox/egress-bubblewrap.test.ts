/**
 * The sandbox manager's egress setup on a process back end (bubblewrap), whose
 * root file system is read-only: the deployment CA lands in /tmp and the CA
 * variables name it, commands get the proxy variables, and the sandbox still
 * has no network of its own: the guest agent's listener on 127.0.0.1:3128 is
 * the only way out, and it leads to the sandbox's door. The microVM proof is
 * egress-vm.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../audit/index.js';
import { parseConfig } from '../config/index.js';
import { createEgressCa, createEgressProxy, type EgressProxy } from '../egress/index.js';
import { openStore, type Store } from '../store/index.js';
import { BubblewrapBackend } from './bubblewrap/index.js';
import { GUEST_CA_FALLBACK, GUEST_CA_PATH } from './egress.js';
import { ensureTestImage, testHome } from './image/testing.js';
import { createSandboxManager } from './manager.js';
import type { SandboxInfo, SandboxManager } from './types.js';

const caller = { actor: 'operator:test' };
const skip = process.getuid?.() === 0 ? false : 'the test image is built with debootstrap, which needs root';

describe('egress setup on the bubblewrap back end', { skip, timeout: 5 * 60_000 }, () => {
  let work: string;
  let store: Store;
  let audit: AuditLog;
  let proxy: EgressProxy;
  let manager: SandboxManager;
  let sb: SandboxInfo;
  let caPem: string;
  /** Why bubblewrap cannot run here, when it cannot. */
  let unavailable: string | undefined;

  before(async () => {
    const home = testHome();
    await ensureTestImage(home);
    const backend = new BubblewrapBackend({ home });
    const a = await backend.available();
    if (!a.ok) {
      unavailable = `bubblewrap is not usable here: ${a.reason ?? 'unknown reason'} (${a.fix ?? 'see cordon doctor'})`;
      return;
    }
    work = mkdtempSync(join(tmpdir(), 'cordon-egress-bwrap-'));
    const ca = createEgressCa();
    caPem = ca.certPem;
    proxy = createEgressProxy({ ca });
    store = await openStore({ kind: 'sqlite', path: join(work, 'cordon.db') });
    audit = await AuditLog.open({ store, keyDir: join(work, 'keys'), checkpointIntervalMs: 60_000 });
    const config = parseConfig('version: 1\nagents:\n  dev: { isolation: bubblewrap }\n');
    manager = createSandboxManager({ home, config, audit, backends: { bubblewrap: backend }, egress: proxy });
    sb = await manager.create({ agent: 'dev', caller });
  });

  after(async () => {
    await manager?.close();
    await proxy?.close();
    await audit?.close();
    await store?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  async function sh(command: string): Promise<{ exitCode: number | null; out: string }> {
    let out = '';
    const r = await manager.run(sb.id, { argv: ['sh', '-c', command], timeoutMs: 30_000, onStdout: (b) => (out += b), onStderr: (b) => (out += b) }, caller);
    return { exitCode: r.exitCode, out };
  }

  test('the CA goes to /tmp on a read-only root, and TLS clients trust it through the variables', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const ready = (await audit.query({ limit: 1000 })).find((e) => e.type === 'sandbox.ready' && e.sandbox === sb.id);
    assert.deepEqual(ready?.data.egress, { door: true, proxyPort: 3128, ca: GUEST_CA_FALLBACK.bundle });
    const writes = (await audit.query({ limit: 1000 })).filter((e) => e.sandbox === sb.id && e.type === 'sandbox.setup' && e.data.op === 'file.write');
    assert.deepEqual(writes.map((e) => [e.actor, e.data.path]), [['system', GUEST_CA_PATH], ['system', GUEST_CA_FALLBACK.ca], ['system', GUEST_CA_FALLBACK.bundle]],
      'the write the read-only root refused was audited before it was tried, then the fallback');
    const vars = await sh('printf "%s|%s|%s" "$SSL_CERT_FILE" "$NODE_EXTRA_CA_CERTS" "$https_proxy"');
    assert.equal(vars.out, `${GUEST_CA_FALLBACK.bundle}|${GUEST_CA_FALLBACK.ca}|http://127.0.0.1:3128`);
    const subject = /CN=([^\n,]+)/.exec(new X509Certificate(caPem).subject)?.[1];
    const py = await sh(`python3 -c "import ssl; print(sum(1 for c in ssl.create_default_context().get_ca_certs() if ('commonName', '${subject}') in [x for r in c['subject'] for x in r]))"`);
    assert.equal(py.out, '1\n', 'Python\'s default context (through SSL_CERT_FILE) holds the deployment CA');
  });

  test('no network of its own; the proxy variables lead to the door, which refuses what the policy does not allow', async (t) => {
    if (unavailable) return t.skip(unavailable);
    const raw = await sh(`python3 -c "import socket
try:
    socket.create_connection(('1.1.1.1', 80), 3)
except OSError as e:
    import errno; print(errno.errorcode[e.errno])"`);
    assert.equal(raw.out, 'ENETUNREACH\n');
    const curl = await sh('curl -sS -i --max-time 10 http://example.com/');
    assert.match(curl.out, /^X-Cordon-Error: host-not-allowed\r$/mi, 'the agent has no egress rules: its door says no');
    const denied = (await audit.query({ limit: 1000 })).filter((e) => e.type === 'egress.request' && e.sandbox === sb.id);
    assert.deepEqual(denied.map((e) => [e.decision, e.reason, e.data.host]), [['deny', 'host-not-allowed', 'example.com']]);
  });
});
