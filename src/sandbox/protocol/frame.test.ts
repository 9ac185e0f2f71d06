/**
 * Codec tests: encodeFrame/FrameDecoder round trips, chunking, and a table of
 * malformed input, each asserting the protocol error reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { GuestProtocolError, type ProtocolErrorReason } from './errors.js';
import { FrameDecoder, FrameKind, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES, encodeFrame, type Frame } from './frame.js';

function header(length: number, kind?: number, channel?: number): Buffer {
  const b = Buffer.alloc(kind === undefined ? 4 : 9);
  b.writeUInt32BE(length >>> 0, 0);
  if (kind !== undefined) {
    b[4] = kind;
    b.writeUInt32BE(channel ?? 0, 5);
  }
  return b;
}

function decodeAll(chunks: Buffer[]): Frame[] {
  const d = new FrameDecoder();
  const out: Frame[] = [];
  for (const c of chunks) out.push(...d.push(c));
  d.end();
  return out;
}

test('encodeFrame writes length, kind, channel, payload', () => {
  const f = encodeFrame(FrameKind.Data, 0x8000_0001, Buffer.from('hi'));
  assert.equal(f.toString('hex'), '00000007' + '02' + '80000001' + '6869');
});

test('round trip: many frames in one chunk, and the same bytes split one byte at a time', () => {
  const frames = [
    encodeFrame(FrameKind.Control, 0, Buffer.from('{"op":"hello"}')),
    encodeFrame(FrameKind.Data, 3, randomBytes(70_000)),
    encodeFrame(FrameKind.Eof, 3),
    encodeFrame(FrameKind.Window, 3, Buffer.from([0, 1, 0, 0])),
    encodeFrame(FrameKind.Close, 0x8000_0002, Buffer.from('bye')),
  ];
  const wire = Buffer.concat(frames);
  const whole = decodeAll([wire]);
  const bytewise = decodeAll([...wire].map((b) => Buffer.from([b])));
  for (const got of [whole, bytewise]) {
    assert.equal(got.length, frames.length);
    assert.deepEqual(got.map((f) => f.kind), [1, 2, 4, 5, 6]);
    assert.deepEqual(got.map((f) => f.channel), [0, 3, 3, 3, 0x8000_0002]);
    assert.ok(Buffer.concat(got.map((f) => encodeFrame(f.kind, f.channel, f.payload))).equals(wire));
  }
});

test('a frame at exactly the size limit is accepted; split at odd offsets', () => {
  const f = encodeFrame(FrameKind.Data, 1, randomBytes(MAX_PAYLOAD_BYTES));
  const got = decodeAll([f.subarray(0, 3), f.subarray(3, 7), f.subarray(7, 100_001), f.subarray(100_001)]);
  assert.equal(got.length, 1);
  assert.equal(got[0]!.payload.length, MAX_PAYLOAD_BYTES);
  assert.ok(got[0]!.payload.equals(f.subarray(9)));
});

test('oversize length is rejected from the 4-byte prefix alone, before any payload is buffered', () => {
  const d = new FrameDecoder();
  assert.throws(() => d.push(header(MAX_FRAME_BYTES + 1)), (e: unknown) => {
    assert.ok(e instanceof GuestProtocolError);
    assert.equal(e.reason, 'frame-too-large');
    assert.match(e.message, /262145 exceeds the limit of 262144/);
    return true;
  });
  assert.equal(d.bufferedBytes, 0);
  // Poisoned: later input cannot resynchronise it.
  assert.throws(() => d.push(encodeFrame(FrameKind.Eof, 1)), /frame-too-large/);
});

const malformed: { name: string; chunks: Buffer[]; reason: ProtocolErrorReason; message: RegExp }[] = [
  { name: 'length 0xffffffff', chunks: [header(0xffff_ffff)], reason: 'frame-too-large', message: /4294967295/ },
  { name: 'length one over the limit, split 2+2', chunks: [header(MAX_FRAME_BYTES + 1).subarray(0, 2), header(MAX_FRAME_BYTES + 1).subarray(2)], reason: 'frame-too-large', message: /262145/ },
  { name: 'length 0', chunks: [header(0)], reason: 'frame-too-short', message: /length field 0/ },
  { name: 'length 4 (no room for the channel)', chunks: [header(4)], reason: 'frame-too-short', message: /length field 4/ },
  { name: 'kind 0', chunks: [header(5, 0, 1)], reason: 'unknown-kind', message: /kind 0/ },
  { name: 'kind 7', chunks: [header(5, 7, 1)], reason: 'unknown-kind', message: /kind 7/ },
  { name: 'kind 255 announced before its payload arrives', chunks: [header(1000, 255, 1)], reason: 'unknown-kind', message: /kind 255/ },
  { name: 'ASCII garbage ("GET / HTTP/1.1")', chunks: [Buffer.from('GET / HTTP/1.1\r\n')], reason: 'frame-too-large', message: /1195725856/ },
  { name: 'JSON without framing', chunks: [Buffer.from('{"op":"hello"}')], reason: 'frame-too-large', message: /exceeds/ },
  { name: 'stream ends inside the header', chunks: [header(10).subarray(0, 3)], reason: 'truncated-frame', message: /3 bytes held/ },
  { name: 'stream ends inside the payload', chunks: [encodeFrame(FrameKind.Data, 1, Buffer.from('abcdef')).subarray(0, 12)], reason: 'truncated-frame', message: /12 bytes held/ },
  { name: 'valid frame followed by garbage length', chunks: [encodeFrame(FrameKind.Eof, 2), header(0x0100_0000)], reason: 'frame-too-large', message: /16777216/ },
];

for (const c of malformed) {
  test(`malformed: ${c.name} -> ${c.reason}`, () => {
    assert.throws(() => decodeAll(c.chunks), (e: unknown) => {
      assert.ok(e instanceof GuestProtocolError, `expected GuestProtocolError, got ${String(e)}`);
      assert.equal(e.reason, c.reason);
      assert.equal(e.code, 'sandbox-protocol');
      assert.match(e.message, c.message);
      return true;
    });
  });
}

test('fuzz: random byte soup never throws anything but GuestProtocolError', () => {
  for (let i = 0; i < 500; i++) {
    const d = new FrameDecoder();
    const soup = randomBytes(1 + (i % 64));
    try {
      d.push(soup);
      d.end();
    } catch (e) {
      assert.ok(e instanceof GuestProtocolError, `iteration ${i}: ${String(e)}`);
    }
  }
});

test('encodeFrame refuses what the protocol cannot carry', () => {
  assert.throws(() => encodeFrame(FrameKind.Data, 1, Buffer.alloc(MAX_PAYLOAD_BYTES + 1)), /exceeds 262139/);
  assert.throws(() => encodeFrame(FrameKind.Data, 2 ** 32), /not a u32/);
  assert.throws(() => encodeFrame(9 as FrameKind, 1), /unknown kind 9/);
});
