/** callUpstream and its body, against a real loopback server through a real undici pool. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { Pool } from 'undici';
import { callUpstream, UpstreamBody, type CallerWatch } from './upstream-call.js';

/** A {@link CallerWatch} over an `AbortSignal`. */
function watchSignal(signal: AbortSignal): CallerWatch {
  return {
    get aborted() { return signal.aborted; },
    onAbort(listener) {
      const onSignal = (): void => listener(); // the listener gets no Event: only a reason, or nothing
      signal.addEventListener('abort', onSignal, { once: true });
      return () => signal.removeEventListener('abort', onSignal);
    },
  };
}

let server: Server;
let pool: Pool;

before(async () => {
  server = createServer((req, res) => {
    if (req.url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      for (let i = 0; i < 64; i++) res.write(Buffer.alloc(16 * 1024, i));
      res.end();
    } else if (req.url === '/reset') {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('partial');
      setTimeout(() => res.destroy(), 20);
    } else if (req.url === '/slow') {
      setTimeout(() => res.end('late'), 2000);
    } else {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('hello upstream');
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  pool = new Pool(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { connections: 4 });
});

after(async () => {
  await pool.close();
  server.close();
});

function collect(body: UpstreamBody): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    body.on('data', (c: Buffer) => chunks.push(c)).once('end', () => resolve(Buffer.concat(chunks))).once('error', reject);
  });
}

test('bytes that came before anyone listened are handed over in order, then end', async () => {
  const res = await callUpstream(pool, { method: 'GET', path: '/' }, watchSignal(new AbortController().signal));
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-type'], 'text/plain');
  await new Promise((r) => setTimeout(r, 30)); // the whole answer is in by now
  assert.equal((await collect(res.body)).toString(), 'hello upstream');
});

test('pause holds the rest until resume; every byte arrives once, in order', async () => {
  const res = await callUpstream(pool, { method: 'GET', path: '/big' }, watchSignal(new AbortController().signal));
  const chunks: Buffer[] = [];
  let pausedAt = -1;
  const ended = new Promise<void>((resolve, reject) => {
    res.body.on('data', (c: Buffer) => {
      chunks.push(c);
      if (pausedAt < 0) {
        pausedAt = chunks.length;
        res.body.pause();
        setTimeout(() => {
          assert.equal(chunks.length, pausedAt, 'nothing is delivered while paused');
          res.body.resume();
        }, 50);
      }
    }).once('end', resolve).once('error', reject);
  });
  await ended;
  const all = Buffer.concat(chunks);
  assert.equal(all.length, 64 * 16 * 1024);
  for (let i = 0; i < 64; i++) assert.equal(all[i * 16 * 1024], i);
});

test('a connection cut mid-body is an error event; with no error listener it is dropped, not thrown', async () => {
  const res = await callUpstream(pool, { method: 'GET', path: '/reset' }, watchSignal(new AbortController().signal));
  await assert.rejects(collect(res.body));
  const silent = await callUpstream(pool, { method: 'GET', path: '/reset' }, watchSignal(new AbortController().signal));
  const got: Buffer[] = [];
  silent.body.on('data', (c: Buffer) => got.push(c));
  await new Promise((r) => setTimeout(r, 100)); // the reset comes and goes without an uncaught error
  assert.equal(Buffer.concat(got).toString(), 'partial');
});

test('aborting the signal before the answer rejects; after it, the body fails', async () => {
  const early = new AbortController();
  const pending = callUpstream(pool, { method: 'GET', path: '/slow' }, watchSignal(early.signal));
  setTimeout(() => early.abort(), 20);
  await assert.rejects(pending, (err: Error) => err.name === 'AbortError' || /abort|went away/i.test(err.message));
  const gone = new AbortController();
  gone.abort();
  await assert.rejects(callUpstream(pool, { method: 'GET', path: '/' }, watchSignal(gone.signal)), /went away/);
  const late = new AbortController();
  const res = await callUpstream(pool, { method: 'GET', path: '/big' }, watchSignal(late.signal));
  const failed = new Promise<Error>((resolve) => {
    res.body.on('data', () => late.abort()).once('error', resolve).once('end', () => resolve(new Error('ended instead of failing')));
  });
  assert.match((await failed).message, /went away/);
});

