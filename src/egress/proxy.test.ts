/**
 * Egress proxy tests over loopback: a door per test (its own sandbox id), a
 * local TLS upstream with a self-signed certificate made by the `openssl` CLI,
 * a local HTTP upstream, names mapped to 127.0.0.1 by an injected resolver,
 * and every outcome checked in the audit log (reason included).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import { connect as tlsConnect, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { AuditLog, queryEvents, type AuditEvent } from '../audit/index.js';
import { openStore, type Store } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { InvalidInputError } from '../errors/index.js';
import { createEgressProxy, egressLimitsSchema, mergeLimits, resolveLimits, retryAfterForReason, type EgressAuditSink, type EgressProxy, type EgressProxyOptions } from './index.js';
import type { EgressRuleInput } from '../policy/index.js';

const NAMES: Record<string, string> = {
  'upstream.example.com': '127.0.0.1', 'other.example.com': '127.0.0.1', 'api.example.com': '127.0.0.1',
  'reset.example.com': '127.0.0.1', 'private.example.com': '10.0.0.7',
};

let dir: { path: string; cleanup: () => void };
let store: Store;
let audit: AuditLog;
let cert: Buffer;
let tlsServer: TlsServer;
let httpServer: HttpServer;
let resetServer: NetServer;
let tlsPort: number;
let httpPort: number;
let resetPort: number;
let tlsAccepted = 0;
let httpRequests = 0;
const proxies: EgressProxy[] = [];

before(async () => {
  dir = tempDir('cordon-egress-');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=upstream.example.com', '-addext', 'subjectAltName=DNS:upstream.example.com',
    '-keyout', join(dir.path, 'key.pem'), '-out', join(dir.path, 'cert.pem'),
  ], { stdio: 'ignore' });
  cert = readFileSync(join(dir.path, 'cert.pem'));
  tlsServer = createTlsServer({ key: readFileSync(join(dir.path, 'key.pem')), cert }, (s) => {
    tlsAccepted += 1;
    s.on('data', (d: Buffer) => s.write(`pong:${d.toString()}`));
    s.on('error', () => undefined);
  });
  httpServer = createHttpServer((req, res) => {
    httpRequests += 1;
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body })));
  });
  resetServer = createNetServer((s) => s.on('data', () => s.resetAndDestroy()));
  for (const srv of [tlsServer, httpServer, resetServer]) {
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
  }
  tlsPort = (tlsServer.address() as { port: number }).port;
  httpPort = (httpServer.address() as { port: number }).port;
  resetPort = (resetServer.address() as { port: number }).port;
  store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys'), checkpointIntervalMs: 60_000 });
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  for (const srv of [tlsServer, httpServer, resetServer]) srv.close();
  await audit.close();
  await store.close();
  dir.cleanup();
});

/** The test policy: the named upstreams on the test ports, plus loopback through a CIDR rule unless told otherwise. */
function rules(withLoopback = true): EgressRuleInput[] {
  const ports = [tlsPort, httpPort, resetPort];
  return [
    { host: 'upstream.example.com', ports },
    { host: 'other.example.com', ports },
    { host: 'reset.example.com', ports },
    { host: 'private.example.com', ports },
    { host: 'api.example.com', ports, rules: [{ method: 'GET', path: '/ok', action: 'allow' }, { method: 'DELETE', path: '/ok', action: 'approve' }] },
    ...(withLoopback ? [{ cidr: '127.0.0.1/32', ports }] : []),
  ];
}

async function openDoor(sandboxId: string, o: { egress?: EgressRuleInput[]; sink?: EgressAuditSink; proxy?: EgressProxyOptions; report?: boolean } = {}) {
  const proxy = createEgressProxy({ lookup: async (h) => (NAMES[h] ? [{ address: NAMES[h]!, family: 4 }] : []), ...o.proxy });
  proxies.push(proxy);
  const door = proxy.openDoor({ sandboxId, agent: 'tester', agentConfig: { egress: o.egress ?? rules(), ...(o.report ? { egressMode: 'report' as const } : {}) }, audit: o.sink ?? audit });
  const { port } = await door.listen(0, '127.0.0.1');
  return { door, port };
}

/** Send raw bytes, read the response head; resolves with status, headers and the still-open socket. */
async function rawRequest(port: number, text: string): Promise<{ status: number; head: string; socket: Socket; rest: Buffer }> {
  const socket = netConnect({ port, host: '127.0.0.1', noDelay: true });
  socket.on('error', () => undefined);
  socket.write(text);
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      const head = buf.subarray(0, end).toString();
      resolve({ status: Number(head.split(' ')[1]), head, socket, rest: buf.subarray(end + 4) });
    };
    const onClose = (): void => resolve({ status: 0, head: buf.toString(), socket, rest: Buffer.alloc(0) });
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

const connectReq = (target: string) => `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`;

/** TLS over an established tunnel: send `ping`, return what came back or the error. */
function tlsPing(socket: Duplex, servername: string): Promise<string> {
  return new Promise((resolve) => {
    const t = tlsConnect({ socket, servername, ca: cert, ...(servername === '' ? { checkServerIdentity: () => undefined } : {}) });
    t.once('secureConnect', () => t.write('ping'));
    t.once('data', (d: Buffer) => { resolve(d.toString()); t.destroy(); });
    t.once('error', (err) => resolve(`error:${(err as NodeJS.ErrnoException).code ?? err.message}`));
    t.once('close', () => resolve('closed'));
    socket.resume();
  });
}

