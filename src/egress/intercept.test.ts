/**
 * TLS interception, `*.cordon.internal` routing and the bytes-out limit, over
 * loopback: a client that trusts only the egress CA, upstream HTTPS servers
 * whose certificates come from a separate test CA (`upstreamCa`), one whose
 * certificate nobody trusts, a small internal service, and every outcome
 * checked in a real audit log (reasons included) and in `X-Cordon-Error`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { Duplex, PassThrough, Transform } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { AuditLog, queryEvents, type AuditEvent } from '../audit/index.js';
import { InvalidInputError } from '../errors/index.js';
import { openStore, type Store } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { EGRESS_REASONS, type EgressRuleInput } from '../policy/index.js';
import {
  createEgressCa, createEgressProxy, issueCertificate, statusForReason, PROXY_REASONS,
  type EgressCa, type EgressProxy, type EgressProxyOptions, type InternalService,
} from './index.js';
import { createByteWindow } from './limits.js';

let dir: { path: string; cleanup: () => void };
let store: Store;
let audit: AuditLog;
let ca: EgressCa;
let upstreamCa: EgressCa;
let https: HttpsServer;
let untrusted: HttpsServer;
let plain: HttpServer;
let echoTls: NetServer;
let httpsPort: number;
let untrustedPort: number;
let plainPort: number;
let echoPort: number;
let upstreamConnections = 0;
const rawSockets: Socket[] = [];
let upstreamRequests = 0;
const proxies: EgressProxy[] = [];

/** The upstream: echoes what it got as JSON; `/reset` dies mid-body; `/big` sends 64 KiB. */
function upstreamHandler(req: IncomingMessage, res: ServerResponse): void {
  upstreamRequests += 1;
  let body = '';
  req.on('data', (d: Buffer) => (body += d.toString()));
  req.on('end', () => {
    if (req.url === '/reset') {
      res.writeHead(200, { 'Content-Length': '100000' });
      res.write('x'.repeat(1000));
      // A TCP reset on the raw connection under the TLS socket.
      const raw = rawSockets.find((r) => r.remotePort === req.socket.remotePort && !r.destroyed);
      setTimeout(() => (raw ? raw.resetAndDestroy() : req.socket.destroy()), 20);
      return;
    }
    if (req.url === '/big') return res.end('y'.repeat(64 * 1024));
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
  });
}

before(async () => {
  dir = tempDir('cordon-intercept-');
  ca = createEgressCa({ commonName: 'cordon test egress CA' });
  upstreamCa = createEgressCa({ commonName: 'test public roots' });
  const good = issueCertificate(upstreamCa, { hosts: ['api.example.com', 'other.example.com', '127.0.0.1'] });
  https = createHttpsServer({ cert: good.certPem, key: good.keyPem, keepAliveTimeout: 5000 }, upstreamHandler);
  https.on('connection', (raw: Socket) => { upstreamConnections += 1; rawSockets.push(raw); });
  const rogue = createEgressCa({ commonName: 'nobody trusts me' });
  const bad = issueCertificate(rogue, { hosts: ['untrusted.example.com'] });
  untrusted = createHttpsServer({ cert: bad.certPem, key: bad.keyPem }, upstreamHandler);
  plain = createHttpServer(upstreamHandler);
  echoTls = createNetServer((s) => { rawSockets.push(s); s.on('data', () => undefined); s.on('error', () => undefined); });
  for (const srv of [https, untrusted, plain, echoTls]) {
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
  }
  httpsPort = (https.address() as { port: number }).port;
  untrustedPort = (untrusted.address() as { port: number }).port;
  plainPort = (plain.address() as { port: number }).port;
  echoPort = (echoTls.address() as { port: number }).port;
  store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys'), checkpointIntervalMs: 60_000 });
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  for (const srv of [https, untrusted, plain, echoTls]) {
    (srv as NetServer).close();
    (srv as HttpServer).closeAllConnections?.();
  }
  for (const s of rawSockets) s.destroy();
  await audit.close();
  await store.close();
  dir.cleanup();
});

function rules(): EgressRuleInput[] {
  const ports = [httpsPort, untrustedPort, plainPort, echoPort];
  const http = [
    { method: 'GET', path: '/ok', action: 'allow' as const }, { method: 'POST', path: '/ok', action: 'allow' as const },
    { method: 'GET', path: '/reset', action: 'allow' as const }, { method: 'GET', path: '/big', action: 'allow' as const },
    { method: 'DELETE', path: '/ok', action: 'approve' as const },
  ];
  return [
    { host: 'api.example.com', ports, rules: http },
    { host: 'untrusted.example.com', ports, rules: http },
    { host: 'blind.example.com', ports },
    { cidr: '127.0.0.1/32', ports, rules: http },
  ];
}

