/**
 * Tunnel relay tests (`relay.ts`): a tunnel's upstream reads land in a buffer
 * it reuses, so these check that no chunk is overwritten before it reached
 * its client: a slow client beside a fast one on the TCP door, a channel-like
 * client stream that keeps chunks after `write()` returns, and an upstream
 * that speaks before the ClientHello was checked. Each compares SHA-256 of
 * what arrived with what the upstream sent (and TLS itself refuses a record
 * whose bytes changed). Also: a client that leaves before the relay starts
 * still has its upstream connection closed and its close recorded.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { join } from 'node:path';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { connect as tlsConnect, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { AuditLog, queryEvents } from '../audit/index.js';
import { openStore, type Store } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { createEgressCa, createEgressProxy, issueCertificate, type EgressProxy } from './index.js';
import { parseClientHello } from './sni.js';

const HOST = 'bulk.example.com';

let dir: { path: string; cleanup: () => void };
let store: Store;
let audit: AuditLog;
let caPem: string;
let bulkServer: TlsServer;
let bannerServer: NetServer;
let bulkPort: number;
let bannerPort: number;
const proxies: EgressProxy[] = [];

/** The bytes the bulk upstream sends for `GET <seed> <bytes>`: a keyed stream, different per seed. */
function bulkBytes(seed: string, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0, block = 0; i < bytes; block++) {
    i += createHash('sha256').update(`${seed}:${block}`).digest().copy(out, i);
  }
  return out;
}

/** Emits `waited` when the record-writing upstream first finds its connection full (everything between is backed up). */
const upstreamWaited = new EventEmitter();

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** What the banner upstream says as soon as a connection opens, before it hears anything. */
const BANNER = bulkBytes('banner', 200 * 1024);

before(async () => {
  dir = tempDir('cordon-relay-');
  const ca = createEgressCa({ commonName: 'relay test CA' });
  caPem = ca.certPem;
  const leaf = issueCertificate(ca, { hosts: [HOST] });
  bulkServer = createTlsServer({ key: leaf.keyPem, cert: leaf.certPem }, (s) => {
    s.on('error', () => undefined);
    s.once('data', (d: Buffer) => {
      const [, seed, bytes, record] = d.toString().trim().split(' ');
      const body = bulkBytes(seed!, Number(bytes));
      if (!record) return s.end(body);
      // In small TLS records, one per turn, under the door's 16 KiB write high-water mark, so that the
      // door reads (and writes on) small chunks; with flow control, and saying when it first had to wait.
      const size = Number(record);
      let at = 0;
      const next = (): void => {
        if (s.destroyed) return;
        if (at >= body.length) return void s.end();
        if (s.write(body.subarray(at, (at += size)))) return void setImmediate(next);
        upstreamWaited.emit('waited');
        s.once('drain', next);
      };
      next();
    });
  });
  // Speaks first, then echoes: like an SSH or SMTP server behind an allowed port.
  bannerServer = createNetServer((s) => {
    s.on('error', () => undefined);
    s.write(BANNER);
    s.on('data', (d: Buffer) => s.write(d));
  });
  for (const srv of [bulkServer, bannerServer]) {
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
  }
  bulkPort = (bulkServer.address() as { port: number }).port;
  bannerPort = (bannerServer.address() as { port: number }).port;
  store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys'), checkpointIntervalMs: 60_000 });
});

after(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  for (const srv of [bulkServer, bannerServer]) srv.close();
  await audit.close();
  await store.close();
  dir.cleanup();
});

function openDoor(sandboxId: string) {
  const proxy = createEgressProxy({ lookup: async (h) => (h === HOST ? [{ address: '127.0.0.1', family: 4 }] : []) });
  proxies.push(proxy);
  return proxy.openDoor({
    sandboxId, agent: 'tester', audit,
    agentConfig: { egress: [{ host: HOST, ports: [bulkPort] }, { cidr: '127.0.0.1/32', ports: [bulkPort, bannerPort] }] },
  });
}

