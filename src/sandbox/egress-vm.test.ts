/**
 * Egress proved from inside a real microVM (QEMU, TCG on the development
 * machines): one sandbox, made by the sandbox manager with the egress proxy,
 * serves every case. The guest has no network device: raw TCP, UDP to port
 * 53, ICMP and IPv6 fail with the errors a kernel without routes gives, and
 * there is no resolver. The one way out is 127.0.0.1:3128, carried over the
 * control channel to this sandbox's door: curl and `git clone` (smart HTTP
 * from `git http-backend`) reach a loopback HTTPS server through it, a host
 * that is not allowed gets 403 with `X-Cordon-Error`, an intercepted host
 * is trusted through the deployment CA in the guest's system store, and every
 * decision in the audit log names this sandbox (from the channel, since the
 * guest never says who it is).
 *
 * Test names resolve to 127.0.0.1 through the proxy's `lookup`, and a
 * `cidr: 127.0.0.1/32` rule for the server's port lets the proxy dial loopback.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, type AuditEvent } from '../audit/index.js';
import { parseConfig } from '../config/index.js';
import { createEgressCa, createEgressProxy, issueCertificate, type EgressProxy } from '../egress/index.js';
import { openStore, type Store } from '../store/index.js';
import { sleep } from '../util/index.js';
import { GUEST_CA_BUNDLE_PATH, GUEST_CA_PATH } from './egress.js';
import { createSandboxManager } from './manager.js';
import { vmFixture, vmSkipReason } from './microvm/testing.js';
import type { SandboxInfo, SandboxManager } from './types.js';

const skip = vmSkipReason();
const caller = { actor: 'operator:test' };
const AGENT = 'egress-test';
const UPSTREAM_CA_IN_GUEST = '/tmp/upstream-ca.pem';

interface Ran {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

describe('egress from inside a microVM', { skip, timeout: 5 * 60_000 }, () => {
  let work: string;
  let store: Store;
  let audit: AuditLog;
  let proxy: EgressProxy;
  let server: HttpsServer;
  let port: number;
  let manager: SandboxManager;
  let sb: SandboxInfo;
  let upstreamCaPem: string;
  let deploymentCaPem: string;
  const bootMs: number[] = [];

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'cordon-egress-vm-'));
    makeRepo(work);
    // The upstream's certificate comes from a CA of its own: the guest trusts it only when told
    // to, so a CONNECT tunnel that works proves the guest checked the upstream end to end.
    const upstreamCa = createEgressCa({ commonName: 'cordon test upstream CA' });
    upstreamCaPem = upstreamCa.certPem;
    const leaf = issueCertificate(upstreamCa, { hosts: ['git.test', 'api.test'] });
    server = createHttpsServer({ key: leaf.keyPem, cert: leaf.certPem }, (req, res) => serve(req, res, work));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;

    const deploymentCa = createEgressCa();
    deploymentCaPem = deploymentCa.certPem;
    proxy = createEgressProxy({
      lookup: async (h) => (['git.test', 'api.test', 'denied.test'].includes(h) ? [{ address: '127.0.0.1', family: 4 }] : []),
      ca: deploymentCa,
      upstreamCa: upstreamCaPem,
    });
    const config = parseConfig(`
version: 1
agents:
  ${AGENT}:
    isolation: microvm
    resources: { vcpus: 1, memoryMiB: 512, timeout: 10m }
    egress:
      - { host: git.test, ports: [${port}] }
      - { host: api.test, ports: [${port}], rules: [ { method: GET, path: /ok, action: allow } ] }
      - { cidr: 127.0.0.1/32, ports: [${port}] }
`);
    store = await openStore({ kind: 'sqlite', path: join(work, 'cordon.db') });
    audit = await AuditLog.open({ store, keyDir: join(work, 'keys'), checkpointIntervalMs: 60_000 });
    const fx = await vmFixture();
    // The sandbox starts from a snapshot, as production sandboxes do: the CA and the door must not
    // depend on a cold boot (the snapshot is made from a guest that has never seen them).
    const backend = fx.backend({ snapshots: 'auto' });
    let started = performance.now();
    await backend.warm({ vcpus: 1, memoryMiB: 512, diskMiB: 2048 });
    bootMs.push(performance.now() - started);
    manager = createSandboxManager({ home: fx.home, config, audit, backends: { microvm: backend }, egress: proxy });
    started = performance.now();
    sb = await manager.create({ agent: AGENT, caller });
    bootMs.push(performance.now() - started);
    await manager.writeFile(sb.id, UPSTREAM_CA_IN_GUEST, Buffer.from(upstreamCaPem), { mode: 0o644 }, caller);
  });

  after(async () => {
    await manager?.close();
    await proxy?.close();
    server?.close();
    await audit?.close();
    await store?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** A shell command in the guest, as `agent` unless told. */
  async function sh(command: string, o: { user?: string; env?: Record<string, string> } = {}): Promise<Ran> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const r = await manager.run(sb.id, {
      argv: ['sh', '-c', command], user: o.user ?? 'agent', timeoutMs: 60_000, onStdout: (b) => out.push(b), onStderr: (b) => err.push(b),
      ...(o.env ? { env: o.env } : {}),
    }, caller);
    return { exitCode: r.exitCode, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
  }

  /** The egress events of this sandbox that match, waiting briefly (the door writes them as it answers). */
  async function egressEvents(match: (e: AuditEvent) => boolean): Promise<AuditEvent[]> {
    for (let i = 0; i < 100; i++) {
      const ev = (await audit.query({ limit: 5000 })).filter((e) => e.type === 'egress.request' && match(e));
      if (ev.length > 0) return ev;
      await sleep(30);
    }
    return [];
  }

  test('the sandbox came up with its door, the listener on 3128 and the deployment CA installed (audited as system)', async (t) => {
    t.diagnostic(`snapshot ready: ${Math.round(bootMs[0] ?? 0)} ms; create (restore + door + CA install): ${Math.round(bootMs[1] ?? 0)} ms; tier ${sb.tier}`);
    assert.equal(sb.startedFrom, 'snapshot');
    const events = (await audit.query({ limit: 5000 })).filter((e) => e.sandbox === sb.id);
    const ready = events.find((e) => e.type === 'sandbox.ready');
    assert.deepEqual(ready?.data.egress, { door: true, proxyPort: 3128, ca: GUEST_CA_BUNDLE_PATH });
    const setup = events.filter((e) => e.type === 'sandbox.setup').map((e) => [e.actor, e.data.step, e.data.op, e.data.path]);
    assert.deepEqual(setup, [
      ['system', 'egress-ca', 'file.read', GUEST_CA_BUNDLE_PATH],
      ['system', 'egress-ca', 'file.write', GUEST_CA_PATH],
      ['system', 'egress-ca', 'file.write', GUEST_CA_BUNDLE_PATH],
    ]);
    assert.equal(events.filter((e) => e.type.startsWith('sandbox.file.')).length, 1, 'only the test\'s own write is a caller file event');
    const installed = await sh(`cat ${GUEST_CA_PATH}; grep -c 'BEGIN CERTIFICATE' ${GUEST_CA_BUNDLE_PATH}; tail -c ${deploymentCaPem.length + 1} ${GUEST_CA_BUNDLE_PATH}`);
    const [caText, rest] = [installed.stdout.slice(0, deploymentCaPem.length), installed.stdout.slice(deploymentCaPem.length)];
    assert.equal(caText, deploymentCaPem);
    assert.ok(Number(rest.split('\n')[0]) > 100, 'the system roots are still in the bundle');
    assert.ok(rest.endsWith(deploymentCaPem.trimEnd() + '\n'), 'the deployment CA is at the end of the system bundle');
  });

  test('no network device, no routes, no resolver', async () => {
    const r = await sh('ls /sys/class/net; echo ---; cat /proc/net/route; echo ---; getent hosts example.com; echo "getent=$?"; cat /etc/resolv.conf');
    const [nets, routes, rest] = r.stdout.split('---\n');
    assert.equal(nets, 'lo\n', 'the only interface is loopback');
    assert.equal(routes?.trim().split('\n').length, 1, `no IPv4 route at all, only the header: ${routes}`);
    assert.equal(rest, 'getent=2\n', 'example.com does not resolve, and resolv.conf is empty');
  });

  // Each probe runs as root (raw sockets need it) and prints the errno name it got.
  const probes: { name: string; why: string; code: string; expect: string }[] = [
    { name: 'raw TCP to a public IP', why: 'no route: no device but lo', expect: 'ENETUNREACH',
      code: `socket.create_connection(('1.1.1.1', 80), 3)` },
    { name: 'raw TCP to the QEMU user-net gateway 10.0.2.2', why: 'the VM has no NIC, so no slirp behind it', expect: 'ENETUNREACH',
      code: `socket.create_connection(('10.0.2.2', 80), 3)` },
    { name: 'UDP to port 53 (DNS tunnelling)', why: 'no route for datagrams either', expect: 'ENETUNREACH',
      code: `socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'\\0' * 12, ('8.8.8.8', 53))` },
    { name: 'ICMP echo over a raw socket', why: 'no route, even for root', expect: 'ENETUNREACH',
      code: `socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).sendto(b'\\x08\\0\\xf7\\xff\\0\\0\\0\\0', ('1.1.1.1', 0))` },
    { name: 'IPv6 TCP to a public address', why: 'no IPv6 route', expect: 'ENETUNREACH',
      code: `socket.create_connection(('2606:4700:4700::1111', 80), 3)` },
    { name: 'IPv6 UDP to port 53', why: 'no IPv6 route', expect: 'ENETUNREACH',
      code: `socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'\\0' * 12, ('2001:4860:4860::8888', 53))` },
  ];
  test('raw TCP, UDP to port 53, ICMP and IPv6 all fail', async () => {
    const script = [
      'import errno, json, socket',
      'out = {}',
      ...probes.map((p, i) => [
        'try:',
        `    ${p.code}`,
        `    out[${i}] = 'connected'`,
        'except OSError as e:',
        `    out[${i}] = errno.errorcode.get(e.errno, str(e))`,
      ].join('\n')),
      'print(json.dumps(out))',
    ].join('\n');
    const r = await sh(`python3 -c "$PROBE"`, { user: 'root', env: { PROBE: script } });
    assert.equal(r.exitCode, 0, r.stderr);
    const got = JSON.parse(r.stdout) as Record<string, string>;
    for (const [i, p] of probes.entries()) assert.equal(got[i], p.expect, `${p.name}: expected ${p.expect} (${p.why}), got ${got[i]}`);
  });

  test('curl reaches an allowed host through the door; the CONNECT tunnel is end to end', async () => {
    const ok = await sh(`curl -sS --max-time 20 --cacert ${UPSTREAM_CA_IN_GUEST} https://git.test:${port}/hello`);
    assert.deepEqual([ok.exitCode, ok.stdout], [0, 'hello from git.test\n'], ok.stderr);
    // Without the upstream's CA the guest refuses the upstream: the proxy did not terminate this TLS.
    const untrusted = await sh(`curl -sS --max-time 20 https://git.test:${port}/hello`);
    assert.equal(untrusted.exitCode, 60, `curl: ${untrusted.stderr}`);
    assert.match(untrusted.stderr, /certificate/i);
    const [ev] = await egressEvents((e) => e.sandbox === sb.id && e.data.host === 'git.test');
    assert.deepEqual([ev?.decision, ev?.agent, ev?.actor, ev?.data.scheme, ev?.data.port], ['allow', AGENT, `agent:${AGENT}`, 'connect', port]);
  });

  test('git clone over HTTPS (smart protocol) works through the proxy', async (t) => {
    const started = performance.now();
    const r = await sh(`git clone -q https://git.test:${port}/repo.git /tmp/clone && git -C /tmp/clone log --format=%s && cat /tmp/clone/README`, {
      env: { GIT_SSL_CAINFO: UPSTREAM_CA_IN_GUEST },
    });
    t.diagnostic(`git clone in the guest: ${Math.round(performance.now() - started)} ms`);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, 'first commit\nhello from the test repository\n');
    const served = await egressEvents((e) => e.sandbox === sb.id && e.data.host === 'git.test' && e.decision === 'allow');
    assert.ok(served.length >= 2, 'curl and git each opened a tunnel through the door');
  });

  test('a host that is not allowed: 403 with X-Cordon-Error, and the denial is recorded with the sandbox id', async () => {
    const plain = await sh('curl -sS -i --max-time 20 http://denied.test/');
    assert.equal(plain.exitCode, 0, plain.stderr);
    assert.match(plain.stdout, /^HTTP\/1\.1 403 /);
    assert.match(plain.stdout, /^X-Cordon-Error: host-not-allowed\r$/mi);
    const tls = await sh('curl -sS -v --max-time 20 https://denied.test/');
    assert.equal(tls.exitCode, 56, 'curl: CONNECT tunnel failed');
    assert.match(tls.stderr, /< HTTP\/1\.1 403/);
    assert.match(tls.stderr, /< X-Cordon-Error: host-not-allowed/i);
    const denials = await egressEvents((e) => e.sandbox === sb.id && e.data.host === 'denied.test');
    assert.deepEqual(denials.map((e) => [e.decision, e.reason, e.agent, e.data.scheme]), [
      ['deny', 'host-not-allowed', AGENT, 'http'],
      ['deny', 'host-not-allowed', AGENT, 'connect'],
    ]);
  });

  test('an intercepted host: curl and Python trust the deployment CA from the system store; path rules apply', async () => {
    const curl = await sh(`curl -sS --max-time 20 https://api.test:${port}/ok`);
    assert.deepEqual([curl.exitCode, curl.stdout], [0, 'api ok: GET /ok\n'], curl.stderr);
    const issuer = await sh(`curl -sS -v -o /dev/null --max-time 20 https://api.test:${port}/ok 2>&1 | grep -i 'issuer:'`);
    assert.match(issuer.stdout, /cordon egress CA/, 'the guest saw the proxy\'s leaf, issued by the deployment CA');
    const py = await sh(`python3 -c "import urllib.request; print(urllib.request.urlopen('https://api.test:${port}/ok', timeout=20).read().decode(), end='')"`);
    assert.deepEqual([py.exitCode, py.stdout], [0, 'api ok: GET /ok\n'], py.stderr);
    // curl -i shows the proxy's CONNECT answer, then the answer to the request inside the tunnel.
    const refused = await sh(`curl -sS -i --max-time 20 https://api.test:${port}/admin`);
    assert.match(refused.stdout, /^HTTP\/1\.1 200 Connection Established\r\n\r\nHTTP\/1\.1 403 /);
    assert.match(refused.stdout, /^X-Cordon-Error: no-path-rule\r$/mi);
    const ev = await egressEvents((e) => e.sandbox === sb.id && e.data.host === 'api.test' && e.data.scheme === 'https');
    const byPath = (path: string) => ev.filter((e) => e.data.path === path).map((e) => [e.decision, e.data.method]);
    assert.deepEqual(byPath('/ok'), [['allow', 'GET'], ['allow', 'GET'], ['allow', 'GET']], 'curl twice and Python once, each request recorded');
    const [tunnel] = await egressEvents((e) => e.sandbox === sb.id && e.data.host === 'api.test' && e.data.scheme === 'connect');
    assert.deepEqual([tunnel?.decision, tunnel?.data.intercepted], ['allow', true], 'the CONNECT itself is recorded as intercepted');
    const admin = ev.filter((e) => e.data.path === '/admin').map((e) => [e.decision, e.reason, e.data.method]);
    assert.deepEqual(admin, [['deny', 'no-path-rule', 'GET']], 'the refused path is recorded with the reason the guest saw');
  });

  test('commands and login shells get the proxy and CA variables', async () => {
    const vars = ['HTTPS_PROXY', 'http_proxy', 'NO_PROXY', 'SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'PIP_CERT', 'NODE_EXTRA_CA_CERTS'];
    const show = vars.map((v) => `"$${v}"`).join(' ');
    const cmd = await sh(`printf '%s|' ${show}`);
    const expected = ['http://127.0.0.1:3128', 'http://127.0.0.1:3128', 'localhost,127.0.0.1,::1', GUEST_CA_BUNDLE_PATH, GUEST_CA_BUNDLE_PATH, GUEST_CA_BUNDLE_PATH, GUEST_CA_PATH]
      .map((v) => `${v}|`).join('');
    assert.equal(cmd.stdout, expected);
    const login = await sh(`env -i HOME=/home/agent PATH=/usr/bin:/bin bash -lc 'printf "%s|" ${show}'`);
    assert.equal(login.stdout, expected, login.stderr);
  });

  test('connections the guest resets (mid-head, mid-tunnel, fifty at once) hurt nothing: the next request works', async () => {
    const script = [
      'import socket, struct, time',
      'def reset(s):',
      '    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))',
      '    s.close()',
      'def dial():',
      '    return socket.create_connection(("127.0.0.1", 3128), 10)',
      's = dial()',
      `s.sendall(b"GET http://git.test:${port}/hello HTTP/1.1\\r\\nHo")`,
      'time.sleep(0.3)',
      'reset(s)',
      's = dial()',
      `s.sendall(b"CONNECT git.test:${port} HTTP/1.1\\r\\nHost: git.test:${port}\\r\\n\\r\\n")`,
      'print(s.recv(100).split(b"\\r\\n")[0].decode())',
      'reset(s)',
      'socks = [dial() for _ in range(50)]',
      'for s in socks: reset(s)',
      'time.sleep(0.5)',
    ].join('\n');
    const r = await sh('python3 -c "$PROBE"', { env: { PROBE: script } });
    assert.deepEqual([r.exitCode, r.stdout], [0, 'HTTP/1.1 200 Connection Established\n'], r.stderr);
    const again = await sh(`curl -sS --max-time 20 --cacert ${UPSTREAM_CA_IN_GUEST} https://git.test:${port}/hello`);
    assert.deepEqual([again.exitCode, again.stdout], [0, 'hello from git.test\n'], again.stderr);
    assert.equal(manager.get(sb.id).state, 'running');
  });

  test('bytes that are not HTTP, sent to the listener, are refused by the proxy', async () => {
    const script = [
      'import socket',
      "s = socket.create_connection(('127.0.0.1', 3128), 10)",
      "s.sendall(b'\\x16\\x03\\x01\\x00\\x05hello\\r\\n\\r\\n')",
      "print(s.recv(4096).decode('latin1').split('\\r\\n\\r\\n')[0])",
    ].join('\n');
    const r = await sh('python3 -c "$PROBE"', { env: { PROBE: script } });
    assert.match(r.stdout, /^HTTP\/1\.1 400 /);
    assert.match(r.stdout, /X-Cordon-Error: bad-request/i);
    const [ev] = await egressEvents((e) => e.sandbox === sb.id && e.reason === 'bad-request');
    assert.equal(ev?.decision, 'deny');
  });
});

