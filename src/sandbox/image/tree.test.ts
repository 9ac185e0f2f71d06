/**
 * The root file system tree for the process back ends: unpacked once from the
 * qcow2 base of the shared test image, then reused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EnvironmentError } from '../../errors/index.js';
import type { ImageManifest } from './manifest.js';
import { ensureTestImage } from './testing.js';
import { checkRootfsTree, ensureRootfsTree, rootfsTreeDir, TREE_AGENT_PATH } from './tree.js';

const needRoot = process.getuid?.() === 0 ? false : 'the test image is built with debootstrap, which needs root';

test('checkRootfsTree names what a tree lacks', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-tree-'));
  try {
    const cases: [string, () => void, RegExp | undefined][] = [
      ['an empty directory has no agent', () => undefined, /has no executable \/usr\/sbin\/cordon-agent$/],
      ['an agent that is not executable', () => {
        mkdirSync(join(dir, 'usr/sbin'), { recursive: true });
        writeFileSync(join(dir, TREE_AGENT_PATH), 'x', { mode: 0o644 });
      }, /has no executable/],
      ['no agent user', () => {
        chmodSync(join(dir, TREE_AGENT_PATH), 0o755);
        mkdirSync(join(dir, 'etc'));
        writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
      }, /etc\/passwd has no agent user with uid 1000$/],
      ['a complete tree', () => writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/bash\n'), undefined],
    ];
    for (const [name, setup, want] of cases) {
      setup();
      const got = checkRootfsTree(dir);
      if (want) assert.match(got ?? '', want, name);
      else assert.equal(got, undefined, name);
    }
    assert.match(checkRootfsTree(join(dir, 'missing')) ?? '', /does not exist$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an image without the guest agent cannot give a tree, and says how to fix it', async () => {
  const image = { id: 'f'.repeat(64), rootfsPath: join(tmpdir(), 'nowhere', 'rootfs.qcow2'), agent: { init: false, daemon: false } } as ImageManifest;
  await assert.rejects(ensureRootfsTree(image), (err: unknown) => {
    assert.ok(err instanceof EnvironmentError);
    assert.equal(err.code, 'env-no-agent');
    assert.equal(err.fix, 'run `make -C guest/agent`, then `cordon image build`');
    return true;
  });
});

test('the tree is unpacked from the qcow2 base once, root-owned, with the agent and the agent user', { skip: needRoot, timeout: 20 * 60_000 }, async (t) => {
  const built = await ensureTestImage();
  // A private copy of the image directory, so unpacking here does not race other tests.
  const home = mkdtempSync(join(tmpdir(), 'cordon-tree-home-'));
  try {
    const copy: ImageManifest = { ...built, rootfsPath: join(home, 'rootfs.qcow2') };
    cpSync(built.rootfsPath, copy.rootfsPath);
    let started = performance.now();
    const dir = await ensureRootfsTree(copy);
    const firstMs = performance.now() - started;
    assert.equal(dir, rootfsTreeDir(copy));
    assert.equal(checkRootfsTree(dir), undefined);
    const st = statSync(dir);
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o7777, 0o755, 'the top of the tree is not writable by others');
    assert.equal(statSync(join(dir, TREE_AGENT_PATH)).uid, 0, 'the agent binary belongs to root');
    assert.equal(statSync(join(dir, 'home/agent')).uid, 1000, 'the agent owns its home');
    assert.equal(statSync(join(dir, 'tmp')).mode & 0o7777, 0o1777, '/tmp keeps its sticky bit');
    started = performance.now();
    assert.equal(await ensureRootfsTree(copy), dir);
    const againMs = performance.now() - started;
    assert.ok(againMs < 200, `a second call reuses the tree (${againMs.toFixed(0)} ms)`);
    assert.deepEqual(readdirSync(home).filter((n) => n.startsWith('.tree-tmp-')), [], 'no temporary directory is left');
    t.diagnostic(`tree unpacked in ${firstMs.toFixed(0)} ms, reused in ${againMs.toFixed(1)} ms`);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
