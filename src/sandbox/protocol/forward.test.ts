/**
 * forward.open (host-opened streams to a guest port, for tunnels): first
 * against a scripted hostile guest (every bad answer closes the connection
 * with a named reason, races with the host's CLOSE are not violations), then
 * against the real compiled agent over `--stdio`, which connects to a server
 * on the host's loopback (the agent runs on the host here).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { GuestChannel } from './guest-channel.js';
import type { GuestChannelOptions } from './connection.js';
import { GuestOpError, GuestProtocolError, type ProtocolErrorReason } from './errors.js';
import { FrameKind, INITIAL_WINDOW_BYTES } from './frame.js';
import type { GuestStream } from './guest-stream.js';
import { FakeGuest, duplexPair } from './testing.js';

function setup(options: GuestChannelOptions = {}) {
  const [h, g] = duplexPair();
  const host = new GuestChannel(h, { helloTimeoutMs: 2000, ...options });
  const guest = new FakeGuest(g);
  const protocolError = once(host, 'protocol-error').then(([e]) => e as GuestProtocolError);
  protocolError.catch(() => {});
  return { host, guest, protocolError };
}
type Ctx = ReturnType<typeof setup>;

/** Ask for a forward and return the pending stream and the request the guest saw. */
async function pendingForward(c: Ctx, port = 8000, timeoutMs?: number) {
  const stream = c.host.openForward(port, timeoutMs === undefined ? {} : { timeoutMs });
  stream.catch(() => {});
  const req = await c.guest.request();
  return { stream, req, channel: req.channel as number };
}

const hostile: { name: string; reason: ProtocolErrorReason; script(c: Ctx): Promise<void> }[] = [
  {
    name: 'an ok answer with a member the schema does not know',
    reason: 'bad-response',
    async script(c) {
      const { req } = await pendingForward(c);
      c.guest.control({ id: req.id, ok: true, peer: '10.0.0.1:80' });
    },
  },
  {
    name: 'an error answer whose code is not a kebab-case word',
    reason: 'bad-response',
    async script(c) {
      const { req } = await pendingForward(c);
      c.guest.control({ id: req.id, ok: false, error: { code: 'Connection Refused', message: 'x' } });
    },
  },
  {
    name: 'DATA on the forward channel before the answer',
    reason: 'unexpected-frame',
    async script(c) {
      const { channel } = await pendingForward(c);
      c.guest.frame(FrameKind.Data, channel, Buffer.from('early'));
    },
  },
  {
    name: 'CLOSE on the forward channel before the answer',
    reason: 'unexpected-frame',
    async script(c) {
      const { channel } = await pendingForward(c);
      c.guest.frame(FrameKind.Close, channel);
    },
  },
  {
    name: 'DATA on the channel after an error answer (the channel ended with it)',
    reason: 'unknown-channel',
    async script(c) {
      const { req, channel } = await pendingForward(c);
      c.guest.control({ id: req.id, ok: false, error: { code: 'connection-refused', message: 'no' } });
      c.guest.frame(FrameKind.Data, channel, Buffer.from('late'));
    },
  },
  {
    name: 'DATA_STDERR on an established forward',
    reason: 'unexpected-frame',
    async script(c) {
      const { req, channel } = await pendingForward(c);
      c.guest.control({ id: req.id, ok: true });
      c.guest.frame(FrameKind.DataStderr, channel, Buffer.from('x'));
    },
  },
  {
    name: 'more DATA than the initial credit',
    reason: 'window-exceeded',
    async script(c) {
      const { req, channel } = await pendingForward(c);
      c.guest.control({ id: req.id, ok: true });
      const chunk = Buffer.alloc(65536);
      for (let sent = 0; sent <= INITIAL_WINDOW_BYTES; sent += chunk.length) c.guest.frame(FrameKind.Data, channel, chunk);
    },
  },
  {
    name: 'a second answer to the same forward.open',
    reason: 'unknown-response-id',
    async script(c) {
      const { req } = await pendingForward(c);
      c.guest.control({ id: req.id, ok: true });
      c.guest.control({ id: req.id, ok: true });
    },
  },
  {
    name: 'a stream.open notification that reuses the forward\'s host-range id',
    reason: 'bad-message',
    async script(c) {
      const { req, channel } = await pendingForward(c);
      c.guest.control({ id: req.id, ok: true });
      c.guest.control({ op: 'stream.open', channel, port: 3128, peer: '127.0.0.1:1' });
    },
  },
];

