/**
 * ClientHello parser tests: real hellos from node's TLS client, whole, split
 * at every byte, split across TLS records, without SNI, and malformed input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { PassThrough } from 'node:stream';
import { parseClientHello, readClientHello } from './sni.js';

/** The first flight of a TLS client, captured on a loopback socket. */
async function captureClientHello(servername: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const srv = createServer((s) => {
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (parseClientHello(buf).status !== 'incomplete') {
          s.destroy();
          srv.close();
          resolve(buf);
        }
      });
    });
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      const t = tlsConnect({ port, host: '127.0.0.1', servername, rejectUnauthorized: false });
      t.on('error', () => undefined);
    });
    setTimeout(() => reject(new Error('no ClientHello captured')), 5000).unref();
  });
}

/** Re-frame a single-record hello into records of `size` bytes of handshake data each. */
function reRecord(hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size);
    const h = Buffer.from([22, 3, 1, 0, 0]);
    h.writeUInt16BE(part.length, 3);
    out.push(h, part);
  }
  return Buffer.concat(out);
}

test('a real ClientHello yields its SNI, and every strict prefix is incomplete', async () => {
  const hello = await captureClientHello('api.example.com');
  assert.deepEqual(parseClientHello(hello), { status: 'ok', sni: 'api.example.com' });
  for (let n = 0; n < hello.length; n++) {
    assert.equal(parseClientHello(hello.subarray(0, n)).status, 'incomplete', `prefix of ${n} bytes`);
  }
});

test('a ClientHello spread over many TLS records still yields its SNI', async () => {
  const hello = await captureClientHello('split.example.com');
  for (const size of [1, 7, 100]) {
    assert.deepEqual(parseClientHello(reRecord(hello, size)), { status: 'ok', sni: 'split.example.com' }, `records of ${size} bytes`);
  }
});

test('a ClientHello without server_name parses with no SNI', async () => {
  const hello = await captureClientHello('');
  assert.deepEqual(parseClientHello(hello), { status: 'ok' });
});

const invalid: Array<{ name: string; bytes: Buffer; problem: RegExp }> = [
  { name: 'plain HTTP', bytes: Buffer.from('GET / HTTP/1.1\r\n\r\n'), problem: /handshake record/ },
  { name: 'SSH banner', bytes: Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'), problem: /handshake record/ },
  { name: 'record version 2', bytes: Buffer.from([22, 2, 0, 0, 4, 1, 0, 0, 0]), problem: /version/ },
  { name: 'zero-length record', bytes: Buffer.from([22, 3, 1, 0, 0]), problem: /length/ },
  { name: 'ServerHello instead', bytes: Buffer.from([22, 3, 3, 0, 4, 2, 0, 0, 0]), problem: /not a ClientHello/ },
  { name: 'truncated body', bytes: Buffer.from([22, 3, 1, 0, 6, 1, 0, 0, 2, 3, 3]), problem: /truncated/ },
];
for (const c of invalid) {
  test(`invalid input is refused: ${c.name}`, () => {
    const r = parseClientHello(c.bytes);
    assert.equal(r.status, 'invalid');
    assert.match((r as { problem: string }).problem, c.problem);
  });
}

test('readClientHello gives up at the byte cap and at the timeout', async () => {
  const big = new PassThrough();
  const pending = readClientHello(big, { maxBytes: 600, timeoutMs: 5000 });
  const header = Buffer.from([22, 3, 1, 0x40, 0x00]); // one 16 KiB record, never completed
  big.write(Buffer.concat([header, Buffer.alloc(1000)]));
  const capped = await pending;
  assert.equal(capped.ok, false);
  assert.equal((capped as { reason: string }).reason, 'sni-too-large');

  const slow = new PassThrough();
  const started = Date.now();
  const timedOut = await readClientHello(slow, { maxBytes: 16389, timeoutMs: 150 });
  assert.equal((timedOut as { reason: string }).reason, 'sni-timeout');
  assert.ok(Date.now() - started >= 140, 'waited for the timeout');
});
