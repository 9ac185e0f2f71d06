/**
 * `cordon run` end to end, as a user runs it: no `cordon up`, so the command
 * starts its own control plane, boots a real sandbox, streams, and cleans up
 * after itself, also when interrupted. No QEMU may outlive the command.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { queryEvents, type AuditEvent } from '../../audit/index.js';
import { daemonFilePath } from '../../sdk/index.js';
import { fastestIsolation, processesMentioning, sandboxTestHome, type SandboxTestHome } from '../../sdk/testing.js';
import { openStore } from '../../store/index.js';
import { sleep } from '../../util/index.js';
import { cordon, oneJson, startCli } from './testing.js';

async function eventsOf(home: string, sandbox: string): Promise<AuditEvent[]> {
  const store = await openStore({ kind: 'sqlite', path: join(home, 'cordon.db') });
  try {
    return await queryEvents(store, { sandbox, limit: 1000 });
  } finally {
    await store.close();
  }
}

/** The sandbox's VMM is gone: neither its recorded pid nor any QEMU named after it still runs. */
function assertNoVmmLeft(events: AuditEvent[], sandbox: string): void {
  const ready = events.find((e) => e.type === 'sandbox.ready');
  const pid = (ready?.data as { pid?: number } | undefined)?.pid;
  assert.ok(pid, 'sandbox.ready records the VMM pid');
  assert.equal(existsSync(`/proc/${pid}`), false, `QEMU pid ${pid} still runs`);
  assert.deepEqual(processesMentioning(sandbox), [], 'no QEMU named after the sandbox');
}

describe('cordon run', () => {
  let home: SandboxTestHome;
  let configPath: string;

  before(async () => {
    home = await sandboxTestHome();
    const isolation = await fastestIsolation(home.path);
    configPath = join(home.path, 'cordon.yaml');
    writeFileSync(configPath, `version: 1\nagents:\n  dev: { isolation: ${isolation} }\n`);
  });
  after(() => home?.cleanup());

  test('--json -- uname -r: one JSON document with the guest kernel release; no QEMU left', async () => {
    const r = await cordon(['run', '--agent', 'default', '--json', '--', 'uname', '-r'], { home: home.path });
    assert.equal(r.code, 0, r.stderr);
    const doc = oneJson<{ sandbox: string; tier: string; exitCode: number; signal: null; stdout: string; stderr: string; durationMs: number; startMs: number }>(r);
    assert.equal(doc.stdout, `${home.kernelRelease}\n`);
    assert.equal(doc.exitCode, 0);
    assert.equal(doc.signal, null);
    assert.equal(doc.stderr, '');
    assert.match(doc.tier, /^microvm-(kvm|tcg)$/);
    assert.match(doc.sandbox, /^sb-[a-z2-7]{20}$/);
    assert.ok(doc.startMs > 0 && doc.durationMs >= 0);
    const events = await eventsOf(home.path, doc.sandbox);
    // Setup (the deployment CA going in) and the first identity token come before ready.
    assert.deepEqual(events.map((e) => e.type), [
      'sandbox.create', 'sandbox.setup', 'sandbox.setup', 'sandbox.setup', 'sandbox.token', 'sandbox.ready', 'sandbox.exec', 'sandbox.exec.result', 'sandbox.destroy',
    ]);
    assert.deepEqual((events.find((e) => e.type === 'sandbox.exec')!.data as { argv: string[] }).argv, ['uname', '-r']);
    assertNoVmmLeft(events, doc.sandbox);
    assert.equal(existsSync(daemonFilePath(home.path)), false, 'the transient control plane removed daemon.json');
  });

  test('streams stdout and stderr to the terminal and exits with the command\'s exit code', async () => {
    const r = await cordon(['run', '--agent', 'dev', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7'], { home: home.path, env: { CORDON_CONFIG: configPath } });
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, 'out\n');
    assert.match(r.stderr, /^sandbox sb-[a-z2-7]{20} ready in .+\n/);
    assert.match(r.stderr, /\nerr\n/);
    assert.match(r.stderr, /exit code 7 \(/);
  });

  test('a program that is not in the sandbox: exit code 127, as in a shell', async () => {
    const r = await cordon(['run', '--agent', 'dev', '--', 'no-such-program'], { home: home.path, env: { CORDON_CONFIG: configPath } });
    assert.equal(r.code, 127, r.stderr);
    assert.match(r.stderr, /cordon: no-such-program: guest exec failed \(not-found\)/);
  });

  test('--timeout kills the command: exit code 124', async () => {
    const r = await cordon(['run', '--agent', 'dev', '--timeout', '500ms', '--json', '--', 'sleep', '10'], { home: home.path, env: { CORDON_CONFIG: configPath } });
    assert.equal(r.code, 124, r.stderr);
    const doc = oneJson<{ timedOut: boolean; signal: string }>(r);
    assert.equal(doc.timedOut, true);
    assert.equal(doc.signal, 'KILL');
  });

  test('Ctrl-C stops the command, destroys the sandbox and exits 130', async () => {
    const run = startCli(['run', '--agent', 'default', '--', 'sleep', '60'], { home: home.path });
    const t0 = Date.now();
    while (!/ready in/.test(run.stderrSoFar())) {
      assert.ok(Date.now() - t0 < 60_000, `the sandbox did not start: ${run.stderrSoFar()}`);
      await sleep(100);
    }
    await sleep(300); // let the command start
    run.child.kill('SIGINT');
    const r = await run.done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /interrupted: stopping the command and destroying the sandbox/);
    const sandbox = /sandbox (sb-[a-z2-7]{20})/.exec(r.stderr)![1]!;
    const events = await eventsOf(home.path, sandbox);
    const destroy = events.find((e) => e.type === 'sandbox.destroy');
    assert.ok(destroy, `destroyed: ${events.map((e) => e.type).join(' ')}`);
    assertNoVmmLeft(events, sandbox);
  });

  test('an unknown agent: exit 1, the error and its fix, and --json prints the error document', async () => {
    const r = await cordon(['run', '--agent', 'nobody', '--json', '--', 'true'], { home: home.path });
    assert.equal(r.code, 1);
    const doc = oneJson<{ error: string; message: string; fix: string }>(r);
    assert.equal(doc.error, 'not-found');
    assert.match(doc.message, /no agent named "nobody"/);
    assert.match(r.stderr, /fix: /);
  });
});
