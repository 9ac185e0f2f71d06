import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { EnvironmentError } from '../../errors/index.js';
import { whichTool } from './exec.js';
import { extractVmlinux, findKernelPayload, parseKernelConfig } from './kernel.js';
import { makeBzImage, makeElf, makeGzipBzImage, pvhNote } from './testing.js';

function withDir(fn: (dir: string) => Promise<void> | void) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-kernel-test-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('findKernelPayload reads offset and length from the boot header', () => {
  const payload = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3]);
  const bz = makeBzImage(payload, { setupSects: 39, trailerSize: 12345 });
  const p = findKernelPayload(bz);
  assert.deepEqual(p, { format: 'xz', offset: 40 * 512 + 0x100, length: payload.length, expectedSize: 12345 });
});

test('setup_sects 0 means 4, per the boot protocol', () => {
  const bz = makeBzImage(Buffer.from([0x1f, 0x8b, 0x08, 0]), { setupSects: 4 });
  bz[0x1f1] = 0;
  assert.equal(findKernelPayload(bz).offset, 5 * 512 + 0x100);
});

const badImages: [string, Buffer, RegExp][] = [
  ['a file without the HdrS header', Buffer.alloc(4096), /not a bzImage/],
  ['boot protocol 2.06', makeBzImage(Buffer.from([0x1f, 0x8b, 0x08]), { protocol: 0x206 }), /older than 2.08/],
  ['an lz4 payload', makeBzImage(Buffer.from([0x02, 0x21, 0x4c, 0x18, 0, 0])), /unsupported kernel compression \(payload starts with 02214c18/],
];
for (const [name, bz, re] of badImages) {
  test(`findKernelPayload rejects ${name}`, () => assert.throws(() => findKernelPayload(bz), re));
}

test('extractVmlinux unpacks a gzip kernel and reports its PVH entry', withDir(async (dir) => {
  const elf = makeElf({ notes: [pvhNote(0x1000850)] });
  writeFileSync(join(dir, 'vmlinuz'), makeGzipBzImage(elf));
  const r = await extractVmlinux(join(dir, 'vmlinuz'), join(dir, 'vmlinux'), {});
  assert.deepEqual(r, { format: 'gzip', pvhEntry: 0x1000850, sizeBytes: elf.length });
  assert.deepEqual(readFileSync(join(dir, 'vmlinux')), elf);
}));

const xz = whichTool('xz');
test('extractVmlinux unpacks an xz kernel with its size trailer', { skip: xz ? false : 'xz is not installed' }, withDir(async (dir) => {
  const elf = makeElf({ notes: [pvhNote()] });
  const compressed = spawnSync(xz!, ['-c', '--check=crc32'], { input: elf }).stdout;
  writeFileSync(join(dir, 'vmlinuz'), makeBzImage(compressed, { trailerSize: elf.length }));
  const r = await extractVmlinux(join(dir, 'vmlinuz'), join(dir, 'vmlinux'), { xz });
  assert.equal(r.format, 'xz');
  assert.deepEqual(readFileSync(join(dir, 'vmlinux')), elf);
}));

test('extractVmlinux rejects a size trailer that does not match', { skip: xz ? false : 'xz is not installed' }, withDir(async (dir) => {
  const elf = makeElf({ notes: [pvhNote()] });
  const compressed = spawnSync(xz!, ['-c', '--check=crc32'], { input: elf }).stdout;
  writeFileSync(join(dir, 'vmlinuz'), makeBzImage(compressed, { trailerSize: elf.length + 1 }));
  await assert.rejects(extractVmlinux(join(dir, 'vmlinuz'), join(dir, 'vmlinux'), { xz }), /the bzImage says/);
}));

const unusable: [string, Buffer, RegExp][] = [
  ['an ELF without the PVH note', makeGzipBzImage(makeElf()), /no PVH entry note/],
  ['a payload that is not ELF', makeGzipBzImage(Buffer.from('not a kernel'.padEnd(100))), /not an ELF file/],
];
for (const [name, bz, re] of unusable) {
  test(`extractVmlinux refuses ${name}`, withDir(async (dir) => {
    writeFileSync(join(dir, 'vmlinuz'), bz);
    await assert.rejects(extractVmlinux(join(dir, 'vmlinuz'), join(dir, 'vmlinux'), {}), (err: unknown) => {
      assert.ok(err instanceof EnvironmentError);
      assert.equal(err.code, 'env-kernel-unusable');
      assert.match(err.message, re);
      assert.ok(err.fix);
      return true;
    });
  }));
}

test('extractVmlinux names the package to install when the decompressor is missing', withDir(async (dir) => {
  writeFileSync(join(dir, 'vmlinuz'), makeBzImage(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0]), { trailerSize: 10 }));
  await assert.rejects(extractVmlinux(join(dir, 'vmlinuz'), join(dir, 'vmlinux'), {}), (err: unknown) => {
    assert.ok(err instanceof EnvironmentError);
    assert.equal(err.code, 'env-missing-tool');
    assert.equal(err.fix, 'apt-get install -y zstd');
    return true;
  });
}));

test('parseKernelConfig keeps set options and drops comments', () => {
  const cfg = parseKernelConfig('# CONFIG_X is not set\nCONFIG_PVH=y\nCONFIG_VIRTIO_MMIO=m\nCONFIG_HZ=250\nCONFIG_CMDLINE=""\n');
  assert.deepEqual(cfg, { CONFIG_PVH: 'y', CONFIG_VIRTIO_MMIO: 'm', CONFIG_HZ: '250', CONFIG_CMDLINE: '""' });
});