/** A bare repository with one commit, served by `git http-backend`. */
function makeRepo(dir: string): void {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: dir, stdio: 'pipe', env: { ...process.env, GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1' } });
  git('init', '-q', '-b', 'main', 'src');
  writeFileSync(join(dir, 'src', 'README'), 'hello from the test repository\n');
  git('-C', 'src', 'add', 'README');
  git('-C', 'src', '-c', 'user.name=cordon', '-c', 'user.email=test@cordon.invalid', 'commit', '-q', '-m', 'first commit');
  git('clone', '-q', '--bare', 'src', 'repo.git');
}

/** The loopback upstream: `/hello` and `/ok` answer with text; `/repo.git/…` is git's smart HTTP through `git http-backend` (CGI). */
function serve(req: IncomingMessage, res: ServerResponse, root: string): void {
  const url = new URL(req.url ?? '/', 'https://upstream.invalid');
  if (url.pathname === '/hello') return void res.end('hello from git.test\n');
  if (!url.pathname.startsWith('/repo.git/')) return void res.end(`api ok: ${req.method} ${url.pathname}\n`);
  const cgi = spawn('git', ['http-backend'], {
    stdio: ['pipe', 'pipe', 'ignore'],
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin', GIT_PROJECT_ROOT: root, GIT_HTTP_EXPORT_ALL: '1', GIT_CONFIG_NOSYSTEM: '1',
      REQUEST_METHOD: req.method ?? 'GET', PATH_INFO: url.pathname, QUERY_STRING: url.search.slice(1), REMOTE_ADDR: '127.0.0.1',
      CONTENT_TYPE: String(req.headers['content-type'] ?? ''), HTTP_CONTENT_ENCODING: String(req.headers['content-encoding'] ?? ''),
      GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
    },
  });
  req.pipe(cgi.stdin!);
  let head = Buffer.alloc(0);
  let body = false;
  cgi.stdout!.on('data', (chunk: Buffer) => {
    if (body) return void res.write(chunk);
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    body = true;
    let status = 200;
    for (const line of head.subarray(0, end).toString().split('\r\n')) {
      const i = line.indexOf(':');
      const [name, value] = [line.slice(0, i).trim(), line.slice(i + 1).trim()];
      if (name.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
      else res.setHeader(name, value);
    }
    res.writeHead(status);
    res.write(head.subarray(end + 4));
  });
  cgi.stdout!.on('end', () => res.end());
  cgi.on('error', () => res.destroy());
}
