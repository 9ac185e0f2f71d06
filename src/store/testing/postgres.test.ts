/**
 * The throw-away PostgreSQL fixture itself: it survives losing its port to
 * another test file, and a test process ended by a signal leaves no server
 * and no directory behind. Skips, saying why, without PostgreSQL binaries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import pg from 'pg';
import { postgresSkipReason, startTestPostgres } from './postgres.js';

const skip = postgresSkipReason();
const opts = { skip: skip ?? false };

/** Whether anything accepts PostgreSQL logins on the port. */
async function answers(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  try {
    await c.connect();
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

test('a port taken between picking and binding (another test file) is given up for another one', opts, async () => {
  const squatter: Server = createServer((s) => s.destroy());
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  const taken = (squatter.address() as { port: number }).port;
  const picked: number[] = [];
  let first = true;
  const server = await startTestPostgres({
    pickPort: async () => {
      const port = first ? taken : 0;
      first = false;
      if (port !== 0) return picked[picked.push(port) - 1]!;
      const free = createServer();
      await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
      const p = (free.address() as { port: number }).port;
      await new Promise<void>((resolve) => free.close(() => resolve()));
      picked.push(p);
      return p;
    },
  });
  try {
    assert.equal(picked.length, 2, 'a second port was picked');
    assert.equal(server.port, picked[1]);
    assert.deepEqual(await server.admin<{ one: number }>('select 1 as one'), [{ one: 1 }]);
  } finally {
    await server.stop();
    squatter.close();
  }
  assert.ok(!existsSync(server.dir), 'stop() removed the directory');
});

// The child imports the fixture with this file's own extension: .ts from the sources, .js under dist/ (npm test).
const CHILD = `
import { startTestPostgres } from ${JSON.stringify(new URL(`./postgres${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url).href)};
const s = await startTestPostgres();
process.stdout.write(JSON.stringify({ url: s.adminUrl(), dir: s.dir }) + '\\n');
setInterval(() => undefined, 1000);
`;

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`a test process ended by ${signal} stops its server and removes its directory`, opts, async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, sig) => resolve(sig)));
    let out = '';
    const started = await new Promise<{ url: string; dir: string }>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!));
      });
      void exited.then(() => reject(new Error(`the child ended before its server started: ${out}`)));
    });
    assert.ok(await answers(started.url), 'the child\'s server runs');
    child.kill(signal);
    assert.equal(await exited, signal, 'the child still dies of the signal');
    assert.equal(await answers(started.url), false, 'no server outlives the child');
    assert.ok(!existsSync(started.dir), `the directory ${started.dir} is gone`);
  });
}
