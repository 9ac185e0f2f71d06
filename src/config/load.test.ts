/**
 * Tests of the config loader: every file under testdata/config/broken must be
 * rejected with the path, problem, fix and line listed in expected.json; the
 * good files, cordon.example.yaml and the built-in defaults must load.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, NotFoundError } from '../errors/index.js';
import { defaultConfig, loadConfig, parseConfig, resolveAgent, MAX_CONFIG_BYTES } from './index.js';

/** The directory holding package.json, found from this file (works from src/ and dist/). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('package.json not found above the test file');
    dir = parent;
  }
  return dir;
}

const ROOT = repoRoot();
const BROKEN = join(ROOT, 'testdata', 'config', 'broken');
const GOOD = join(ROOT, 'testdata', 'config', 'good');

interface Expectation {
  path: string;
  problem: string;
  fix?: string;
  line?: number;
  /** Number of issues expected in the error. @default 1 */
  count?: number;
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  assert.fail('expected a ConfigError, but nothing was thrown');
}

function withTempDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-config-test-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('broken configs (testdata/config/broken)', () => {
  const expected = JSON.parse(readFileSync(join(BROKEN, 'expected.json'), 'utf8')) as Record<string, Expectation>;
  const files = readdirSync(BROKEN).filter((f) => f.endsWith('.yaml')).sort();

  test('every broken file has an expectation, and every expectation a file', () => {
    assert.deepEqual(files, Object.keys(expected).sort());
    assert.ok(files.length >= 30, `only ${files.length} broken cases`);
  });

  for (const name of files) {
    test(name, () => {
      const want = expected[name]!;
      const file = join(BROKEN, name);
      const err = configError(() => loadConfig(file));
      assert.ok(err.message.includes(file), `message does not name the file: ${err.message}`);
      const issue = err.issues.find((i) => i.path === want.path && i.problem.includes(want.problem));
      assert.ok(issue, `no issue at "${want.path}" containing "${want.problem}"; got:\n${err.describe()}`);
      assert.ok(issue.fix.length > 0, 'the issue has no fix');
      if (want.fix !== undefined) assert.ok(issue.fix.includes(want.fix), `fix "${issue.fix}" lacks "${want.fix}"`);
      if (want.line !== undefined) assert.equal(issue.line, want.line, `line of ${want.path}`);
      assert.equal(err.issues.length, want.count ?? 1, `unexpected extra issues:\n${err.describe()}`);
    });
  }
});

test('a store URL that is refused is never repeated: its password stays out of the error, its JSON and its description', () => {
  const err = configError(() => loadConfig(join(BROKEN, 'store-url-not-postgres.yaml')));
  for (const text of [err.message, err.describe(), JSON.stringify(err.issues)]) assert.ok(!text.includes('hunter2'), text);
});

