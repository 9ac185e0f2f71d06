import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SandboxError } from '../../errors/index.js';
import { connectQmp } from './qmp.js';

/** A QMP server that answers like QEMU: greeting, capabilities, `query-status`, an error, and `quit`. */
async function fakeQemu(opts: { greet?: boolean } = {}): Promise<{ path: string; server: Server; sockets: Socket[]; close: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-qmp-test-'));
  const path = join(dir, 'qmp.sock');
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    sockets.push(s);
    if (opts.greet !== false) s.write('{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}\r\n');
    let buf = '';
    s.on('data', (d) => {
      if (s.writableEnded) return;
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as { execute: string };
        buf = buf.slice(nl + 1);
        if (cmd.execute === 'qmp_capabilities') s.write('{"return": {}}\r\n');
        else if (cmd.execute === 'query-status') {
          s.write('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "VSERPORT_CHANGE", "data": {"id": "ctl0", "open": true}}\r\n');
          s.write('{"return": {"status": "running", "running": true}}\r\n');
        } else if (cmd.execute === 'quit') {
          s.end('{"return": {}}\r\n');
          return;
        } else s.write('{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\r\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, server, sockets, close: () => { for (const s of sockets) s.destroy(); server.close(); rmSync(dir, { recursive: true, force: true }); } };
}

test('commands get their replies in order and events are kept apart', async () => {
  const q = await fakeQemu();
  try {
    const c = await connectQmp(q.path);
    assert.deepEqual(await c.execute('query-status'), { status: 'running', running: true });
    const ev = await c.waitForEvent((e) => e.event === 'VSERPORT_CHANGE' && e.data?.['open'] === true, 100);
    assert.deepEqual(ev.data, { id: 'ctl0', open: true });
    await assert.rejects(c.execute('nope'), /QMP error CommandNotFound: The command nope has not been found/);
    c.close();
  } finally {
    q.close();
  }
});

test('a pending command fails when QEMU goes away', async () => {
  const q = await fakeQemu();
  try {
    const c = await connectQmp(q.path);
    await c.execute('quit');
    await assert.rejects(c.execute('query-status'), /QMP connection closed/);
  } finally {
    q.close();
  }
});

test('waitForEvent times out with a sandbox error', async () => {
  const q = await fakeQemu();
  try {
    const c = await connectQmp(q.path);
    await assert.rejects(c.waitForEvent((e) => e.event === 'SHUTDOWN', 50), (err: unknown) => err instanceof SandboxError && err.code === 'sandbox-timeout');
    c.close();
  } finally {
    q.close();
  }
});

test('a server that never greets is given up on', async () => {
  const q = await fakeQemu({ greet: false });
  try {
    await assert.rejects(connectQmp(q.path, 100), /QMP greeting did not arrive within 100 ms/);
  } finally {
    q.close();
  }
});

test('a missing socket is a sandbox error naming the path', async () => {
  await assert.rejects(connectQmp('/nonexistent/qmp.sock'), /cannot connect to QMP at \/nonexistent\/qmp.sock/);
});