/** Wait until the sandbox has an event of this type (the door writes it right after answering). */
async function eventOf(sandbox: string, type = 'egress.request', count = 1): Promise<AuditEvent> {
  for (let i = 0; i < 200; i++) {
    const events = await queryEvents(store, { sandbox, type });
    if (events.length >= count) return events[count - 1]!;
    await sleep(10);
  }
  throw new Error(`no ${type} event #${count} for ${sandbox}`);
}

test('an allowed host via CONNECT reaches the TLS upstream through the checked loopback address', async () => {
  const { port } = await openDoor('sb-allow');
  const r = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(r.status, 200);
  assert.equal(await tlsPing(r.socket, 'upstream.example.com'), 'pong:ping');
  const e = await eventOf('sb-allow');
  assert.equal(e.decision, 'allow');
  assert.equal(e.reason, 'host-allowed');
  assert.equal(e.agent, 'tester');
  assert.equal(e.actor, 'agent:tester');
  assert.deepEqual(
    { host: e.data.host, port: e.data.port, address: e.data.address, sni: e.data.sni, ruleId: e.data.ruleId, method: e.data.method },
    { host: 'upstream.example.com', port: tlsPort, address: '127.0.0.1', sni: 'upstream.example.com', ruleId: 'agents.tester.egress[0]', method: 'CONNECT' },
  );
  const closed = await eventOf('sb-allow', 'egress.close');
  assert.ok((closed.data.bytesOut as number) > 100, 'the ClientHello and ping went out');
  assert.ok((closed.data.bytesIn as number) > 100, 'the server flight and pong came in');
});

const refused: Array<{ name: string; target: string; egress?: () => EgressRuleInput[]; status: number; reason: string; address?: string }> = [
  { name: 'loopback without a cidr rule', target: 'upstream.example.com:TLS', egress: () => rules(false), status: 403, reason: 'loopback-address', address: '127.0.0.1' },
  { name: 'a name resolving to a private address', target: 'private.example.com:TLS', status: 403, reason: 'private-address', address: '10.0.0.7' },
  { name: 'an unlisted host', target: 'evil.example.net:443', status: 403, reason: 'host-not-allowed' },
  { name: 'a port not allowed', target: 'upstream.example.com:1', status: 403, reason: 'port-not-allowed' },
  { name: 'an IP literal', target: '10.1.2.3:443', status: 403, reason: 'ip-literal' },
  { name: 'an IP literal in hex', target: '0x0a010203:443', status: 403, reason: 'ip-literal' },
  { name: 'a host that needs interception', target: 'api.example.com:TLS', status: 403, reason: 'interception-not-available' },
  { name: 'an unknown internal name', target: 'db.cordon.internal:443', status: 404, reason: 'internal-unknown' },
  { name: 'a target without a port', target: 'upstream.example.com', status: 400, reason: 'bad-request' },
  { name: 'a name that does not resolve', target: 'nowhere.example.com:TLS', egress: () => [{ host: 'nowhere.example.com', ports: [tlsPort] }], status: 502, reason: 'no-address' },
];
for (const [i, c] of refused.entries()) {
  test(`CONNECT refused: ${c.name} → ${c.status} ${c.reason}`, async () => {
    const sandbox = `sb-refused-${i}`;
    const { port } = await openDoor(sandbox, c.egress ? { egress: c.egress() } : {});
    const r = await rawRequest(port, connectReq(c.target.replace('TLS', String(tlsPort))));
    assert.equal(r.status, c.status, r.head);
    assert.match(r.head, new RegExp(`^X-Cordon-Error: ${c.reason}$`, 'mi'));
    const e = await eventOf(sandbox);
    assert.equal(e.reason, c.reason);
    assert.notEqual(e.decision, 'allow');
    if (c.address) assert.equal(e.data.address, c.address);
    r.socket.destroy();
  });
}

const sniCases: Array<{ name: string; servername: string; reason: string }> = [
  { name: 'an SNI naming another host', servername: 'other.example.com', reason: 'sni-mismatch' },
  { name: 'no SNI at all', servername: '', reason: 'sni-missing' },
];
for (const c of sniCases) {
  test(`CONNECT then ${c.name} is closed (${c.reason}) before any byte reaches the upstream`, async () => {
    const sandbox = `sb-${c.reason}`;
    const { port } = await openDoor(sandbox);
    const before = tlsAccepted;
    const r = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
    assert.equal(r.status, 200);
    assert.match(await tlsPing(r.socket, c.servername), /^(error:|closed)/);
    const e = await eventOf(sandbox);
    assert.equal(e.decision, 'deny');
    assert.equal(e.reason, c.reason);
    assert.equal(tlsAccepted, before, 'the upstream never completed a handshake');
  });
}

