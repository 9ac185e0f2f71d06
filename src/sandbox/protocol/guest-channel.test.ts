/**
 * GuestChannel against a scripted hostile guest: every protocol violation in
 * the table must emit 'protocol-error' with the named reason, fail pending
 * requests with that error and close the socket. Then the well-behaved paths:
 * exec routing, credit windows, timeouts, streams.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setImmediate as tick } from 'node:timers/promises';
import { GuestChannel } from './guest-channel.js';
import type { GuestChannelOptions } from './connection.js';
import { GuestOpError, GuestProtocolError, type ProtocolErrorReason } from './errors.js';
import { FrameKind, INITIAL_WINDOW_BYTES, MAX_FRAME_BYTES } from './frame.js';
import type { GuestStream } from './guest-stream.js';
import { FakeGuest, duplexPair } from './testing.js';

function setup(options: GuestChannelOptions = {}) {
  const [h, g] = duplexPair();
  const host = new GuestChannel(h, { helloTimeoutMs: 2000, ...options });
  const guest = new FakeGuest(g);
  const protocolError = once(host, 'protocol-error').then(([e]) => e as GuestProtocolError);
  return { host, guest, protocolError };
}

type Ctx = ReturnType<typeof setup>;

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

const execOk = (id: number, extra: Record<string, unknown> = {}) => ({
  id, ok: true, pid: 7, exitCode: 0, signal: null, timedOut: false, outputTruncated: false, durationMs: 1,
  stdoutBytes: 0, stderrBytes: 0, ...extra,
});

/** Start an exec and return its pending result plus the request the guest saw. */
async function pendingExec(c: Ctx, options: { maxOutputBytes?: number } = {}) {
  const result = c.host.exec({ argv: ['true'], ...options });
  result.catch(() => {});
  const req = await c.guest.request();
  return { result, req, channel: req.channel as number };
}

async function openStream(c: Ctx, channel = 0x8000_0001): Promise<GuestStream> {
  const got = once(c.host, 'stream');
  c.guest.control({ op: 'stream.open', channel, port: 3128, peer: '127.0.0.1:40000' });
  const [stream] = (await got) as [GuestStream];
  stream.on('error', () => {}); // torn down with the connection in the hostile cases
  return stream;
}

interface HostileCase {
  name: string;
  reason: ProtocolErrorReason;
  options?: GuestChannelOptions;
  /** Misbehave; return `{ pending }`, a request that must fail with the protocol error. */
  script(c: Ctx): Promise<{ pending: Promise<unknown> } | void>;
}