describe('forward.open against a hostile guest', () => {
  for (const h of hostile) {
    test(`${h.name} → ${h.reason}`, async () => {
      const c = setup();
      c.guest.hello();
      await c.host.ready;
      await h.script(c);
      const err = await c.protocolError;
      assert.equal(err.reason, h.reason, err.message);
      assert.ok(c.host.closedReason, 'the connection is closed');
    });
  }

  test('an ok answer and DATA in the same chunk: the bytes reach the stream; host bytes go out within credit', async () => {
    const c = setup();
    c.guest.hello();
    await c.host.ready;
    const { stream: pending, req, channel } = await pendingForward(c, 8080);
    assert.deepEqual(Object.keys(req).sort(), ['channel', 'id', 'op', 'port']);
    assert.equal(req.op, 'forward.open');
    assert.ok(channel >= 1 && channel < 0x8000_0000, 'the host allocates the id');
    c.guest.control({ id: req.id, ok: true });
    c.guest.frame(FrameKind.Data, channel, Buffer.from('HTTP/1.0 200 OK\r\n'));
    const stream = await pending;
    stream.on('error', () => {});
    assert.equal(stream.port, 8080);
    const [first] = (await once(stream, 'data')) as [Buffer];
    assert.equal(first.toString(), 'HTTP/1.0 200 OK\r\n');
    stream.write('GET / HTTP/1.0\r\n\r\n');
    const f = await c.guest.next();
    assert.deepEqual([f.kind, f.channel, f.payload.toString()], [FrameKind.Data, channel, 'GET / HTTP/1.0\r\n\r\n']);
    assert.equal(c.host.forwardCount, 1);
    c.guest.frame(FrameKind.Close, channel);
    const ack = await c.guest.next();
    assert.deepEqual([ack.kind, ack.channel], [FrameKind.Close, channel], 'the host acknowledges the guest\'s CLOSE');
    await tick();
    assert.equal(c.host.forwardCount, 0);
    assert.equal(c.host.closedReason, undefined);
  });

  test('an error answer is a GuestOpError with the guest\'s code; the connection stays up', async () => {
    const c = setup();
    c.guest.hello();
    await c.host.ready;
    const { stream, req } = await pendingForward(c, 9);
    c.guest.control({ id: req.id, ok: false, error: { code: 'connection-refused', message: '127.0.0.1:9: Connection refused' } });
    await assert.rejects(stream, (e: unknown) => e instanceof GuestOpError && e.guestCode === 'connection-refused');
    assert.equal(c.host.forwardCount, 0);
    assert.equal(c.host.closedReason, undefined);
  });

  test('a late ok after the host timed out: the host\'s CLOSE is answered by the guest\'s CLOSE, no violation', async () => {
    const c = setup();
    c.guest.hello();
    await c.host.ready;
    const { stream, req, channel } = await pendingForward(c, 8000, 50);
    await assert.rejects(stream, (e: unknown) => (e as { code?: string }).code === 'sandbox-timeout');
    const close = await c.guest.next();
    assert.deepEqual([close.kind, close.channel], [FrameKind.Close, channel], 'the host aborts the forward');
    c.guest.control({ id: req.id, ok: true });
    c.guest.frame(FrameKind.Data, channel, Buffer.from('in flight'));
    c.guest.frame(FrameKind.Close, channel);
    await tick();
    await tick();
    assert.equal(c.host.closedReason, undefined, 'no protocol error');
    assert.equal(c.host.forwardCount, 0, 'the channel is forgotten after the guest\'s CLOSE');
  });

  test('a late error after the host timed out ends the channel', async () => {
    const c = setup();
    c.guest.hello();
    await c.host.ready;
    const { stream, req } = await pendingForward(c, 8000, 50);
    await assert.rejects(stream);
    c.guest.control({ id: req.id, ok: false, error: { code: 'aborted', message: 'closed before the connection was made' } });
    await tick();
    assert.equal(c.host.closedReason, undefined);
    assert.equal(c.host.forwardCount, 0);
  });

  test('the host\'s own limit on open forwards (maxForwards) and bad ports are refused before anything is sent', async () => {
    const c = setup({ maxForwards: 2 });
    c.guest.hello();
    await c.host.ready;
    await pendingForward(c);
    await pendingForward(c);
    await assert.rejects(c.host.openForward(8000), (e: unknown) => (e as { code?: string }).code === 'sandbox-forward-limit');
    for (const port of [0, 65536, 1.5, -1]) {
      await assert.rejects(c.host.openForward(port), (e: unknown) => (e as { code?: string }).code === 'invalid-input', `port ${port}`);
    }
    assert.equal(c.guest.queued.length, 0, 'nothing more went to the guest');
    c.host.close();
  });
});