async function openDoor(sandboxId: string, proxy: EgressProxyOptions = {}) {
  const p = createEgressProxy({ lookup: async () => [{ address: '127.0.0.1', family: 4 }], ca, upstreamCa: upstreamCa.certPem, ...proxy });
  proxies.push(p);
  const door = p.openDoor({ sandboxId, agent: 'tester', agentConfig: { egress: rules() }, audit });
  const { port } = await door.listen(0, '127.0.0.1');
  return { door, port, proxy: p };
}

/** CONNECT, then wait for the response head; resolves with the status and the open socket. */
async function connectTo(port: number, target: string): Promise<{ status: number; head: string; socket: Socket }> {
  const socket = netConnect({ port, host: '127.0.0.1', noDelay: true });
  socket.on('error', () => undefined);
  socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  while (!buf.includes('\r\n\r\n')) {
    const chunk = await Promise.race([once(socket, 'data').then(([c]) => c as Buffer), once(socket, 'close').then(() => undefined)]);
    if (!chunk) break;
    buf = Buffer.concat([buf, chunk]);
  }
  socket.pause();
  const head = buf.toString('latin1').split('\r\n\r\n')[0]!;
  return { status: Number(head.split(' ')[1]), head, socket };
}

/** TLS over a tunnel, trusting only `trust`. */
async function tlsOver(socket: Socket, servername: string | undefined, trust = ca.certPem): Promise<TLSSocket> {
  const t = tlsConnect({ socket, ...(servername ? { servername } : {}), ca: trust, ALPNProtocols: ['http/1.1'], ...(servername ? {} : { checkServerIdentity: () => undefined }) });
  socket.resume();
  await once(t, 'secureConnect');
  return t;
}

interface Response { status: number; headers: Record<string, string>; body: string }

/** Read one HTTP/1.1 response with a Content-Length body (or up to the close). */
function readResponse(t: TLSSocket | Socket): Promise<Response> {
  return new Promise((resolve) => {
    let buf = (t as unknown as { leftover?: Buffer }).leftover ?? Buffer.alloc(0);
    const done = (r: Response, rest: Buffer): void => {
      t.off('data', onData);
      t.off('close', onClose);
      (t as unknown as { leftover?: Buffer }).leftover = rest;
      resolve(r);
    };
    const parse = (final: boolean): void => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) { if (final) done({ status: 0, headers: {}, body: buf.toString() }, Buffer.alloc(0)); return; }
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) { const i = l.indexOf(':'); headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim(); }
      const len = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
      const body = buf.subarray(end + 4);
      if (len !== undefined && body.length >= len) return done({ status: Number(lines[0]!.split(' ')[1]), headers, body: body.subarray(0, len).toString() }, body.subarray(len));
      if (final) done({ status: Number(lines[0]!.split(' ')[1]), headers, body: body.toString() }, Buffer.alloc(0));
    };
    const onData = (c: Buffer): void => { buf = Buffer.concat([buf, c]); parse(false); };
    const onClose = (): void => parse(true);
    t.on('data', onData);
    t.once('close', onClose);
    t.on('error', () => undefined);
    if (buf.length > 0) parse(false);
  });
}

async function events(sandbox: string, type: string, count: number): Promise<AuditEvent[]> {
  for (let i = 0; i < 300; i++) {
    const found = await queryEvents(store, { sandbox, type });
    if (found.length >= count) return found;
    await sleep(10);
  }
  throw new Error(`fewer than ${count} ${type} events for ${sandbox}: ${JSON.stringify((await queryEvents(store, { sandbox })).map((e) => [e.type, e.reason]))}`);
}

