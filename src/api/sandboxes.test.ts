/**
 * Sandbox routes, in process (`app.request`), with the real manager, a real
 * back end (bubblewrap when it works here, else a microVM), the real audit log
 * on SQLite, and one sandbox shared by the tests. Bad inputs are one table.
 * A scripted manager covers what a real guest cannot be made to do on demand:
 * failing in the middle of a stream, and a client that goes away.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { AuditLog, queryEvents } from '../audit/index.js';
import { parseConfig } from '../config/index.js';
import { NotFoundError, SandboxError } from '../errors/index.js';
import { createBackends, createSandboxManager, type SandboxInfo, type SandboxManager } from '../sandbox/index.js';
import type { ExecResult } from '../sandbox/protocol/index.js';
import { fastestIsolation, sandboxTestHome, type SandboxTestHome } from '../sdk/testing.js';
import { openStore, type Store } from '../store/index.js';
import { createApi, operatorTokenChecker } from './index.js';

const TOKEN = 'cop_' + 'A'.repeat(43);
const AUTH = { authorization: `Bearer ${TOKEN}` };
const MAX_FILE_BYTES = 4096;
const UNKNOWN_ID = 'sb-aaaaaaaaaaaaaaaaaaaa';

type Line = { stdout?: string; stderr?: string; result?: ExecResult; error?: { error: string; message: string; fix?: string } };

function parseLines(text: string): Line[] {
  assert.ok(text.endsWith('\n'), `the stream ends with a newline: ${JSON.stringify(text.slice(-80))}`);
  return text.trimEnd().split('\n').map((l) => JSON.parse(l) as Line);
}

function joined(lines: Line[], key: 'stdout' | 'stderr'): string {
  return Buffer.concat(lines.filter((l) => l[key] !== undefined).map((l) => Buffer.from(l[key]!, 'base64'))).toString('utf8');
}

describe('sandbox routes on a real back end', () => {
  let home: SandboxTestHome;
  let store: Store;
  let audit: AuditLog;
  let manager: SandboxManager;
  let app: ReturnType<typeof createApi>;
  let sb: SandboxInfo;
  let isolation: 'bubblewrap' | 'microvm';

  const call = (method: string, path: string, init: { body?: string | Uint8Array; json?: unknown; headers?: Record<string, string> } = {}) =>
    app.request(path, {
      method,
      headers: { ...AUTH, ...(init.json !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers },
      ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : init.body !== undefined ? { body: init.body } : {}),
    });
  const exec = async (argv: string[], extra: Record<string, unknown> = {}) => {
    const res = await call('POST', `/v1/sandboxes/${sb.id}/exec`, { json: { argv, ...extra } });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(res.headers.get('content-type'), 'application/x-ndjson');
    return parseLines(await res.text());
  };
  const events = (type: string) => queryEvents(store, { sandbox: sb.id, type, order: 'asc', limit: 1000 });

  before(async () => {
    home = await sandboxTestHome();
    isolation = await fastestIsolation(home.path);
    store = await openStore({ kind: 'sqlite', path: join(home.path, 'cordon.db') });
    audit = await AuditLog.open({ store, keyDir: join(home.path, 'keys') });
    const config = parseConfig(`
version: 1
agents:
  dev: { isolation: ${isolation}, resources: { timeout: 10m, maxOutputBytes: 65536 } }
`);
    manager = createSandboxManager({ home: home.path, config, audit, backends: createBackends({ home: home.path }) });
    app = createApi({ audit, isOperatorToken: operatorTokenChecker(TOKEN), version: '0.0.0-test', sandboxes: manager, maxFileBytes: MAX_FILE_BYTES });
    const res = await call('POST', '/v1/sandboxes', { json: { agent: 'dev', timeoutMs: 300_000 } });
    assert.equal(res.status, 201, await res.clone().text());
    sb = (await res.json()) as SandboxInfo;
  });

  after(async () => {
    await manager?.close();
    await audit?.close();
    await store?.close();
    home?.cleanup();
  });

  test('POST /v1/sandboxes starts a sandbox of the agent\'s tier and audits it', async (t) => {
    t.diagnostic(`back end: ${isolation}, started in ${sb.startMs} ms`);
    assert.match(sb.id, /^sb-[a-z2-7]{20}$/);
    assert.equal(sb.agent, 'dev');
    assert.equal(sb.isolation, isolation);
    assert.equal(sb.tier, isolation === 'bubblewrap' ? 'bubblewrap' : sb.tier.startsWith('microvm-') ? sb.tier : 'microvm-?');
    assert.equal(sb.state, 'running');
    const [created] = await events('sandbox.create');
    assert.equal(created?.actor, 'operator');
    assert.equal(created?.agent, 'dev');
    assert.equal((created?.data as { timeoutMs: number }).timeoutMs, 300_000);
    assert.equal((await events('sandbox.ready')).length, 1);
  });

  test('GET /v1/sandboxes and /v1/sandboxes/:id describe it', async () => {
    const list = (await (await call('GET', '/v1/sandboxes')).json()) as { sandboxes: SandboxInfo[] };
    assert.deepEqual(list.sandboxes.map((s) => s.id), [sb.id]);
    const one = (await (await call('GET', `/v1/sandboxes/${sb.id}`)).json()) as SandboxInfo;
    assert.equal(one.id, sb.id);
    assert.equal(one.state, 'running');
  });

  test('exec streams stdout and stderr lines, then the result; argv, exit code and duration are audited', async () => {
    const before = (await events('sandbox.exec.result')).length;
    const lines = await exec(['/bin/sh', '-c', 'printf out1; printf err1 >&2; printf out2; exit 3']);
    const last = lines.at(-1)!;
    assert.ok(last.result, `the last line is the result: ${JSON.stringify(last)}`);
    assert.equal(last.result.exitCode, 3);
    assert.equal(last.result.signal, null);
    assert.equal(joined(lines, 'stdout'), 'out1out2');
    assert.equal(joined(lines, 'stderr'), 'err1');
    assert.ok(lines.slice(0, -1).every((l) => l.stdout !== undefined || l.stderr !== undefined), 'only output lines before the result');
    const started = (await events('sandbox.exec')).at(-1)!;
    assert.deepEqual((started.data as { argv: string[] }).argv, ['/bin/sh', '-c', 'printf out1; printf err1 >&2; printf out2; exit 3']);
    const results = await events('sandbox.exec.result');
    assert.equal(results.length, before + 1);
    const r = results.at(-1)!.data as { exitCode: number; durationMs: number };
    assert.equal(r.exitCode, 3);
    assert.equal(typeof r.durationMs, 'number');
    assert.ok(r.durationMs >= 0 && r.durationMs === last.result.durationMs);
  });

  test('exec output arrives while the command still runs', async () => {
    const res = await call('POST', `/v1/sandboxes/${sb.id}/exec`, { json: { argv: ['/bin/sh', '-c', 'echo first; sleep 2; echo second'] } });
    const reader = res.body!.getReader();
    const t0 = performance.now();
    const first = await reader.read();
    const firstMs = performance.now() - t0;
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += Buffer.from(value).toString('utf8');
    }
    const totalMs = performance.now() - t0;
    assert.deepEqual(JSON.parse(Buffer.from(first.value!).toString('utf8').split('\n')[0]!), { stdout: Buffer.from('first\n').toString('base64') });
    assert.ok(firstMs < 1500 && totalMs >= 1900, `first line after ${Math.round(firstMs)} ms, all after ${Math.round(totalMs)} ms`);
    assert.match(rest, /"result":\{[^}]*"exitCode":0/);
  });

  test('exec passes stdin (base64), env and cwd', async () => {
    const stdin = Buffer.from([0, 1, 2, 255, 10]).toString('base64');
    const lines = await exec(['/bin/sh', '-c', 'od -An -tu1 | tr -s " "; echo "$GREETING"; pwd'], { stdin, env: { GREETING: 'hi' }, cwd: '/tmp' });
    assert.equal(joined(lines, 'stdout'), ' 0 1 2 255 10\nhi\n/tmp\n');
    assert.equal(lines.at(-1)!.result!.exitCode, 0);
  });

  test('files: a binary file round-trips through PUT and GET, and both are audited', async () => {
    const data = Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 256));
    const put = await call('PUT', `/v1/sandboxes/${sb.id}/files?path=/tmp/bytes.bin&mode=600`, { body: data });
    assert.equal(put.status, 200, await put.clone().text());
    assert.deepEqual(await put.json(), { path: '/tmp/bytes.bin', bytes: 1024 });
    const get = await call('GET', `/v1/sandboxes/${sb.id}/files?path=/tmp/bytes.bin`);
    assert.equal(get.status, 200);
    assert.equal(get.headers.get('content-type'), 'application/octet-stream');
    assert.deepEqual(Buffer.from(await get.arrayBuffer()), data);
    const mode = await exec(['stat', '-c', '%a', '/tmp/bytes.bin']);
    assert.equal(joined(mode, 'stdout'), '600\n');
    const write = (await events('sandbox.file.write')).at(-1)!;
    assert.deepEqual(write.data, { path: '/tmp/bytes.bin', bytes: 1024, mode: 0o600 });
    const read = (await events('sandbox.file.read')).at(-1)!;
    assert.deepEqual(read.data, { path: '/tmp/bytes.bin', bytes: 1024 });
  });

  test('files: a write over the limit is 413 and writes nothing', async () => {
    const res = await call('PUT', `/v1/sandboxes/${sb.id}/files?path=/tmp/big.bin`, { body: Buffer.alloc(MAX_FILE_BYTES + 1) });
    assert.equal(res.status, 413);
    const body = (await res.json()) as { error: string; message: string; fix: string };
    assert.equal(body.error, 'limit-exceeded');
    assert.match(body.message, /larger than the limit of 4096 bytes/);
    assert.match(body.fix, /at most 4096 bytes/);
    const ls = await exec(['/bin/sh', '-c', 'test -e /tmp/big.bin && echo exists || echo absent']);
    assert.equal(joined(ls, 'stdout'), 'absent\n');
  });

  test('files: reading a file over the limit is 413, a missing file 404', async () => {
    await exec(['/bin/sh', '-c', `head -c ${MAX_FILE_BYTES + 10} /dev/zero > /tmp/large`]);
    const big = await call('GET', `/v1/sandboxes/${sb.id}/files?path=/tmp/large`);
    assert.equal(big.status, 413, await big.clone().text());
    assert.match(((await big.json()) as { message: string }).message, /\/tmp\/large is larger than the limit of 4096 bytes/);
    const missing = await call('GET', `/v1/sandboxes/${sb.id}/files?path=/tmp/does-not-exist`);
    assert.equal(missing.status, 404);
    assert.match(((await missing.json()) as { message: string }).message, /\/tmp\/does-not-exist does not exist in the sandbox/);
    const reads = (await events('sandbox.file.read')).slice(-2).map((e) => e.data as { path: string; error?: string });
    assert.deepEqual(reads.map((d) => d.path), ['/tmp/large', '/tmp/does-not-exist']);
    assert.ok(reads.every((d) => typeof d.error === 'string'), 'failed reads are audited with their error');
  });

  const ID = '{id}';
  const bad: Array<{ name: string; method: string; path: string; json?: unknown; body?: string; headers?: Record<string, string>; status: number; code: string; message: RegExp; fix?: RegExp }> = [
    { name: 'argv is a string', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: 'ls -l' }, status: 400, code: 'invalid-input', message: /argv: Expected array, received string/ },
    { name: 'argv is empty', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: [] }, status: 400, code: 'invalid-input', message: /^invalid request body: argv: needs at least the program name$/ },
    { name: 'argv holds a number', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['echo', 1] }, status: 400, code: 'invalid-input', message: /argv\.1: Expected string, received number/ },
    { name: 'argv[0] is empty', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: [''] }, status: 400, code: 'invalid-input', message: /argv\[0\] \(the program\) must not be empty/ },
    { name: 'argv holds a NUL', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['echo', 'a\0b'] }, status: 400, code: 'invalid-input', message: /argv\.1: an argument must not contain NUL bytes/ },
    { name: 'unknown field', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['ls'], shell: true }, status: 400, code: 'invalid-input', message: /unknown field\(s\) "shell"/ },
    { name: 'stdin is not base64', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['cat'], stdin: 'not base64!' }, status: 400, code: 'invalid-input', message: /stdin: must be standard base64/ },
    { name: 'stdin has bad padding', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['cat'], stdin: 'abc' }, status: 400, code: 'invalid-input', message: /stdin: must be standard base64/ },
    { name: 'relative cwd', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['ls'], cwd: 'tmp' }, status: 400, code: 'invalid-input', message: /cwd: must be an absolute path/ },
    { name: 'zero timeout', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['ls'], timeoutMs: 0 }, status: 400, code: 'invalid-input', message: /timeoutMs: Number must be greater than or equal to 1/ },
    { name: 'bad env name', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['ls'], env: { 'A-B': 'x' } }, status: 400, code: 'invalid-input', message: /env\.A-B: environment names are letters, digits and _/ },
    { name: 'body is not JSON', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, body: '{argv: [ls]}', status: 400, code: 'invalid-input', message: /the request body is not JSON/ },
    { name: 'a proxy variable cordon sets (refused by the manager before the stream)', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['ls'], env: { HTTPS_PROXY: 'http://evil' } }, status: 400, code: 'invalid-input', message: /HTTPS_PROXY is set by cordon/ },
    { name: 'maxOutputBytes over the agent\'s limit', method: 'POST', path: `/v1/sandboxes/${ID}/exec`, json: { argv: ['ls'], maxOutputBytes: 65537 }, status: 400, code: 'invalid-input', message: /maxOutputBytes 65537 exceeds the agent's limit of 65536/ },
    { name: 'exec in an unknown sandbox', method: 'POST', path: `/v1/sandboxes/${UNKNOWN_ID}/exec`, json: { argv: ['ls'] }, status: 404, code: 'not-found', message: new RegExp(`^no sandbox ${UNKNOWN_ID}$`), fix: /cordon sandbox ls/ },
    { name: 'GET an unknown sandbox', method: 'GET', path: `/v1/sandboxes/${UNKNOWN_ID}`, status: 404, code: 'not-found', message: /no sandbox/, fix: /cordon sandbox ls/ },
    { name: 'DELETE an unknown sandbox', method: 'DELETE', path: `/v1/sandboxes/${UNKNOWN_ID}`, status: 404, code: 'not-found', message: /no sandbox/, fix: /cordon sandbox ls/ },
    { name: 'a malformed sandbox id', method: 'GET', path: '/v1/sandboxes/..%2Fetc', status: 404, code: 'not-found', message: /is not a sandbox id/, fix: /cordon sandbox ls/ },
    { name: 'files without a path', method: 'GET', path: `/v1/sandboxes/${ID}/files`, status: 400, code: 'invalid-input', message: /path: Required/ },
    { name: 'files with a relative path', method: 'GET', path: `/v1/sandboxes/${ID}/files?path=etc/passwd`, status: 400, code: 'invalid-input', message: /path: must be an absolute path/ },
    { name: 'files with an unknown query parameter', method: 'GET', path: `/v1/sandboxes/${ID}/files?path=/etc/hostname&follow=1`, status: 400, code: 'invalid-input', message: /unknown field\(s\) "follow"/ },
    { name: 'a file mode that is not octal', method: 'PUT', path: `/v1/sandboxes/${ID}/files?path=/tmp/x&mode=rwx`, body: 'x', status: 400, code: 'invalid-input', message: /mode: must be an octal file mode/ },
    { name: 'create for an unknown agent', method: 'POST', path: '/v1/sandboxes', json: { agent: 'nobody' }, status: 404, code: 'not-found', message: /no agent named "nobody"/ },
    { name: 'create with an unknown field', method: 'POST', path: '/v1/sandboxes', json: { agent: 'dev', image: 'ubuntu' }, status: 400, code: 'invalid-input', message: /unknown field\(s\) "image"/ },
    { name: 'create with a bad agent name', method: 'POST', path: '/v1/sandboxes', json: { agent: 'Dev Agent' }, status: 400, code: 'invalid-input', message: /agent: must be an agent name/ },
    { name: 'create for longer than the agent allows', method: 'POST', path: '/v1/sandboxes', json: { agent: 'dev', timeoutMs: 3_600_000 }, status: 400, code: 'invalid-input', message: /outside 1\.\.600000 ms/ },
    { name: 'no operator token', method: 'GET', path: '/v1/sandboxes', headers: { authorization: '' }, status: 401, code: 'unauthenticated', message: /needs an operator token/ },
  ];

  for (const c of bad) {
    test(`bad input → ${c.status}: ${c.name}`, async () => {
      const res = await call(c.method, c.path.replace(ID, sb.id), {
        ...(c.json !== undefined ? { json: c.json } : {}), ...(c.body !== undefined ? { body: c.body } : {}), ...(c.headers ? { headers: c.headers } : {}),
      });
      const body = (await res.json()) as { error: string; message: string; fix?: string };
      assert.equal(res.status, c.status, JSON.stringify(body));
      assert.equal(body.error, c.code);
      assert.match(body.message, c.message);
      if (c.fix) assert.match(body.fix ?? '', c.fix);
    });
  }

  test('refused commands never reach the guest: no exec event for them', async () => {
    const execs = await events('sandbox.exec');
    const argvs = execs.map((e) => JSON.stringify((e.data as { argv: string[] }).argv));
    assert.ok(!argvs.includes(JSON.stringify(['ls'])), `no refused "ls" ran: ${argvs.join(' ')}`);
  });

  test('pause refuses commands until resume; both are audited', async () => {
    const paused = await call('POST', `/v1/sandboxes/${sb.id}/pause`);
    assert.equal(paused.status, 200, await paused.clone().text());
    assert.equal(((await paused.json()) as SandboxInfo).state, 'paused');
    const refused = await call('POST', `/v1/sandboxes/${sb.id}/exec`, { json: { argv: ['true'] } });
    assert.equal(refused.status, 503);
    const body = (await refused.json()) as { error: string; fix: string };
    assert.equal(body.error, 'sandbox-paused');
    assert.match(body.fix, /resume/);
    const resumed = await call('POST', `/v1/sandboxes/${sb.id}/resume`);
    assert.equal(((await resumed.json()) as SandboxInfo).state, 'running');
    assert.equal(joined(await exec(['echo', 'back']), 'stdout'), 'back\n');
    assert.deepEqual([(await events('sandbox.pause')).length, (await events('sandbox.resume')).length], [1, 1]);
  });

  test('DELETE destroys the sandbox (audited); later calls say it has ended', async () => {
    const res = await call('DELETE', `/v1/sandboxes/${sb.id}`);
    assert.equal(res.status, 200);
    const info = (await res.json()) as SandboxInfo;
    assert.equal(info.state, 'destroyed');
    const destroyed = (await events('sandbox.destroy')).at(-1)!;
    assert.equal(destroyed.actor, 'operator');
    assert.equal(destroyed.reason, 'destroyed through the API');
    const again = await call('POST', `/v1/sandboxes/${sb.id}/exec`, { json: { argv: ['true'] } });
    assert.equal(again.status, 503);
    const body = (await again.json()) as { error: string; message: string };
    assert.equal(body.error, 'sandbox-ended');
    assert.match(body.message, /has ended/);
    const list = (await (await call('GET', '/v1/sandboxes')).json()) as { sandboxes: SandboxInfo[] };
    assert.deepEqual(list.sandboxes, []);
  });
});

/** A manager whose exec is scripted; everything else is unused. */
function scriptedManager(run: SandboxManager['run']): SandboxManager {
  const info: SandboxInfo = {
    id: 'sb-bbbbbbbbbbbbbbbbbbbb', agent: 'dev', isolation: 'bubblewrap', tier: 'bubblewrap', state: 'running',
    createdAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 60_000).toISOString(), startedFrom: 'boot', startMs: 1,
  };
  const unused = async (): Promise<never> => { throw new Error('not scripted'); };
  return {
    run, create: unused, readFile: unused, writeFile: unused, pause: unused, resume: unused, destroy: unused, close: async () => undefined,
    get: (id) => {
      if (id !== info.id) throw new NotFoundError(`no sandbox ${id}`);
      return info;
    },
    list: () => [info],
  };
}