// ---- the real agent ----

const root = fileURLToPath(new URL('../../../', import.meta.url));
/** The agent binary; `CORDON_TEST_AGENT_BIN` points at another build (e.g. while changing the agent). */
const agentBin = process.env.CORDON_TEST_AGENT_BIN || join(root, 'guest', 'build', 'cordon-agent');
const skipAgent = existsSync(agentBin) ? false : `no agent binary at ${agentBin} (make -C guest/agent)`;

function startAgent(options: GuestChannelOptions = {}) {
  const child = spawn(agentBin, ['--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const socket = Duplex.from({ readable: child.stdout!, writable: child.stdin! });
  const guest = new GuestChannel(socket, { requestTimeoutMs: 20_000, ...options });
  const exited = once(child, 'exit');
  return { guest, async stop() { guest.close(); await exited; } };
}

async function listen(onConnection: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onConnection).listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port };
}

/** Resolves when the stream has closed (at once if it already has). */
function closed(s: Duplex): Promise<unknown> {
  return s.closed ? Promise.resolve() : once(s, 'close');
}

function collect(s: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (b: Buffer) => chunks.push(b));
  return once(s, 'end').then(() => Buffer.concat(chunks));
}

describe('forward.open with the real agent', { skip: skipAgent }, () => {
  test('bytes flow both ways (1 MiB each, beyond the initial credit), half-close both ways', async () => {
    const { server, port } = await listen((s) => {
      const got: Buffer[] = [];
      s.on('data', (b: Buffer) => got.push(b));
      s.on('end', () => {
        const all = Buffer.concat(got);
        s.end(Buffer.concat([Buffer.from(`got ${all.length}\n`), all]));
      });
    });
    const a = startAgent();
    try {
      await a.guest.ready;
      const stream = await a.guest.openForward(port);
      stream.on('error', () => {});
      const body = collect(stream);
      const payload = Buffer.alloc(1 << 20, 'x');
      stream.end(payload);
      const reply = await body;
      assert.equal(reply.subarray(0, 12).toString(), `got ${1 << 20}\n`);
      assert.equal(reply.length, 12 + (1 << 20));
      await closed(stream);
      const h = await a.guest.health();
      assert.equal(h.streams, 0, 'forwards are not counted as egress streams, and this one is gone');
    } finally {
      await a.stop();
      server.close();
    }
  });

  test('a closed port answers connection-refused, and the agent keeps serving', async () => {
    const { server, port } = await listen(() => {});
    server.close();
    await once(server, 'close');
    const a = startAgent();
    try {
      await a.guest.ready;
      await assert.rejects(a.guest.openForward(port), (e: unknown) => {
        assert.ok(e instanceof GuestOpError, String(e));
        assert.equal(e.guestCode, 'connection-refused');
        assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
        return true;
      });
      const r = await a.guest.exec({ argv: ['true'] });
      assert.equal(r.exitCode, 0);
      assert.equal(a.guest.forwardCount, 0);
    } finally {
      await a.stop();
    }
  });

  test('the host closing a forward closes the guest-side socket; the guest\'s server closing ends the stream', async () => {
    const sockets: Socket[] = [];
    const { server, port } = await listen((s) => { sockets.push(s); s.on('error', () => {}); });
    const a = startAgent();
    try {
      await a.guest.ready;
      const one = await a.guest.openForward(port);
      one.on('error', () => {});
      while (sockets.length < 1) await new Promise((r) => setTimeout(r, 5));
      const ended = once(sockets[0]!, 'close');
      one.destroy();
      await ended;
      const two = await a.guest.openForward(port);
      two.on('error', () => {});
      while (sockets.length < 2) await new Promise((r) => setTimeout(r, 5));
      const body = collect(two);
      sockets[1]!.end('bye');
      two.end();
      assert.equal((await body).toString(), 'bye');
      await closed(two);
      for (let i = 0; i < 100 && a.guest.forwardCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(a.guest.forwardCount, 0);
    } finally {
      await a.stop();
      server.close();
    }
  });

  test('the agent checks each forward.open strictly: bad fields are bad-request, the connection stays up', async () => {
    /** Sends requests as a buggy host would (the public openForward checks them first). */
    class RawHost extends GuestChannel {
      send(body: Record<string, unknown>) {
        return this.request('forward.open', body);
      }
    }
    const child = spawn(agentBin, ['--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const host = new RawHost(Duplex.from({ readable: child.stdout!, writable: child.stdin! }), { requestTimeoutMs: 20_000 });
    try {
      await host.ready;
      const cases: { name: string; body: Record<string, unknown>; match: RegExp }[] = [
        { name: 'port 0', body: { channel: 7, port: 0 }, match: /port/ },
        { name: 'port 65536', body: { channel: 7, port: 65536 }, match: /port/ },
        { name: 'port as a string', body: { channel: 7, port: '80' }, match: /port/ },
        { name: 'no channel', body: { port: 80 }, match: /channel/ },
        { name: 'a guest-range channel', body: { channel: 0x8000_0001, port: 80 }, match: /channel/ },
        { name: 'an unknown field (an address)', body: { channel: 7, port: 80, host: '10.0.0.1' }, match: /unknown field "host"/ },
      ];
      for (const c of cases) {
        await assert.rejects(host.send(c.body), (e: unknown) => {
          assert.ok(e instanceof GuestOpError, `${c.name}: ${String(e)}`);
          assert.equal(e.guestCode, 'bad-request', c.name);
          assert.match(e.message, c.match, c.name);
          return true;
        });
      }
      assert.equal((await host.exec({ argv: ['true'] })).exitCode, 0, 'the agent keeps serving');
    } finally {
      host.close();
      await once(child, 'exit');
    }
  });

  test('a connect still in progress when the host gives up: the host\'s CLOSE is answered with aborted, nothing leaks', async (t) => {
    // A listener that never accepts, its queue filled: the agent's next connect stays in SYN-SENT.
    const py = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const [line] = (await once(py.stdout!, 'data')) as [Buffer];
    const port = Number(line.toString().trim());
    const fillers: Socket[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const s = connect(port, '127.0.0.1');
        s.on('error', () => undefined);
        fillers.push(s);
      }
      await new Promise((r) => setTimeout(r, 200));
      const a = startAgent();
      try {
        await a.guest.ready;
        let protocolError: unknown;
        a.guest.on('protocol-error', (e) => (protocolError = e));
        const started = Date.now();
        await assert.rejects(a.guest.openForward(port, { timeoutMs: 500 }), (e: unknown) => (e as { code?: string }).code === 'sandbox-timeout');
        if (Date.now() - started < 450) return t.skip('the connect did not hang on this kernel (the accept queue took it)');
        // The agent answers the CLOSE with the error `aborted`; the host forgets the channel then.
        for (let i = 0; i < 100 && a.guest.forwardCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
        assert.equal(a.guest.forwardCount, 0);
        assert.equal(protocolError, undefined);
        assert.equal((await a.guest.exec({ argv: ['true'] })).exitCode, 0, 'the agent keeps serving');
      } finally {
        await a.stop();
      }
    } finally {
      for (const s of fillers) s.destroy();
      py.kill();
    }
  });

  test('the agent\'s own limit: 64 forwards at once, the 65th is busy; closing one frees a place', async () => {
    const { server, port } = await listen((s) => s.on('error', () => {}));
    const a = startAgent({ maxForwards: 100 });
    try {
      await a.guest.ready;
      const open: GuestStream[] = [];
      for (let i = 0; i < 64; i++) {
        const s = await a.guest.openForward(port);
        s.on('error', () => {});
        open.push(s);
      }
      await assert.rejects(a.guest.openForward(port), (e: unknown) => e instanceof GuestOpError && e.guestCode === 'busy');
      open[0]!.destroy();
      for (let i = 0; i < 100 && a.guest.forwardCount > 63; i++) await new Promise((r) => setTimeout(r, 10));
      const again = await a.guest.openForward(port);
      again.on('error', () => {});
      assert.equal(a.guest.forwardCount, 64);
    } finally {
      await a.stop();
      server.close();
    }
  });
});
