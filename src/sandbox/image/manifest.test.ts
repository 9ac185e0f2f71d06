import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findImage, imageId, RECIPE_VERSION, type ImageInputs, type ImageManifest } from './manifest.js';

const inputs: ImageInputs = {
  recipeVersion: RECIPE_VERSION,
  kernelPackage: { name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-2' },
  busyboxPackage: { name: 'busybox-static', version: '1:1.35.0-4' },
  suite: 'bookworm',
  include: ['ca-certificates', 'curl', 'git', 'python3'],
  mirror: 'http://mirror.example/debian',
  modules: ['virtio_mmio', 'ext4'],
  diskMiB: 2048,
  initScriptSha256: 'a'.repeat(64),
  agentInitSha256: null,
  agentDaemonSha256: null,
};

test('the image id is stable and independent of key order', () => {
  const reordered = Object.fromEntries(Object.entries(inputs).reverse()) as ImageInputs;
  assert.equal(imageId(inputs), imageId(reordered));
  assert.match(imageId(inputs), /^[0-9a-f]{64}$/);
});

const changes: [string, Partial<ImageInputs>][] = [
  ['kernel version', { kernelPackage: { name: 'linux-image-6.1.0-56-amd64', version: '6.1.192-3' } }],
  ['busybox version', { busyboxPackage: { name: 'busybox-static', version: '1:1.36' } }],
  ['suite', { suite: 'trixie' }],
  ['include list', { include: ['ca-certificates', 'curl', 'git'] }],
  ['mirror', { mirror: 'http://other.example/debian' }],
  ['guest agent binary', { agentInitSha256: 'b'.repeat(64) }],
  ['recipe version', { recipeVersion: RECIPE_VERSION + 1 }],
  ['init script', { initScriptSha256: 'c'.repeat(64) }],
  ['disk size', { diskMiB: 4096 }],
];
for (const [name, change] of changes) {
  test(`changing the ${name} changes the image id`, () => assert.notEqual(imageId({ ...inputs, ...change }), imageId(inputs)));
}

function writeImage(home: string, createdAt: string, opts: { inputs?: ImageInputs; dropFile?: boolean; badJson?: boolean; dirName?: string } = {}): string {
  const i = opts.inputs ?? inputs;
  const id = imageId(i);
  const dir = join(home, 'images', opts.dirName ?? id);
  mkdirSync(dir, { recursive: true });
  const files = ['vmlinux', 'initrd.img', 'rootfs.qcow2'];
  for (const f of files) if (!(opts.dropFile && f === 'rootfs.qcow2')) writeFileSync(join(dir, f), f);
  const m: ImageManifest = {
    id, kernelPath: join(dir, 'vmlinux'), initrdPath: join(dir, 'initrd.img'), rootfsPath: join(dir, 'rootfs.qcow2'),
    kernelRelease: '6.1.0-56-amd64', createdAt, inputs: i, modules: ['ext4'], agent: { init: false, daemon: false },
    sizes: { kernelBytes: 1, initrdBytes: 1, rootfsBytes: 1 }, buildMs: 1,
  };
  writeFileSync(join(dir, 'manifest.json'), opts.badJson ? '{"id":' : JSON.stringify(m));
  return id;
}

test('findImage returns the newest complete image and skips broken ones', () => {
  const home = mkdtempSync(join(tmpdir(), 'cordon-manifest-test-'));
  try {
    assert.equal(findImage(home), undefined, 'no images dir yet');
    const older = writeImage(home, '2026-01-01T00:00:00.000Z');
    writeImage(home, '2026-03-01T00:00:00.000Z', { inputs: { ...inputs, suite: 'x' }, dropFile: true });
    writeImage(home, '2026-04-01T00:00:00.000Z', { inputs: { ...inputs, suite: 'y' }, badJson: true });
    writeImage(home, '2026-05-01T00:00:00.000Z', { inputs: { ...inputs, suite: 'z' }, dirName: '.tmp-half-built' });
    assert.equal(findImage(home)?.id, older);
    const newer = writeImage(home, '2026-02-01T00:00:00.000Z', { inputs: { ...inputs, suite: 'w' } });
    assert.equal(findImage(home)?.id, newer);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