const noAudit = { append: async () => undefined, query: async () => [] };

describe('exec stream edge cases (scripted manager)', () => {
  test('an error after output has started becomes the final {"error"} line', async () => {
    const manager = scriptedManager(async (_id, o) => {
      o.onStdout?.(Buffer.from('partial'));
      await new Promise((r) => setTimeout(r, 10));
      throw new SandboxError('sandbox-protocol', 'guest protocol error (length-mismatch): bad', { fix: 'destroy this sandbox' });
    });
    const app = createApi({ audit: noAudit, isOperatorToken: operatorTokenChecker(TOKEN), version: 't', sandboxes: manager });
    const res = await app.request('/v1/sandboxes/sb-bbbbbbbbbbbbbbbbbbbb/exec', { method: 'POST', headers: AUTH, body: JSON.stringify({ argv: ['x'] }) });
    assert.equal(res.status, 200);
    const lines = parseLines(await res.text());
    assert.deepEqual(lines, [
      { stdout: Buffer.from('partial').toString('base64') },
      { error: { error: 'sandbox-protocol', message: 'guest protocol error (length-mismatch): bad', fix: 'destroy this sandbox' } },
    ]);
  });

  test('an internal error mid-stream reveals nothing but "internal"', async () => {
    const manager = scriptedManager(async (_id, o) => {
      o.onStderr?.(Buffer.from('x'));
      await new Promise((r) => setTimeout(r, 10));
      throw new Error('secret detail of the host');
    });
    const app = createApi({ audit: noAudit, isOperatorToken: operatorTokenChecker(TOKEN), version: 't', sandboxes: manager });
    const res = await app.request('/v1/sandboxes/sb-bbbbbbbbbbbbbbbbbbbb/exec', { method: 'POST', headers: AUTH, body: JSON.stringify({ argv: ['x'] }) });
    const text = await res.text();
    assert.doesNotMatch(text, /secret detail/);
    assert.deepEqual(parseLines(text).at(-1), { error: { error: 'internal', message: 'internal error; see the control-plane log' } });
  });

  test('a client that disconnects mid-command aborts the command', async () => {
    let aborted!: () => void;
    const abortSeen = new Promise<void>((r) => (aborted = r));
    const manager = scriptedManager((_id, o) => new Promise<ExecResult>((_resolve, reject) => {
      o.onStdout?.(Buffer.from('started\n'));
      o.signal?.addEventListener('abort', () => {
        aborted();
        reject(new SandboxError('sandbox-aborted', 'aborted'));
      });
    }));
    const app = createApi({ audit: noAudit, isOperatorToken: operatorTokenChecker(TOKEN), version: 't', sandboxes: manager });
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server;
    await new Promise((r) => server.once('listening', r));
    try {
      const ctl = new AbortController();
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/sandboxes/sb-bbbbbbbbbbbbbbbbbbbb/exec`, {
        method: 'POST', headers: AUTH, body: JSON.stringify({ argv: ['sleep', '100'] }), signal: ctl.signal,
      });
      const reader = res.body!.getReader();
      const first = await reader.read();
      assert.match(Buffer.from(first.value!).toString('utf8'), /"stdout"/);
      ctl.abort();
      await Promise.race([abortSeen, new Promise((_, reject) => setTimeout(() => reject(new Error('the command was not aborted within 5 s')), 5000))]);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
