/** survivesAcceptErrors: a listening server outlives accept failures, and says so once per interval. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { test } from 'node:test';
import { survivesAcceptErrors } from './listener.js';

test('accept failures after listen are absorbed, counted and warned about once per interval; the server still serves', async () => {
  const server = createServer((s) => s.end('ok'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const warnings: string[] = [];
  const onWarning = (w: Error & { code?: string }): void => { if (w.code === 'CORDON_ACCEPT_FAILED') warnings.push(w.message); };
  process.on('warning', onWarning);
  try {
    const failures = survivesAcceptErrors(server, 'the test server', 60_000);
    for (let i = 0; i < 3; i++) {
      server.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' }));
    }
    await new Promise((r) => setImmediate(r));
    assert.equal(failures(), 3);
    assert.equal(warnings.length, 1, 'one warning for the burst');
    assert.match(warnings[0]!, /the test server: 1 connection\(s\) could not be accepted \(EMFILE/);
    const port = (server.address() as { port: number }).port;
    const sock = connect(port, '127.0.0.1');
    const [data] = await once(sock, 'data');
    assert.equal(String(data), 'ok');
    sock.destroy();
  } finally {
    process.off('warning', onWarning);
    server.close();
  }
});