const get = (path: string, host: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;

test('an intercepted host: TLS ended with a CA leaf, each request decided, recorded and forwarded over verified TLS', async () => {
  const { port } = await openDoor('ic-allow');
  const c = await connectTo(port, `api.example.com:${httpsPort}`);
  assert.equal(c.status, 200);
  const t = await tlsOver(c.socket, 'api.example.com');
  assert.equal(t.authorized, true, 'the client trusts only the egress CA and accepts the leaf');
  assert.equal(t.alpnProtocol, 'http/1.1');
  const connsBefore = upstreamConnections;
  t.write(get('/ok?x=1', `api.example.com:${httpsPort}`, 'Proxy-Authorization: Basic eA==\r\nX-Keep: 1\r\n'));
  const first = await readResponse(t);
  assert.equal(first.status, 200, first.body);
  const seen = JSON.parse(first.body) as { method: string; url: string; headers: Record<string, string> };
  assert.equal(seen.url, '/ok?x=1');
  assert.equal(seen.headers.host, `api.example.com:${httpsPort}`);
  assert.equal(seen.headers['x-keep'], '1');
  assert.equal(seen.headers['proxy-authorization'], undefined);
  t.write(`POST /ok HTTP/1.1\r\nHost: api.example.com:${httpsPort}\r\nContent-Length: 5\r\n\r\nhello`);
  const second = await readResponse(t);
  assert.equal((JSON.parse(second.body) as { body: string }).body, 'hello');
  assert.equal(upstreamConnections - connsBefore, 1, 'both requests used one kept-alive upstream connection');
  t.destroy();
  const reqs = await events('ic-allow', 'egress.request', 3);
  assert.deepEqual(reqs.map((e) => [e.data.scheme, e.data.method, e.data.path, e.decision, e.reason]), [
    ['connect', 'CONNECT', undefined, 'allow', 'host-allowed'],
    ['https', 'GET', '/ok?x=1', 'allow', 'path-rule'],
    ['https', 'POST', '/ok', 'allow', 'path-rule'],
  ]);
  assert.equal(reqs[0]!.data.intercepted, true);
  assert.deepEqual({ address: reqs[1]!.data.address, sni: reqs[1]!.data.sni, ruleId: reqs[1]!.data.ruleId }, { address: '127.0.0.1', sni: 'api.example.com', ruleId: 'agents.tester.egress[0].rules[0]' });
  const closes = await events('ic-allow', 'egress.close', 3);
  const post = closes.find((e) => e.data.method === 'POST')!;
  assert.deepEqual({ reason: post.reason, status: post.data.status, bytesOut: post.data.bytesOut }, { reason: 'closed', status: 200, bytesOut: 5 });
  assert.ok((post.data.bytesIn as number) > 50);
});

const refusedInside: Array<{ name: string; request: string; status: number; reason: string }> = [
  { name: 'no rule for the path', request: get('/nope', 'api.example.com:PORT'), status: 403, reason: 'no-path-rule' },
  { name: 'an approve rule (no approvals yet)', request: 'DELETE /ok HTTP/1.1\r\nHost: api.example.com:PORT\r\n\r\n', status: 403, reason: 'approval-not-available' },
  { name: 'a Host naming another host than the tunnel', request: get('/ok', 'other.example.com:PORT'), status: 403, reason: 'host-mismatch' },
  { name: 'a Host with another port', request: get('/ok', 'api.example.com:1'), status: 403, reason: 'host-mismatch' },
  { name: 'no Host at all', request: 'GET /ok HTTP/1.1\r\n\r\n', status: 403, reason: 'host-mismatch' },
  { name: 'an absolute-form target', request: get('https://other.example.com/ok', 'api.example.com:PORT'), status: 400, reason: 'bad-request' },
  { name: 'a dot-segment path', request: get('/x/../ok', 'api.example.com:PORT'), status: 400, reason: 'bad-path' },
  { name: 'an oversized header', request: get('/ok', 'api.example.com:PORT', `X-Long: ${'a'.repeat(20_000)}\r\n`), status: 431, reason: 'headers-too-large' },
  { name: 'not HTTP inside the TLS', request: 'hello there\r\n\r\n', status: 400, reason: 'bad-request' },
];
for (const [i, c] of refusedInside.entries()) {
  test(`inside an intercepted tunnel: ${c.name} → ${c.status} ${c.reason}, recorded, nothing sent upstream`, async () => {
    const sandbox = `ic-refused-${i}`;
    const { port } = await openDoor(sandbox);
    const before = upstreamRequests;
    const conn = await connectTo(port, `api.example.com:${httpsPort}`);
    const t = await tlsOver(conn.socket, 'api.example.com');
    t.write(c.request.replaceAll('PORT', String(httpsPort)));
    const r = await readResponse(t);
    assert.equal(r.status, c.status, r.body);
    assert.equal(r.headers['x-cordon-error'], c.reason);
    const e = (await events(sandbox, 'egress.request', 2))[1]!;
    assert.equal(e.reason, c.reason);
    assert.equal(e.decision, 'deny');
    assert.equal(e.data.scheme, 'https');
    assert.equal(upstreamRequests, before, 'the upstream saw no request');
    t.destroy();
  });
}

test('an upstream whose certificate does not verify → 502 upstream-cert-invalid, recorded', async () => {
  const { port } = await openDoor('ic-untrusted');
  const conn = await connectTo(port, `untrusted.example.com:${untrustedPort}`);
  const t = await tlsOver(conn.socket, 'untrusted.example.com');
  const before = upstreamRequests;
  t.write(get('/ok', `untrusted.example.com:${untrustedPort}`));
  const r = await readResponse(t);
  assert.equal(r.status, 502);
  assert.equal(r.headers['x-cordon-error'], 'upstream-cert-invalid');
  const e = (await events('ic-untrusted', 'egress.request', 2))[1]!;
  assert.equal(e.reason, 'upstream-cert-invalid');
  assert.match(String(e.data.problem), /does not verify/);
  assert.equal(upstreamRequests, before);
});

test('without upstreamCa the system roots are used, which do not know the test CA', async () => {
  const { port } = await openDoor('ic-systemroots', { upstreamCa: undefined });
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  const t = await tlsOver(conn.socket, 'api.example.com');
  t.write(get('/ok', `api.example.com:${httpsPort}`));
  const r = await readResponse(t);
  assert.equal(r.headers['x-cordon-error'], 'upstream-cert-invalid');
});

test('an upstream that resets mid-response: the client gets a cut response and the close says upstream-error', async () => {
  const { port } = await openDoor('ic-reset');
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  const t = await tlsOver(conn.socket, 'api.example.com');
  t.write(get('/reset', `api.example.com:${httpsPort}`));
  const r = await readResponse(t);
  assert.equal(r.status, 200);
  assert.ok(r.body.length < 100_000, 'the body was cut off');
  const close = (await events('ic-reset', 'egress.close', 1)).find((e) => e.data.path === '/reset')!;
  assert.equal(close.reason, 'upstream-error');
  const again = await connectTo(port, `api.example.com:${httpsPort}`);
  const t2 = await tlsOver(again.socket, 'api.example.com');
  t2.write(get('/ok', `api.example.com:${httpsPort}`));
  assert.equal((await readResponse(t2)).status, 200, 'the door keeps serving');
  t2.destroy();
});

test('bytes that are not TLS after CONNECT to an intercepted host are refused (sni-invalid) before anything is dialled', async () => {
  const { port } = await openDoor('ic-notls');
  const before = upstreamConnections;
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  assert.equal(conn.status, 200);
  conn.socket.resume();
  conn.socket.write('GET /ok HTTP/1.1\r\nHost: api.example.com\r\n\r\n');
  await once(conn.socket, 'close');
  const e = (await events('ic-notls', 'egress.request', 1))[0]!;
  assert.deepEqual({ decision: e.decision, reason: e.reason }, { decision: 'deny', reason: 'sni-invalid' });
  assert.equal(upstreamConnections, before);
});

test('an SNI naming another host is refused for intercepted hosts too', async () => {
  const { port } = await openDoor('ic-sni');
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  const t = tlsConnect({ socket: conn.socket, servername: 'other.example.com', ca: ca.certPem });
  t.on('error', () => undefined);
  conn.socket.resume();
  await once(conn.socket, 'close');
  assert.equal((await events('ic-sni', 'egress.request', 1))[0]!.reason, 'sni-mismatch');
});

test('a client that rejects the leaf during the handshake (openssl s_client) → close reason client-tls-failed', async () => {
  const { port } = await openDoor('ic-distrust');
  const caFile = join(dir.path, 'wrong-ca.pem');
  writeFileSync(caFile, upstreamCa.certPem);
  const out = await new Promise<string>((resolve) => {
    execFile('openssl', ['s_client', '-proxy', `127.0.0.1:${port}`, '-connect', `api.example.com:${httpsPort}`, '-servername', 'api.example.com',
      '-CAfile', caFile, '-verify_return_error', '-brief'], { timeout: 10_000 }, (_err, stdout, stderr) => resolve(stdout + stderr));
  });
  assert.match(out, /verify error|unable to get local issuer/i);
  const close = (await events('ic-distrust', 'egress.close', 1))[0]!;
  assert.equal(close.reason, 'client-tls-failed');
  assert.match(String(close.data.problem), /trust the cordon egress CA/);
});

test('a Node client that does not trust the egress CA hangs up after the handshake; the close says so', async () => {
  const { port } = await openDoor('ic-distrust-node');
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  const t = tlsConnect({ socket: conn.socket, servername: 'api.example.com', ca: upstreamCa.certPem });
  conn.socket.resume();
  const [err] = await once(t, 'error') as [NodeJS.ErrnoException];
  assert.equal(err.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  const close = (await events('ic-distrust-node', 'egress.close', 1))[0]!;
  // Whether the server saw the client's Finished before the hang-up is a race: either reason names the likely cause.
  assert.ok(['client-closed', 'client-tls-failed'].includes(close.reason ?? ''), close.reason);
  assert.match(String(close.data.problem), /trust the cordon egress CA/);
});

test('an intercepted IP literal (no SNI) gets a leaf for the IP and is forwarded', async () => {
  const { port } = await openDoor('ic-ip');
  const conn = await connectTo(port, `127.0.0.1:${httpsPort}`);
  assert.equal(conn.status, 200);
  const t = tlsConnect({ socket: conn.socket, host: '127.0.0.1', ca: ca.certPem });
  conn.socket.resume();
  await once(t, 'secureConnect');
  assert.equal(t.authorized, true, 'the leaf carries the IP in its subjectAltName');
  t.write(get('/ok', `127.0.0.1:${httpsPort}`));
  assert.equal((await readResponse(t)).status, 200);
  t.destroy();
});

test('interception works on a guest stream handed to door.handle() (not a TCP socket)', async () => {
  const { door } = await openDoor('ic-stream');
  const toDoor = new PassThrough();
  const fromDoor = new PassThrough();
  door.handle(Duplex.from({ readable: toDoor, writable: fromDoor }));
  const client = Duplex.from({ readable: fromDoor, writable: toDoor });
  client.write(`CONNECT api.example.com:${httpsPort} HTTP/1.1\r\nHost: api.example.com\r\n\r\n`);
  let head = '';
  while (!head.includes('\r\n\r\n')) head += ((await once(client, 'data')) as [Buffer])[0].toString('latin1');
  assert.match(head, /^HTTP\/1.1 200 /);
  client.pause();
  const t = tlsConnect({ socket: client, servername: 'api.example.com', ca: ca.certPem });
  await once(t, 'secureConnect');
  t.write(get('/ok', `api.example.com:${httpsPort}`));
  const r = await readResponse(t);
  assert.equal(r.status, 200);
  assert.equal((JSON.parse(r.body) as { url: string }).url, '/ok');
  t.destroy();
  assert.equal((await events('ic-stream', 'egress.request', 2))[1]!.reason, 'path-rule');
});

test('without a CA, an intercepted host is refused with interception-not-available', async () => {
  const { port } = await openDoor('ic-noca', { ca: undefined });
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  assert.equal(conn.status, 403);
  assert.match(conn.head, /^X-Cordon-Error: interception-not-available$/m);
  conn.socket.destroy();
});

test('the request hook can add headers, note what it did, refuse, and fails closed', async () => {
  const hook: EgressProxyOptions['requestHook'] = (r) => {
    if (r.path === '/ok' && r.method === 'POST') throw new Error('vault down');
    if (r.headers['x-leak'] !== undefined) return { deny: { reason: 'secret-placeholder-misuse', problem: 'a placeholder was sent to the wrong host' } };
    r.headers.authorization = 'Bearer real-token';
    return {
      note: { substituted: ['github_token'] },
      body: (src) => src.pipe(new Transform({ transform(chunk: Buffer, _e, cb) { cb(null, chunk.toString().toUpperCase()); } })),
    };
  };
  const { port } = await openDoor('ic-hook', { requestHook: hook });
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  const t = await tlsOver(conn.socket, 'api.example.com');
  t.write(get('/ok', `api.example.com:${httpsPort}`));
  const ok = JSON.parse((await readResponse(t)).body) as { headers: Record<string, string> };
  assert.equal(ok.headers.authorization, 'Bearer real-token');
  t.write(get('/ok', `api.example.com:${httpsPort}`, 'X-Leak: 1\r\n'));
  const denied = await readResponse(t);
  assert.deepEqual([denied.status, denied.headers['x-cordon-error']], [403, 'secret-placeholder-misuse']);
  const plainHttp = netConnect({ port, host: '127.0.0.1' });
  plainHttp.write(`PUT http://127.0.0.1:${plainPort}/ok HTTP/1.1\r\nHost: 127.0.0.1:${plainPort}\r\nContent-Length: 3\r\n\r\nabc`);
  const put = await readResponse(plainHttp);
  assert.equal(put.headers['x-cordon-error'], 'no-path-rule', 'policy first: the hook never sees a denied request');
  const plain2 = netConnect({ port, host: '127.0.0.1' });
  plain2.write(`POST http://127.0.0.1:${plainPort}/ok HTTP/1.1\r\nHost: 127.0.0.1:${plainPort}\r\nContent-Length: 3\r\n\r\nabc`);
  const failed = await readResponse(plain2);
  assert.deepEqual([failed.status, failed.headers['x-cordon-error']], [403, 'request-hook-failed']);
  plainHttp.destroy();
  plain2.destroy();
  const reqs = await events('ic-hook', 'egress.request', 5);
  assert.deepEqual(reqs[1]!.data.hook, { substituted: ['github_token'] });
  assert.equal(reqs.find((e) => e.reason === 'secret-placeholder-misuse')?.decision, 'deny');
  t.destroy();
});

test('a body transform from the hook changes what the upstream receives', async () => {
  const { port } = await openDoor('ic-hook-body', {
    requestHook: (r) => {
      delete r.headers['content-length'];
      return { body: (src) => src.pipe(new Transform({ transform(chunk: Buffer, _e, cb) { cb(null, chunk.toString().replace('PLACEHOLDER', 'secret-value')); } })) };
    },
  });
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  const t = await tlsOver(conn.socket, 'api.example.com');
  const body = 'token=PLACEHOLDER';
  t.write(`POST /ok HTTP/1.1\r\nHost: api.example.com:${httpsPort}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  assert.equal((JSON.parse((await readResponse(t)).body) as { body: string }).body, 'token=secret-value');
  t.destroy();
});

/** A small internal service: says who called, what it saw. */
const whoami: InternalService = {
  name: 'llm',
  handle: (req, res, caller) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (req.url === '/fail') { res.destroy(); return; }
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ caller, url: req.url, headers: req.headers, body }));
    });
  },
};
const broken: InternalService = { name: 'mcp', handle: () => { throw new Error('boom'); } };

test('internal: plain http://llm.cordon.internal reaches the service as the door\'s sandbox; client x-cordon-* headers are dropped', async () => {
  const { port } = await openDoor('int-http', { internal: { 'llm.cordon.internal': whoami } });
  const s = netConnect({ port, host: '127.0.0.1' });
  s.write('POST http://llm.cordon.internal/v1/chat?q=1 HTTP/1.1\r\nHost: llm.cordon.internal\r\nX-Cordon-Sandbox: someone-else\r\nX-Cordon-Agent: admin\r\nContent-Length: 2\r\n\r\nhi');
  const r = await readResponse(s);
  assert.equal(r.status, 200);
  const seen = JSON.parse(r.body) as { caller: { sandboxId: string; agent: string }; url: string; headers: Record<string, string>; body: string };
  assert.deepEqual({ sandboxId: seen.caller.sandboxId, agent: seen.caller.agent }, { sandboxId: 'int-http', agent: 'tester' });
  assert.equal(seen.url, '/v1/chat?q=1');
  assert.equal(seen.body, 'hi');
  assert.equal(seen.headers['x-cordon-sandbox'], undefined);
  assert.equal(seen.headers['x-cordon-agent'], undefined);
  s.destroy();
  const e = (await events('int-http', 'egress.request', 1))[0]!;
  assert.deepEqual({ decision: e.decision, reason: e.reason, service: e.data.service, path: e.data.path, sandbox: e.sandbox }, { decision: 'allow', reason: 'internal', service: 'llm', path: '/v1/chat?q=1', sandbox: 'int-http' });
  const close = (await events('int-http', 'egress.close', 1))[0]!;
  assert.deepEqual({ status: close.data.status, bytesOut: close.data.bytesOut }, { status: 200, bytesOut: 2 });
  assert.ok((close.data.bytesIn as number) > 20);
});

test('internal: a service that reads the body only after an async step (token verification) still gets all of it', async () => {
  const late: InternalService = {
    name: 'llm',
    handle: async (req, res) => {
      await new Promise((r) => setTimeout(r, 100)); // the body has long arrived by now
      let body = '';
      for await (const d of req) body += (d as Buffer).toString();
      res.end(`late saw ${body}`);
    },
  };
  const { port } = await openDoor('int-late', { internal: { 'llm.cordon.internal': late } });
  const s = netConnect({ port, host: '127.0.0.1' });
  s.write('POST http://llm.cordon.internal/v1/x HTTP/1.1\r\nHost: llm.cordon.internal\r\nContent-Length: 5\r\n\r\nhello');
  const r = await readResponse(s);
  s.destroy();
  assert.deepEqual([r.status, r.body], [200, 'late saw hello']);
  const close = (await events('int-late', 'egress.close', 1))[0]!;
  assert.equal(close.data.bytesOut, 5, 'the body is still counted');
});

test('internal: CONNECT llm.cordon.internal:443 is terminated with a CA leaf and dispatched to the service', async () => {
  const { port } = await openDoor('int-tls', { internal: { 'llm.cordon.internal': whoami } });
  const conn = await connectTo(port, 'llm.cordon.internal:443');
  assert.equal(conn.status, 200);
  const t = await tlsOver(conn.socket, 'llm.cordon.internal');
  t.write(get('/v1/models', 'llm.cordon.internal', 'X-Cordon-Sandbox: spoof\r\n'));
  const r = await readResponse(t);
  const seen = JSON.parse(r.body) as { caller: { sandboxId: string }; headers: Record<string, string> };
  assert.equal(seen.caller.sandboxId, 'int-tls');
  assert.equal(seen.headers['x-cordon-sandbox'], undefined);
  t.write(get('/v1/models', 'mcp.cordon.internal'));
  assert.equal((await readResponse(t)).headers['x-cordon-error'], 'host-mismatch');
  t.destroy();
  const reqs = await events('int-tls', 'egress.request', 3);
  assert.deepEqual(reqs.map((e) => [e.data.scheme, e.reason, e.data.service]), [['connect', 'internal', 'llm'], ['https', 'internal', 'llm'], ['https', 'host-mismatch', undefined]]);
});

const internalRefusals: Array<{ name: string; line: string; status: number; reason: string }> = [
  { name: 'an unknown internal name', line: 'GET http://db.cordon.internal/ HTTP/1.1', status: 404, reason: 'internal-unknown' },
  { name: 'a known name with no service running', line: 'GET http://approvals.cordon.internal/ HTTP/1.1', status: 503, reason: 'internal-not-available' },
  { name: 'a service that throws', line: 'GET http://mcp.cordon.internal/ HTTP/1.1', status: 502, reason: 'internal-error' },
];
for (const [i, c] of internalRefusals.entries()) {
  test(`internal: ${c.name} → ${c.status} ${c.reason}`, async () => {
    const sandbox = `int-refused-${i}`;
    const { port } = await openDoor(sandbox, { internal: { 'llm.cordon.internal': whoami, 'mcp.cordon.internal': broken } });
    const s = netConnect({ port, host: '127.0.0.1' });
    s.write(`${c.line}\r\nHost: x\r\n\r\n`);
    const r = await readResponse(s);
    assert.equal(r.status, c.status);
    assert.equal(r.headers['x-cordon-error'], c.reason);
    const all = [...await events(sandbox, 'egress.request', 1), ...await queryEvents(store, { sandbox, type: 'egress.close' })];
    assert.ok(all.some((e) => e.reason === c.reason), `an event says ${c.reason}`);
    s.destroy();
  });
}

test('internal: bad registrations are refused when the proxy is created', () => {
  assert.throws(() => createEgressProxy({ internal: { 'db.cordon.internal': whoami } }), InvalidInputError);
  assert.throws(() => createEgressProxy({ internal: { 'llm.example.com': whoami } }), InvalidInputError);
  assert.throws(() => createEgressProxy({ internal: { 'llm.cordon.internal': {} as InternalService } }), InvalidInputError);
  assert.throws(() => createEgressProxy({ upstreamCa: 'not pem' }), InvalidInputError);
  assert.equal(createEgressProxy({ ca }).caCertPem, ca.certPem);
  assert.equal(createEgressProxy({}).caCertPem, undefined);
});

test('bytes out per minute: a sliding window in one-second buckets', () => {
  let now = 1_000_000;
  const w = createByteWindow(100, () => now);
  assert.equal(w.add(60), true);
  now += 30_000;
  assert.equal(w.add(40), true);
  assert.equal(w.add(1), false);
  assert.equal(w.exceeded, true);
  now += 30_500; // the first 60 bytes are now older than 60 s
  assert.equal(w.exceeded, false);
  assert.equal(w.used, 41);
  now += 120_000;
  assert.equal(w.used, 0);
});

test('bytes out per minute: going over closes the door\'s running tunnels and refuses new requests with 429', async () => {
  const { port } = await openDoor('bo-limit', { limits: { maxBytesOutPerMinute: 20_000 } });
  // An idle blind tunnel, open before the limit trips.
  const idle = await connectTo(port, `blind.example.com:${echoPort}`);
  const idleTls = tlsConnect({ socket: idle.socket, servername: 'blind.example.com' });
  idleTls.on('error', () => undefined);
  idle.socket.resume();
  await events('bo-limit', 'egress.request', 1);
  // A second tunnel that sends too much.
  const busy = await connectTo(port, `blind.example.com:${echoPort}`);
  const busyTls = tlsConnect({ socket: busy.socket, servername: 'blind.example.com' });
  busyTls.on('error', () => undefined);
  busy.socket.resume();
  await events('bo-limit', 'egress.request', 2);
  for (let i = 0; i < 30 && !busy.socket.destroyed; i++) {
    busy.socket.write(Buffer.alloc(1000));
    await sleep(5);
  }
  if (!idle.socket.destroyed) await once(idle.socket, 'close');
  const closes = await events('bo-limit', 'egress.close', 2);
  assert.deepEqual(closes.map((e) => e.reason), ['bytes-out-limit', 'bytes-out-limit'], 'both tunnels were closed with the reason');
  const s = netConnect({ port, host: '127.0.0.1' });
  s.write(`GET http://127.0.0.1:${plainPort}/ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const r = await readResponse(s);
  assert.deepEqual([r.status, r.headers['x-cordon-error']], [429, 'bytes-out-limit']);
  const c = await connectTo(port, `blind.example.com:${echoPort}`);
  assert.equal(c.status, 429);
  assert.match(c.head, /^X-Cordon-Error: bytes-out-limit$/m);
  c.socket.destroy();
  s.destroy();
  const refusals = (await events('bo-limit', 'egress.request', 4)).filter((e) => e.reason === 'bytes-out-limit');
  assert.equal(refusals.length, 2);
  // Internal services stay reachable: model calls are metered by the gateway, not here.
});

test('bytes out per minute: an intercepted upload over the limit is cut off with 429', async () => {
  const { port } = await openDoor('bo-upload', { limits: { maxBytesOutPerMinute: 10_000 } });
  const conn = await connectTo(port, `api.example.com:${httpsPort}`);
  const t = await tlsOver(conn.socket, 'api.example.com');
  t.write(`POST /ok HTTP/1.1\r\nHost: api.example.com:${httpsPort}\r\nContent-Length: 50000\r\n\r\n`);
  for (let i = 0; i < 50 && !t.destroyed; i++) t.write(Buffer.alloc(1000));
  const r = await readResponse(t);
  assert.ok(r.status === 429 || r.status === 0, `429 or cut (${r.status})`);
  const close = (await events('bo-upload', 'egress.close', 1)).find((e) => e.data.method === 'POST')!;
  assert.equal(close.reason, 'bytes-out-limit');
});

test('request rate inside an intercepted tunnel: the tunnel and each request spend one token; past the burst of 3, 429 request-rate-limit with Retry-After, nothing sent upstream', async () => {
  // One token back every 1,000 s: no machine is slow enough to see one come back during the test.
  const { port } = await openDoor('ic-rate', { limits: { maxRequestsPerSecond: 0.001, requestBurst: 3 } });
  const before = upstreamRequests;
  const c = await connectTo(port, `api.example.com:${httpsPort}`);
  assert.equal(c.status, 200, 'the tunnel takes the first token');
  const t = await tlsOver(c.socket, 'api.example.com');
  const answers: string[] = [];
  for (let i = 1; i <= 3; i++) {
    t.write(get(`/ok?n=${i}`, `api.example.com:${httpsPort}`));
    const r = await readResponse(t);
    answers.push([r.status, r.headers['x-cordon-error'] ?? '-', r.headers['retry-after'] ?? '-'].join(' '));
  }
  t.destroy();
  assert.deepEqual(answers, ['200 - -', '200 - -', '429 request-rate-limit 1000']);
  assert.equal(upstreamRequests, before + 2, 'the refused request never reached the upstream');
  const again = await connectTo(port, `api.example.com:${httpsPort}`);
  assert.equal(again.status, 429, 'a new tunnel spends from the same rate');
  assert.match(again.head, /^X-Cordon-Error: request-rate-limit$/mi);
  again.socket.destroy();
  const reqs = await events('ic-rate', 'egress.request', 5);
  assert.deepEqual(reqs.map((e) => [e.data.scheme, e.data.path ?? null, e.decision, e.reason]), [
    ['connect', null, 'allow', 'host-allowed'],
    ['https', '/ok?n=1', 'allow', 'path-rule'],
    ['https', '/ok?n=2', 'allow', 'path-rule'],
    ['https', '/ok?n=3', 'deny', 'request-rate-limit'],
    ['connect', null, 'deny', 'request-rate-limit'],
  ]);
});

const STATUSES: Array<[reason: string, status: number]> = [
  ['host-mismatch', 403], ['approval-not-available', 403], ['interception-not-available', 403], ['request-hook-failed', 403],
  ['client-tls-failed', 403], ['internal-unknown', 404], ['internal-not-available', 503], ['internal-error', 502],
  ['bytes-out-limit', 429], ['request-rate-limit', 429], ['internal-rate-limit', 429], ['upstream-cert-invalid', 502], ['upstream-tls-failed', 502],
];
test('statusForReason covers the interception, internal and bytes-out reasons, all listed in PROXY_REASONS', () => {
  for (const [reason, status] of STATUSES) {
    assert.equal(statusForReason(reason), status, reason);
    if (reason !== 'internal-unknown') assert.ok((PROXY_REASONS as readonly string[]).includes(reason), `${reason} is in PROXY_REASONS`);
  }
  assert.ok(EGRESS_REASONS.includes('internal-unknown'), 'internal-unknown is the policy\'s reason');
});
