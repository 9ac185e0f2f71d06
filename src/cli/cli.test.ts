/**
 * The built `cordon` binary, end to end: --json prints exactly one JSON document,
 * bad input gives one clear error naming the file and the fix (never only a
 * stack trace), and nothing touches existing audit events.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync, chmodSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { repoRoot, runCli, tempDir } from '../testkit/index.js';
import { CORDON_VERSION } from '../version.js';

function json(stdout: string): any {
  try {
    return JSON.parse(stdout);
  } catch (err) {
    assert.fail(`stdout is not one JSON document: ${(err as Error).message}\n${stdout.slice(0, 500)}`);
  }
}

function noStackTrace(stderr: string): void {
  assert.doesNotMatch(stderr, /^\s+at .+\(.+:\d+:\d+\)$/m, `stderr has a stack trace:\n${stderr}`);
}

/** Start and stop a control plane so the home has a store, keys and a few events. */
async function seededHome(): Promise<{ path: string; cleanup: () => void }> {
  const d = tempDir();
  for (const first of [true, false]) {
    const r = await runCli(['up', '--port', '0', '--json', '--exit-after', '200'], { home: d.path });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(json(r.stdout).operatorTokenCreated, first);
  }
  return d; // four events: daemon.start, daemon.stop, daemon.start, daemon.stop
}

test('package.json and the CLI agree on the version', async () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { version: string };
  assert.equal(pkg.version, CORDON_VERSION);
  const d = tempDir();
  try {
    const r = await runCli(['version', '--json'], { home: d.path });
    assert.equal(r.code, 0);
    assert.equal(json(r.stdout).cordon, CORDON_VERSION);
  } finally {
    d.cleanup();
  }
});

test('an unknown command exits 2 with usage help', async () => {
  const d = tempDir();
  try {
    const r = await runCli(['frobnicate'], { home: d.path });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
  } finally {
    d.cleanup();
  }
});

test('doctor --json reports every check with a fix for each gap', async () => {
  const d = tempDir();
  try {
    const r = await runCli(['doctor', '--json'], { home: d.path, timeoutMs: 120_000 });
    const report = json(r.stdout);
    assert.equal(r.code, report.ok ? 0 : 1);
    const names = report.checks.map((c: { name: string }) => c.name);
    for (const n of ['config', 'node', 'home', 'store', 'qemu', 'qemu-img', 'kvm-device', 'kvm', 'runsc', 'bwrap', 'guest-image']) {
      assert.ok(names.includes(n), `check ${n} present in ${names.join(',')}`);
    }
    for (const c of report.checks) {
      assert.match(c.status, /^(ok|missing|warn|error)$/);
      if (c.status === 'missing' || c.status === 'error') assert.ok(c.fix, `check ${c.name} (${c.status}) names a fix`);
    }
    const kvm = report.checks.find((c: { name: string }) => c.name === 'kvm');
    assert.doesNotMatch(kvm.detail, /^usable/, 'KVM is never called usable without a probe boot');
  } finally {
    d.cleanup();
  }
});

test('up, then audit verify/tail/export on the sealed log', async () => {
  const d = await seededHome();
  try {
    const v = await runCli(['audit', 'verify', '--json'], { home: d.path });
    assert.equal(v.code, 0, v.stderr);
    const report = json(v.stdout);
    assert.equal(report.ok, true);
    assert.equal(report.unsealedEvents, 0);
    assert.ok(report.events >= 2);

    const t = await runCli(['audit', 'tail', '-n', '1', '--json'], { home: d.path });
    assert.equal(t.code, 0, t.stderr);
    assert.deepEqual(json(t.stdout).events.map((e: { type: string }) => e.type), ['daemon.stop']);

    const e = await runCli(['audit', 'export', '--format', 'jsonl'], { home: d.path });
    assert.equal(e.code, 0, e.stderr);
    const lines = e.stdout.trim().split('\n').map((l) => JSON.parse(l) as { seq: number; hash: string; prevHash: string });
    assert.deepEqual(lines.map((l) => l.seq), lines.map((_, i) => i + 1));
    for (let i = 1; i < lines.length; i++) assert.equal(lines[i]!.prevHash, lines[i - 1]!.hash);

    const bad = await runCli(['audit', 'export', '--format', 'csv'], { home: d.path });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /unknown export format "csv"\n\s+fix: use --format jsonl/);
  } finally {
    d.cleanup();
  }
});

