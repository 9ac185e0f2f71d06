/**
 * Resolving secrets from their sources (store, env, command) before a sandbox
 * starts: each failure is named with a fix and never with the value or the
 * command's output, and every failure of one call is reported together.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigSchema, parseConfig, type CordonConfig } from '../config/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import {
  agentSecretNames, openSecretStore, resolveAgentSecrets, resolveSecrets, secretStorePath, SecretError,
} from './index.js';

const CANARY = 'CANARY-7f3a9c1e-do-not-leak';
const NODE = process.execPath;
const KEY = { CORDON_MASTER_KEY: 'c3'.repeat(32) };

function configWith(secrets: Record<string, unknown>): CordonConfig {
  return ConfigSchema.parse({ version: 1, secrets });
}

function cmd(script: string, timeoutMs = 10_000): Record<string, unknown> {
  return { from: 'command', command: [NODE, '-e', script], timeoutMs };
}

async function failure(p: Promise<unknown>): Promise<SecretError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof SecretError, String(err));
    assert.equal(err.code, 'secret-unresolved');
    const shown = [err.message, err.describe(), JSON.stringify(err.toJSON())].join('\n');
    assert.ok(!shown.includes(CANARY), `the error shows the value or output:\n${shown}`);
    return err;
  }
  assert.fail('expected resolveSecrets to fail');
}

describe('one source at a time', () => {
  const home = tempDir('cordon-resolve-');
  after(() => home.cleanup());
  const ok: Array<{ name: string; source: Record<string, unknown>; env?: NodeJS.ProcessEnv; expect: string }> = [
    { name: 'env variable', source: { from: 'env', name: 'MY_TOKEN' }, env: { MY_TOKEN: CANARY }, expect: CANARY },
    { name: 'env value kept as is (no trimming)', source: { from: 'env', name: 'MY_TOKEN' }, env: { MY_TOKEN: ` ${CANARY}\t` }, expect: ` ${CANARY}\t` },
    { name: 'command output, trailing newline trimmed', source: cmd(`process.stdout.write(${JSON.stringify(CANARY + '\n')})`), expect: CANARY },
    { name: 'command output, trailing CRLF trimmed', source: cmd(`process.stdout.write(${JSON.stringify(CANARY + '\r\n')})`), expect: CANARY },
    { name: 'command gets the daemon env', source: cmd('process.stdout.write(process.env.FROM_DAEMON)'), env: { FROM_DAEMON: CANARY }, expect: CANARY },
  ];
  for (const c of ok) {
    test(`resolves: ${c.name}`, async () => {
      const values = await resolveSecrets(configWith({ s: c.source }), ['s'], { home: home.path, env: { ...process.env, ...c.env } });
      assert.equal(values.get('s')?.reveal(), c.expect);
      assert.equal(String(values.get('s')), '[secret s]');
    });
  }

  const bad: Array<{ name: string; source: Record<string, unknown>; env?: NodeJS.ProcessEnv; problem: RegExp; fix: RegExp }> = [
    { name: 'env variable not set', source: { from: 'env', name: 'NOT_SET_ANYWHERE' }, env: {}, problem: /NOT_SET_ANYWHERE is not set/, fix: /cordon up/ },
    { name: 'env variable empty', source: { from: 'env', name: 'EMPTY' }, env: { EMPTY: '' }, problem: /value is empty/, fix: /credential/ },
    { name: 'env variable too short', source: { from: 'env', name: 'SHORT' }, env: { SHORT: 'abc' }, problem: /3 bytes long; cordon needs at least 8/, fix: /full credential/ },
    { name: 'env variable with a line break', source: { from: 'env', name: 'ML' }, env: { ML: `${CANARY}\nX-Injected: 1` }, problem: /line break/, fix: /one line/ },
    { name: 'command exits non-zero (output not shown)', source: cmd(`process.stdout.write(${JSON.stringify(CANARY)}); process.exit(3)`), problem: /exited with code 3/, fix: /run the command by hand/ },
    { name: 'command writes only to stderr', source: cmd(`process.stderr.write(${JSON.stringify(CANARY)})`), problem: /value is empty/, fix: /credential/ },
    { name: 'command prints nothing', source: cmd('0'), problem: /value is empty/, fix: /credential/ },
    { name: 'command prints garbage with NUL', source: cmd(`process.stdout.write(${JSON.stringify(CANARY)} + '\\0\\x01binary')`), problem: /NUL/, fix: /one line/ },
    { name: 'command prints several lines', source: cmd(`process.stdout.write(${JSON.stringify(CANARY + '\nsecond line\n')})`), problem: /line break/, fix: /one line/ },
    { name: 'command prints invalid UTF-8', source: cmd(`process.stdout.write(Buffer.from([0xff,0xfe,0xfd,0x41,0x42,0x43,0x44,0x45,0x46]))`), problem: /not UTF-8/, fix: /base64/ },
    { name: 'command prints too much', source: cmd(`process.stdout.write(${JSON.stringify(CANARY)}.repeat(10000))`), problem: /printed more than 65538 bytes and was killed/, fix: /only the secret/ },
    { name: 'command prints forever', source: cmd(`const b = Buffer.alloc(65536, 0x78); (function w() { process.stdout.write(b, w); })()`), problem: /printed more than/, fix: /only the secret/ },
    { name: 'command killed by a signal', source: cmd(`process.kill(process.pid, 'SIGTERM'); setTimeout(() => {}, 5000)`), problem: /killed by SIGTERM/, fix: /by hand/ },
    { name: 'command not found', source: { from: 'command', command: ['/nonexistent/cordon-secret-helper', 'read'], timeoutMs: 1000 }, problem: /`\/nonexistent\/cordon-secret-helper` was not found/, fix: /install it, or give its full path/ },
    { name: 'store has no such secret', source: { from: 'store' }, env: KEY, problem: /secret store has no secret of this name/, fix: /cordon secrets set s/ },
  ];
  for (const c of bad) {
    test(`fails: ${c.name}`, async () => {
      const err = await failure(resolveSecrets(configWith({ s: c.source }), ['s'], { home: home.path, env: { ...process.env, ...c.env } }));
      assert.equal(err.problems.length, 1);
      assert.equal(err.problems[0]!.secret, 's');
      assert.match(err.problems[0]!.problem, c.problem);
      assert.match(err.problems[0]!.fix, c.fix);
    });
  }
});

describe('command timeout', () => {
  test('a command that hangs is killed at its timeout, with its whole process group', async () => {
    const dir = tempDir('cordon-resolve-');
    try {
      const pidFile = join(dir.path, 'grandchild.pid');
      // a grandchild in the same process group: the timeout must take it down too
      const script = `const { spawn } = require('node:child_process'); const c = spawn(${JSON.stringify(NODE)}, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' }); require('node:fs').writeFileSync(${JSON.stringify(pidFile)}, String(c.pid)); setInterval(() => {}, 1000);`;
      const started = Date.now();
      const err = await failure(resolveSecrets(configWith({ slow: cmd(script, 700) }), ['slow'], { home: dir.path }));
      const tookMs = Date.now() - started;
      assert.match(err.problems[0]!.problem, /did not finish within 700 ms and was killed/);
      assert.match(err.problems[0]!.fix, /raise timeoutMs/);
      assert.ok(tookMs >= 650 && tookMs < 3000, `took ${tookMs} ms`);
      const grandchild = Number(readFileSync(pidFile, 'utf8'));
      assert.ok(await gone(grandchild), `grandchild ${grandchild} survived the timeout`);
    } finally {
      dir.cleanup();
    }
  });

  test('the shortest timeout the schema allows (100 ms) fires quickly', async () => {
    const started = Date.now();
    const err = await failure(resolveSecrets(configWith({ slow: cmd('setInterval(() => {}, 1000)', 200) }), ['slow'], { home: '/nonexistent' }));
    assert.match(err.problems[0]!.problem, /within 200 ms/);
    assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
  });
});

/** The process is gone (or a zombie waiting to be reaped) within 2 s. */
async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 40; i++) {
    try {
      process.kill(pid, 0);
      if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH' || (err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    }
    await sleep(50);
  }
  return false;
}