const hostile: HostileCase[] = [
  { name: 'length over 256 KiB', reason: 'frame-too-large', script: async (c) => c.guest.raw(u32(MAX_FRAME_BYTES + 1)) },
  { name: 'ASCII garbage', reason: 'frame-too-large', script: async (c) => c.guest.raw(Buffer.from('garbage garbage')) },
  { name: 'length below the header', reason: 'frame-too-short', script: async (c) => c.guest.raw(u32(2)) },
  { name: 'unknown frame kind', reason: 'unknown-kind', script: async (c) => c.guest.raw(Buffer.concat([u32(5), Buffer.from([42]), u32(1)])) },
  { name: 'stream ends inside a frame', reason: 'truncated-frame', script: async (c) => {
    c.guest.raw(Buffer.concat([u32(50), Buffer.from([2])]));
    c.guest.socket.end();
  } },
  { name: 'CONTROL on a data channel', reason: 'control-on-data-channel', script: async (c) => c.guest.frame(FrameKind.Control, 7, Buffer.from('{}')) },
  { name: 'DATA on channel 0', reason: 'data-on-control-channel', script: async (c) => c.guest.frame(FrameKind.Data, 0, Buffer.from('x')) },
  { name: 'control message not UTF-8', reason: 'bad-utf8', script: async (c) => c.guest.frame(FrameKind.Control, 0, Buffer.from([0x7b, 0xff, 0x7d])) },
  { name: 'control message with a BOM', reason: 'bad-json', script: async (c) => c.guest.frame(FrameKind.Control, 0, Buffer.from('\ufeff{"op":"log"}')) },
  { name: 'control message not JSON', reason: 'bad-json', script: async (c) => c.guest.frame(FrameKind.Control, 0, Buffer.from('{"op":')) },
  { name: 'control message is an array', reason: 'bad-message', script: async (c) => c.guest.control([1, 2]) },
  { name: 'control message without id or op', reason: 'bad-message', script: async (c) => c.guest.control({ hello: true }) },
  { name: 'unknown op', reason: 'unknown-op', script: async (c) => c.guest.control({ op: 'become-root' }) },
  { name: 'op naming an Object.prototype member', reason: 'unknown-op', script: async (c) => c.guest.control({ op: 'constructor' }) },
  { name: 'hello with an oversize kernel string', reason: 'bad-message', script: async (c) => c.guest.hello({ kernel: 'k'.repeat(257) }) },
  { name: 'hello with an extra field', reason: 'bad-message', script: async (c) => c.guest.hello({ shell: '/bin/sh' }) },
  { name: 'hello with a string pid', reason: 'bad-message', script: async (c) => c.guest.hello({ pid: '42' }) },
  { name: 'hello twice', reason: 'duplicate-hello', script: async (c) => { c.guest.hello(); c.guest.hello(); } },
  { name: 'hello with another protocol version', reason: 'unsupported-protocol', script: async (c) => c.guest.hello({ protocol: 2 }) },
  { name: 'log with an unknown level', reason: 'bad-message', script: async (c) => c.guest.control({ op: 'log', level: 'panic', message: 'x' }) },
  { name: 'log flood', reason: 'log-flood', options: { logsPerSecond: 2 }, script: async (c) => {
    for (let i = 0; i < 11; i++) c.guest.control({ op: 'log', level: 'info', message: `line ${i}` });
  } },
  { name: 'response to an id never sent', reason: 'unknown-response-id', script: async (c) => c.guest.control({ id: 99, ok: true }) },
  { name: 'response id that is a string', reason: 'bad-response', script: async (c) => c.guest.control({ id: '1', ok: true }) },
  { name: 'exec result with a string exitCode', reason: 'bad-response', script: async (c) => {
    const { result, req } = await pendingExec(c);
    c.guest.control(execOk(req.id, { exitCode: '0' }));
    return { pending: result };
  } },
  { name: 'exec result with both exitCode and signal', reason: 'bad-response', script: async (c) => {
    const { result, req } = await pendingExec(c);
    c.guest.control(execOk(req.id, { signal: 'KILL' }));
    return { pending: result };
  } },
  { name: 'exec result with an extra field', reason: 'bad-response', script: async (c) => {
    const { result, req } = await pendingExec(c);
    c.guest.control(execOk(req.id, { note: 'trust me' }));
    return { pending: result };
  } },
  { name: 'error response with a malformed code', reason: 'bad-response', script: async (c) => {
    const { result, req } = await pendingExec(c);
    c.guest.control({ id: req.id, ok: false, error: { code: 'Not Found!', message: 'x' } });
    return { pending: result };
  } },
  { name: 'exec reports more bytes than it sent', reason: 'length-mismatch', script: async (c) => {
    const { result, req, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Data, channel, Buffer.from('abc'));
    c.guest.frame(FrameKind.Eof, channel);
    c.guest.control(execOk(req.id, { stdoutBytes: 5 }));
    return { pending: result };
  } },
  { name: 'DATA on a channel the host never opened', reason: 'unknown-channel', script: async (c) => c.guest.frame(FrameKind.Data, 12345, Buffer.from('x')) },
  { name: 'DATA on a guest-range channel without stream.open', reason: 'unknown-channel', script: async (c) => c.guest.frame(FrameKind.Data, 0x8000_0005, Buffer.from('x')) },
  { name: 'DATA on an exec channel after its result', reason: 'unknown-channel', script: async (c) => {
    const { result, req, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Eof, channel);
    c.guest.control(execOk(req.id));
    await result;
    c.guest.frame(FrameKind.Data, channel, Buffer.from('late'));
  } },
  { name: 'stream.open with a host-range channel id', reason: 'bad-message', script: async (c) => {
    c.host.on('stream', (s) => s.on('error', () => {}));
    c.guest.control({ op: 'stream.open', channel: 5, port: 3128, peer: 'x' });
  } },
  { name: 'stream.open twice for one channel', reason: 'channel-in-use', script: async (c) => {
    c.host.on('stream', (s) => s.on('error', () => {}));
    await openStream(c);
    c.guest.control({ op: 'stream.open', channel: 0x8000_0001, port: 3128, peer: 'x' });
  } },
  { name: 'more streams than allowed', reason: 'stream-limit', options: { maxGuestStreams: 2 }, script: async (c) => {
    c.host.on('stream', (s) => s.on('error', () => {}));
    for (let i = 1; i <= 3; i++) c.guest.control({ op: 'stream.open', channel: 0x8000_0000 + i, port: 3128, peer: 'x' });
  } },
  { name: 'stream DATA beyond the credit window', reason: 'window-exceeded', script: async (c) => {
    const stream = await openStream(c); // never read: no credit goes back
    stream.pause();
    for (let i = 0; i < INITIAL_WINDOW_BYTES / 65536; i++) c.guest.frame(FrameKind.Data, stream.channel, Buffer.alloc(65536));
    c.guest.frame(FrameKind.Data, stream.channel, Buffer.from('!'));
  } },
  { name: 'empty DATA frame', reason: 'empty-data', script: async (c) => {
    const { result, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Data, channel);
    return { pending: result };
  } },
  { name: 'DATA after EOF', reason: 'data-after-eof', script: async (c) => {
    const { result, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Eof, channel);
    c.guest.frame(FrameKind.Data, channel, Buffer.from('x'));
    return { pending: result };
  } },
  { name: 'EOF twice', reason: 'duplicate-eof', script: async (c) => {
    const { result, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Eof, channel);
    c.guest.frame(FrameKind.Eof, channel);
    return { pending: result };
  } },
  { name: 'EOF with a payload', reason: 'bad-eof', script: async (c) => {
    const { result, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Eof, channel, Buffer.from('x'));
    return { pending: result };
  } },
  { name: 'WINDOW with a 3-byte payload', reason: 'bad-window', script: async (c) => {
    const { result, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Window, channel, Buffer.from([0, 0, 1]));
    return { pending: result };
  } },
  { name: 'WINDOW of zero', reason: 'bad-window', script: async (c) => {
    const { result, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Window, channel, u32(0));
    return { pending: result };
  } },
  { name: 'WINDOW past 2^31-1', reason: 'window-overflow', script: async (c) => {
    const { result, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Window, channel, u32(0x7fff_ffff));
    return { pending: result };
  } },
  { name: 'DATA on a file.write channel', reason: 'unexpected-frame', script: async (c) => {
    const result = c.host.writeFile('/tmp/x', 'abc');
    result.catch(() => {});
    const req = await c.guest.request();
    c.guest.frame(FrameKind.Data, req.channel as number, Buffer.from('x'));
    return { pending: result };
  } },
  { name: 'DATA_STDERR on a file.read channel', reason: 'unexpected-frame', script: async (c) => {
    const result = c.host.readFile('/etc/hostname');
    result.catch(() => {});
    const req = await c.guest.request();
    c.guest.frame(FrameKind.DataStderr, req.channel as number, Buffer.from('x'));
    return { pending: result };
  } },
  { name: 'CLOSE on an exec channel', reason: 'unexpected-frame', script: async (c) => {
    const { result, channel } = await pendingExec(c);
    c.guest.frame(FrameKind.Close, channel);
    return { pending: result };
  } },
  { name: 'CLOSE with a 2000-byte reason', reason: 'bad-close', script: async (c) => {
    const stream = await openStream(c);
    c.guest.frame(FrameKind.Close, stream.channel, Buffer.alloc(2000, 0x41));
  } },
  { name: 'exec output past maxOutputBytes', reason: 'output-limit-exceeded', script: async (c) => {
    const { result, channel } = await pendingExec(c, { maxOutputBytes: 10 });
    c.guest.frame(FrameKind.Data, channel, Buffer.alloc(6));
    c.guest.frame(FrameKind.DataStderr, channel, Buffer.alloc(5));
    return { pending: result };
  } },
  { name: 'file.read past maxBytes', reason: 'file-limit-exceeded', script: async (c) => {
    const result = c.host.readFile('/etc/passwd', { maxBytes: 4 });
    result.catch(() => {});
    const req = await c.guest.request();
    c.guest.frame(FrameKind.Data, req.channel as number, Buffer.from('root:'));
    return { pending: result };
  } },
];