const tampering: Array<{ name: string; sql: string; problem: string; seq: number }> = [
  { name: 'an edited event body', sql: `update audit_events set body = replace(body, '"daemon.start"', '"daemon.strat"') where seq = 1`, problem: 'edited', seq: 1 },
  { name: 'an edited column', sql: `update audit_events set actor = 'operator' where seq = 2`, problem: 'edited', seq: 2 },
  { name: 'a deleted event', sql: `delete from audit_events where seq = 2`, problem: 'deleted', seq: 2 },
  { name: 'a truncated tail', sql: `delete from audit_events where seq = (select max(seq) from audit_events)`, problem: 'truncated', seq: 4 },
];
for (const c of tampering) {
  test(`audit verify catches ${c.name}, exits 1 and names the seq`, async () => {
    const d = await seededHome();
    try {
      const db = new Database(join(d.path, 'cordon.db'));
      const n = (db.prepare('select count(*) as n from audit_events').get() as { n: number }).n;
      assert.equal(n, 4);
      db.exec(c.sql);
      db.close();
      const r = await runCli(['audit', 'verify', '--json'], { home: d.path });
      assert.equal(r.code, 1);
      const report = json(r.stdout);
      assert.equal(report.ok, false);
      assert.equal(report.problem, c.problem, report.message);
      const want = c.seq;
      assert.equal(report.firstBadSeq, want, report.message);
      const human = await runCli(['audit', 'verify'], { home: d.path });
      assert.equal(human.code, 1);
      assert.match(human.stdout, new RegExp(`FAILED verification at seq ${want}: ${c.problem}`));
    } finally {
      d.cleanup();
    }
  });
}

const badInputs: Array<{ name: string; prepare: (home: string) => string[]; want: RegExp; file?: (home: string) => string }> = [
  {
    name: 'malformed YAML',
    prepare: (home) => { writeFileSync(join(home, 'cordon.yaml'), 'version: 1\nagents:\n  a: [unclosed\n'); return ['up', '--port', '0']; },
    want: /cordon\.yaml.*line \d+/s,
  },
  {
    name: 'wrong types in the config',
    prepare: (home) => { writeFileSync(join(home, 'cordon.yaml'), 'version: 1\nagents:\n  a:\n    resources: { vcpus: "many" }\n'); return ['config', 'check']; },
    want: /agents\.a\.resources\.vcpus.*Fix:/s,
  },
  {
    name: 'a store file that is not a database',
    prepare: (home) => { writeFileSync(join(home, 'cordon.db'), 'this is not sqlite\n'.repeat(100)); return ['audit', 'verify']; },
    want: /cordon\.db.*not a .*database[\s\S]*fix:/,
    file: (home) => join(home, 'cordon.db'),
  },
  {
    name: 'a corrupt audit key file',
    prepare: (home) => { mkdirSync(join(home, 'keys'), { recursive: true, mode: 0o700 }); writeFileSync(join(home, 'keys', 'audit-ed25519.key'), 'garbage', { mode: 0o600 }); return ['up', '--port', '0']; },
    want: /audit-ed25519\.key[\s\S]*fix:/,
    file: (home) => join(home, 'keys', 'audit-ed25519.key'),
  },
  {
    name: 'a world-readable audit key file',
    prepare: (home) => { mkdirSync(join(home, 'keys'), { recursive: true, mode: 0o700 }); writeFileSync(join(home, 'keys', 'audit-ed25519.key'), 'x'); chmodSync(join(home, 'keys', 'audit-ed25519.key'), 0o644); return ['up', '--port', '0']; },
    want: /audit-ed25519\.key[\s\S]*chmod 600/,
  },
  {
    name: 'audit verify before anything was recorded',
    prepare: () => ['audit', 'verify'],
    want: /no audit log yet[\s\S]*fix: start the control plane/,
  },
  {
    name: 'a bad --lines value',
    prepare: () => ['audit', 'tail', '-n', 'lots'],
    want: /--lines "lots" is not a positive whole number/,
  },
];
for (const c of badInputs) {
  test(`bad input gives one clear error: ${c.name}`, async () => {
    const d = tempDir();
    try {
      const args = c.prepare(d.path);
      const before = c.file && existsSync(c.file(d.path)) ? readFileSync(c.file(d.path)) : undefined;
      const r = await runCli(args, { home: d.path, timeoutMs: 30_000 });
      assert.equal(r.code, 1, `exit code 1 (stdout: ${r.stdout}, stderr: ${r.stderr})`);
      assert.match(r.stderr, c.want);
      noStackTrace(r.stderr);
      if (before) assert.deepEqual(readFileSync(c.file!(d.path)), before, 'the file was left as it was');
    } finally {
      d.cleanup();
    }
  });
}

test('an existing log survives a failed start and a restart continues the chain', async () => {
  const d = await seededHome();
  try {
    const before = json((await runCli(['audit', 'verify', '--json'], { home: d.path })).stdout);
    writeFileSync(join(d.path, 'cordon.yaml'), 'version: 7\n');
    const bad = await runCli(['up', '--port', '0'], { home: d.path });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /version/);
    writeFileSync(join(d.path, 'cordon.yaml'), 'version: 1\n');
    const again = await runCli(['up', '--port', '0', '--json', '--exit-after', '200'], { home: d.path });
    assert.equal(again.code, 0, again.stderr);
    const after = json((await runCli(['audit', 'verify', '--json'], { home: d.path })).stdout);
    assert.equal(after.ok, true);
    assert.equal(after.events, before.events + 2, 'daemon.start and daemon.stop appended to the same chain');
  } finally {
    d.cleanup();
  }
});
