/**
 * Integration tests: build the real guest image from Debian packages (a few
 * minutes the first time; reused from the shared test home afterwards).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { EnvironmentError } from '../../errors/index.js';
import { readCpio } from './cpio.js';
import { pvhEntry } from './elf.js';
import { buildImage, mountsUnder, planImage, type BuildProgress } from './build.js';
import { findImage, readManifest } from './manifest.js';
import { ensureTestImage, testHome } from './testing.js';
import { checkRootfsTree, ensureRootfsTree } from './tree.js';

const isRoot = process.getuid?.() === 0;
const needRoot = isRoot ? false : 'debootstrap needs root; run the tests as root to build the image';

test('a missing tool fails before any work, naming the Debian packages', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'cordon-empty-path-'));
  const home = mkdtempSync(join(tmpdir(), 'cordon-home-'));
  try {
    await assert.rejects(buildImage({ home, searchPath: empty }), (err: unknown) => {
      assert.ok(err instanceof EnvironmentError);
      assert.equal(err.code, 'env-missing-tool');
      assert.match(err.message, /^cordon image build needs apt-get, apt-cache, dpkg-deb, debootstrap, mkfs.ext4, qemu-img, xz/);
      assert.equal(err.fix, 'apt-get install -y apt dpkg debootstrap e2fsprogs qemu-utils xz-utils');
      return true;
    });
    assert.equal(existsSync(join(home, 'images')), false, 'nothing was created');
  } finally {
    rmSync(empty, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  }
});

test('the built image has a PVH kernel, an initramfs with the guest modules, and a qcow2 root', { skip: needRoot, timeout: 20 * 60_000 }, async () => {
  const m = await ensureTestImage();
  assert.match(m.kernelRelease, /^\d+\.\d+\.\d+-\d+-amd64$/);
  assert.ok(pvhEntry(readFileSync(m.kernelPath)), 'vmlinux has a PVH entry');
  const names = readCpio(gunzipSync(readFileSync(m.initrdPath))).map((e) => e.path);
  for (const must of ['init', 'bin/busybox', 'dev/console', 'lib/modules/virtio_mmio.ko', 'lib/modules/virtio_blk.ko', 'lib/modules/virtio_console.ko', 'lib/modules/virtio_rng.ko', 'lib/modules/ext4.ko']) {
    assert.ok(names.includes(must), `initramfs lacks ${must}`);
  }
  const order = m.modules;
  for (const [before, after] of [['virtio_ring', 'virtio_mmio'], ['virtio', 'virtio_blk'], ['jbd2', 'ext4'], ['crc32c_generic', 'jbd2']] as const) {
    assert.ok(order.indexOf(before) >= 0 && order.indexOf(before) < order.indexOf(after), `${before} must load before ${after}: ${order.join(' ')}`);
  }
  const head = Buffer.alloc(4);
  const fd = openSync(m.rootfsPath, 'r');
  readSync(fd, head, 0, 4, 0);
  closeSync(fd);
  assert.deepEqual(head, Buffer.from([0x51, 0x46, 0x49, 0xfb]), 'rootfs is qcow2');
  assert.equal(checkRootfsTree(await ensureRootfsTree(m)), undefined, 'the image also gives a rootfs tree for the process back ends');
  assert.equal(findImage(testHome())?.id, m.id);
});

test('a second build with the same inputs does nothing and says so', { skip: needRoot, timeout: 20 * 60_000 }, async () => {
  const first = await ensureTestImage();
  const seen: BuildProgress[] = [];
  const started = Date.now();
  const again = await buildImage({ home: testHome(), onProgress: (p) => seen.push(p) });
  assert.equal(again.cached, true);
  assert.equal(again.id, first.id);
  assert.ok(Date.now() - started < 15_000, 'a cached build takes seconds');
  assert.deepEqual(seen.map((p) => p.step), ['done']);
  assert.match(seen[0]?.detail ?? '', /already built from the same inputs; nothing to do/);
});

test('a changed input (a new guest agent binary) names a new image, so it gets rebuilt', { skip: needRoot }, async () => {
  const built = await ensureTestImage();
  const agentDir = mkdtempSync(join(tmpdir(), 'cordon-agent-'));
  try {
    writeFileSync(join(agentDir, 'cordon-init'), 'a different agent');
    chmodSync(join(agentDir, 'cordon-init'), 0o755);
    const plan = await planImage({ home: testHome(), agentDir });
    assert.notEqual(plan.id, built.id);
    assert.match(plan.inputs.agentInitSha256 ?? '', /^[0-9a-f]{64}$/);
    assert.equal(readManifest(join(testHome(), 'images', plan.id)), undefined, 'no image exists for the new inputs');
  } finally {
    rmSync(agentDir, { recursive: true, force: true });
  }
});

test('a build that fails half way leaves no image, no temp dir and no lock', { skip: needRoot, timeout: 10 * 60_000 }, async () => {
  const home = mkdtempSync(join(tmpdir(), 'cordon-home-'));
  const aptDir = mkdtempSync(join(tmpdir(), 'cordon-apt-'));
  try {
    // The kernel and initramfs steps use the host's apt; debootstrap then fails on an unreachable mirror.
    mkdirSync(join(aptDir, 'sources.list.d'));
    writeFileSync(join(aptDir, 'sources.list'), 'deb http://127.0.0.1:9/debian bookworm main\n');
    const steps: string[] = [];
    await assert.rejects(buildImage({ home, aptDir, onProgress: (p) => steps.push(p.step) }), /debootstrap/);
    assert.ok(steps.includes('initramfs') && steps.includes('rootfs'), `got as far as debootstrap: ${[...new Set(steps)].join(',')}`);
    assert.deepEqual(readdirSync(join(home, 'images')), []);
    assert.equal(findImage(home), undefined);
  } finally {
    rmSync(home, { recursive: true, force: true });
    rmSync(aptDir, { recursive: true, force: true });
  }
});

test('mountsUnder finds mounts inside a build tree, with octal escapes decoded', () => {
  const info = [
    '22 1 254:0 / / rw - ext4 /dev/vda rw',
    '90 22 0:5 / /home/x/.cordon/images/.tmp-ab/work/rootfs/proc rw - proc proc rw',
    '91 22 0:6 / /home/x/.cordon/images/.tmp-ab/work/root\\040fs/dev rw - tmpfs nodev rw',
    '92 22 0:7 / /home/x/.cordon/images/.tmp-abc rw - tmpfs t rw',
  ].join('\n');
  assert.deepEqual(mountsUnder('/home/x/.cordon/images/.tmp-ab', info), [
    '/home/x/.cordon/images/.tmp-ab/work/rootfs/proc',
    '/home/x/.cordon/images/.tmp-ab/work/root fs/dev',
  ]);
});