describe('good configs', () => {
  test('minimal.yaml gets every default', () => {
    const config = loadConfig(join(GOOD, 'minimal.yaml'));
    const worker = resolveAgent(config, 'worker');
    assert.equal(worker.isolation, 'microvm');
    assert.deepEqual(worker.resources, {
      vcpus: 1, memoryMiB: 512, diskMiB: 2048, timeout: '30m', timeoutMs: 1_800_000, maxOutputBytes: 10 * 1024 * 1024,
    });
    assert.deepEqual(worker.egress, []);
    assert.equal(worker.egressMode, 'enforce');
    assert.equal(worker.llm, undefined);
    assert.deepEqual(worker.tools, {});
    assert.deepEqual(worker.env, {});
    assert.deepEqual(Object.keys(config.agents).sort(), ['default', 'worker']);
    assert.deepEqual(config.approvals, { ttl: '15m', ttlMs: 900_000, holdTimeout: '60s', holdTimeoutMs: 60_000, twoApprovers: false });
    assert.deepEqual(config.server, { host: '127.0.0.1', port: 8787 });
    assert.deepEqual(config.audit, { checkpointEvery: 1000 });
    assert.deepEqual(config.store, { kind: 'sqlite' });
    assert.deepEqual(config.secrets, {});
    assert.deepEqual(config.providers, {});
  });

  test('full.yaml keeps its values and normalises hosts, methods and provider types', () => {
    const config = loadConfig(join(GOOD, 'full.yaml'));
    const reviewer = resolveAgent(config, 'reviewer');
    assert.equal(reviewer.resources.timeoutMs, 600_000);
    assert.equal(reviewer.resources.vcpus, 2);
    assert.equal(reviewer.egressMode, 'report');
    const [github, pypi, db] = reviewer.egress;
    assert.deepEqual(github?.ports, [443]);
    assert.equal(github?.rules?.[1]?.method, 'GET', 'methods are upper-cased');
    assert.equal(pypi?.host, '*.pythonhosted.org', 'hosts are lower-cased');
    assert.deepEqual(pypi?.ports, [443, 80], 'ports default to 443 and 80');
    assert.equal(db?.cidr, '10.20.0.0/16');
    assert.equal(reviewer.llm?.limits.requestsPerMinute, 30);
    assert.equal(reviewer.llm?.limits.tokensPerDay, 2_000_000, 'unset limits take their defaults');
    assert.deepEqual(reviewer.tools.github?.approve, ['merge_pull_request']);
    assert.equal(resolveAgent(config, 'default').isolation, 'gvisor', 'a file may redefine the default agent');
    assert.equal(config.providers.openai?.type, 'openai');
    assert.equal(config.providers.local?.type, 'openai-compatible');
    assert.deepEqual(config.secrets.vault_token, { from: 'command', command: ['vault', 'read', '-field=token', 'secret/cordon'], timeoutMs: 10_000 });
    assert.equal(config.approvals.holdTimeoutMs, 120_000);
    assert.equal(config.approvals.twoApprovers, true);
    assert.deepEqual(config.store, { kind: 'postgres', url: 'postgres://cordon@db.internal:5432/cordon' });
  });

  test('cordon.example.yaml at the repo root is accepted', () => {
    const config = loadConfig(join(ROOT, 'cordon.example.yaml'));
    assert.ok(config.agents.reviewer, 'the example defines the reviewer agent');
    assert.ok(config.agents.reviewer.egress.length >= 3);
  });

  test('anchors and merge keys can share settings between agents', () => {
    const config = parseConfig(
      'version: 1\nagents:\n  a: &base\n    isolation: gvisor\n    egress: [{ host: pypi.org }]\n  b:\n    <<: *base\n    egressMode: report\n',
      'merge.yaml',
    );
    assert.equal(config.agents.b?.isolation, 'gvisor');
    assert.equal(config.agents.b?.egress[0]?.host, 'pypi.org');
    assert.equal(config.agents.b?.egressMode, 'report');
  });
});

describe('defaults without a file', () => {
  test('defaultConfig() has exactly the built-in default agent', () => {
    const config = defaultConfig();
    assert.deepEqual(Object.keys(config.agents), ['default']);
    const agent = resolveAgent(config, 'default');
    assert.equal(agent.isolation, 'microvm');
    assert.deepEqual(agent.egress, []);
    assert.deepEqual(agent.tools, {});
    assert.deepEqual(agent.env, {});
    assert.equal(agent.llm, undefined);
    assert.deepEqual(config.secrets, {});
  });
});

describe('finding the file', () => {
  const other = 'version: 1\nagents:\n  from-env: {}\n';
  const local = 'version: 1\nagents:\n  from-cwd: {}\n';

  test('no path, no $CORDON_CONFIG, no ./cordon.yaml: the defaults', () => {
    withTempDir((dir) => {
      assert.deepEqual(Object.keys(loadConfig(undefined, { env: {}, cwd: dir }).agents), ['default']);
    });
  });

  test('./cordon.yaml in the working directory is read', () => {
    withTempDir((dir) => {
      writeFileSync(join(dir, 'cordon.yaml'), local);
      assert.ok(loadConfig(undefined, { env: {}, cwd: dir }).agents['from-cwd']);
    });
  });

  test('$CORDON_CONFIG wins over ./cordon.yaml, and an explicit path wins over both', () => {
    withTempDir((dir) => {
      writeFileSync(join(dir, 'cordon.yaml'), local);
      writeFileSync(join(dir, 'env.yaml'), other);
      writeFileSync(join(dir, 'explicit.yaml'), 'version: 1\nagents:\n  explicit: {}\n');
      const env = { CORDON_CONFIG: join(dir, 'env.yaml') };
      assert.ok(loadConfig(undefined, { env, cwd: dir }).agents['from-env']);
      assert.ok(loadConfig(join(dir, 'explicit.yaml'), { env, cwd: dir }).agents.explicit);
    });
  });

  const missing = [
    { name: 'explicit path', path: 'nope.yaml', env: {} },
    { name: '$CORDON_CONFIG', path: undefined, env: { CORDON_CONFIG: 'nope.yaml' } },
  ];
  for (const c of missing) {
    test(`a missing file named by ${c.name} is an error, not the defaults`, () => {
      withTempDir((dir) => {
        const target = c.path ? join(dir, c.path) : undefined;
        const env = c.env.CORDON_CONFIG ? { CORDON_CONFIG: join(dir, c.env.CORDON_CONFIG) } : {};
        const err = configError(() => loadConfig(target, { env, cwd: dir }));
        assert.match(err.message, /config file .*nope\.yaml not found/);
        assert.match(err.fix ?? '', /check the path/);
      });
    });
  }

  test('a directory is rejected', () => {
    withTempDir((dir) => {
      const err = configError(() => loadConfig(dir));
      assert.match(err.message, /is a directory/);
    });
  });

  test('a file over 1 MiB is rejected before parsing', () => {
    withTempDir((dir) => {
      const file = join(dir, 'big.yaml');
      writeFileSync(file, `version: 1\n# ${'x'.repeat(MAX_CONFIG_BYTES)}\n`);
      const err = configError(() => loadConfig(file));
      assert.match(err.message, /too large/);
      assert.match(err.message, /big\.yaml/);
    });
    const err = configError(() => parseConfig(`version: 1\n#${'y'.repeat(MAX_CONFIG_BYTES)}`, 'inline.yaml'));
    assert.match(err.message, /inline\.yaml is too large/);
  });

  test('a file that is not UTF-8 is rejected', () => {
    withTempDir((dir) => {
      const file = join(dir, 'latin1.yaml');
      writeFileSync(file, Buffer.from([0x76, 0x65, 0x72, 0x3a, 0x20, 0xff, 0xfe, 0x0a]));
      assert.match(configError(() => loadConfig(file)).message, /not UTF-8/);
    });
  });
});

