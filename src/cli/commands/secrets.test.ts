/**
 * `cordon secrets set|ls|rm|rotate-master` run as a real process: values come
 * from piped stdin or a file, never from argv, and never appear in anything
 * the CLI prints (a canary value is checked in every run's stdout and stderr;
 * rotation runs are also checked for the old and new master keys).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { masterKeyId, masterKeyPath, openSecretStore, secretStorePath } from '../../secrets/index.js';
import { repoRoot, tempDir } from '../../testkit/index.js';

const CANARY = 'ghp_CANARYc4n4ry0123456789do-not-print';
const KEY_HEX = 'd4'.repeat(32);

interface Run { code: number | null; stdout: string; stderr: string }
const runs: Run[] = [];

/** The CLI as node arguments: the built binary, or the sources through tsx. */
function cliArgs(): string[] {
  if (import.meta.url.endsWith('.js')) return [join(repoRoot(), 'bin', 'cordon.js')];
  const main = pathToFileURL(join(repoRoot(), 'src', 'cli', 'main.ts')).href;
  return ['--import', 'tsx', '--input-type=module', '-e', `import { main } from ${JSON.stringify(main)}; process.exitCode = await main(['node', 'cordon', ...process.argv.slice(1)]);`, '--'];
}

/** Run `cordon ARGS…` with `input` piped to stdin; every run is kept for the canary check. */
function cordon(args: string[], opts: { home: string; input?: string; env?: NodeJS.ProcessEnv }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...cliArgs(), ...args], {
      cwd: repoRoot(),
      env: { ...process.env, CORDON_HOME: opts.home, CORDON_CONFIG: '', CORDON_MASTER_KEY: undefined, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const run = { code, stdout, stderr };
      runs.push(run);
      resolve(run);
    });
    child.stdin.end(opts.input ?? '');
  });
}

