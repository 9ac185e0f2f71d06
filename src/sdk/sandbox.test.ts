/**
 * The SDK against a real control plane (startControlPlane on a fresh home,
 * real manager and back end), found the way users find it: daemon.json and
 * the operator-token file. A fixture creates one sandbox and always kills it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { queryEvents } from '../audit/index.js';
import { parseConfig } from '../config/index.js';
import { startControlPlane, type ControlPlane } from '../controlplane/index.js';
import {
  AuthError, ConfigError, CordonError, EnvironmentError, InvalidInputError, LimitError, NotFoundError, PolicyDeniedError,
  SandboxError, StoreError,
} from '../errors/index.js';
import { daemonFilePath, errorFromApi, resolveConnection, Sandbox } from './index.js';
import { fastestIsolation, sandboxTestHome, type SandboxTestHome } from './testing.js';

describe('Sandbox (SDK) on a real control plane', () => {
  let home: SandboxTestHome;
  let cp: ControlPlane;
  let sb: Sandbox;

  before(async () => {
    home = await sandboxTestHome();
    const isolation = await fastestIsolation(home.path);
    const config = parseConfig(`version: 1\nagents:\n  dev: { isolation: ${isolation}, resources: { timeout: 10m } }\n`);
    cp = await startControlPlane({ home: home.path, config, port: 0 });
    sb = await Sandbox.create({ agent: 'dev', home: home.path, timeoutMs: 120_000 });
  });

  after(async () => {
    await sb?.kill().catch(() => undefined);
    await cp?.stop();
    home?.cleanup();
  });

  test('the control plane advertises itself in daemon.json (0600)', () => {
    const path = daemonFilePath(home.path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const d = JSON.parse(readFileSync(path, 'utf8')) as { url: string; pid: number; transient: boolean };
    assert.equal(d.url, cp.url);
    assert.equal(d.pid, process.pid);
    assert.equal(d.transient, false);
  });

  test('create: a running sandbox of the agent, audited as the operator', async () => {
    assert.match(sb.id, /^sb-[a-z2-7]{20}$/);
    assert.equal(sb.info.agent, 'dev');
    assert.equal(sb.info.state, 'running');
    const [created] = await queryEvents(cp.store, { sandbox: sb.id, type: 'sandbox.create' });
    assert.equal(created?.actor, 'operator');
    assert.equal((created?.data as { timeoutMs: number }).timeoutMs, 120_000);
  });

  test('commands.run: a string runs through /bin/sh -c, output streams to callbacks and into the result', async () => {
    const seen: string[] = [];
    const r = await sb.commands.run('echo "a b"; echo oops >&2; exit 4', { onStdout: (s) => seen.push(s), onStderr: (s) => seen.push(`E:${s}`) });
    assert.deepEqual(
      { exitCode: r.exitCode, signal: r.signal, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut, outputTruncated: r.outputTruncated },
      { exitCode: 4, signal: null, stdout: 'a b\n', stderr: 'oops\n', timedOut: false, outputTruncated: false },
    );
    assert.equal(seen.join(''), 'a b\nE:oops\n');
    assert.equal(typeof r.durationMs, 'number');
    const [execEvent] = (await queryEvents(cp.store, { sandbox: sb.id, type: 'sandbox.exec', order: 'desc', limit: 1 }));
    assert.deepEqual((execEvent?.data as { argv: string[] }).argv, ['/bin/sh', '-c', 'echo "a b"; echo oops >&2; exit 4']);
  });

  test('commands.run: an argv array, stdin, env and cwd', async () => {
    const r = await sb.commands.run(['/bin/sh', '-c', 'read x; echo "$x $NAME $(pwd)"'], { stdin: 'héllo\n', env: { NAME: 'n' }, cwd: '/tmp' });
    assert.equal(r.stdout, 'héllo n /tmp\n');
    assert.equal(r.exitCode, 0);
  });

  test('commands.run: timeoutMs kills the command and says so', async () => {
    const r = await sb.commands.run('sleep 5', { timeoutMs: 300 });
    assert.equal(r.timedOut, true);
    assert.equal(r.exitCode, null);
    assert.equal(r.signal, 'KILL');
  });

  test('files: write text and bytes, read them back as text and bytes', async () => {
    assert.deepEqual(await sb.files.write('/tmp/note.txt', 'grüße\n'), { path: '/tmp/note.txt', bytes: 8 });
    assert.equal(await sb.files.read('/tmp/note.txt', { format: 'text' }), 'grüße\n');
    const bytes = new Uint8Array([0, 255, 1, 254]);
    await sb.files.write('/tmp/b.bin', bytes, { mode: 0o600 });
    assert.deepEqual(await sb.files.read('/tmp/b.bin'), bytes);
    assert.equal((await sb.commands.run('stat -c %a /tmp/b.bin')).stdout, '600\n');
    const reads = await queryEvents(cp.store, { sandbox: sb.id, type: 'sandbox.file.read' });
    assert.deepEqual(reads.map((e) => (e.data as { path: string }).path), ['/tmp/note.txt', '/tmp/b.bin']);
  });

  test('files: a missing file is a NotFoundError with a fix', async () => {
    await assert.rejects(sb.files.read('/nope/missing'), (err: unknown) => {
      assert.ok(err instanceof NotFoundError, String(err));
      assert.match(err.message, /\/nope\/missing does not exist in the sandbox/);
      assert.ok(err.fix);
      return true;
    });
  });

  test('list and connect see the same sandbox', async () => {
    const list = await Sandbox.list({ home: home.path });
    assert.deepEqual(list.map((s) => s.id), [sb.id]);
    const again = await Sandbox.connect(sb.id, { home: home.path });
    assert.equal(again.id, sb.id);
    assert.equal((await again.commands.run(['echo', 'same'])).stdout, 'same\n');
  });

  test('errors come back as the CordonError subclasses of cordon', async () => {
    await assert.rejects(Sandbox.connect('sb-aaaaaaaaaaaaaaaaaaaa', { home: home.path }), (err: unknown) => {
      assert.ok(err instanceof NotFoundError);
      assert.equal(err.code, 'not-found');
      assert.match(err.fix ?? '', /cordon sandbox ls/);
      return true;
    });
    await assert.rejects(Sandbox.list({ home: home.path, token: 'cop_' + 'Z'.repeat(43) }), (err: unknown) => err instanceof AuthError && /not valid/.test(err.message));
    await assert.rejects(sb.commands.run([]), (err: unknown) => err instanceof InvalidInputError && /argv/.test(err.message));
  });

  test('kill destroys it; commands afterwards fail with sandbox-ended', async () => {
    const victim = await Sandbox.create({ agent: 'dev', home: home.path });
    await victim.kill();
    assert.equal((await victim.getInfo()).state, 'destroyed');
    await assert.rejects(victim.commands.run('true'), (err: unknown) => {
      assert.ok(err instanceof SandboxError);
      assert.equal(err.code, 'sandbox-ended');
      return true;
    });
    const [destroyed] = await queryEvents(cp.store, { sandbox: victim.id, type: 'sandbox.destroy' });
    assert.equal(destroyed?.actor, 'operator');
  });
});

describe('SDK without a control plane', () => {
  test('stopping the control plane removes daemon.json; then the SDK says to run cordon up', async () => {
    const home = await sandboxTestHome();
    try {
      const cp = await startControlPlane({ home: home.path, config: parseConfig('version: 1\n'), port: 0 });
      assert.ok(existsSync(daemonFilePath(home.path)));
      await cp.stop();
      assert.equal(existsSync(daemonFilePath(home.path)), false);
      assert.throws(() => resolveConnection({ home: home.path }), (err: unknown) => {
        assert.ok(err instanceof EnvironmentError);
        assert.equal(err.code, 'env-no-daemon');
        assert.match(err.fix ?? '', /cordon up/);
        return true;
      });
      await assert.rejects(Sandbox.list({ apiUrl: 'http://127.0.0.1:9', token: 'cop_x', home: home.path }), (err: unknown) =>
        err instanceof EnvironmentError && err.code === 'env-daemon-unreachable' && /cordon up/.test(err.fix ?? ''));
    } finally {
      home.cleanup();
    }
  });
});

describe('errorFromApi: one map from API errors to classes', () => {
  const cases: Array<{ name: string; status: number; body: unknown; cls: new (...a: never[]) => CordonError; code: string }> = [
    { name: 'not-found', status: 404, body: { error: 'not-found', message: 'm' }, cls: NotFoundError, code: 'not-found' },
    { name: 'invalid-input', status: 400, body: { error: 'invalid-input', message: 'm' }, cls: InvalidInputError, code: 'invalid-input' },
    { name: 'config-invalid keeps its issues', status: 400, body: { error: 'config-invalid', message: 'm', issues: [{ path: 'a', problem: 'p', fix: 'f' }] }, cls: ConfigError, code: 'config-invalid' },
    { name: 'policy-denied', status: 403, body: { error: 'policy-denied', message: 'm' }, cls: PolicyDeniedError, code: 'policy-denied' },
    { name: 'a 413 size limit', status: 413, body: { error: 'limit-exceeded', message: 'm' }, cls: LimitError, code: 'limit-exceeded' },
    { name: 'sandbox- prefix', status: 503, body: { error: 'sandbox-ended', message: 'm' }, cls: SandboxError, code: 'sandbox-ended' },
    { name: 'store- prefix', status: 503, body: { error: 'store-locked', message: 'm' }, cls: StoreError, code: 'store-locked' },
    { name: 'env- prefix', status: 503, body: { error: 'env-no-image', message: 'm' }, cls: EnvironmentError, code: 'env-no-image' },
    { name: 'no body: falls back on the status', status: 401, body: undefined, cls: AuthError, code: 'unauthenticated' },
    { name: 'an unknown code keeps its code', status: 500, body: { error: 'internal', message: 'm' }, cls: CordonError, code: 'internal' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const err = errorFromApi(c.status, c.body);
      assert.ok(err instanceof c.cls, `${err.name} is a ${c.cls.name}`);
      assert.equal(err.code, c.code);
      if (err instanceof ConfigError) assert.equal(err.issues.length, 1);
    });
  }
});