for (const hc of hostile) {
  test(`hostile guest: ${hc.name} -> ${hc.reason}`, async () => {
    const c = setup(hc.options);
    const seen: GuestProtocolError[] = [];
    c.host.on('protocol-error', (e) => seen.push(e));
    const pending = (await hc.script(c))?.pending;
    const err = await c.protocolError;
    assert.ok(err instanceof GuestProtocolError);
    assert.equal(err.reason, hc.reason, err.message);
    assert.equal(err.code, 'sandbox-protocol');
    assert.equal(c.host.closedReason, err, 'the channel is closed with the protocol error');
    if (pending) await assert.rejects(pending, (e) => e === err);
    await assert.rejects(c.host.health(), (e) => e === err, 'later requests fail fast');
    await tick();
    assert.ok(c.guest.socket.destroyed, 'the socket was destroyed');
    assert.equal(seen.length, 1, 'exactly one protocol-error event');
  });
}

test('exec: stdout and stderr reach their callbacks, stdin is framed, result resolves', async () => {
  const c = setup();
  c.guest.hello();
  const hello = await c.host.ready;
  assert.equal(hello.kernel, '6.1.0-test');
  const out: string[] = [];
  const err: string[] = [];
  const p = c.host.exec({
    argv: ['cat'], env: { A: '1' }, cwd: '/tmp', stdin: 'input', timeoutMs: 5000, maxOutputBytes: 100,
    onStdout: (b) => out.push(b.toString()), onStderr: (b) => err.push(b.toString()),
  });
  const req = await c.guest.request();
  assert.deepEqual(
    { op: req.op, argv: req.argv, env: req.env, cwd: req.cwd, stdin: req.stdin, timeoutMs: req.timeoutMs, maxOutputBytes: req.maxOutputBytes },
    { op: 'exec', argv: ['cat'], env: { A: '1' }, cwd: '/tmp', stdin: true, timeoutMs: 5000, maxOutputBytes: 100 },
  );
  const ch = req.channel as number;
  const data = await c.guest.next();
  assert.deepEqual([data.kind, data.channel, data.payload.toString()], [FrameKind.Data, ch, 'input']);
  const eof = await c.guest.next();
  assert.deepEqual([eof.kind, eof.channel], [FrameKind.Eof, ch]);
  c.guest.frame(FrameKind.Data, ch, Buffer.from('input'));
  c.guest.frame(FrameKind.DataStderr, ch, Buffer.from('warn'));
  c.guest.frame(FrameKind.Eof, ch);
  c.guest.control(execOk(req.id, { exitCode: 3, stdoutBytes: 5, stderrBytes: 4 }));
  const r = await p;
  assert.equal(r.exitCode, 3);
  assert.deepEqual([out.join(''), err.join('')], ['input', 'warn']);
});

