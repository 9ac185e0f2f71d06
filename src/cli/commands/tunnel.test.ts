/**
 * `cordon tunnel open|ls|close` against a control plane started in this test
 * process, with one bubblewrap sandbox (the quickest back end with the real
 * guest agent) serving HTTP on its loopback; and stopping the control plane
 * closes every tunnel as `daemon-stop`. The control plane's home borrows the
 * shared test image (a symlink to the test home's images).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AuditLog } from '../../audit/index.js';
import { parseConfig } from '../../config/index.js';
import { keyDir, startControlPlane, storePath, type ControlPlane } from '../../controlplane/index.js';
import type { OpenedTunnel, TunnelInfo } from '../../ingress/index.js';
import { BubblewrapBackend } from '../../sandbox/bubblewrap/index.js';
import { ensureTestImage, testHome } from '../../sandbox/image/testing.js';
import type { SandboxInfo } from '../../sandbox/index.js';
import { openStore } from '../../store/index.js';
import { repoRoot, tempDir } from '../../testkit/index.js';
import { cordon, oneJson } from './testing.js';
import { parsePort } from './tunnel.js';

const caller = { actor: 'operator:test' };

/** Node arguments that run the CLI from the sources (stdin piped, unlike testing.ts's runner). */
function tsxCli(): string[] {
  const main = pathToFileURL(join(repoRoot(), 'src', 'cli', 'main.ts')).href;
  return ['--import', 'tsx', '--input-type=module', '-e', `import { main } from ${JSON.stringify(main)}; process.exitCode = await main(['node', 'cordon', ...process.argv.slice(1)]);`, '--'];
}

function listening(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  const s = connect(Number(port), hostname);
  return new Promise<boolean>((resolve) => {
    s.on('connect', () => resolve(true));
    s.on('error', () => resolve(false));
  }).finally(() => s.destroy());
}

test('PORT must be a TCP port', () => {
  assert.equal(parsePort('8000'), 8000);
  for (const bad of ['0', '65536', '80a', '-1', '1e3', '']) assert.throws(() => parsePort(bad), /not a TCP port/, bad);
});