/** A duplex over a socket that writes one byte per event-loop turn. */
function byteByByte(sock: Socket): Duplex {
  const d = new Duplex({
    read() { sock.resume(); },
    write(chunk: Buffer, _enc, cb) {
      let i = 0;
      const next = (): void => {
        if (i >= chunk.length) return cb();
        sock.write(chunk.subarray(i, i + 1));
        i += 1;
        setImmediate(next);
      };
      next();
    },
    final(cb) { sock.end(); cb(); },
  });
  sock.on('data', (c: Buffer) => { if (!d.push(c)) sock.pause(); });
  sock.on('end', () => d.push(null));
  sock.on('close', () => d.destroy());
  return d;
}

test('a ClientHello written one byte at a time still passes the SNI check', async () => {
  const { port } = await openDoor('sb-split');
  const r = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(r.status, 200);
  assert.equal(await tlsPing(byteByByte(r.socket), 'upstream.example.com'), 'pong:ping');
  assert.equal((await eventOf('sb-split')).reason, 'host-allowed');
});

test('plain HTTP is forwarded to the checked address with Host kept and proxy headers stripped', async () => {
  const { port } = await openDoor('sb-http');
  const r = await rawRequest(port, [
    `POST http://upstream.example.com:${httpPort}/a/b?x=1 HTTP/1.1`, `Host: upstream.example.com:${httpPort}`,
    'Proxy-Authorization: Basic c2VjcmV0', 'Connection: close, X-Drop', 'X-Drop: 1', 'X-Keep: 2', 'Content-Length: 5', '', 'hello',
  ].join('\r\n'));
  assert.equal(r.status, 200);
  let body = r.rest.toString();
  for await (const chunk of r.socket.resume()) body += (chunk as Buffer).toString();
  const seen = JSON.parse(body) as { method: string; url: string; headers: Record<string, string>; body: string };
  assert.deepEqual({ method: seen.method, url: seen.url, body: seen.body }, { method: 'POST', url: '/a/b?x=1', body: 'hello' });
  assert.equal(seen.headers.host, `upstream.example.com:${httpPort}`);
  assert.equal(seen.headers['x-keep'], '2');
  assert.equal(seen.headers['proxy-authorization'], undefined);
  assert.equal(seen.headers['x-drop'], undefined, 'a header named by Connection is hop-by-hop');
  const e = await eventOf('sb-http');
  assert.deepEqual(
    { decision: e.decision, reason: e.reason, method: e.data.method, path: e.data.path, address: e.data.address },
    { decision: 'allow', reason: 'host-allowed', method: 'POST', path: '/a/b?x=1', address: '127.0.0.1' },
  );
  const closed = await eventOf('sb-http', 'egress.close');
  assert.equal(closed.data.bytesOut, 5);
  assert.equal(closed.data.bytesIn, body.length);
});

const httpCases: Array<{ name: string; line: string; status: number; reason: string }> = [
  { name: 'a path rule allows GET /ok', line: 'GET http://api.example.com:PORT/ok HTTP/1.1', status: 200, reason: 'path-rule' },
  { name: 'no path rule for POST /ok', line: 'POST http://api.example.com:PORT/ok HTTP/1.1', status: 403, reason: 'no-path-rule' },
  { name: 'an approve rule (no approvals yet)', line: 'DELETE http://api.example.com:PORT/ok HTTP/1.1', status: 403, reason: 'approval-not-available' },
  { name: 'a declared body over the limit', line: 'POST http://upstream.example.com:PORT/up HTTP/1.1\r\nContent-Length: 2000', status: 413, reason: 'body-too-large' },
  { name: 'an unlisted host', line: 'GET http://evil.example.net/ HTTP/1.1', status: 403, reason: 'host-not-allowed' },
  { name: 'an origin-form request', line: 'GET /local HTTP/1.1', status: 400, reason: 'bad-request' },
  { name: 'credentials in the URI', line: 'GET http://u:p@upstream.example.com:PORT/ HTTP/1.1', status: 400, reason: 'bad-request' },
];
for (const [i, c] of httpCases.entries()) {
  test(`plain HTTP: ${c.name} → ${c.status} ${c.reason}`, async () => {
    const sandbox = `sb-http-${i}`;
    const { port } = await openDoor(sandbox, { proxy: { limits: { maxRequestBodyBytes: 1000 } } });
    const r = await rawRequest(port, `${c.line.replace(':PORT', `:${httpPort}`)}\r\nHost: x\r\n\r\n`);
    assert.equal(r.status, c.status, r.head);
    if (c.status !== 200) assert.match(r.head, new RegExp(`^X-Cordon-Error: ${c.reason}$`, 'mi'));
    assert.equal((await eventOf(sandbox)).reason, c.reason);
    r.socket.destroy();
  });
}

test('a chunked body that grows past the limit is cut off with 413', async () => {
  const { port } = await openDoor('sb-body', { proxy: { limits: { maxRequestBodyBytes: 1000 } } });
  const chunk = `400\r\n${'x'.repeat(1024)}\r\n`;
  const r = await rawRequest(port, `POST http://upstream.example.com:${httpPort}/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}`);
  assert.equal(r.status, 413);
  assert.match(r.head, /^X-Cordon-Error: body-too-large$/m);
  assert.equal((await eventOf('sb-body', 'egress.close')).reason, 'body-too-large');
  r.socket.destroy();
});