describe('cordon secrets', () => {
  const home = tempDir('cordon-cli-secrets-');
  before(() => writeFileSync(join(home.path, 'value.txt'), `${CANARY}-file\n`));
  after(() => {
    home.cleanup();
    for (const r of runs) {
      assert.ok(!r.stdout.includes(CANARY) && !r.stderr.includes(CANARY), `a run printed the value:\n${r.stdout}\n${r.stderr}`);
    }
  });

  test('set from stdin, replace, set from a file, list, remove', async () => {
    const set = await cordon(['secrets', 'set', 'gh_token'], { home: home.path, input: `${CANARY}\n` });
    assert.equal(set.code, 0, set.stderr);
    assert.equal(set.stdout, 'stored secret gh_token\n');
    assert.match(set.stderr, /created the master key .*keys\/master\.key: back it up/);
    assert.equal(openSecretStore({ home: home.path, env: {} }).get('gh_token')?.reveal(), CANARY, 'one trailing newline dropped');

    const again = await cordon(['secrets', 'set', 'gh_token', '--json'], { home: home.path, input: CANARY });
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout), { name: 'gh_token', created: false });
    assert.doesNotMatch(again.stderr, /master key/, 'the key is created once');

    const fromFile = await cordon(['secrets', 'set', 'from_file', '--from-file', join(home.path, 'value.txt')], { home: home.path });
    assert.equal(fromFile.code, 0, fromFile.stderr);
    assert.equal(openSecretStore({ home: home.path, env: {} }).get('from_file')?.reveal(), `${CANARY}-file`);

    const ls = await cordon(['secrets', 'ls'], { home: home.path });
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^NAME\s+CREATED\s+UPDATED\nfrom_file\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+\d{4}-.*Z\ngh_token\s+\d{4}-/);
    const lsJson = await cordon(['secrets', 'ls', '--json'], { home: home.path });
    const doc = JSON.parse(lsJson.stdout) as { store: string; secrets: Array<{ name: string; createdAt: string; updatedAt: string }> };
    assert.equal(doc.store, join(home.path, 'secrets.enc'));
    assert.deepEqual(doc.secrets.map((s) => s.name), ['from_file', 'gh_token']);
    assert.deepEqual(Object.keys(doc.secrets[0]!).sort(), ['createdAt', 'name', 'updatedAt']);

    const rm = await cordon(['secrets', 'rm', 'from_file'], { home: home.path });
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(rm.stdout, 'removed secret from_file\n');
    const rmAgain = await cordon(['secrets', 'rm', 'from_file', '--json'], { home: home.path });
    assert.equal(rmAgain.code, 1);
    assert.equal(JSON.parse(rmAgain.stdout).error, 'not-found');
    assert.match(rmAgain.stderr, /no secret from_file\n {2}fix: list the stored secrets with `cordon secrets ls`/);
  });

  const refused: Array<{ name: string; args: string[]; input?: string; env?: NodeJS.ProcessEnv; code: number; stderr: RegExp }> = [
    { name: 'the value on the command line (argv leaks to ps)', args: ['secrets', 'set', 'argv_secret', CANARY], code: 2, stderr: /too many arguments/ },
    { name: 'empty stdin', args: ['secrets', 'set', 'empty_one'], input: '', code: 1, stderr: /no value on stdin\n {2}fix: pipe the value in/ },
    { name: 'a value too short to protect', args: ['secrets', 'set', 'short_one'], input: 'abc\n', code: 1, stderr: /3 bytes long; cordon needs at least 8/ },
    { name: 'a value with a line break inside', args: ['secrets', 'set', 'two_lines'], input: `${CANARY}\nsecond\n`, code: 1, stderr: /line break/ },
    { name: 'a value pasted where the name belongs', args: ['secrets', 'set', `${CANARY}!`], input: CANARY, code: 1, stderr: /secret name given \(\d+ characters\) is not valid/ },
    { name: 'a missing --from-file', args: ['secrets', 'set', 'nofile', '--from-file', '/nonexistent/value'], code: 1, stderr: /cannot read \/nonexistent\/value: ENOENT/ },
    { name: 'a malformed CORDON_MASTER_KEY', args: ['secrets', 'ls'], env: { CORDON_MASTER_KEY: CANARY }, code: 1, stderr: /CORDON_MASTER_KEY is not a 32-byte key .*\n {2}fix: generate one with `openssl rand -hex 32`/ },
  ];
  for (const c of refused) {
    test(`refused: ${c.name}`, async () => {
      const r = await cordon(c.args, { home: home.path, input: c.input ?? '', ...(c.env ? { env: c.env } : {}) });
      assert.equal(r.code, c.code, r.stderr);
      assert.match(r.stderr, c.stderr);
      const names = openSecretStore({ home: home.path, env: {} }).list().map((s) => s.name);
      assert.ok(!names.some((n) => ['argv_secret', 'empty_one', 'short_one', 'two_lines', 'nofile'].includes(n)), `stored: ${names}`);
    });
  }

  test('a store read with the wrong CORDON_MASTER_KEY fails clearly, in text and JSON', async () => {
    const r = await cordon(['secrets', 'ls', '--json'], { home: home.path, env: { CORDON_MASTER_KEY: KEY_HEX } });
    assert.equal(r.code, 1);
    assert.equal(JSON.parse(r.stdout).error, 'key-wrong');
    assert.match(r.stderr, /secrets\.enc was encrypted with another master key .*\n {2}fix: CORDON_MASTER_KEY overrides/);
  });

  test('set notes when cordon.yaml takes the secret from elsewhere', async () => {
    const config = join(home.path, 'cordon.yaml');
    writeFileSync(config, 'version: 1\nsecrets:\n  gh_token: { from: env, name: GH }\n  stored_one: { from: store }\n');
    const elsewhere = await cordon(['secrets', 'set', 'gh_token'], { home: home.path, input: CANARY, env: { CORDON_CONFIG: config } });
    assert.equal(elsewhere.code, 0, elsewhere.stderr);
    assert.match(elsewhere.stderr, /note: cordon\.yaml takes gh_token from env, not from the store/);
    const declared = await cordon(['secrets', 'set', 'stored_one'], { home: home.path, input: CANARY, env: { CORDON_CONFIG: config } });
    assert.equal(declared.stderr, '');
    const undeclared = await cordon(['secrets', 'set', 'other_one'], { home: home.path, input: CANARY, env: { CORDON_CONFIG: config } });
    assert.match(undeclared.stderr, /note: cordon\.yaml does not declare other_one; add secrets: \{ other_one: \{ from: store \} \}/);
  });

  test('rotate-master re-encrypts under a new key file and says so, without printing a key', async () => {
    const own = tempDir('cordon-cli-rotate-');
    try {
      for (const name of ['one_token', 'two_token']) {
        const set = await cordon(['secrets', 'set', name], { home: own.path, input: `${CANARY}-${name}` });
        assert.equal(set.code, 0, set.stderr);
      }
      const keyHex = (): string => readFileSync(masterKeyPath(own.path), 'utf8').trim();
      const oldKey = keyHex();
      const r = await cordon(['secrets', 'rotate-master'], { home: own.path });
      assert.equal(r.code, 0, r.stderr);
      const newKey = keyHex();
      assert.notEqual(newKey, oldKey);
      assert.equal(r.stdout, `re-encrypted 2 secrets in ${secretStorePath(own.path)} under a new master key in ${masterKeyPath(own.path)} (key id ${masterKeyId(Buffer.from(newKey, 'hex'))})\n`
        + 'a running `cordon up` on this home needs no restart: it reads the key file with the store at each lookup (one started with CORDON_MASTER_KEY set must be restarted without it)\n');
      assert.match(r.stderr, /^back up .*keys\/master\.key now; the old key is deleted/);
      for (const name of ['one_token', 'two_token']) {
        assert.equal(openSecretStore({ home: own.path, env: {} }).get(name)?.reveal(), `${CANARY}-${name}`);
      }

      const j = await cordon(['secrets', 'rotate-master', '--json'], { home: own.path });
      assert.equal(j.code, 0, j.stderr);
      const doc = JSON.parse(j.stdout) as Record<string, unknown>;
      assert.deepEqual(doc, {
        store: secretStorePath(own.path), keyPath: masterKeyPath(own.path), keyId: masterKeyId(Buffer.from(keyHex(), 'hex')),
        previousKeyId: masterKeyId(Buffer.from(newKey, 'hex')), secrets: 2, interrupted: 'none', restartNeeded: false,
      });
      for (const run of [r, j]) {
        for (const key of [oldKey, newKey, keyHex()]) assert.ok(!run.stdout.includes(key) && !run.stderr.includes(key), 'a master key was printed');
      }
    } finally {
      own.cleanup();
    }
  });

  const rotateRefused: Array<{ name: string; env?: NodeJS.ProcessEnv; spoil?: (home: string) => void; error: string; stderr: RegExp }> = [
    {
      name: 'a key from CORDON_MASTER_KEY', env: { CORDON_MASTER_KEY: KEY_HEX }, error: 'secret-key-from-env',
      stderr: /comes from CORDON_MASTER_KEY, which cordon cannot replace\n {2}fix: write that key to .*master\.key .*unset CORDON_MASTER_KEY/,
    },
    {
      name: 'a damaged store', error: 'secret-store-corrupt', stderr: /failed authentication.*\n {2}fix: restore .*secrets\.enc from backup/,
      spoil: (home) => { const f = readFileSync(secretStorePath(home)); f[f.length - 1] = f[f.length - 1]! ^ 1; writeFileSync(secretStorePath(home), f); },
    },
  ];
  for (const c of rotateRefused) {
    test(`rotate-master refused, store and key unchanged: ${c.name}`, async () => {
      const own = tempDir('cordon-cli-rotate-');
      try {
        const set = await cordon(['secrets', 'set', 'kept_token'], { home: own.path, input: CANARY });
        assert.equal(set.code, 0, set.stderr);
        c.spoil?.(own.path);
        const store = readFileSync(secretStorePath(own.path));
        const key = readFileSync(masterKeyPath(own.path));
        const r = await cordon(['secrets', 'rotate-master', '--json'], { home: own.path, ...(c.env ? { env: c.env } : {}) });
        assert.equal(r.code, 1, r.stderr);
        assert.equal(JSON.parse(r.stdout).error, c.error);
        assert.match(r.stderr, c.stderr);
        assert.deepEqual(readFileSync(secretStorePath(own.path)), store, 'the store file is unchanged');
        assert.deepEqual(readFileSync(masterKeyPath(own.path)), key, 'the key file is unchanged');
      } finally {
        own.cleanup();
      }
    });
  }

  test('a terminal on stdin is refused (the value would be echoed)', async (t) => {
    const probe = spawnSync('script', ['-qec', 'test -t 0', '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], timeout: 10_000 });
    if (probe.status !== 0) return t.skip('`script` (util-linux) is not available to give the CLI a terminal');
    const argv = [process.execPath, ...cliArgs(), 'secrets', 'set', 'tty_one'].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
    const r = spawnSync('script', ['-qec', argv, '/dev/null'], {
      cwd: repoRoot(), env: { ...process.env, CORDON_HOME: home.path, CORDON_CONFIG: '' }, encoding: 'utf8', timeout: 30_000, input: '',
    });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /refusing to read a secret from the terminal/);
    assert.ok(!openSecretStore({ home: home.path, env: {} }).list().some((s) => s.name === 'tty_one'));
  });
});
