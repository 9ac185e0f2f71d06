/**
 * `cordon sandbox create|exec|ls|rm` against a running control plane (started
 * in this test process, found by the CLI through daemon.json), and what they
 * say when none runs. Also `cordon image ls`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../config/index.js';
import { startControlPlane, type ControlPlane } from '../../controlplane/index.js';
import type { SandboxInfo } from '../../sandbox/index.js';
import { fastestIsolation, sandboxTestHome, type SandboxTestHome } from '../../sdk/testing.js';
import { cordon, oneJson } from './testing.js';

describe('cordon sandbox with a running control plane', () => {
  let home: SandboxTestHome;
  let cp: ControlPlane;

  before(async () => {
    home = await sandboxTestHome();
    const isolation = await fastestIsolation(home.path);
    cp = await startControlPlane({ home: home.path, config: parseConfig(`version: 1\nagents:\n  dev: { isolation: ${isolation} }\n`), port: 0 });
  });
  after(async () => {
    await cp?.stop();
    home?.cleanup();
  });

  test('create, exec, ls, rm: one sandbox through its life', async () => {
    const created = await cordon(['sandbox', 'create', '--agent', 'dev', '--json'], { home: home.path });
    assert.equal(created.code, 0, created.stderr);
    const info = oneJson<SandboxInfo>(created);
    assert.equal(info.state, 'running');
    assert.deepEqual(cp.sandboxes.list().map((s) => s.id), [info.id]);

    const exec = await cordon(['sandbox', 'exec', info.id, '--', 'sh', '-c', 'echo hi; exit 3'], { home: home.path });
    assert.equal(exec.code, 3, exec.stderr);
    assert.equal(exec.stdout, 'hi\n');
    assert.match(exec.stderr, new RegExp(`exit code 3 \\(.* in ${info.id}\\)`));

    const execJson = await cordon(['sandbox', 'exec', info.id, '--json', '--', 'echo', 'x'], { home: home.path });
    assert.equal(execJson.code, 0, execJson.stderr);
    const r = oneJson<{ sandbox: string; exitCode: number; stdout: string }>(execJson);
    assert.deepEqual([r.sandbox, r.exitCode, r.stdout], [info.id, 0, 'x\n']);

    const ls = await cordon(['sandbox', 'ls'], { home: home.path });
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^ID\s+AGENT\s+STATE\s+ISOLATION\s+AGE\s+EXPIRES\n/);
    assert.match(ls.stdout, new RegExp(`${info.id}\\s+dev\\s+running\\s+(bubblewrap \\(development tier\\)|microVM \\((KVM|TCG, software emulation)\\))\\s+\\d+s`));
    const lsJson = oneJson<{ controlPlane: { url: string }; sandboxes: SandboxInfo[] }>(await cordon(['sandbox', 'ls', '--json'], { home: home.path }));
    assert.equal(lsJson.controlPlane.url, cp.url);
    assert.deepEqual(lsJson.sandboxes.map((s) => s.id), [info.id]);

    const rm = await cordon(['sandbox', 'rm', info.id, 'sb-aaaaaaaaaaaaaaaaaaaa'], { home: home.path });
    assert.equal(rm.code, 1, 'one of the two ids does not exist');
    assert.equal(rm.stdout, `${info.id} destroyed\n`);
    assert.match(rm.stderr, /sb-aaaaaaaaaaaaaaaaaaaa: no sandbox sb-aaaaaaaaaaaaaaaaaaaa\n {2}fix: list sandboxes with `cordon sandbox ls`/);
    assert.deepEqual(cp.sandboxes.list(), []);
  });
});

describe('cordon sandbox without a control plane', () => {
  let home: SandboxTestHome;
  before(async () => {
    home = await sandboxTestHome();
  });
  after(() => home?.cleanup());

  const cases: Array<{ name: string; args: string[]; code: number; stdout?: unknown; stderr: RegExp }> = [
    { name: 'create says to start cordon up', args: ['sandbox', 'create', '--json'], code: 1,
      stdout: { error: 'env-no-daemon' }, stderr: /a sandbox cannot outlive this command\n {2}fix: start `cordon up`/ },
    { name: 'exec says to start cordon up', args: ['sandbox', 'exec', 'sb-aaaaaaaaaaaaaaaaaaaa', '--', 'true'], code: 1, stderr: /no cordon control plane is running.*\n {2}fix: start it with `cordon up`/ },
    { name: 'ls --json is empty and says so', args: ['sandbox', 'ls', '--json'], code: 0, stdout: { controlPlane: null, sandboxes: [] }, stderr: /^$/ },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const r = await cordon(c.args, { home: home.path });
      assert.equal(r.code, c.code, r.stderr);
      if (c.stdout !== undefined) {
        const doc = oneJson(r);
        for (const [k, v] of Object.entries(c.stdout as Record<string, unknown>)) assert.deepEqual(doc[k], v, k);
      }
      assert.match(r.stderr, c.stderr);
    });
  }

  test('image ls --json lists the linked test image as current', async () => {
    const r = await cordon(['image', 'ls', '--json'], { home: home.path });
    assert.equal(r.code, 0, r.stderr);
    const doc = oneJson<{ images: Array<{ id: string; current: boolean; kernelRelease: string }> }>(r);
    assert.deepEqual(doc.images.map((i) => [i.id, i.current, i.kernelRelease]), [[home.imageId, true, home.kernelRelease]]);
  });
});