describe('many secrets at once', () => {
  test('every failure is listed in one error, in the order asked, and nothing partial is returned', async () => {
    const dir = tempDir('cordon-resolve-');
    try {
      await openSecretStore({ home: dir.path, env: KEY }).set('stored', Buffer.from(CANARY));
      const config = configWith({
        stored: { from: 'store' },
        from_env: { from: 'env', name: 'CORDON_TEST_UNSET_VAR' },
        failing: cmd(`process.stdout.write(${JSON.stringify(CANARY)}); process.exit(1)`),
        fine: cmd(`process.stdout.write(${JSON.stringify(CANARY)})`),
      });
      const err = await failure(resolveSecrets(config, ['stored', 'from_env', 'undeclared', 'failing', 'fine', 'stored'], { home: dir.path, env: KEY, purpose: 'agent "x"' }));
      assert.match(err.message, /cannot resolve 3 of 5 secret\(s\) for agent "x"; nothing was started/);
      assert.deepEqual(err.problems.map((p) => p.secret), ['from_env', 'undeclared', 'failing']);
      assert.match(err.problems[1]!.problem, /not declared under secrets:/);
      assert.match(err.describe(), /- undeclared: it is referred to but not declared under secrets:\. Fix: declare it, e.g\. secrets: \{ undeclared: \{ from: store \} \}/);
      assert.deepEqual((err.toJSON().problems as unknown[]).length, 3);
    } finally {
      dir.cleanup();
    }
  });

  test('an unreadable store is reported once, before the secrets that need it', async () => {
    const dir = tempDir('cordon-resolve-');
    try {
      await openSecretStore({ home: dir.path, env: KEY }).set('a_one', Buffer.from(CANARY));
      const file = readFileSync(secretStorePath(dir.path));
      file[file.length - 1]! ^= 1;
      writeFileSync(secretStorePath(dir.path), file);
      const config = configWith({ a_one: { from: 'store' }, a_two: { from: 'store' }, b_env: { from: 'env', name: 'B_ENV' } });
      const err = await failure(resolveSecrets(config, ['a_one', 'a_two', 'b_env'], { home: dir.path, env: { ...KEY, B_ENV: CANARY } }));
      assert.deepEqual(err.problems.map((p) => p.secret), ['(store)', 'a_one', 'a_two']);
      assert.match(err.problems[0]!.problem, /cannot read the secret store .*secrets\.enc: it failed authentication/);
      assert.match(err.problems[0]!.fix, /restore .* from backup/);
    } finally {
      dir.cleanup();
    }
  });

  test('an agent\'s secrets come from its env values and egress header templates', async () => {
    const config = parseConfig(`
version: 1
agents:
  reviewer:
    env: { GITHUB_TOKEN: "{{secret.gh}}", BOTH: "{{secret.gh}}:{{secret.extra}}", PLAIN: hello }
    egress:
      - host: api.github.com
        secrets: { authorization: "Bearer {{secret.gh}}" }
      - host: uploads.example.com
        secrets: { x-api-key: "{{secret.upload_key}}" }
secrets:
  gh: { from: env, name: GH }
  extra: { from: env, name: EXTRA }
  upload_key: { from: env, name: UPLOAD }
  unused: { from: env, name: UNUSED }
`);
    assert.deepEqual(agentSecretNames(config.agents.reviewer!), ['gh', 'extra', 'upload_key']);
    assert.deepEqual(agentSecretNames(config.agents.default!), []);
    const values = await resolveAgentSecrets(config, 'reviewer', { home: '/nonexistent', env: { GH: CANARY, EXTRA: 'extra-value', UPLOAD: 'upload-value' } });
    assert.deepEqual([...values.keys()].sort(), ['extra', 'gh', 'upload_key'], 'only what the agent refers to (UNUSED is not set and not needed)');
    const err = await failure(resolveAgentSecrets(config, 'reviewer', { home: '/nonexistent', env: { GH: CANARY } }));
    assert.match(err.message, /for agent "reviewer"/);
    assert.deepEqual(err.problems.map((p) => p.secret), ['extra', 'upload_key']);
  });
});