test('writeFile stops at the guest credit window and resumes on WINDOW', async () => {
  const c = setup();
  const size = 600 * 1024;
  const done = c.host.writeFile('/tmp/big', Buffer.alloc(size, 7));
  const req = await c.guest.request();
  assert.equal(req.size, size);
  const received = async (bytes: number) => {
    let n = 0;
    while (n < bytes) {
      const f = await c.guest.next();
      assert.equal(f.kind, FrameKind.Data);
      n += f.payload.length;
    }
    return n;
  };
  assert.equal(await received(INITIAL_WINDOW_BYTES), INITIAL_WINDOW_BYTES);
  for (let i = 0; i < 5; i++) await tick();
  assert.equal(c.guest.queued.length, 0, 'nothing beyond the window was sent');
  c.guest.frame(FrameKind.Window, req.channel as number, u32(100_000));
  assert.equal(await received(100_000), 100_000);
  for (let i = 0; i < 5; i++) await tick();
  assert.equal(c.guest.queued.length, 0);
  c.guest.frame(FrameKind.Window, req.channel as number, u32(size));
  assert.equal(await received(size - INITIAL_WINDOW_BYTES - 100_000), size - INITIAL_WINDOW_BYTES - 100_000);
  assert.equal((await c.guest.next()).kind, FrameKind.Eof);
  c.guest.control({ id: req.id, ok: true, bytes: size });
  assert.deepEqual(await done, { bytes: size });
});

test('a guest error response rejects with GuestOpError and keeps the channel open', async () => {
  const c = setup();
  const p = c.host.readFile('/nope');
  const req = await c.guest.request();
  c.guest.control({ id: req.id, ok: false, error: { code: 'not-found', message: 'open /nope: No such file' } });
  await assert.rejects(p, (e) => e instanceof GuestOpError && e.guestCode === 'not-found' && /No such file/.test(e.message));
  assert.equal(c.host.closedReason, undefined);
});

test('a request timeout rejects; the late answer is ignored, not a protocol error', async () => {
  const c = setup({ requestTimeoutMs: 30 });
  const p = c.host.health();
  const req = await c.guest.request();
  await assert.rejects(p, (e: unknown) => e instanceof Error && 'code' in e && e.code === 'sandbox-timeout');
  c.guest.control({ id: req.id, ok: false, error: { code: 'io-error', message: 'late' } });
  const p2 = c.host.setToken('abc.def.ghi');
  const req2 = await c.guest.request();
  c.guest.control({ id: req2.id, ok: true, path: '/run/cordon/token' });
  assert.deepEqual(await p2, { path: '/run/cordon/token' });
  assert.equal(c.host.closedReason, undefined);
});