describe('reporting', () => {
  test('every problem is reported at once, in file order, and counted in the message', () => {
    const text = [
      'version: 1',            // 1
      'agents:',               // 2
      '  reviewer:',           // 3
      '    resources:',        // 4
      '      vcpus: 0',        // 5
      '    egress:',           // 6
      '      - host: "*"',     // 7
      'store: { kind: mysql }', // 8
    ].join('\n');
    const err = configError(() => parseConfig(text, 'multi.yaml'));
    assert.equal(err.message, 'multi.yaml is invalid (3 problems)');
    assert.deepEqual(err.issues.map((i) => [i.path, i.line]), [
      ['agents.reviewer.resources.vcpus', 5],
      ['agents.reviewer.egress[0].host', 7],
      ['store.kind', 8],
    ]);
    const text2 = err.describe();
    assert.match(text2, /agents\.reviewer\.resources\.vcpus \(line 5\): number 0 is below the minimum of 1\. Fix: use a whole number from 1 to 16/);
    assert.match(text2, /store\.kind \(line 8\): "mysql" is not one of sqlite, postgres/);
    assert.deepEqual((err.toJSON().issues as unknown[]).length, 3);
  });

  test('a missing version is reported together with the other problems', () => {
    const err = configError(() => parseConfig('agents:\n  Bad: {}\n', 'noversion.yaml'));
    assert.deepEqual(err.issues.map((i) => i.path).sort(), ['agents.Bad', 'version']);
  });

  test('an unknown version stops before the rest is checked', () => {
    const err = configError(() => parseConfig('version: 3\nagents:\n  Bad: {}\n', 'v3.yaml'));
    assert.equal(err.issues.length, 1);
    assert.match(err.issues[0]!.problem, /version 3 is not supported; only version 1 is supported/);
  });

  test('a syntax error names the file, line and column', () => {
    const err = configError(() => parseConfig('version: 1\nagents: [\n', 'syntax.yaml'));
    assert.match(err.message, /^syntax\.yaml is not valid YAML: .* at line \d+, column \d+$/);
    assert.ok(err.fix && err.fix.length > 0);
  });

  test('several undeclared secrets are each reported where they are used', () => {
    const err = configError(() => parseConfig(
      'version: 1\nagents:\n  a:\n    env: { X: "{{secret.one}}", Y: "{{secret.two}}" }\n',
      'refs.yaml',
    ));
    assert.deepEqual(err.issues.map((i) => i.path).sort(), ['agents.a.env.X', 'agents.a.env.Y']);
    assert.ok(err.issues.every((i) => i.line === 4));
  });
});

describe('resolveAgent', () => {
  test('an unknown agent names the known ones and suggests the closest', () => {
    const config = parseConfig('version: 1\nagents:\n  reviewer: {}\n  builder: {}\n', 'agents.yaml');
    assert.throws(() => resolveAgent(config, 'reveiwer'), (err: unknown) => {
      assert.ok(err instanceof NotFoundError);
      assert.match(err.message, /no agent named "reveiwer" \(did you mean "reviewer"\?\); known agents: builder, default, reviewer/);
      return true;
    });
  });

  test('inherited object properties are not agents', () => {
    assert.throws(() => resolveAgent(defaultConfig(), 'constructor'), NotFoundError);
  });
});