/** Write a CONNECT on `socket` and wait for the 200; the socket is left paused. */
async function connectThrough(socket: Duplex, target: string): Promise<void> {
  socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
  const head = await new Promise<string>((resolve, reject) => {
    let text = '';
    const onData = (c: Buffer): void => {
      text += c.toString('latin1');
      if (!text.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.pause();
      resolve(text);
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
  assert.match(head, /^HTTP\/1.1 200 /, 'the door accepted the CONNECT');
}

/**
 * `GET <seed> <bytes>` over TLS through the tunnel on `socket`; resolves with
 * the SHA-256 of the answer. `stall`: the answer comes in 4 KiB records and
 * the client reads nothing until the upstream had to wait, that is until
 * the door's writes to this client were left pending and the door stopped
 * reading; then it reads everything.
 */
async function fetchBulk(socket: Duplex, seed: string, bytes: number, stall = false): Promise<string> {
  const t = tlsConnect({ socket, servername: HOST, ca: caPem });
  await once(t, 'secureConnect');
  const hash = createHash('sha256');
  let got = 0;
  if (stall) {
    t.pause();
    const waited = once(upstreamWaited, 'waited', { signal: AbortSignal.timeout(20_000) });
    t.write(`GET ${seed} ${bytes} 4096\n`);
    await waited;
    t.resume();
  } else t.write(`GET ${seed} ${bytes}\n`);
  await new Promise<void>((resolve, reject) => {
    t.on('data', (c: Buffer) => {
      hash.update(c);
      got += c.length;
    });
    t.once('end', resolve);
    t.once('error', reject);
  });
  t.destroy();
  assert.equal(got, bytes, `${seed}: every byte arrived`);
  return hash.digest('hex');
}

test('a slow client beside a fast one on the TCP door: both get exactly the bytes their upstream sent', async () => {
  const door = openDoor('sb-relay-slow');
  const { port } = await door.listen(0, '127.0.0.1');
  const open = async (): Promise<Socket> => {
    const s = netConnect({ port, host: '127.0.0.1' });
    s.once('connect', () => s.setNoDelay(true));
    await connectThrough(s, `${HOST}:${bulkPort}`);
    return s;
  };
  const [slowSocket, fastSocket] = await Promise.all([open(), open()]);
  const [slow, fast] = await Promise.all([
    fetchBulk(slowSocket, 'slow', 24 * 1024 * 1024, true),
    fetchBulk(fastSocket, 'fast', 4 * 1024 * 1024),
  ]);
  assert.equal(slow, sha256(bulkBytes('slow', 24 * 1024 * 1024)));
  assert.equal(fast, sha256(bulkBytes('fast', 4 * 1024 * 1024)));
  slowSocket.destroy();
  fastSocket.destroy();
});

/**
 * A client stream as a channel may be: `write()` calls back at once but the
 * chunk is passed on later (it is kept, not copied). The other end is what
 * the test reads.
 */
function keepingStream(): { doorSide: Duplex; testSide: Duplex } {
  let testSide: Duplex;
  const doorSide = new Duplex({
    read() { testSide.resume(); },
    write(chunk: Buffer, _enc, cb) {
      setImmediate(() => testSide.push(chunk));
      cb();
    },
    final(cb) {
      setImmediate(() => testSide.push(null));
      cb();
    },
  });
  testSide = new Duplex({
    read() { /* pushed by doorSide */ },
    write(chunk: Buffer, _enc, cb) {
      if (!doorSide.push(chunk)) testSide.pause();
      cb();
    },
    final(cb) {
      doorSide.push(null);
      cb();
    },
  });
  return { doorSide, testSide };
}

test('a channel stream that keeps chunks after write() returns gets a copy: two at once, bytes intact', async () => {
  const door = openDoor('sb-relay-keep');
  const streams = [keepingStream(), keepingStream()];
  for (const s of streams) door.handle(s.doorSide);
  await Promise.all(streams.map((s) => connectThrough(s.testSide, `${HOST}:${bulkPort}`)));
  const bytes = 2 * 1024 * 1024;
  const hashes = await Promise.all(streams.map((s, i) => fetchBulk(s.testSide, `keep-${i}`, bytes)));
  assert.deepEqual(hashes, [0, 1].map((i) => sha256(bulkBytes(`keep-${i}`, bytes))));
  for (const s of streams) s.testSide.destroy();
});

/** A real ClientHello without a server name (the target is an IP), captured from node's TLS client. */
async function clientHello(): Promise<Buffer> {
  const srv = createNetServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const t = tlsConnect({ port: (srv.address() as { port: number }).port, host: '127.0.0.1', rejectUnauthorized: false });
  t.on('error', () => undefined);
  const [s] = (await once(srv, 'connection')) as [Socket];
  let buf = Buffer.alloc(0);
  while (parseClientHello(buf).status === 'incomplete') buf = Buffer.concat([buf, (await once(s, 'data'))[0] as Buffer]);
  t.destroy();
  s.destroy();
  srv.close();
  return buf;
}

test('an upstream that speaks first: its bytes wait for the hello check and the audit event, then arrive whole and in order', async () => {
  const door = openDoor('sb-relay-banner');
  const { port } = await door.listen(0, '127.0.0.1');
  const hello = await clientHello();
  const socket = netConnect({ port, host: '127.0.0.1' });
  await connectThrough(socket, `127.0.0.1:${bannerPort}`);
  // The upstream has been talking since the dial; nothing may reach the client before the hello passed.
  await sleep(100);
  assert.equal(socket.read(), null, 'no upstream byte before the ClientHello was checked');
  const events = await queryEvents(store, { sandbox: 'sb-relay-banner', type: 'egress.request' });
  assert.equal(events.length, 0, 'the tunnel is not recorded (so not relayed) before the hello');
  socket.write(hello);
  const want = Buffer.concat([BANNER, hello]);
  let got = Buffer.alloc(0);
  socket.on('data', (c: Buffer) => { got = Buffer.concat([got, c]); });
  socket.resume();
  for (let i = 0; i < 200 && got.length < want.length; i++) await sleep(10);
  assert.equal(got.length, want.length, 'the banner and the echoed hello, nothing more or less');
  assert.equal(sha256(got), sha256(want), 'banner first, then the echo, byte for byte');
  const [e] = await queryEvents(store, { sandbox: 'sb-relay-banner', type: 'egress.request' });
  assert.equal(e?.decision, 'allow');
  socket.destroy();
});

test('a client gone while its tunnel was being recorded: the upstream connection is closed and the close recorded', async () => {
  // An upstream that never closes on its own: only the door can end this connection.
  const quiet = createNetServer((s) => s.on('error', () => undefined));
  quiet.listen(0, '127.0.0.1');
  await once(quiet, 'listening');
  const quietPort = (quiet.address() as { port: number }).port;
  let upstreamSide: Socket | undefined;
  const upstreamClosed = new Promise<void>((resolve) => quiet.once('connection', (s: Socket) => {
    upstreamSide = s;
    s.once('close', () => resolve());
  }));
  let client: Socket | undefined;
  const proxy = createEgressProxy({ lookup: async () => [] });
  proxies.push(proxy);
  const door = proxy.openDoor({
    sandboxId: 'sb-relay-gone', agent: 'tester',
    // The client leaves while the tunnel's own event is being written, before the relay starts.
    audit: {
      append: async (e) => {
        if (e.type === 'egress.request' && e.decision === 'allow') {
          client?.destroy();
          await sleep(50);
        }
        return audit.append(e);
      },
    },
    agentConfig: { egress: [{ cidr: '127.0.0.1/32', ports: [quietPort] }] },
  });
  const { port } = await door.listen(0, '127.0.0.1');
  const hello = await clientHello();
  client = netConnect({ port, host: '127.0.0.1' });
  await connectThrough(client, `127.0.0.1:${quietPort}`);
  client.write(hello);
  const closedInTime = await Promise.race([upstreamClosed.then(() => true), sleep(3_000).then(() => false)]);
  upstreamSide?.destroy(); // when the door left it open, so that the test process can end
  quiet.close();
  assert.ok(closedInTime, 'the door closed the upstream connection of a tunnel whose client had gone');
  let closes: Awaited<ReturnType<typeof queryEvents>> = [];
  for (let i = 0; i < 50 && closes.length === 0; i++) {
    closes = await queryEvents(store, { sandbox: 'sb-relay-gone', type: 'egress.close' });
    if (closes.length === 0) await sleep(20);
  }
  assert.equal(closes.length, 1, 'the tunnel\'s close is on record');
  assert.equal(door.activeConnections, 0);
});