test('garbage instead of HTTP gets 400 and is closed; an over-long header gets 431', async () => {
  const { port } = await openDoor('sb-garbage');
  const g = await rawRequest(port, '\x16\x03\x01 not http at all\r\n\r\n');
  assert.equal(g.status, 400);
  assert.match(g.head, /^X-Cordon-Error: bad-request$/m);
  assert.equal((await eventOf('sb-garbage')).reason, 'bad-request');
  const long = await rawRequest(port, `GET http://upstream.example.com:${httpPort}/ HTTP/1.1\r\nX-Long: ${'a'.repeat(20_000)}\r\n\r\n`);
  assert.equal(long.status, 431);
  assert.match(long.head, /^X-Cordon-Error: headers-too-large$/m);
  assert.equal((await eventOf('sb-garbage', 'egress.request', 2)).reason, 'headers-too-large');
});

test('a client that never finishes its request head is closed after the handshake timeout', async () => {
  const { port } = await openDoor('sb-slow', { proxy: { limits: { handshakeTimeoutMs: 300 } } });
  const started = Date.now();
  const r = await rawRequest(port, 'GET http://upstream.example.com/ HTTP/1.1\r\nX-Slow: 1\r\n');
  assert.equal(r.status, 408);
  assert.match(r.head, /^X-Cordon-Error: handshake-timeout$/m);
  assert.ok(Date.now() - started < 3000, 'closed soon after the timeout');
  assert.equal((await eventOf('sb-slow')).reason, 'handshake-timeout');
});

test('connections beyond the per-door cap are refused with 429', async () => {
  const { door, port } = await openDoor('sb-cap', { proxy: { limits: { maxConnections: 2 } } });
  const held = [netConnect({ port, host: '127.0.0.1' }), netConnect({ port, host: '127.0.0.1' })];
  await Promise.all(held.map((s) => once(s, 'connect')));
  while (door.activeConnections < 2) await sleep(5);
  const r = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(r.status, 429);
  assert.equal((await eventOf('sb-cap')).reason, 'too-many-connections');
  for (const s of held) s.destroy();
});