describe('cordon tunnel', { skip: process.getuid?.() === 0 ? false : 'the test image needs root (debootstrap)', timeout: 4 * 60_000 }, () => {
  let home: { path: string; cleanup: () => void };
  let cp: ControlPlane | undefined;
  let sb: SandboxInfo;
  let unavailable: string | undefined;

  before(async () => {
    await ensureTestImage(testHome());
    const a = await new BubblewrapBackend({ home: testHome() }).available();
    if (!a.ok) {
      unavailable = `bubblewrap is not usable here: ${a.reason ?? 'unknown reason'}`;
      return;
    }
    home = tempDir('cordon-cli-tunnel-');
    symlinkSync(join(testHome(), 'images'), join(home.path, 'images'));
    cp = await startControlPlane({ home: home.path, config: parseConfig('version: 1\nagents:\n  dev: { isolation: bubblewrap }\n'), port: 0 });
    sb = await cp.sandboxes.create({ agent: 'dev', caller });
    const r = await cp.sandboxes.run(sb.id, {
      argv: ['sh', '-c', `mkdir -p /tmp/www && echo tunnel-ok > /tmp/www/index.txt && cd /tmp/www && (python3 -m http.server 8000 --bind 127.0.0.1 > /dev/null 2>&1 &)
        for i in $(seq 100); do curl -s --noproxy '*' -o /dev/null http://127.0.0.1:8000/ && exit 0; sleep 0.1; done; exit 1`],
    }, caller);
    assert.equal(r.exitCode, 0, 'the guest HTTP server came up');
  });

  after(async () => {
    await cp?.stop();
    home?.cleanup();
  });

  test('open prints the URL and token once; the token fetches the page; ls lists it; close ends it', async (t) => {
    if (!cp) return t.skip(unavailable);
    const text = await cordon(['tunnel', 'open', sb.id, '8000', '--ttl', '2m', '--idle', '1m'], { home: home.path });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^tunnel {3}tn-[a-z2-7]{20} → sb-[a-z2-7]{20} port 8000\n/);
    assert.match(text.stdout, /\nurl {6}http:\/\/127\.0\.0\.1:\d+\/\?cordon_tunnel_token=[A-Za-z0-9_-]{43}\n/);
    const token = /\ntoken {4}([A-Za-z0-9_-]{43})\n/.exec(text.stdout)?.[1];
    const url = /\nurl {6}(http:\/\/127\.0\.0\.1:\d+\/)\?/.exec(text.stdout)?.[1];
    assert.ok(token && url);
    const page = await fetch(url + 'index.txt', { headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual([page.status, await page.text()], [200, 'tunnel-ok\n']);
    const again = await fetch(url + 'index.txt', { headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual([again.status, again.headers.get('x-cordon-error')], [401, 'token-used']);

    const ls = await cordon(['tunnel', 'ls', '--json'], { home: home.path });
    assert.equal(ls.code, 0, ls.stderr);
    const listed = oneJson<{ tunnels: TunnelInfo[] }>(ls).tunnels;
    assert.equal(listed.length, 1);
    assert.deepEqual([listed[0]?.sandboxId, listed[0]?.port, listed[0]?.tokenUsed, listed[0]?.url], [sb.id, 8000, true, url]);
    assert.ok(!ls.stdout.includes(token), 'ls never shows the token');

    const close = await cordon(['tunnel', 'close', listed[0]!.id], { home: home.path });
    assert.deepEqual([close.code, close.stdout], [0, `closed ${listed[0]!.id}\n`]);
    assert.equal(await listening(url), false);
    const none = await cordon(['tunnel', 'ls'], { home: home.path });
    assert.deepEqual([none.code, none.stderr], [0, 'no open tunnels\n']);
    const gone = await cordon(['tunnel', 'close', listed[0]!.id], { home: home.path });
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /no open tunnel/);
  });

  test('--tcp: `cordon tunnel connect` sends the token line and bridges stdin/stdout to the guest port', async (t) => {
    if (!cp) return t.skip(unavailable);
    const opened = await cordon(['tunnel', 'open', sb.id, '8000', '--tcp', '--json'], { home: home.path });
    assert.equal(opened.code, 0, opened.stderr);
    const { tunnel } = oneJson<{ tunnel: OpenedTunnel }>(opened);
    assert.equal(tunnel.mode, 'tcp');
    const address = tunnel.url.slice('tcp://'.length);
    const bridge = (): Promise<{ code: number | null; stdout: string; stderr: string }> => new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [...tsxCli(), 'tunnel', 'connect', address], {
        cwd: repoRoot(), env: { ...process.env, CORDON_HOME: home.path, CORDON_CONFIG: '', CORDON_TUNNEL_TOKEN: tunnel.token }, stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => (stdout += b));
      child.stderr.on('data', (b: Buffer) => (stderr += b));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
      child.stdin.write('GET /index.txt HTTP/1.0\r\n\r\n');
    });
    const first = await bridge();
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^HTTP\/1\.0 200 OK\r\n[\s\S]*\r\n\r\ntunnel-ok\n$/);
    const second = await bridge();
    assert.equal(second.stdout, 'cordon-tunnel: refused (token-used)\n', 'the token admits one connection');
  });

  test('bad arguments and unknown sandboxes fail with the fix', async (t) => {
    if (!cp) return t.skip(unavailable);
    const port = await cordon(['tunnel', 'open', sb.id, 'http'], { home: home.path });
    assert.equal(port.code, 1);
    assert.match(port.stderr, /not a TCP port/);
    const ttl = await cordon(['tunnel', 'open', sb.id, '8000', '--ttl', 'soon'], { home: home.path });
    assert.match(ttl.stderr, /not a duration/);
    const nobody = await cordon(['tunnel', 'open', 'sb-cccccccccccccccccccc', '8000'], { home: home.path });
    assert.equal(nobody.code, 1);
    assert.match(nobody.stderr, /no sandbox sb-cccccccccccccccccccc/);
  });

  test('stopping the control plane closes every tunnel (daemon-stop), recorded before the log closes', async (t) => {
    if (!cp) return t.skip(unavailable);
    const opened = await cordon(['tunnel', 'open', sb.id, '8000', '--json'], { home: home.path });
    const { tunnel } = oneJson<{ tunnel: OpenedTunnel }>(opened);
    assert.equal(await listening(tunnel.url), true);
    await cp.stop();
    cp = undefined;
    assert.equal(await listening(tunnel.url), false);
    const store = await openStore({ kind: 'sqlite', path: storePath(home.path) });
    const log = await AuditLog.open({ store, keyDir: keyDir(home.path) });
    try {
      const events = (await log.query({ limit: 10_000 })).filter((e) => e.data.tunnel === tunnel.id);
      // The probe above is a connection too, and it is on record.
      assert.deepEqual(events.map((e) => e.type), ['tunnel.open', 'tunnel.connect', 'tunnel.disconnect', 'tunnel.close']);
      assert.equal(events[3]?.reason, 'daemon-stop');
      const stop = (await log.query({ limit: 10_000 })).find((e) => e.type === 'daemon.stop');
      assert.ok(stop && stop.seq > events[3]!.seq, 'the close is recorded before daemon.stop');
    } finally {
      await log.close();
      await store.close();
    }
  });
});
