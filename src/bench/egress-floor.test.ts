/**
 * The egress bench's floor, the bare Node.js CONNECT proxy: it must really
 * relay bytes both ways, or its figures would measure nothing.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { test } from 'node:test';
import { startBareConnectProxy } from './egress-floor.js';

async function readUntil(s: Socket, pattern: RegExp, timeoutMs = 5000): Promise<string> {
  let text = '';
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(text)) {
    if (Date.now() > deadline) throw new Error(`no ${pattern} within ${timeoutMs} ms; got ${JSON.stringify(text)}`);
    const chunk = s.read() as Buffer | null;
    if (chunk) text += chunk.toString('latin1');
    else await Promise.race([once(s, 'readable'), new Promise((r) => setTimeout(r, 50))]);
  }
  return text;
}

test('the bare CONNECT proxy relays bytes both ways, including bytes sent with the CONNECT', async () => {
  const echo = createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
  await once(echo, 'listening');
  const floor = await startBareConnectProxy();
  const c = connect(floor.port, '127.0.0.1');
  try {
    await once(c, 'connect');
    c.write(`CONNECT 127.0.0.1:${(echo.address() as AddressInfo).port} HTTP/1.1\r\nHost: x\r\n\r\nearly-`);
    const got = await readUntil(c, /early-$/);
    assert.match(got, /^HTTP\/1\.1 200 /);
    c.write('and-later');
    assert.match(await readUntil(c, /and-later$/), /and-later$/);
  } finally {
    c.destroy();
    await floor.close();
    echo.close();
  }
});

test('anything but CONNECT gets 405; a malformed target gets 400', async () => {
  const floor = await startBareConnectProxy();
  try {
    const res = await fetch(`http://127.0.0.1:${floor.port}/`);
    assert.equal(res.status, 405);
    const c = connect(floor.port, '127.0.0.1');
    await once(c, 'connect');
    c.write('CONNECT no-port HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(await readUntil(c, /\r\n\r\n/), /^HTTP\/1\.1 400 /);
    c.destroy();
  } finally {
    await floor.close();
  }
});