test('aborting an exec sends CLOSE; frames in flight are dropped; the result still arrives', async () => {
  const c = setup();
  const ac = new AbortController();
  const p = c.host.exec({ argv: ['sleep', '100'], signal: ac.signal, onStdout: () => assert.fail('data after abort') });
  const req = await c.guest.request();
  ac.abort();
  const close = await c.guest.next();
  assert.deepEqual([close.kind, close.channel, close.payload.toString()], [FrameKind.Close, req.channel, 'aborted by the host']);
  c.guest.frame(FrameKind.Data, req.channel as number, Buffer.from('in flight'));
  c.guest.control(execOk(req.id, { exitCode: null, signal: 'KILL' }));
  const r = await p;
  assert.equal(r.signal, 'KILL');
  assert.equal(c.host.closedReason, undefined);
});

test('streams: bytes both ways, half-close, CLOSE acknowledged', async () => {
  const c = setup();
  const stream = await openStream(c);
  assert.deepEqual([stream.port, stream.peer], [3128, '127.0.0.1:40000']);
  c.guest.frame(FrameKind.Data, stream.channel, Buffer.from('CONNECT example.com:443'));
  c.guest.frame(FrameKind.Eof, stream.channel);
  const chunks: Buffer[] = [];
  stream.on('data', (b: Buffer) => chunks.push(b));
  await once(stream, 'end');
  assert.equal(Buffer.concat(chunks).toString(), 'CONNECT example.com:443');
  stream.end('HTTP/1.1 403 Forbidden\r\n\r\n');
  const data = await c.guest.next();
  assert.deepEqual([data.kind, data.payload.toString()], [FrameKind.Data, 'HTTP/1.1 403 Forbidden\r\n\r\n']);
  assert.equal((await c.guest.next()).kind, FrameKind.Eof);
  c.guest.frame(FrameKind.Close, stream.channel);
  const ack = await c.guest.next();
  assert.deepEqual([ack.kind, ack.channel, ack.payload.length], [FrameKind.Close, stream.channel, 0]);
  await once(stream, 'close');
  // The id is free again only after the close handshake: DATA now is a violation.
  c.guest.frame(FrameKind.Data, stream.channel, Buffer.from('x'));
  assert.equal((await c.protocolError).reason, 'unknown-channel');
});

test('a stream with no handler on the host is closed with a reason', async () => {
  const c = setup();
  c.guest.control({ op: 'stream.open', channel: 0x8000_0009, port: 3128, peer: '127.0.0.1:1' });
  const f = await c.guest.next();
  assert.deepEqual([f.kind, f.channel, f.payload.toString()], [FrameKind.Close, 0x8000_0009, 'no egress handler on the host']);
  c.guest.frame(FrameKind.Data, 0x8000_0009, Buffer.from('raced')); // in flight before our CLOSE: dropped
  c.guest.frame(FrameKind.Close, 0x8000_0009);
  await tick();
  assert.equal(c.host.closedReason, undefined);
});

test('ready rejects when the guest never says hello', async () => {
  const c = setup({ helloTimeoutMs: 20 });
  await assert.rejects(c.host.ready, (e: unknown) => e instanceof Error && 'code' in e && e.code === 'sandbox-hello-timeout');
  c.host.close();
});

test('input errors are refused before anything is sent', async () => {
  const c = setup();
  assert.throws(() => c.host.spawn({ argv: [] }), /non-empty argv/);
  assert.throws(() => c.host.spawn({ argv: ['x'], timeoutMs: 0 }), /timeoutMs must be an integer/);
  await assert.rejects(c.host.reseed(Buffer.alloc(8)), /seed length must be an integer in \[32, 512\]/);
  await assert.rejects(c.host.exec({ argv: ['x'.repeat(300_000)] }), /exec request is \d+ bytes; the limit is 262139/);
  assert.equal(c.guest.queued.length, 0);
});

test('writing to an exec spawned without stdin is refused on the host', async () => {
  const c = setup();
  const h = c.host.spawn({ argv: ['true'] });
  h.result.catch(() => {});
  await assert.rejects(h.write('x'), /this exec has no stdin/);
  const req = await c.guest.request();
  assert.equal(req.stdin, false);
  c.host.close();
});