test('an upstream that resets is handled: the client is closed and the door keeps serving', async () => {
  const { port } = await openDoor('sb-reset');
  const r = await rawRequest(port, connectReq(`reset.example.com:${resetPort}`));
  assert.equal(r.status, 200);
  assert.match(await tlsPing(r.socket, 'reset.example.com'), /^(error:|closed)/);
  const closed = await eventOf('sb-reset', 'egress.close');
  assert.equal(closed.data.host, 'reset.example.com');
  const h = await rawRequest(port, `GET http://reset.example.com:${resetPort}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(h.status, 502);
  assert.match(h.head, /^X-Cordon-Error: upstream-error$/m);
  h.socket.destroy();
  const again = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(await tlsPing(again.socket, 'upstream.example.com'), 'pong:ping');
});

test('when the audit log cannot write, nothing is forwarded', async () => {
  const failing: EgressAuditSink = { append: async () => { throw new Error('disk full'); } };
  const { port } = await openDoor('sb-noaudit', { sink: failing });
  const before = tlsAccepted;
  const r = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.match(await tlsPing(r.socket, 'upstream.example.com'), /^(error:|closed)/);
  assert.equal(tlsAccepted, before, 'the upstream never saw a handshake');
  const h = await rawRequest(port, `GET http://upstream.example.com:${httpPort}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(h.status, 503);
  assert.match(h.head, /^X-Cordon-Error: audit-unavailable$/m);
  h.socket.destroy();
});

test('a guest stream handed to door.handle() works, even with a ClientHello in 1-byte chunks', async () => {
  const { door } = await openDoor('sb-stream');
  const toDoor = new PassThrough();
  const fromDoor = new PassThrough();
  door.handle(Duplex.from({ readable: toDoor, writable: fromDoor }));
  const chunks: number[] = [];
  const client = new Duplex({
    read() { fromDoor.resume(); },
    write(chunk: Buffer, _enc, cb) {
      if (chunks.length === 0) { toDoor.write(chunk); chunks.push(chunk.length); return cb(); }
      for (const b of chunk) toDoor.write(Buffer.from([b]));
      chunks.push(chunk.length);
      cb();
    },
  });
  fromDoor.on('data', (c: Buffer) => client.push(c));
  client.write(connectReq(`upstream.example.com:${tlsPort}`));
  const head = await new Promise<string>((resolve) => {
    let text = '';
    const onData = (c: Buffer): void => {
      text += c.toString('latin1');
      if (text.includes('\r\n\r\n')) { client.off('data', onData); client.pause(); resolve(text); }
    };
    client.on('data', onData);
  });
  assert.match(head, /^HTTP\/1.1 200 /);
  assert.equal(await tlsPing(client, 'upstream.example.com'), 'pong:ping');
  assert.equal((await eventOf('sb-stream')).data.sni, 'upstream.example.com');
});

test('a quiet tunnel is closed after the idle timeout and the close says so', async () => {
  const { port } = await openDoor('sb-idle', { proxy: { limits: { idleTimeoutMs: 300 } } });
  const r = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  const t = tlsConnect({ socket: r.socket, servername: 'upstream.example.com', ca: cert });
  t.on('error', () => undefined);
  r.socket.resume();
  await once(t, 'secureConnect');
  await once(t, 'close');
  const closed = await eventOf('sb-idle', 'egress.close');
  assert.equal(closed.reason, 'idle-timeout');
});

test('report mode forwards what enforce would deny and records the would-deny reason', async () => {
  const { port } = await openDoor('sb-report', { egress: [{ cidr: '127.0.0.1/32', ports: [httpPort] }], report: true });
  const r = await rawRequest(port, `GET http://upstream.example.com:${httpPort}/ HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(r.status, 200);
  const e = await eventOf('sb-report');
  assert.deepEqual({ decision: e.decision, reason: e.reason, wouldDeny: e.data.wouldDeny }, { decision: 'allow', reason: 'report-only', wouldDeny: { reason: 'host-not-allowed' } });
  r.socket.destroy();
});

test('the proxy dials exactly the address it checked, after one lookup (no rebinding window)', async () => {
  let lookups = 0;
  const dialled: string[] = [];
  const { port } = await openDoor('sb-rebind', {
    proxy: {
      // A rebinding resolver: loopback (allowed by the cidr rule) first, the metadata address after.
      lookup: async () => [{ address: lookups++ === 0 ? '127.0.0.1' : '169.254.169.254', family: 4 }],
      dial: (address, p) => { dialled.push(address); return netConnect({ host: address, port: p }); },
    },
  });
  const r = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(await tlsPing(r.socket, 'upstream.example.com'), 'pong:ping');
  assert.equal(lookups, 1);
  assert.deepEqual(dialled, ['127.0.0.1']);
  const second = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(second.status, 403);
  assert.match(second.head, /^X-Cordon-Error: metadata-address$/m);
  assert.deepEqual(dialled, ['127.0.0.1'], 'the refused address was never dialled');
  second.socket.destroy();
});

test('a ClientHello sent before the 200 arrives (pipelined) is not lost', async () => {
  const slowLookup: EgressProxyOptions['lookup'] = async (h) => { await sleep(150); return NAMES[h] ? [{ address: NAMES[h]!, family: 4 }] : []; };
  const { port } = await openDoor('sb-pipelined', { proxy: { lookup: slowLookup } });
  const socket = netConnect({ port, host: '127.0.0.1', noDelay: true });
  socket.on('error', () => undefined);
  socket.write(connectReq(`upstream.example.com:${tlsPort}`));
  await sleep(50);
  // A TLS client that does not wait for the 200: its hello goes out now, in its own packet.
  const t = tlsConnect({ socket, servername: 'other.example.com', ca: cert });
  t.on('error', () => undefined);
  const e = await eventOf('sb-pipelined');
  assert.equal(e.reason, 'sni-mismatch', 'the early hello was read, not lost (which would be sni-timeout)');
  t.destroy();
});

test('the connect hook runs before DNS: a refused CONNECT never reaches the resolver or the upstream', async () => {
  const looked: string[] = [];
  const seen: Array<{ sandboxId: string; host: string; port: number }> = [];
  const proxy = createEgressProxy({
    lookup: async (h) => {
      looked.push(h);
      return NAMES[h] ? [{ address: NAMES[h]!, family: 4 }] : [];
    },
    connectHook: (r) => {
      seen.push({ sandboxId: r.sandboxId, host: r.host, port: r.port });
      if (r.host === 'other.example.com') return { deny: { reason: 'secret-exfiltration', problem: 'the host name carries a placeholder' } };
      if (r.host === 'reset.example.com') throw new Error('hook broke');
      return undefined;
    },
  });
  proxies.push(proxy);
  const door = proxy.openDoor({ sandboxId: 'sb-connect-hook', agent: 'tester', agentConfig: { egress: rules() }, audit });
  const { port } = await door.listen(0, '127.0.0.1');
  const before = tlsAccepted;
  const cases = [
    { name: 'denied by the hook', host: 'other.example.com', status: 403, reason: 'secret-exfiltration' },
    { name: 'a hook that throws fails closed', host: 'reset.example.com', status: 403, reason: 'request-hook-failed' },
  ];
  for (const [i, c] of cases.entries()) {
    const r = await rawRequest(port, connectReq(`${c.host}:${tlsPort}`));
    assert.equal(r.status, c.status, `${c.name}: ${r.head}`);
    assert.match(r.head, new RegExp(`^X-Cordon-Error: ${c.reason}$`, 'mi'), c.name);
    const e = await eventOf('sb-connect-hook', 'egress.request', i + 1);
    assert.equal(e.reason, c.reason, c.name);
    assert.equal(e.decision, 'deny', c.name);
    r.socket.destroy();
  }
  assert.deepEqual(looked, [], 'no name was resolved for a refused CONNECT');
  const ok = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(ok.status, 200, 'a CONNECT the hook lets through proceeds');
  assert.equal(await tlsPing(ok.socket, 'upstream.example.com'), 'pong:ping');
  assert.deepEqual(looked, ['upstream.example.com']);
  assert.equal(tlsAccepted, before + 1, 'only the allowed tunnel reached the upstream');
  assert.deepEqual(seen.map((s) => [s.sandboxId, s.host, s.port]), [
    ['sb-connect-hook', 'other.example.com', tlsPort], ['sb-connect-hook', 'reset.example.com', tlsPort], ['sb-connect-hook', 'upstream.example.com', tlsPort],
  ]);
});

test('an audit scrubber that throws withholds the guest text of every event (fails closed), the request still runs', async () => {
  const { port } = await openDoor('sb-scrub-throws', { proxy: { auditScrub: () => { throw new Error('scrubber broke'); } } });
  const r = await rawRequest(port, `GET http://upstream.example.com:${httpPort}/carries-guest-text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  r.socket.destroy();
  assert.equal(r.status, 200, 'scrubbing is for the record only; the allowed request is served');
  for (const type of ['egress.request', 'egress.close']) {
    const e = await eventOf('sb-scrub-throws', type);
    assert.equal(e.data.host, '[withheld: the audit scrubber failed]', `${type}: host withheld`);
    assert.equal(e.data.path, '[withheld: the audit scrubber failed]', `${type}: path withheld`);
    assert.ok(!JSON.stringify(e.data).includes('carries-guest-text'), `${type}: no guest text in the event`);
  }
});

/** The request rate of these tests: a burst of 3, then one token every 1,000 s, so no machine is slow enough to see one come back. */
const RATE = { maxRequestsPerSecond: 0.001, requestBurst: 3 };

test('request rate, CONNECT: 3 tunnels open, the 4th gets 429 request-rate-limit with Retry-After before it is resolved or dialled; 3 allowed events and the refusal', async () => {
  const looked: string[] = [];
  const lookup = async (h: string) => {
    looked.push(h);
    return NAMES[h] ? [{ address: NAMES[h]!, family: 4 as const }] : [];
  };
  const { port } = await openDoor('sb-rate-connect', { proxy: { limits: RATE, lookup } });
  const before = tlsAccepted;
  for (let i = 1; i <= 3; i++) {
    const r = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
    assert.equal(r.status, 200, `tunnel ${i}: ${r.head}`);
    assert.equal(await tlsPing(r.socket, 'upstream.example.com'), 'pong:ping', `tunnel ${i}`);
  }
  const over = await rawRequest(port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(over.status, 429, over.head);
  assert.match(over.head, /^X-Cordon-Error: request-rate-limit$/mi);
  assert.match(over.head, /^Retry-After: 1000$/mi, 'one token every 1,000 s: a retry sooner would be refused again');
  over.socket.destroy();
  // The policy decides first and its refusals spend nothing: an unlisted host is still refused as such.
  const unlisted = await rawRequest(port, connectReq('evil.example.net:443'));
  assert.equal(unlisted.status, 403, unlisted.head);
  assert.match(unlisted.head, /^X-Cordon-Error: host-not-allowed$/mi);
  unlisted.socket.destroy();
  assert.equal(tlsAccepted, before + 3, 'the refused tunnel was never dialled');
  assert.deepEqual(looked, ['upstream.example.com', 'upstream.example.com', 'upstream.example.com'], 'nor its host resolved');
  await eventOf('sb-rate-connect', 'egress.request', 5);
  const events = await queryEvents(store, { sandbox: 'sb-rate-connect', type: 'egress.request' });
  assert.deepEqual(events.map((e) => [e.decision, e.reason, e.data.method, e.data.host]), [
    ['allow', 'host-allowed', 'CONNECT', 'upstream.example.com'],
    ['allow', 'host-allowed', 'CONNECT', 'upstream.example.com'],
    ['allow', 'host-allowed', 'CONNECT', 'upstream.example.com'],
    ['deny', 'request-rate-limit', 'CONNECT', 'upstream.example.com'],
    ['deny', 'host-not-allowed', 'CONNECT', 'evil.example.net'],
  ]);
  assert.equal(events[3]!.data.address, undefined, 'the refusal names no address: nothing was resolved');
  assert.match(String(events[3]!.data.problem), /more than 0\.001 requests a second .*maxRequestsPerSecond/);
});

test('request rate, plain HTTP: 3 requests are forwarded, the 4th gets 429 request-rate-limit with Retry-After and never reaches the upstream; 3 allowed events and the refusal', async () => {
  const { port } = await openDoor('sb-rate-http', { proxy: { limits: RATE } });
  const before = httpRequests;
  const answers: string[] = [];
  for (let i = 1; i <= 4; i++) {
    const r = await rawRequest(port, `GET http://upstream.example.com:${httpPort}/n${i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    answers.push([r.status, /^X-Cordon-Error: (.+)$/mi.exec(r.head)?.[1] ?? '-', /^Retry-After: (.+)$/mi.exec(r.head)?.[1] ?? '-'].join(' '));
    r.socket.destroy();
  }
  assert.deepEqual(answers, ['200 - -', '200 - -', '200 - -', '429 request-rate-limit 1000']);
  assert.equal(httpRequests, before + 3, 'the refused request never reached the upstream');
  await eventOf('sb-rate-http', 'egress.request', 4);
  const events = await queryEvents(store, { sandbox: 'sb-rate-http', type: 'egress.request' });
  assert.deepEqual(events.map((e) => [e.decision, e.reason, e.data.path]), [
    ['allow', 'host-allowed', '/n1'], ['allow', 'host-allowed', '/n2'], ['allow', 'host-allowed', '/n3'], ['deny', 'request-rate-limit', '/n4'],
  ]);
});

test('request rate: the defaults are 100 a second, bursts of 1000; zero, a negative rate and a fractional burst are refused when the proxy is created', () => {
  assert.deepEqual(
    (({ maxRequestsPerSecond, requestBurst }) => ({ maxRequestsPerSecond, requestBurst }))(egressLimitsSchema.parse({})),
    { maxRequestsPerSecond: 100, requestBurst: 1000 },
  );
  const bad: Array<[name: string, limits: Record<string, number>, field: string]> = [
    ['a rate of 0', { maxRequestsPerSecond: 0 }, 'maxRequestsPerSecond'],
    ['a negative rate', { maxRequestsPerSecond: -1 }, 'maxRequestsPerSecond'],
    ['a burst of 0', { requestBurst: 0 }, 'requestBurst'],
    ['a fractional burst', { requestBurst: 1.5 }, 'requestBurst'],
  ];
  for (const [name, limits, field] of bad) {
    assert.throws(() => createEgressProxy({ limits }), (err: Error) => err instanceof InvalidInputError && err.message.includes(field), name);
  }
});

/** One proxy (the deployment's limits) and a loopback door on it for `agent`, with that agent's override when given. */
async function doorOn(proxy: EgressProxy, sandboxId: string, agent: string, limits?: Record<string, number>) {
  const door = proxy.openDoor({ sandboxId, agent, agentConfig: { egress: rules() }, audit, ...(limits ? { limits } : {}) });
  const { port } = await door.listen(0, '127.0.0.1');
  return { door, port };
}

/** `count` plain-HTTP requests to the upstream through `port`, one after the other: status, X-Cordon-Error and Retry-After of each. */
async function plainRequests(port: number, count: number): Promise<string[]> {
  const answers: string[] = [];
  for (let i = 1; i <= count; i++) {
    const r = await rawRequest(port, `GET http://upstream.example.com:${httpPort}/r${i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    answers.push([r.status, /^X-Cordon-Error: (.+)$/mi.exec(r.head)?.[1] ?? '-', /^Retry-After: (.+)$/mi.exec(r.head)?.[1] ?? '-'].join(' '));
    r.socket.destroy();
  }
  return answers;
}

test('an agent\'s own request rate (openDoor limits): its door refuses past a burst of 2 with 429 request-rate-limit, another door on the same proxy keeps the proxy\'s rate', async () => {
  const proxy = createEgressProxy({ lookup: async (h) => (NAMES[h] ? [{ address: NAMES[h]!, family: 4 }] : []), limits: { maxRequestsPerSecond: 100, requestBurst: 1000 } });
  proxies.push(proxy);
  const crawler = await doorOn(proxy, 'sb-own-rate', 'slow', { maxRequestsPerSecond: 0.001, requestBurst: 2 });
  const other = await doorOn(proxy, 'sb-deployment-rate', 'tester');
  assert.deepEqual(await plainRequests(crawler.port, 4), ['200 - -', '200 - -', '429 request-rate-limit 1000', '429 request-rate-limit 1000'],
    'the override\'s burst of 2, then its rate (Retry-After from the override: one token every 1,000 s)');
  assert.deepEqual(await plainRequests(other.port, 6), Array(6).fill('200 - -'), 'the deployment\'s burst of 1000: nothing refused');
  const refused = await eventOf('sb-own-rate', 'egress.request', 3);
  assert.deepEqual([refused.decision, refused.reason], ['deny', 'request-rate-limit']);
  // The fix names the setting that applies to this door: raising egress.limits alone would change nothing for an agent with its own rate.
  assert.match(String(refused.data.problem), /more than 0\.001 requests a second to the internet \(bursts of 2\); slow down and retry, or raise agents\.slow\.egressLimits\.maxRequestsPerSecond /);
  await eventOf('sb-deployment-rate', 'egress.request', 6);
  const events = await queryEvents(store, { sandbox: 'sb-deployment-rate', type: 'egress.request' });
  assert.deepEqual(events.map((e) => e.reason), Array(6).fill('host-allowed'));
});

test('an agent\'s own connection cap (openDoor limits): its door refuses the 2nd connection with 429, another door on the same proxy holds 3', async () => {
  const proxy = createEgressProxy({ lookup: async (h) => (NAMES[h] ? [{ address: NAMES[h]!, family: 4 }] : []), limits: { maxConnections: 4 } });
  proxies.push(proxy);
  const capped = await doorOn(proxy, 'sb-own-cap', 'tester', { maxConnections: 1 });
  const other = await doorOn(proxy, 'sb-deployment-cap', 'tester');
  const held = [netConnect({ port: capped.port, host: '127.0.0.1' }), ...[0, 1, 2].map(() => netConnect({ port: other.port, host: '127.0.0.1' }))];
  await Promise.all(held.map((s) => once(s, 'connect')));
  for (let i = 0; i < 200 && (capped.door.activeConnections < 1 || other.door.activeConnections < 3); i++) await sleep(5);
  assert.deepEqual([capped.door.activeConnections, other.door.activeConnections], [1, 3]);
  const over = await rawRequest(capped.port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(over.status, 429, over.head);
  assert.match(over.head, /^X-Cordon-Error: too-many-connections$/mi);
  over.socket.destroy();
  assert.equal((await eventOf('sb-own-cap')).reason, 'too-many-connections');
  // The other door, 3 connections in, still takes a 4th (the proxy's cap) and serves it.
  const fourth = await rawRequest(other.port, connectReq(`upstream.example.com:${tlsPort}`));
  assert.equal(fourth.status, 200, fourth.head);
  assert.equal(await tlsPing(fourth.socket, 'upstream.example.com'), 'pong:ping');
  for (const s of held) s.destroy();
});

test('an invalid override opens no door: openDoor throws, naming the agent\'s field; none falls back to the proxy\'s limits', async () => {
  const proxy = createEgressProxy({ lookup: async () => [] });
  proxies.push(proxy);
  const bad: Array<[name: string, limits: unknown, message: RegExp]> = [
    ['an unknown key', { maxRequestsPerSecnd: 500 }, /agents\.crawler\.egressLimits\.maxRequestsPerSecnd: not a limit/],
    ['two unknown keys, each with its path', { maxRequestsPerSecnd: 500, maxConections: 2 },
      /limit agents\.crawler\.egressLimits\.maxRequestsPerSecnd, agents\.crawler\.egressLimits\.maxConections: not limits$/],
    ['a rate of 0', { maxRequestsPerSecond: 0 }, /agents\.crawler\.egressLimits\.maxRequestsPerSecond:/],
    ['a connection cap of 0', { maxConnections: 0 }, /agents\.crawler\.egressLimits\.maxConnections:/],
    ['a fractional burst', { requestBurst: 1.5 }, /agents\.crawler\.egressLimits\.requestBurst:/],
    ['a string', { maxBytesOutPerMinute: '10485760' }, /agents\.crawler\.egressLimits\.maxBytesOutPerMinute:/],
    ['not an object', 5, /invalid egress limit agents\.crawler\.egressLimits: Expected object, received number/],
    ['null', null, /invalid egress limit agents\.crawler\.egressLimits: Expected object, received null/],
  ];
  for (const [name, limits, message] of bad) {
    assert.throws(
      () => proxy.openDoor({ sandboxId: 'sb-bad-override', agent: 'crawler', agentConfig: { egress: rules() }, audit, limits: limits as Record<string, number> }),
      (err: Error) => err instanceof InvalidInputError && message.test(err.message) && /egressLimitsSchema/.test(err.fix ?? ''),
      name,
    );
  }
  const events = await queryEvents(store, { sandbox: 'sb-bad-override' });
  assert.equal(events.length, 0, 'nothing was served');
});

test('mergeLimits: the override\'s fields win one by one, the rest (and fields given as undefined) stay; no override is the base itself', () => {
  const base = resolveLimits({ maxConnections: 8, maxRequestsPerSecond: 50 });
  assert.deepEqual(mergeLimits(base, { maxRequestsPerSecond: 500 }), { ...base, maxRequestsPerSecond: 500 });
  assert.deepEqual(mergeLimits(base, { maxBytesOutPerMinute: 10485760, requestBurst: 3 }), { ...base, maxBytesOutPerMinute: 10485760, requestBurst: 3 });
  assert.deepEqual(mergeLimits(base, { maxConnections: undefined }), base);
  assert.deepEqual(mergeLimits(base, {}), base);
  assert.equal(mergeLimits(base, undefined), base);
  assert.throws(() => mergeLimits(base, { maxHeaderBytes: 100 }), /invalid egress limit override maxHeaderBytes: Number must be greater than or equal to 1024/);
});

test('Retry-After of a rate refusal: the time one token takes to come back, rounded up, at least 1 s; none for other refusals', () => {
  const at = (maxRequestsPerSecond: number, maxInternalRequestsPerSecond = 20) => ({ maxRequestsPerSecond, maxInternalRequestsPerSecond });
  const cases: Array<[name: string, reason: string, rates: ReturnType<typeof at> | undefined, seconds: number | undefined]> = [
    ['the default rate (100 a second)', 'request-rate-limit', at(100), 1],
    ['no rates given: the defaults', 'request-rate-limit', undefined, 1],
    ['one every 2 s (0.5 a second): 1 s would be refused again', 'request-rate-limit', at(0.5), 2],
    ['0.3 a second: 3.33 s, rounded up', 'request-rate-limit', at(0.3), 4],
    ['the slowest rate (0.001 a second)', 'request-rate-limit', at(0.001), 1000],
    ['the internal rate, an integer', 'internal-rate-limit', at(0.001, 1), 1],
    ['not a rate: no Retry-After', 'bytes-out-limit', at(0.5), undefined],
    ['a policy refusal: no Retry-After', 'host-not-allowed', at(0.5), undefined],
  ];
  for (const [name, reason, rates, seconds] of cases) assert.equal(retryAfterForReason(reason, rates), seconds, name);
});