test('destroy drops the rest: no event follows', async () => {
  const res = await callUpstream(pool, { method: 'GET', path: '/big' }, watchSignal(new AbortController().signal));
  let after = 0;
  let destroyed = false;
  res.body.on('data', () => {
    if (destroyed) after++;
    else {
      destroyed = true;
      res.body.destroy();
    }
  }).once('end', () => { after++; }).once('error', () => { after++; });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(after, 0);
});

test('a dispatcher that cannot take the call rejects it, and stops watching the caller', async () => {
  const closed = new Pool('http://127.0.0.1:9', { connections: 1 });
  await closed.close();
  let watching = 0;
  const caller = {
    aborted: false,
    onAbort() {
      watching++;
      return () => { watching--; };
    },
  };
  await assert.rejects(callUpstream(closed, { method: 'GET', path: '/' }, caller));
  assert.equal(watching, 0);
  // A dispatcher that throws instead of failing the call through its handler.
  const throwing = { dispatch() { throw new Error('dispatch refused'); } } as unknown as Pool;
  await assert.rejects(callUpstream(throwing, { method: 'GET', path: '/' }, caller), /dispatch refused/);
  assert.equal(watching, 0);
});

/** A body attached to a controller that only records what the body asks of the provider. */
function recordingBody(): { calls: string[]; body: UpstreamBody } {
  const calls: string[] = [];
  const controller = {
    aborted: false, paused: false, reason: null, rawHeaders: null, rawTrailers: null,
    pause() { calls.push('pause'); },
    resume() { calls.push('resume'); },
    abort() { calls.push('abort'); },
  };
  const body = new UpstreamBody();
  body.attach(controller as never);
  return { calls, body };
}

test('a resume whose held chunk pauses the body again leaves the provider paused (back-pressure holds)', () => {
  const { calls, body } = recordingBody();
  // Two chunks came in one read, before anyone listened: both are held.
  body.push(Buffer.from('a'));
  body.push(Buffer.from('b'));
  const got: string[] = [];
  body.on('data', (c: Buffer) => {
    got.push(c.toString());
    body.pause(); // every chunk fills the client's buffer
  });
  body.resume(); // not paused yet: nothing to do
  body.pause();
  body.resume(); // hands over 'a', which pauses again
  assert.deepEqual(got, ['a']);
  assert.equal(calls.at(-1), 'pause', `the provider was resumed while the body is paused: ${calls.join(',')}`);
  body.resume(); // hands over 'b', which pauses again
  assert.deepEqual(got, ['a', 'b']);
  assert.equal(calls.at(-1), 'pause', `the provider was resumed while the body is paused: ${calls.join(',')}`);
  body.resume(); // nothing held: the provider reads again
  assert.equal(calls.at(-1), 'resume');
});

test('once the answer is complete, pause and resume leave the connection alone (it may carry another call by then)', () => {
  const { calls, body } = recordingBody();
  // The whole answer came in before anyone listened; the connection went back to the pool.
  body.push(Buffer.from('a'));
  body.push(Buffer.from('b'));
  body.finish();
  const got: string[] = [];
  let ended = false;
  body.on('data', (c: Buffer) => {
    got.push(c.toString());
    body.pause(); // the client is slow
  }).once('end', () => { ended = true; });
  body.pause();
  body.resume();
  body.resume();
  body.resume();
  assert.deepEqual(got, ['a', 'b']);
  assert.equal(ended, true);
  assert.deepEqual(calls, [], 'the controller of a finished answer was paused or resumed');
});
